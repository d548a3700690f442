"""The offline GPU kit's bookkeeping (`benchmarks.device.kit`), on the CPU with small files: the model split across
two transfers is staged, joined and verified on the device; a command that finds the other half missing stops at
once with exit 3; damaged parts are refused; the data slice is deterministic; pytest's report is summarised."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.device import kit, kit_build

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_kit(tmp_path):
    """A kit like make_kit.sh's, with a 3,001-byte stand-in for the GGUF file."""
    staging = tmp_path / "kit"
    (staging / "common" / "wheels").mkdir(parents=True)
    (staging / "common" / "wheels" / "pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
    model = tmp_path / "model.gguf"
    model.write_bytes(bytes(range(256)) * 11 + b"x" * 185)
    manifest = kit_build.assemble(staging, model, {"modules": ["pkg"]})
    return staging, model, manifest


def kit_cli(*args):
    return subprocess.run([sys.executable, "-m", "benchmarks.device.kit", *args], cwd=ROOT, capture_output=True,
                          text=True)


def carried(staging, transfer, dest):
    """What one transfer brings: the kit folder with only that transfer's subfolder."""
    import shutil

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(staging / transfer, dest / transfer)
    return dest


def test_transfers_hold_common_files_and_one_part_each(small_kit):
    staging, model, manifest = small_kit
    parts = manifest["gguf"]["parts"]
    assert [p["transfer"] for p in parts] == list(kit_build.TRANSFERS)
    assert sum(p["size"] for p in parts) == model.stat().st_size
    for transfer, part in zip(kit_build.TRANSFERS, parts):
        folder = staging / transfer
        assert (folder / "wheels" / "pkg-1.0-py3-none-any.whl").read_bytes() == b"wheel"
        assert sorted(p.name for p in (folder / "model").iterdir()) == [part["file"]]
        assert json.loads((folder / "manifest.json").read_text())["transfer"] == transfer
    joined = b"".join((staging / t / "model" / p["file"]).read_bytes() for t, p in zip(kit_build.TRANSFERS, parts))
    assert joined == model.read_bytes()


def test_stage_joins_the_halves_across_two_commands(small_kit, tmp_path):
    staging, model, manifest = small_kit
    work = tmp_path / "machine"
    first = kit_cli("stage", "--kit", str(carried(staging, "a", tmp_path / "call1")), "--work", str(work))
    assert first.returncode == 0 and "not staged yet" in first.stdout
    missing = kit_cli("require-model", "--work", str(work))
    assert missing.returncode == kit.MODEL_EXIT and "STOP" in missing.stdout
    second = kit_cli("stage", "--kit", str(carried(staging, "b", tmp_path / "call2")), "--work", str(work))
    assert second.returncode == 0 and "joined and verified" in second.stdout
    assert (work / "model" / model.name).read_bytes() == model.read_bytes()
    assert not list((work / "model").glob("*.part*"))
    assert kit_cli("require-model", "--work", str(work)).returncode == 0
    again = kit_cli("stage", "--kit", str(tmp_path / "call2"), "--work", str(work))  # idempotent
    assert again.returncode == 0 and "already joined" in again.stdout


def test_fresh_machine_stops_within_seconds(small_kit, tmp_path):
    staging, _, _ = small_kit
    work = tmp_path / "fresh"
    started = time.time()
    staged = kit_cli("stage", "--kit", str(carried(staging, "b", tmp_path / "call2")), "--work", str(work))
    assert staged.returncode == 0
    result = kit_cli("require-model", "--work", str(work))
    assert result.returncode == kit.MODEL_EXIT
    assert "STOP" in result.stdout and "not complete" in result.stdout
    assert time.time() - started < 10
    gone = kit_cli("require-model", "--work", str(tmp_path / "nothing"))
    assert gone.returncode == kit.MODEL_EXIT and "earlier command's files are gone" in gone.stdout


def test_damaged_part_is_refused(small_kit, tmp_path):
    staging, _, manifest = small_kit
    kit_dir = carried(staging, "a", tmp_path / "call1")
    part = kit_dir / "a" / "model" / manifest["gguf"]["parts"][0]["file"]
    data = part.read_bytes()
    part.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    result = kit_cli("stage", "--kit", str(kit_dir), "--work", str(tmp_path / "machine"))
    assert result.returncode == 2 and "damaged" in result.stdout


def test_data_slice_is_a_seeded_subset_with_the_whole_index(tmp_path):
    source = tmp_path / "data" / "instruments"
    source.mkdir(parents=True)
    sequences = {str(u): [u % 7, (u + 1) % 7, (u + 2) % 7] for u in range(50)}
    (source / "Instruments.inter.json").write_text(json.dumps(sequences))
    (source / "Instruments.index.json").write_text(json.dumps({str(i): [f"<a_{i}>"] for i in range(7)}))
    info = kit_build.slice_data(tmp_path / "data", tmp_path / "s1", users=20, seed=3)
    kit_build.slice_data(tmp_path / "data", tmp_path / "s2", users=20, seed=3)
    sliced = json.loads((tmp_path / "s1" / "Instruments.inter.json").read_text())
    assert info["users"] == len(sliced) == 20 and info["source_users"] == 50
    assert all(sliced[u] == sequences[u] for u in sliced)
    assert sliced == json.loads((tmp_path / "s2" / "Instruments.inter.json").read_text())
    assert (tmp_path / "s1" / "Instruments.index.json").read_text() == (source / "Instruments.index.json").read_text()
    with pytest.raises(kit_build.KitError, match="data_dir"):
        kit_build.slice_data(tmp_path / "nowhere", tmp_path / "s3", users=5, seed=0)


def test_junit_summary_counts_outcomes(tmp_path):
    (tmp_path / "j.xml").write_text(
        '<testsuites><testsuite><testcase name="a" time="0.5"/><testcase name="b" time="1">'
        '<failure message="boom">x</failure></testcase><testcase name="c"><skipped message="no gpu"/></testcase>'
        "</testsuite></testsuites>")
    result = kit_cli("junit", "--junit", str(tmp_path / "j.xml"), "--out", str(tmp_path / "check.json"))
    summary = json.loads((tmp_path / "check.json").read_text())
    assert result.returncode == 1  # a failure fails the stage
    assert summary["counts"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 1}
    assert summary["tests"][1] == {"test": "b", "outcome": "failed", "seconds": 1.0, "detail": "boom"}


def test_data_transfer_carries_the_wheels_and_no_model_half(small_kit, tmp_path):
    staging, _, manifest = small_kit
    folder = staging / kit_build.DATA_TRANSFER
    assert (folder / "wheels" / "pkg-1.0-py3-none-any.whl").read_bytes() == b"wheel"
    assert not (folder / "model").exists()
    assert json.loads((folder / "manifest.json").read_text())["transfer"] == kit_build.DATA_TRANSFER
    work = tmp_path / "work"
    proc = kit_cli("stage", "--kit", str(carried(staging, kit_build.DATA_TRANSFER, tmp_path / "dev")), "--work", str(work))
    assert proc.returncode == 0 and "nothing to stage" in proc.stdout
    assert not (work / "model").exists()  # a model half staged earlier on this machine would be left alone
    data = tmp_path / "data"
    for name in kit_build.FULL_DATA:
        (data / name).mkdir(parents=True)
        (data / name / "f.json").write_text(name)
    assert set(kit_build.full_data(data, tmp_path / "full")) == set(kit_build.FULL_DATA)
    assert (tmp_path / "full" / "ml-100k" / "f.json").read_text() == "ml-100k"
    (data / "ml-100k" / "f.json").unlink()
    (data / "ml-100k").rmdir()
    with pytest.raises(kit_build.KitError, match="ml-100k is missing"):
        kit_build.full_data(data, tmp_path / "full2")


def test_check_runs_only_when_the_code_under_test_changed(tmp_path):
    record = tmp_path / "check_passed.json"
    assert kit_cli("check-needed", "--record", str(record)).returncode == 0  # nothing recorded: run it
    record.write_text(json.dumps({"code_digest": kit.code_digest(), "date": "today", "device": "gpu"}))
    skipped = kit_cli("check-needed", "--record", str(record))
    assert skipped.returncode == 10 and "skipped" in skipped.stdout
    record.write_text(json.dumps({"code_digest": "0" * 64}))
    assert kit_cli("check-needed", "--record", str(record)).returncode == 0


def test_working_tree_leaves_room_for_the_largest_kit_folder():
    """Every transfer carries the working tree: with the largest kit folder it must stay within the device's
    transfer limit. Committed model weights or large binaries break this (keep them git-ignored)."""
    tree = kit_build.tree_size(ROOT)
    carried = max(kit_build.KIT_FOLDER_MAX, kit_build.B_FOLDER_MAX + kit_build.STATE_MAX)  # a; b + the state
    assert tree + carried <= kit_build.LIMIT, (
        f"working tree {tree / 2**20:.1f} MiB + the largest carried folders {carried / 2**20:.0f} MiB (a kit folder, or "
        f"half b and the accuracy state) is over the "
        f"{kit_build.LIMIT / 2**20:.0f} MiB transfer limit; the largest tracked files: "
        + ", ".join(f"{p} ({s / 2**20:.1f} MiB)" for s, p in largest_tracked(5)))


def largest_tracked(n):
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    sizes = [((ROOT / p.decode()).stat().st_size, p.decode()) for p in listed if p and (ROOT / p.decode()).is_file()]
    return sorted(sizes, reverse=True)[:n]
