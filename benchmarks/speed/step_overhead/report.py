"""Pooled medians per model and variant, the ratios to `sft` / `sft_compact`, and the Markdown table."""

import statistics

from .data import VARIANTS


def summarise(runs: list[dict]) -> dict:
    """Per model: pooled medians over the measured steps of all repeats, and the ratios to `sft`/`sft_compact`."""
    summary = {}
    for model_name in dict.fromkeys(r["model"] for r in runs):
        per_variant = {}
        for variant in VARIANTS:
            rs = [r for r in runs if r["model"] == model_name and r["variant"] == variant]
            if not rs:
                continue
            steps = [s for r in rs for s in r["step_s_all"][r["warmup_steps"]:]]
            cpu = [s for r in rs for s in r["cpu_s_all"][r["warmup_steps"]:]]
            per_variant[variant] = {
                "step_s_median": statistics.median(steps),
                "cpu_s_median": statistics.median(cpu),
                "run_medians_s": [r["step_s_median"] for r in rs],
                "fwd_bwd_s_median_of_runs": statistics.median([r["fwd_bwd_s_median"] for r in rs]),
                "optim_s_median_of_runs": statistics.median([r["optim_s_median"] for r in rs]),
                "peak_mem_mb": statistics.median([r["peak_mem_mb"] for r in rs]),
                "sampled_peak_mem_mb": statistics.median([r["sampled_peak_mem_mb"] for r in rs]),
                "peak_rss_mb": statistics.median([r["peak_rss_mb"] for r in rs]),
            }
        ratios = {}
        for base in ("sft", "sft_compact"):
            if base not in per_variant:
                continue
            for variant in ("ilrec", "reference"):
                if variant in per_variant:
                    b, v = per_variant[base], per_variant[variant]
                    ratios[f"{variant}/{base}"] = {
                        "step_time": v["step_s_median"] / b["step_s_median"],
                        "cpu_time": v["cpu_s_median"] / b["cpu_s_median"],
                        "peak_mem": v["peak_mem_mb"] / b["peak_mem_mb"],
                        "peak_rss": v["peak_rss_mb"] / b["peak_rss_mb"],
                    }
        summary[model_name] = {"variants": per_variant, "ratios": ratios}
    return summary


def markdown_table(summary: dict) -> str:
    lines = [
        "| model | variant | wall step (s) | CPU per step (s) | peak mem (MB) | wall vs sft | wall vs sft_compact "
        "| CPU vs sft | CPU vs sft_compact | mem vs sft | mem vs sft_compact |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model_name, s in summary.items():
        pv = s["variants"]
        for variant, v in pv.items():
            cells = []
            for kind in ("step_s_median", "cpu_s_median", "peak_mem_mb"):
                for base in ("sft", "sft_compact"):
                    cells.append(f"{v[kind] / pv[base][kind]:.2f}x" if base in pv else "n/a")
            lines.append(
                f"| {model_name} | {variant} | {v['step_s_median']:.3f} | {v['cpu_s_median']:.3f} | "
                f"{v['peak_mem_mb']:.0f} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines)
