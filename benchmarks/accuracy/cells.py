"""One JSON file per dataset × seed × method ("cell"): metrics and per-user ranks, written atomically when the cell
finishes and skipped on rerun."""

import json
from pathlib import Path

KS = (5, 10)


def cell_path(out, dataset, seed, method) -> Path:
    return Path(out) / dataset / f"seed{seed}" / f"{method}.json"


def library_versions() -> dict:
    """The versions training numerics depend on: a checkpoint retrained elsewhere reproduces a cell only with these."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
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
