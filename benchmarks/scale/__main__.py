"""`python -m benchmarks.scale`: the cost of every stage a user runs, at catalogue sizes 10^4, 10^5, 10^6.

For each size (up to `--max_items`) a seeded synthetic log is generated (see `synthetic.py`: power-law popularity,
drifting histories, item texts; `--interactions_per_item` interactions per item, 10 by default), then each stage is
measured in this process: CPU time (all threads) and the peak resident memory it added. Writes the JSON to
`benchmarks/results/scale.json` (atomically; with `--smoke`, to a temporary folder unless `--out` is given), prints
a table, and draws cost against size on log-log axes with a linear-slope reference (`docs/scale.png`).

    python -m benchmarks.scale                      # 10^4 and 10^5 items
    python -m benchmarks.scale --max_items 1000000  # also 10^6 items (about 10^7 interactions)
    python -m benchmarks.scale --smoke              # every stage on 2,000 items, a few seconds
"""

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import candidate_stages, catalog_stages, data_stages, index_stages, model_stages, sasrec_stages, smollm_stages
from .report import plot, table
from .synthetic import synthetic_log

SIZES = (10_000, 100_000, 1_000_000)
SMOKE_SIZE = 2_000
RESULTS = Path("benchmarks/results/scale.json")
PLOT = Path("docs/scale.png")


def stages(smoke: bool, mf_epochs: int) -> list[tuple[str, object, tuple[str, ...]]]:
    """`(name, function(state) -> dict, what it needs in state)`, in order."""
    users = 4 if smoke else 64
    smollm_shape = {"num_hidden_layers": 6} if smoke else {}  # ILRec reads layers -2..-5
    return [
        (data_stages.STAGE, data_stages.load_split, ()),
        (index_stages.STAGE, lambda s: index_stages.index_stage(s, iters=5 if smoke else 50), ()),
        (sasrec_stages.STAGE, lambda s: sasrec_stages.sasrec_stage(s, 2 if smoke else sasrec_stages.MAX_BATCHES,
                                                                   users), ()),
        ("catalogue bind + trie", catalog_stages.bind_catalog, ()),
        ("catalog.json load", catalog_stages.catalog_json, ("catalog",)),
        ("token_rewards (max)", lambda s: catalog_stages.token_rewards_stage(s, "max"), ("catalog",)),
        ("token_rewards (logsumexp)", lambda s: catalog_stages.token_rewards_stage(s, "logsumexp"), ("catalog",)),
        ("MF fit (ALS)", lambda s: catalog_stages.mf_fit(s, 1 if smoke else mf_epochs), ()),
        ("MF score_items (64 users)", catalog_stages.mf_scores, ("mf",)),
        ("beam search (20 beams)", lambda s: model_stages.beam_search(s, users), ("catalog",)),
        ("Recommender.recommend", lambda s: model_stages.recommend_latency(s, 3 if smoke else 20), ("catalog",)),
        ("training step (ILRec vs SFT)",
         lambda s: model_stages.training_step(s, 1 if smoke else 2, 4 if smoke else model_stages.TRAIN_BATCH),
         ("catalog",)),
        (candidate_stages.REWARD_STAGE, candidate_stages.candidate_reward, ("catalog",)),
        (candidate_stages.STEP_STAGE,
         lambda s: candidate_stages.candidate_training_step(s, 1 if smoke else 2, 4 if smoke else
                                                            model_stages.TRAIN_BATCH), ("catalog",)),
        (smollm_stages.STAGE, lambda s: smollm_stages.smollm_step(s, 1 if smoke else 4, 2 if smoke else
                                                                  smollm_stages.BATCH, **smollm_shape), ()),
    ]


def write_json(path: Path, data: dict) -> None:
    """Write `data` to `path` atomically (a temporary file in the same folder, then `os.replace`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def quiet() -> None:
    """No progress bars or library warnings between the table lines."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--max_items", type=int, default=100_000, help="largest catalogue size measured")
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="these catalogue sizes instead")
    parser.add_argument("--smoke", action="store_true", help="every stage once on a tiny catalogue (a test)")
    parser.add_argument("--interactions_per_item", type=float, default=10.0)
    parser.add_argument("--mf_epochs", type=int, default=8, help="ALS epochs (the library's default is 8)")
    parser.add_argument("--stages", nargs="*", default=None, help="names (or unique prefixes) of the stages to run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: comparable on a shared machine)")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON output (default {RESULTS})")
    parser.add_argument("--plot", type=Path, default=None, help=f"log-log plot (default {PLOT}; none in smoke mode)")
    parser.add_argument("--note", default="", help="what else was running on the machine (saved in the JSON)")
    parser.add_argument("--report_only", action="store_true", help="print the table and draw the plot of --out")
    parser.add_argument("--force", action="store_true",
                        help="run every size even where the smaller sizes extrapolate beyond a stage's budget")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet()
    sizes = [SMOKE_SIZE] if args.smoke else args.sizes or [n for n in SIZES if n <= args.max_items]
    out_path = args.out or (Path(tempfile.mkdtemp(prefix="ilrec-scale-")) / "scale.json" if args.smoke else RESULTS)
    plot_path = args.plot or (None if args.smoke else PLOT)
    every_stage = stages(args.smoke, args.mf_epochs)
    selected = every_stage
    if args.stages:
        selected = [s for s in selected if any(s[0].startswith(p) for p in args.stages)]
    every_name = [s[0] for s in every_stage]
    if args.report_only:
        return report(json.loads(out_path.read_text()), [s[0] for s in selected], out_path, plot_path,
                      every_stage=every_name)
    previous = json.loads(out_path.read_text()) if args.stages and out_path.exists() else None
    result = {
        "meta": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "argv": sys.argv[1:] if argv is None else list(argv), "python": platform.python_version(),
                 "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                 "load_average_start": os.getloadavg(), "note": args.note,
                 "interactions_per_item": args.interactions_per_item},
        "sizes": {},
    }
    if previous is not None:  # a subset of the stages: keep the others' figures
        result["sizes"] = previous["sizes"]
        result["meta"]["previous"] = previous["meta"]
    for size in sizes:
        record = result["sizes"].setdefault(str(size), {})
        start = time.process_time()
        state = {"log": synthetic_log(size, args.interactions_per_item, seed=0), "results": result["sizes"],
                 "force": args.force}
        record["generate"] = {"cpu_s": time.process_time() - start, "users": state["log"].num_users,
                              "interactions": int(len(state["log"].items))}
        for name, run, needs in selected:
            missing = [k for k in needs if k not in state]
            if missing:
                record[name] = {"error": f"not measured: needs {', '.join(missing)}"}
                continue
            print(f"[{size:,} items] {name} ...", flush=True)
            try:
                record[name] = run(state)
            except Exception as e:  # a stage that fails is reported, the others still run
                record[name] = {"error": f"{type(e).__name__}: {e}"}
            write_json(out_path, result)
        del state
    result["meta"]["load_average_end"] = os.getloadavg()
    write_json(out_path, result)
    return report(result, [s[0] for s in selected], out_path, plot_path, every_stage=every_name)


def report(result: dict, names: list[str], out_path: Path, plot_path: Path | None,
           every_stage: list[str] | None = None) -> dict:
    """The table of the stages `names`; the plot of every stage in `every_stage` that the file holds (a run of some
    stages, merged into the file, redraws the whole plot)."""
    print(table(result, names))
    print(f"JSON: {out_path}")
    if plot_path is not None:
        held = {name for record in result["sizes"].values() for name in record}
        plot(result, [n for n in (every_stage or names) if n in held], plot_path)
        print(f"plot: {plot_path}")
    return result


if __name__ == "__main__":
    main()
