"""One JSON file per dataset × seed × method ("cell"): metrics and per-user ranks, written atomically when the cell
finishes and skipped on rerun."""

import json
from pathlib import Path

KS = (5, 10)


def cell_path(out, dataset, seed, method) -> Path:
    return Path(out) / dataset / f"seed{seed}" / f"{method}.json"


def write_json(path: Path, obj):
    """Write beside, then rename: a reader (or a concurrent run) never sees a half-written file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)


def copy_dir(src: Path, dst: Path, ignore=None):
    """Replace `dst` by a copy of `src`, copied beside first: an interrupted copy never leaves a partial `dst`."""
    import shutil

    tmp = dst.with_name(f"{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=ignore)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def stored_sft_dir(out, dataset, seed) -> Path:
    """Where `--store_sft` keeps a seed's selected SFT weights, beside its cells (committed with them)."""
    return Path(out) / dataset / f"seed{seed}" / "sft_model"


def has_checkpoint(model_dir) -> bool:
    """A saved model (`save_pretrained`) or a compact LoRA checkpoint (lora.py) is in `model_dir`."""
    return any((Path(model_dir) / name).exists() for name in ("config.json", "compact.json"))


def weights_digest(model_dir) -> str:
    """SHA-256 of a saved model's weights (every `*.safetensors` file, in name order): what identifies the SFT
    checkpoint a seed's cells continued from."""
    import hashlib

    digest = hashlib.sha256()
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {model_dir}")
    for f in files:
        digest.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def restore_sft(out, dataset, seed, sft_dir: Path) -> bool:
    """Copy a seed's stored SFT weights (`stored_sft_dir`) into `sft_dir` when that has no checkpoint, after checking
    that they are the weights its sft cell was made with (`checkpoint_sha256`). True if restored."""
    stored, cell_file = stored_sft_dir(out, dataset, seed), cell_path(out, dataset, seed, "sft")
    if has_checkpoint(sft_dir) or not (stored / "selection.json").exists() or not cell_file.exists():
        return False
    expected, found = json.loads(cell_file.read_text()).get("checkpoint_sha256"), weights_digest(stored)
    if expected != found:
        raise SystemExit(f"{stored} holds weights with SHA-256 {found[:12]}…, but {cell_file} was made with "
                         f"{(expected or 'no recorded digest')[:12]}…: they are not the seed's SFT checkpoint. Remove "
                         f"{stored} (the seed's remaining methods then need a new seed or the original checkpoint).")
    copy_dir(stored, Path(sft_dir))
    print(f"[seed{seed}] SFT checkpoint restored from {stored}", flush=True)
    return True


def store_sft(out, dataset, seed, sft_dir: Path):
    """Keep the seed's selected SFT weights beside its cells (`--store_sft`), once: the sft cell records their
    SHA-256 (added to an older cell that lacks it: `sft_dir` is then the checkpoint it was made from or reproduced)."""
    import shutil

    stored, cell_file = stored_sft_dir(out, dataset, seed), cell_path(out, dataset, seed, "sft")
    cell = json.loads(cell_file.read_text())
    digest = weights_digest(sft_dir)
    if cell.get("checkpoint_sha256") not in (None, digest):
        raise SystemExit(f"The SFT checkpoint in {sft_dir} is not the one {cell_file} was made with (SHA-256 "
                         f"differs): not stored.")
    if "checkpoint_sha256" not in cell:
        write_json(cell_file, {**cell, "checkpoint_sha256": digest})
    if (stored / "selection.json").exists() and weights_digest(stored) == digest:
        return
    copy_dir(Path(sft_dir), stored, ignore=shutil.ignore_patterns("dpo_pairs*"))  # the pairs' cache is no weights
    print(f"[seed{seed}] SFT checkpoint stored in {stored}", flush=True)


def library_versions() -> dict:
    """What training numerics depend on besides the code: the libraries' versions and the processor (its vector
    instructions change float rounding). A seed's SFT retrained where any of these differ does not reproduce."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"machine": platform.machine()}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        found["cpu"] = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
        flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
        found["cpu_simd"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    for name in ("torch", "transformers", "accelerate", "trl", "peft", "datasets", "tokenizers", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def save_cell(path: Path, method, ranks, seconds, extra=None):
    from ilrec_trl.evaluation import metrics_from_ranks

    path.parent.mkdir(parents=True, exist_ok=True)
    cell = {"method": method, "seconds": round(seconds, 1), "metrics": metrics_from_ranks(ranks, KS),
            "ranks": [int(r) for r in ranks], "versions": library_versions(), **(extra or {})}
    write_json(path, cell)
    print(f"[{path.parent.name}] {method}: {cell['metrics']} ({seconds:.0f}s)", flush=True)
    return cell


def load_cells(ds_dir: Path, pattern="seed*") -> dict[str, dict[str, dict]]:
    """{method: {seed folder name: cell}} of every finished cell under `ds_dir`."""
    cells = {}
    for seed_dir in sorted(Path(ds_dir).glob(pattern)):
        for f in sorted(seed_dir.glob("*.json")):
            c = json.loads(f.read_text())
            cells.setdefault(c["method"], {})[seed_dir.name] = c
    return cells
