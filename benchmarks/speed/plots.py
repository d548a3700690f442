"""The speed page's plot, from the stored results (nothing is re-measured): a training step's CPU time and peak memory
per variant relative to SFT projecting only the completion (`step_overhead/`), and constrained beam search's users
per CPU second against `prefix_allowed_tokens_fn` (`constrained_generation.json`).

    python -m benchmarks.speed.plots          # writes docs/speed.png
"""

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def step_ratios(results: Path = RESULTS) -> dict[str, tuple[float, float]]:
    """{variant: (CPU time, peak memory) / sft_compact's} on SmolLM2-135M: ILRec from the current code's run, the
    other variants from the run of all four."""
    def ratios(name):
        variants = json.loads((results / "step_overhead" / name).read_text())["summary"]["smollm2"]["variants"]
        base = variants["sft_compact"]
        return {v: (s["cpu_s_median"] / base["cpu_s_median"], s["peak_mem_mb"] / base["peak_mem_mb"])
                for v, s in variants.items()}

    every, current = ratios("variants_smollm2_tiny.json"), ratios("ilrec_vs_sft_compact_smollm2.json")
    return {"sft_compact": (1.0, 1.0), "ilrec": current["ilrec"], "sft (TRL on a CPU)": every["sft"],
            "authors'-style": every["reference"]}


def beam_search_speed(results: Path = RESULTS) -> dict[str, dict[str, float]]:
    """{model: {variant: users per CPU second}}."""
    models = json.loads((results / "constrained_generation.json").read_text())["models"]
    return {m: {v: s["users_per_cpu_s"] for v, s in d["variants"].items()} for m, d in models.items()}


def plot(png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    steps = step_ratios()
    names = list(steps)
    y = range(len(names))
    left.barh([i + 0.2 for i in y], [steps[n][0] for n in names], height=0.4, label="CPU time per step")
    left.barh([i - 0.2 for i in y], [steps[n][1] for n in names], height=0.4, label="peak memory")
    left.axvline(1.0, color="black", lw=0.8)
    left.set_yticks(list(y), names)
    left.set_xlabel("× SFT projecting the completion only (sft_compact)")
    left.set_title("A training step, SmolLM2-135M, CPU")
    left.legend(loc="lower right", fontsize=8)
    speed = beam_search_speed()
    models = list(speed)
    x = range(len(models))
    for k, variant in enumerate(("prefix_fn", "trie")):
        right.bar([i + (k - 0.5) * 0.4 for i in x], [speed[m][variant] for m in models], width=0.4,
                  label={"prefix_fn": "prefix_allowed_tokens_fn", "trie": "constrained_beam_search"}[variant])
    right.set_yscale("log")
    right.set_xticks(list(x), models)
    right.set_ylabel("users per CPU second (log)")
    right.set_title("Constrained beam search, 20 beams, 1 thread")
    right.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--png", default=str(DOCS / "speed.png"))
    a = p.parse_args(argv)
    plot(Path(a.png))
    print(f"wrote {a.png}")


if __name__ == "__main__":
    main()
