"""What the command lines share: the data arguments and loading the data they name (from
`ilrec_trl.data.arguments`, re-exported here), the results table, the end of a multi-process run, parsing, and how
an error reaches the user."""

import contextlib
import os
import sys
from pathlib import Path

from ..catalog import CatalogError
from ..data.arguments import DataArguments, load_data
from ..errors import UserError

__all__ = ["DataArguments", "check_writable", "load_data", "parse_cli", "process_group_teardown", "results_table",
           "run_cli"]


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


def parse_cli(parser, argv) -> tuple:
    """`parser.parse_args_and_config(argv)` (TRL's parser), an unknown flag refused as argparse refuses one: usage,
    `prog: error: unrecognized arguments: ...`, exit status 2."""
    *parsed, remaining = parser.parse_args_and_config(argv, return_remaining_strings=True)
    if remaining:
        parser.error(f"unrecognized arguments: {' '.join(map(str, remaining))}")
    return tuple(parsed)


def check_writable(path, flag: str) -> None:
    """Refuse an output file that cannot be written, before the work that produces it: a folder, a path under a
    file, or a folder this process may not write into (tried with a temporary file, as the atomic write will)."""
    import tempfile

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {str(path)!r} is a folder: give the path of a file.")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{flag} {str(path)!r} cannot be written: {str(folder)!r} is a file, not a folder.")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"{flag} {str(path)!r} cannot be written ({error.strerror} in {str(folder)!r}): choose a "
                        f"writable location.") from None


# Errors in what the user gave: printed as one line. A CatalogError is about the catalogue or the files given.
USER_ERRORS = (UserError, CatalogError)
# Raised by ilrec-trl's own code (not by a library it calls), these are its checks of the input too.
CHECK_ERRORS = (ValueError, FileNotFoundError)
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def raised_by_the_project(error: BaseException) -> bool:
    """Whether `error` was raised in ilrec-trl's own code (the innermost frame of its traceback is in the package)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and PACKAGE_DIR in Path(tb.tb_frame.f_code.co_filename).resolve().parents


def is_user_error(error: BaseException) -> bool:
    return isinstance(error, USER_ERRORS) or (isinstance(error, CHECK_ERRORS) and raised_by_the_project(error))


def run_cli(prog: str, run, argv=None):
    """Call `run(argv)` for the console script `prog`. An error in what the user gave ([`UserError`], a catalogue
    error, or a `ValueError` / `FileNotFoundError` raised by ilrec-trl's own checks) is printed as one line, `prog:
    error: message`, with exit status 2, as argparse does for a bad flag; `ILREC_DEBUG=1` re-raises it with its
    traceback. Any other exception (a bug, a library's error, out of memory) keeps its traceback."""
    try:
        return run(argv)
    except Exception as error:
        if not is_user_error(error) or os.environ.get("ILREC_DEBUG", "").lower() not in ("", "0", "false"):
            raise
        message = " ".join(str(error).split("\n"))
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
