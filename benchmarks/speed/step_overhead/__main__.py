"""The command line of `python -m benchmarks.speed.step_overhead` (see the package's docstring): the driver, which
runs every variant in its own child process and writes the results JSON, or one variant in this process."""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from . import __doc__ as DOC
from .data import MODELS, VARIANTS
from .report import markdown_table, summarise
from .runner import REPO, check_reference, run_variant, spawn

DEFAULT_STEPS = {"tiny": (5, 40), "smollm2": (2, 6)}  # (warm-up, measured)
DEFAULT_JSON = REPO / "benchmarks" / "results" / "step_overhead" / "variants_smollm2_tiny.json"


def main(argv=None):
    parser = argparse.ArgumentParser(description=DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=VARIANTS, help="run one variant in this process (else: the driver)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--model", choices=MODELS, help="model of --variant")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--warmup", type=int, help="warm-up steps (default: tiny 5, smollm2 2)")
    parser.add_argument("--steps", type=int, help="measured steps (default: tiny 40, smollm2 6)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="driver: runs of each variant (order rotated)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads; 1 by default (robust to other load on a small box), 0 = torch's")
    parser.add_argument("--timeout", type=int, default=1800, help="driver: seconds per variant process")
    parser.add_argument("--append", action="store_true",
                        help="driver: add these runs to the existing --output (medians are pooled over all runs)")
    parser.add_argument("--result-file", help="--variant: write the result JSON here")
    parser.add_argument("--output", default=str(DEFAULT_JSON), help="driver: the results JSON")
    parser.add_argument("--check-reference", action="store_true",
                        help="only check that the reference variant's loss equals ILRecTrainer's on one batch (tiny)")
    args = parser.parse_args(argv)

    if args.check_reference:
        ilrec_loss, reference_loss = check_reference()
        print(f"ILRecTrainer loss {ilrec_loss:.6f}, reference-style loss {reference_loss:.6f}")
        if abs(ilrec_loss - reference_loss) > 1e-4 * max(1.0, abs(ilrec_loss)):
            sys.exit("the reference variant does not compute ILRec's loss")
        return

    if args.variant:
        if not args.model:
            parser.error("--variant needs --model")
        warmup = args.warmup if args.warmup is not None else DEFAULT_STEPS[args.model][0]
        steps = args.steps if args.steps is not None else DEFAULT_STEPS[args.model][1]
        result = run_variant(args.variant, args.model, warmup, steps, args.batch_size, args.threads)
        text = json.dumps(result, indent=1)
        if args.result_file:
            Path(args.result_file).write_text(text)
        else:
            print(text)
        return

    command = "python -m benchmarks.speed.step_overhead " + " ".join(argv if argv is not None else sys.argv[1:])
    runs, commands, previous_wall = [], [], 0.0
    if args.append and Path(args.output).is_file():
        previous = json.loads(Path(args.output).read_text())
        runs, commands = previous["runs"], previous.get("commands", [previous.get("command")])
        previous_wall = previous.get("total_wall_s", 0.0)
    invocation = len(commands)
    commands = commands + [command.strip()]
    started = time.time()
    for model_name in args.models:
        warmup = args.warmup if args.warmup is not None else DEFAULT_STEPS[model_name][0]
        steps = args.steps if args.steps is not None else DEFAULT_STEPS[model_name][1]
        for repeat in range(args.repeats):
            order = args.variants[repeat % len(args.variants):] + args.variants[: repeat % len(args.variants)]
            for variant in order:
                result = spawn(variant, model_name, warmup, steps, args.batch_size, args.threads, args.timeout)
                result["repeat"] = repeat
                result["invocation"] = invocation
                runs.append(result)
                print(f"[{time.time() - started:6.0f}s] {model_name:8s} {variant:12s} repeat {repeat}: step median "
                      f"{result['step_s_median']:.3f}s (fwd+bwd {result['fwd_bwd_s_median']:.3f}s), peak mem "
                      f"{result['peak_mem_mb']:.0f} MB, seq_len {result['seq_len']}", flush=True)
    summary = summarise(runs)
    report = {
        "commands": commands,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "memory_metric": "peak_mem_mb = ru_maxrss (process peak RSS) - RSS right after the model was loaded",
        "time_metric": "median wall time of on_step_begin -> on_step_end (fwd, bwd, clip, AdamW step) after warm-up; "
                       "cpu = time.process_time() over the same interval; medians pooled over all runs' measured "
                       "steps",
        "summary": summary,
        "runs": runs,
        "total_wall_s": previous_wall + time.time() - started,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=1))
    print(markdown_table(summary))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
