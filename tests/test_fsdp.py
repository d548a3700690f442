"""FSDP (version 2) with 2 CPU processes, launched with the shipped accelerate config `fsdp2.yaml` (as
`ilrec-train --accelerate_config fsdp2` does): the same losses and ILRec metrics as one process with the combined
batch (steps 2 and 3 equal only if the sharded update equals the unsharded one)."""

import pytest

from tests.test_multiprocess import REPO, losses, run, single  # noqa: F401  (single: the one-process reference)

pytestmark = pytest.mark.slow
CONFIG = REPO / "ilrec_trl" / "scripts" / "accelerate_configs" / "fsdp2.yaml"


def test_fsdp2_two_processes_equal_one_process(tmp_path, single):  # noqa: F811
    res = run(tmp_path, "fsdp2", ["--config_file", str(CONFIG), "--num_processes", "2"], "--per_device_batch", "4")
    assert res["world_size"] == 2
    assert losses(res) == pytest.approx(losses(single), rel=1e-4)
    for key in ("nll", "cpo", "cpd", "crr", "negatives_per_token"):
        assert [e[key] for e in res["logs"]] == pytest.approx([e[key] for e in single["logs"]], rel=1e-3, abs=1e-6)
