"""`python -m benchmarks.accuracy --dataset instruments --seeds 0 1 2` (run; resumes), `... --report` (tables, paired
and bootstrap intervals over seeds and users and plots from whatever cells exist)."""

from pathlib import Path

from . import __doc__ as DOC
from .config import build_parser, docs_dir, prepare, write_run_args
from .run import run_seed


def run(a):
    from ilrec_trl.evaluation import sample_users

    data, tok = prepare(a)
    split = sample_users(data.test, a.eval_users or None, seed=1234)  # the same users for every method and seed
    valid = sample_users(data.valid, a.valid_users, seed=1234)
    run_dir = Path(a.out) / a.dataset
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_args(run_dir / "run_args.json", a)
    for seed in a.seeds:
        run_seed(a, data, tok, split, valid, a.dataset, seed)


def main(argv=None):
    from .report import report

    a = build_parser(DOC).parse_args(argv)
    if not a.report:
        run(a)
    report(Path(a.out), docs_dir(a))


if __name__ == "__main__":
    main()
