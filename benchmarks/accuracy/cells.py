"""One JSON file per dataset × seed × method ("cell"): metrics and per-user ranks, written atomically when the cell
finishes and skipped on rerun."""

import json
from pathlib import Path

KS = (5, 10)


def cell_path(out, dataset, seed, method) -> Path:
    return Path(out) / dataset / f"seed{seed}" / f"{method}.json"


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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cell))
    tmp.replace(path)
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
