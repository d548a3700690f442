"""The GPU overhead stage's host-sync audit (benchmarks/device/sync_audit.py), on the CPU: CUDA's sync debug mode
is replaced by a switch that makes a stand-in "synchronising" call warn as torch does, and the audit must count those
calls per call site, only in the audited steps."""

import warnings
from types import SimpleNamespace

from benchmarks.device.sync_audit import SyncAudit, call_site

MODE = {"on": False}


def fake_sync():  # what a synchronising CUDA op does under set_sync_debug_mode("warn")
    if MODE["on"]:
        warnings.warn("called a synchronizing CUDA operation", UserWarning)


def set_mode(mode):
    MODE["on"] = mode == "warn"


def step(audit, global_step, syncs):
    state = SimpleNamespace(global_step=global_step)
    audit.on_step_begin(None, state, None)
    for _ in range(syncs):
        fake_sync()
    warnings.warn("an unrelated warning")  # not a sync: not counted
    audit.on_step_end(None, state, None)


def test_counts_syncs_per_call_site_in_the_audited_steps_only():
    audit = SyncAudit(first_step=2, last_step=4, set_mode=set_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for global_step, syncs in enumerate([5, 5, 3, 1, 7]):  # steps 2 and 3 are audited: 3 + 1 calls
            step(audit, global_step, syncs)
    report = audit.report()
    assert report["steps"] == 2 and report["syncs_per_step"] == 2.0
    assert len(report["sites"]) == 1 and "test_sync_audit.py" in report["sites"][0]["site"]
    assert "(fake_sync)" in report["sites"][0]["site"] and report["sites"][0]["per_step"] == 2.0
    assert MODE["on"] is False  # switched off after each audited step


def test_call_site_prefers_ilrec_trl_frames():
    import traceback

    stack = [traceback.FrameSummary("/x/site-packages/transformers/trainer.py", 10, "train"),
             traceback.FrameSummary("/repo/ilrec_trl/trainer/request.py", 35, "check_reward_values"),
             traceback.FrameSummary("/x/site-packages/torch/_tensor.py", 99, "item")]
    assert call_site(stack) == "ilrec_trl/trainer/request.py:35 (check_reward_values)"
    assert call_site([stack[0], stack[2]]) == "torch/_tensor.py:99 (item)"


def test_close_after_a_step_that_raised_restores_the_mode_and_the_warnings():
    audit = SyncAudit(first_step=0, last_step=1, set_mode=set_mode)
    showwarning = warnings.showwarning
    audit.on_step_begin(None, SimpleNamespace(global_step=0), None)  # the step raises: on_step_end never runs
    assert MODE["on"] is True and warnings.showwarning != showwarning
    assert audit.close() is True and audit.close() is False
    assert MODE["on"] is False and warnings.showwarning == showwarning and audit.report()["steps"] == 0
