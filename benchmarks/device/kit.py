#!/usr/bin/env python
"""The offline GPU kit: built on a connected machine, carried to an offline GPU machine in transfers of at most
64 MiB (the repository's working tree included), staged and checked there. Standard library only (its device-side
commands run before the kit's wheels are installed). See docs/gpu.md.

Connected machine (`benchmarks/device/make_kit.sh` calls this):

    python -m benchmarks.device.kit build --kit .device_kit --data_dir ../shared/data

builds `.device_kit/a/` and `.device_kit/b/`, one folder per transfer. Both hold the same `common` part (the wheels
the GPU machine lacks, an Instruments slice, SmolLM2's config and tokenizer, `manifest.json`); `a` adds the first
half of SmolLM2-135M-Instruct's GGUF file and `b` the second half (the file is ~94 MiB: no transfer holds it).
`.device_kit/c/` holds the wheels and the whole data folder (Instruments and MovieLens-100K) and no model (for
running the accuracy harness on whole data sets offline; no `run.sh` stage carries it).

GPU machine (`benchmarks/device/run.sh` calls these; `--work` is a folder that lives as long as the machine):

    python -m benchmarks.device.kit stage --kit .device_kit --work /tmp/ilrec_device   # copy the carried half in;
                                                                                       # join when both are there
    python -m benchmarks.device.kit require-model --work /tmp/ilrec_device             # exit 3 at once if not joined
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from benchmarks.device.kit_build import (
    DATA_TRANSFER,
    KIT_MODULES,
    MODEL_EXIT,
    REPO,
    TRANSFERS,
    KitError,
    build,
    log,
    report_sizes,
    sha256,
)


# ------------------------------------------------------------------------------------------ device side
def carried_manifests(kit: Path) -> list[dict]:
    found = []
    for transfer in (*TRANSFERS, DATA_TRANSFER):
        path = kit / transfer / "manifest.json"
        if path.is_file():
            found.append(json.loads(path.read_text()))
    return found


def joined_path(work: Path, manifest: dict) -> Path:
    return work / "model" / manifest["gguf"]["name"]


def stage(args) -> int:
    """Copy the carried half of the model into `work`; join and verify once both halves are there. Idempotent."""
    kit, work = Path(args.kit), Path(args.work)
    manifests = carried_manifests(kit)
    if not manifests:
        log(f"no transfer folder under {kit} (carry .device_kit/a or .device_kit/b)")
        return 2
    manifests = [m for m in manifests if m.get("transfer") in TRANSFERS]
    if not manifests:
        log(f"transfer {DATA_TRANSFER} carries the wheels and the data, no model half: nothing to stage")
        return 0
    manifest = manifests[0]
    model_dir = work / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    staged_manifest = work / "manifest.json"
    if staged_manifest.is_file():
        old = json.loads(staged_manifest.read_text())
        if old["gguf"]["sha256"] != manifest["gguf"]["sha256"]:
            log(f"{work} holds another kit's model parts (built {old['created']}); removing them")
            shutil.rmtree(model_dir)
            model_dir.mkdir()
    staged_manifest.write_text(json.dumps(manifest, indent=1))
    target = joined_path(work, manifest)
    if target.is_file():
        log(f"model already joined: {target}")
        return 0
    for m in manifests:
        part = next(p for p in manifest["gguf"]["parts"] if p["transfer"] == m["transfer"])
        src, dst = kit / m["transfer"] / "model" / part["file"], model_dir / part["file"]
        if dst.is_file() and dst.stat().st_size == part["size"]:
            continue
        if not src.is_file() or sha256(src) != part["sha256"]:
            raise KitError(f"{src} is missing or damaged (sha256 differs from the manifest): rebuild the kit")
        shutil.copyfile(src, dst.with_suffix(".tmp"))
        dst.with_suffix(".tmp").replace(dst)
        log(f"staged {part['file']} ({part['size'] / 2**20:.1f} MiB) in {model_dir}")
    missing = [p for p in manifest["gguf"]["parts"] if not (model_dir / p["file"]).is_file()]
    if missing:
        log("model half from transfer(s) " + ", ".join(p["transfer"] for p in missing) + " not staged yet: "
            "run the next command (it carries the other half) within ~30 s, while this machine is still warm")
        return 0
    partial = target.with_suffix(".joining")
    with open(partial, "wb") as dst:
        for p in manifest["gguf"]["parts"]:
            with open(model_dir / p["file"], "rb") as src:
                shutil.copyfileobj(src, dst, 16 << 20)
    if sha256(partial) != manifest["gguf"]["sha256"]:
        partial.unlink()
        raise KitError("the joined model's sha256 differs from the manifest: rebuild the kit")
    partial.replace(target)
    for p in manifest["gguf"]["parts"]:
        (model_dir / p["file"]).unlink()
    log(f"joined and verified {target} ({target.stat().st_size / 2**20:.1f} MiB)")
    return 0


def require_model(args) -> int:
    """Exit 0 when the joined model (or its converted folder) is on this machine, else say why and exit 3."""
    work = Path(args.work)
    staged = work / "manifest.json"
    if staged.is_file():
        manifest = json.loads(staged.read_text())
        if joined_path(work, manifest).is_file() or (work / "smollm2" / "config.json").is_file():
            return 0
        have = sorted(p.name for p in (work / "model").glob("*.part*"))
        log(f"the model is not complete on this machine: staged parts {have or 'none'}; the other transfer's half "
            "is missing")
    else:
        log(f"nothing staged in {work}: the earlier command's files are gone (this is a fresh machine: the last "
            "one was given back after ~30 s idle)")
    log("STOP: run the command that carries the other transfer folder first (docs/gpu.md, 'if a command finds its "
        "predecessor's files gone'), then this one again at once")
    return MODEL_EXIT


ENV_PACKAGES = ("torch", "transformers", "accelerate", "peft", "tokenizers", "safetensors", "numpy", "pyarrow",
                "pandas", "huggingface-hub", "fsspec", "xxhash", "triton", "trl", "datasets", "dill", "multiprocess",
                "gguf", "deepspeed")


def environment(args) -> int:
    """Versions, the GPU, and whether the kit's wheels' requirements hold against what is installed here. Exit 4
    when a GPU is required and none is visible."""
    from importlib import metadata

    report = {"stage": args.stage, "python": sys.version.split()[0], "packages": {}, "requirement_warnings": []}
    for name in ENV_PACKAGES:
        try:
            report["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            report["packages"][name] = None
    try:
        from packaging.requirements import Requirement

        for module in KIT_MODULES:
            try:
                requires = metadata.requires(module) or []
            except metadata.PackageNotFoundError:
                report["requirement_warnings"].append(f"{module} is not installed")
                continue
            for line in requires:
                req = Requirement(line)
                if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                    continue
                try:
                    have = metadata.version(req.name)
                except metadata.PackageNotFoundError:
                    report["requirement_warnings"].append(f"{module} needs {req}: not installed")
                    continue
                if req.specifier and not req.specifier.contains(have, prereleases=True):
                    report["requirement_warnings"].append(f"{module} needs {req}, found {have}")
    except ImportError:
        report["requirement_warnings"].append("packaging not importable: requirements not checked")
    import torch

    report["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        report["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                         "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    log(f"python {report['python']}, " + ", ".join(f"{k} {v}" for k, v in report["packages"].items() if v))
    log(f"GPU: {report.get('gpu', 'none visible')}")
    for warning in report["requirement_warnings"]:
        log(f"warning: {warning}")
    if args.require_cuda and not torch.cuda.is_available():
        log("ERROR: no CUDA device visible (run with --smoke to check the stage on a CPU)")
        return 4
    return 0


CHECKED_CODE = ("ilrec_trl", "tests/test_cuda_trainer.py", "tests/conftest.py")  # what `check` tests
CHECK_RECORD = REPO / "benchmarks" / "results" / "gpu" / "check_passed.json"


def code_digest(root=REPO) -> str:
    """SHA-256 of the code `check` tests (every .py file of CHECKED_CODE, by path and content)."""
    import hashlib

    digest = hashlib.sha256()
    for entry in CHECKED_CODE:
        path = Path(root) / entry
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()


def check_needed(args) -> int:
    """Exit 0 when `check` must run (the code it tests changed since its last recorded pass), else 10."""
    record = json.loads(Path(args.record).read_text()) if Path(args.record).is_file() else {}
    if record.get("code_digest") == code_digest():
        log(f"check: skipped, the code under test is the one that passed on {record.get('date')} "
            f"({record.get('device')}); {args.record}")
        return 10
    log("check: the code under test changed since its last recorded pass (or none is recorded): running it")
    return 0


def junit_summary(args) -> int:
    """Fold pytest's JUnit XML into the stage's JSON: counts and each test's outcome and time."""
    import xml.etree.ElementTree as ET

    root = ET.parse(args.junit).getroot()
    tests = []
    for case in root.iter("testcase"):
        outcome = "passed"
        detail = None
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                detail = (node.get("message") or node.text or "")[:600]
        tests.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0)),
                      **({"detail": detail} if detail else {})})
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    env = json.loads(Path(args.env).read_text()) if args.env and Path(args.env).is_file() else None
    Path(args.out).write_text(json.dumps({"counts": counts, "tests": tests, "env": env,
                                          "code_digest": code_digest()}, indent=1))
    log("check: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    return 0 if counts["passed"] and not (counts["failed"] or counts["error"]) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the kit (connected machine)")
    b.add_argument("--kit", default=str(REPO / ".device_kit"))
    b.add_argument("--data_dir", default=os.environ.get("ILREC_DATA_DIR", str(REPO.parent / "shared" / "data")))
    b.add_argument("--users", type=int, default=6000, help="Instruments users in the slice")
    b.add_argument("--seed", type=int, default=0, help="seed of the user sample")
    b.add_argument("--cache", default="~/.cache/ilrec_trl/kit", help="where the fetched GGUF file is kept")
    s = sub.add_parser("sizes", help="print each transfer's size with the working tree")
    s.add_argument("--kit", default=str(REPO / ".device_kit"))
    e = sub.add_parser("env", help="versions, GPU, requirement check (device side)")
    e.add_argument("--stage", default="")
    e.add_argument("--out", required=True)
    e.add_argument("--require_cuda", action="store_true")
    j = sub.add_parser("junit", help="fold pytest's JUnit XML into a JSON summary")
    j.add_argument("--junit", required=True)
    j.add_argument("--env")
    j.add_argument("--out", required=True)
    n = sub.add_parser("check-needed", help="exit 10 when `check` already passed on the code under test")
    n.add_argument("--record", default=str(CHECK_RECORD))
    for name in ("stage", "require-model"):
        p = sub.add_parser(name)
        p.add_argument("--kit", default=str(REPO / ".device_kit"))
        p.add_argument("--work", default=os.environ.get("ILREC_DEVICE_WORK", "/tmp/ilrec_device"))
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            return build(args)
        if args.command == "sizes":
            return report_sizes(Path(args.kit).resolve())
        if args.command == "stage":
            return stage(args)
        if args.command == "env":
            return environment(args)
        if args.command == "junit":
            return junit_summary(args)
        if args.command == "check-needed":
            return check_needed(args)
        return require_model(args)
    except KitError as err:
        log(f"ERROR: {err}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
