#!/usr/bin/env python
"""GPU stage `accuracy`: SmolLM2-135M-Instruct cells of the accuracy harness (`python -m benchmarks.accuracy`, the
CPU's harness and cell format), two protocols, accumulated seed by seed over GPU windows.

Protocols (results folders `benchmarks/results/accuracy_smollm2/<protocol>/instruments/seed<k>/<method>.json`):

- `paper`: from the base model with the identifier tokens added, `sft`, `ilrec_scratch` (ILRec's shipped losses) and
  `ilrec_scratch_sasrec_reward` (the same, L_CRR's reward from SASRec), each the same budget from the same start,
  selected on validation (never stopped early: equal lengths), scored on test once.
- `continuation`: from a converged, validation-selected SFT, `sft_more`, `ilrec` and `dpo` with equal budgets.

Every stage trains LoRA adapters (rank 4, every linear layer) with the new tokens' embedding rows (benchmarks/accuracy/
lora.py), so the one thing a seed needs from an earlier window, its selected SFT, is a compact checkpoint of a few
MiB. Each call of the stage:

1. converts the joined GGUF file into `<work>/smollm2` (once per machine);
2. gathers the cells: the committed ones (`--repo_results`), the ones of earlier calls on this machine
   (`<work>/accuracy_smollm2`) and the carried state (`--state`: `state.tar.part*`, the SFT checkpoints of unfinished
   seeds that an earlier window returned);
3. runs the harness for the next unfinished (seed, protocol), seeds in order, both protocols per seed, while at
   least `--min_start_s` of the budget is left; the harness is killed at the budget, losing only the stage in
   progress (cells and stored checkpoints are written atomically when finished);
4. returns `accuracy.json` (status), `cells.tar.gz` (every cell) and `state.tar.part*` (each at most 15 MiB) in `--out`.

On the connected machine, `python -m benchmarks.device.accuracy collect <files_at>` unpacks the cells into
benchmarks/results/ and the state into `.device_kit/state/`, which the next window carries.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAME = "accuracy_smollm2"
PART_BYTES = int(os.environ.get("ILREC_STATE_PART_BYTES", 15 << 20))  # under the 16 MiB per returned file
COMMON = ["--lora_r", "4", "--batch", "64", "--lr", "1e-3", "--lr2", "2e-4", "--max_history", "20",
          "--eval_users", "0", "--valid_users", "2000", "--eval_batch", "128", "--sft_epochs", "1.5",
          "--sft_eval_every", "0.5", "--extra_epochs", "0.25"]
PROTOCOLS = {  # protocol: (its methods, its own flags); --store_sft: its later cells continue from the seed's SFT
    "continuation": (["sft", "sft_more", "ilrec", "dpo"], ["--sft_patience", "2", "--store_sft"]),
    "paper": (["sft", "ilrec_scratch", "ilrec_scratch_sasrec_reward"], ["--sft_patience", "8",
                                                                       "--scratch_sft_epochs", "0.25"]),
}
SMOKE = ["--max_train_examples", "16", "--batch", "8", "--sft_epochs", "1", "--eval_users", "4", "--valid_users", "4",
         "--eval_batch", "8", "--dpo_pairs", "8", "--sasrec_epochs", "2"]


def log(msg):
    print(f"[accuracy] {msg}", flush=True)


def ensure_model(model_dir: Path, gguf) -> None:
    """Convert the joined GGUF file into `model_dir` (a save_pretrained folder) unless that is done already."""
    if (model_dir / "config.json").is_file():
        return
    if not gguf:
        raise SystemExit(f"accuracy: {model_dir} holds no model and no --gguf file was given")
    from ilrec_trl.models import convert_gguf_to_hf

    t = time.time()
    convert_gguf_to_hf(gguf, model_dir)
    log(f"converted {gguf} -> {model_dir} in {time.time() - t:.0f}s")


def missing(results: Path, dataset, protocol, seed) -> list:
    methods, _ = PROTOCOLS[protocol]
    folder = results / protocol / dataset / f"seed{seed}"
    return [m for m in methods if not (folder / f"{m}.json").exists()]


def gather(results: Path, repo_results, state: Path) -> None:
    """Cells already made (committed, or by an earlier call here) and the carried SFT checkpoints, into `results`."""
    if repo_results and Path(repo_results).is_dir():
        for f in Path(repo_results).rglob("*.json"):
            dest = results / f.relative_to(repo_results)
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest)
    parts = sorted(state.glob("state.tar.part*")) if state.is_dir() else []
    if parts:
        joined = results.parent / "state.tar"
        with joined.open("wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        with tarfile.open(joined) as tar:
            for member in tar.getmembers():
                if not (results / member.name).exists():  # a checkpoint this machine already has stays
                    tar.extract(member, results, filter="data")
        joined.unlink()
        log(f"state: {len(parts)} part(s) from {state} unpacked")


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def pack(results: Path, out: Path, dataset, seeds, report: dict) -> None:
    """`cells.tar.gz` (every cell and run_args.json), `state.tar.part*` (the stored SFT checkpoints of seeds with
    cells still to make) and `accuracy.json` into `out`."""
    import io

    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in sorted(results.rglob("*.json")):
            if "sft_model" not in f.parts:
                tar.add(f, arcname=f"{NAME}/{f.relative_to(results)}")
    write_atomic(out / "cells.tar.gz", buf.getvalue())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for protocol in PROTOCOLS:
            for seed in seeds:
                model = results / protocol / dataset / f"seed{seed}" / "sft_model"
                if model.is_dir() and missing(results, dataset, protocol, seed):
                    tar.add(model, arcname=str(model.relative_to(results)))
    data = buf.getvalue() if report["state_seeds"] else b""
    for old in out.glob("state.tar.part*"):
        old.unlink()
    for i in range(0, len(data), PART_BYTES):
        write_atomic(out / f"state.tar.part{i // PART_BYTES:02d}", data[i:i + PART_BYTES])
    report["state_bytes"] = len(data)
    write_atomic(out / "accuracy.json", json.dumps(report, indent=1).encode())


def harness_args(a, protocol, seed, work: Path) -> list:
    methods, flags = PROTOCOLS[protocol]
    args = ["--dataset", a.dataset, "--seeds", str(seed), "--methods", *methods, *COMMON, *flags,
            "--base_model", os.path.relpath(a.model_dir, work), "--data_dir", str(Path(a.data_dir).resolve()),
            "--out", str(work / NAME / protocol), "--models_dir", str(work / "models" / protocol)]
    if protocol == "continuation" and a.dpo_chosen and Path(a.dpo_chosen).is_file():  # the CPU's validation choice
        chosen = json.loads(Path(a.dpo_chosen).read_text())
        if chosen.get("dpo_lr") is not None:
            args += ["--dpo_lr", str(chosen["dpo_lr"]), "--dpo_beta", str(chosen["dpo_beta"])]
    import torch

    if torch.cuda.is_available():
        args.append("--bf16")  # a CPU (smoke) trains in fp32: CPU bf16 autocast is many times slower
    return args + (SMOKE if a.smoke else []) + a.harness_args.split()


def run(a) -> int:
    started = float(os.environ.get("ILREC_STAGE_STARTED", time.time()))
    work = Path(a.work).resolve()
    results = work / NAME
    results.mkdir(parents=True, exist_ok=True)
    ensure_model(Path(a.model_dir), a.gguf)
    gather(results, a.repo_results, Path(a.state))
    report = {"protocols": list(PROTOCOLS), "common_flags": COMMON, "ran": [], "status": "incomplete"}
    left = lambda: a.budget_s - (time.time() - started)  # noqa: E731
    todo = [(s, p) for s in a.seeds for p in a.protocols if missing(results, a.dataset, p, s)]
    for seed, protocol in todo:
        if left() < a.min_start_s:
            log(f"{left():.0f}s left: seed {seed} ({protocol}) waits for the next call")
            break
        before = missing(results, a.dataset, protocol, seed)
        cmd = [sys.executable, "-m", "benchmarks.accuracy", *harness_args(a, protocol, seed, work)]
        log(f"{protocol} seed {seed}: {before} to make, {left():.0f}s left: {' '.join(cmd[3:])}")
        t = time.time()
        try:
            rc = subprocess.run(cmd, cwd=work, timeout=max(1.0, left() - a.pack_s)).returncode
        except subprocess.TimeoutExpired:
            rc = "budget"
        made = [m for m in before if m not in missing(results, a.dataset, protocol, seed)]
        report["ran"].append({"protocol": protocol, "seed": seed, "made": made, "exit": rc,
                              "seconds": round(time.time() - t, 1)})
        log(f"{protocol} seed {seed}: made {made}, exit {rc}")
        if rc not in (0, "budget"):
            break
    unfinished = [(s, p) for s in a.seeds for p in a.protocols if missing(results, a.dataset, p, s)]
    report.update(status="complete" if not unfinished else "incomplete", elapsed_s=round(time.time() - started, 1),
                  unfinished=[f"{p} seed{s}" for s, p in unfinished],
                  state_seeds=[f"{p} seed{s}" for s, p in unfinished
                               if (results / p / a.dataset / f"seed{s}" / "sft_model").is_dir()])
    pack(results, Path(a.out), a.dataset, a.seeds, report)
    log(f"status {report['status']}; state {report['state_bytes']} bytes; {len(unfinished)} (seed, protocol) left")
    return 0 if all(r["exit"] in (0, "budget") for r in report["ran"]) else 1


def collect(a) -> int:
    """Connected machine: a call's files -> cells under benchmarks/results/, state under .device_kit/state/."""
    files = Path(a.files)
    if (files / "cells.tar.gz").is_file():
        with tarfile.open(files / "cells.tar.gz") as tar:
            tar.extractall(Path(a.results), filter="data")
        log(f"cells unpacked into {Path(a.results) / NAME}")
    check = files / "check.json"
    if check.is_file():  # a passing `check` is recorded: later windows skip it until the code under test changes
        from benchmarks.device.kit import CHECK_RECORD

        result = json.loads(check.read_text())
        counts, env = result["counts"], result.get("env") or {}
        if counts["passed"] and not (counts["failed"] or counts["error"]) and result.get("code_digest"):
            record = Path(a.check_record or CHECK_RECORD)
            record.write_text(json.dumps({"code_digest": result["code_digest"], "counts": counts,
                                          "date": time.strftime("%Y-%m-%d"), "device": env.get("gpu", {})}, indent=1))
            log(f"check passed: recorded in {record} (commit it)")
    if not (files / "accuracy.json").is_file():
        return 0  # call 1's files: the state stays as it is
    state = Path(a.state)
    shutil.rmtree(state, ignore_errors=True)
    parts = sorted(files.glob("state.tar.part*"))
    if parts:
        state.mkdir(parents=True)
        for part in parts:
            shutil.copy2(part, state / part.name)
        log(f"state: {len(parts)} part(s) in {state}: carry it into the next window's accuracy call")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="device side: the next cells within the budget")
    r.add_argument("--work", default=os.environ.get("ILREC_DEVICE_WORK", "/tmp/ilrec_device"))
    r.add_argument("--model_dir", help="the converted model (default <work>/smollm2)")
    r.add_argument("--gguf", help="its GGUF file, converted into --model_dir first when that is empty")
    r.add_argument("--data_dir", required=True)
    r.add_argument("--dataset", default="instruments")
    r.add_argument("--out", required=True, help="folder of the returned files")
    r.add_argument("--state", default=str(REPO / ".device_kit" / "state"), help="carried state (state.tar.part*)")
    r.add_argument("--repo_results", default=str(REPO / "benchmarks" / "results" / NAME))
    r.add_argument("--dpo_chosen", default=str(REPO / "benchmarks/results/accuracy/instruments/sweep/chosen.json"))
    r.add_argument("--seeds", type=int, nargs="+", help="in this order (default 0-9; with --smoke 0)")
    r.add_argument("--protocols", nargs="+", default=["continuation", "paper"], choices=list(PROTOCOLS))
    r.add_argument("--budget_s", type=float, default=float(os.environ.get("ILREC_STAGE_BUDGET_S", 540)))
    r.add_argument("--min_start_s", type=float, default=90.0, help="no new (seed, protocol) with less time left")
    r.add_argument("--pack_s", type=float, default=15.0, help="seconds kept for packing the results")
    r.add_argument("--harness_args", default="", help="more harness flags (appended)")
    r.add_argument("--smoke", action="store_true", help="CPU check: 16 training examples, 4 test users")
    c = sub.add_parser("collect", help="connected machine: unpack a call's returned files")
    c.add_argument("files", help="the call's files_at folder")
    c.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    c.add_argument("--state", default=str(REPO / ".device_kit" / "state"))
    c.add_argument("--check_record", help="default benchmarks/results/gpu/check_passed.json")
    a = p.parse_args(argv)
    if a.command == "collect":
        return collect(a)
    a.model_dir = str(Path(a.model_dir or Path(a.work) / "smollm2").resolve())
    a.seeds = a.seeds or ([0] if a.smoke else list(range(10)))
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
