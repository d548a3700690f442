"""What `ilrec-train` and `ilrec-eval` share: the data arguments and loading the data they name (from
`ilrec_trl.data.arguments`, re-exported here), the results table, the end of a multi-process run."""

import contextlib

from ..data.arguments import DataArguments, load_data

__all__ = ["DataArguments", "load_data", "process_group_teardown", "results_table"]


def results_table(rows: list[dict], label: str = "method", extra: dict[str, str] | None = None) -> str:
    """The Markdown table `ilrec-train` and `ilrec-eval` print: one row per result, the `label` column, every
    Hit@K / NDCG@K present (by K, Hit before NDCG), then the `extra` columns (`{key: header}`). With two rows that
    both have NDCG@10, a last line gives their ratio (second / first)."""
    extra = extra or {}
    present = {k for r in rows for k in r if k.startswith(("hit@", "ndcg@"))}
    cols = sorted(present, key=lambda c: (int(c.split("@")[1]), c.startswith("ndcg")))
    lines = [f"| {label} | " + " | ".join(cols + list(extra.values())) + " |",
             "|---" * (len(cols) + len(extra) + 1) + "|"]
    for r in rows:
        cells = [f"{r[c]:.4f}" if c in r else "-" for c in cols] + [str(r.get(k, "-")) for k in extra]
        lines.append(f"| {r[label]} | " + " | ".join(cells) + " |")
    if len(rows) == 2 and rows[0].get("ndcg@10") and "ndcg@10" in rows[1]:
        a, b = rows
        lines.append(f"\n{b[label]} / {a[label]} NDCG@10: {b['ndcg@10'] / a['ndcg@10']:.3f}x")
    return "\n".join(lines)


@contextlib.contextmanager
def process_group_teardown():
    """Around a script's work under `accelerate launch`/`torchrun`: once it succeeds every process waits for the
    others, and in any case the process group is destroyed before the interpreter exits. A rank that exited while
    another still held the gloo group aborted ("terminate called without an active exception", exit -6) in about one
    two-process evaluation out of eight. Without an initialised process group it does nothing."""
    import torch

    def active():
        return torch.distributed.is_available() and torch.distributed.is_initialized()

    try:
        yield
        if active():
            torch.distributed.barrier()
    finally:
        if active():
            torch.distributed.destroy_process_group()
