"""Which operations of a training step make the host wait for the GPU (a device→host synchronisation), and
from where.

During the audited steps, `torch.cuda.set_sync_debug_mode("warn")` makes every synchronising CUDA call (`.item()`,
`.tolist()`, `nonzero`, a boolean-mask index, a host copy, ...) issue a warning; [`SyncAudit`] catches them with the
Python stack at that moment and counts them per call site: the innermost frame in ilrec-trl's code (or, when there is
none, the innermost in trl / transformers / accelerate / torch), with the step they came from. Steps outside the
audited range (the warm-up, logging steps) are not counted. On a machine without CUDA the mode does not exist: the
audit says so instead of reporting zero."""

import traceback
import warnings
from collections import Counter

from transformers import TrainerCallback

SYNC_WARNING = "synchroniz"  # "called a synchronizing CUDA operation"
OWN = ("/ilrec_trl/",)
LIBRARIES = ("/trl/", "/transformers/", "/accelerate/", "/peft/", "/torch/")


def call_site(stack: list[traceback.FrameSummary]) -> str:
    """`file:line (function)` of the innermost frame in ilrec-trl, else in the libraries, else the innermost (the
warning machinery's and this module's frames left out)."""
    stack = [f for f in stack if not f.filename.endswith(("/warnings.py", "/device/sync_audit.py"))]
    for markers in (OWN, LIBRARIES):
        for frame in reversed(stack):
            marker = next((m for m in markers if m in frame.filename), None)
            if marker is not None:
                path = marker.strip("/") + "/" + frame.filename.split(marker, 1)[1]
                return f"{path}:{frame.lineno} ({frame.name})"
    frame = stack[-1]
    return f"{frame.filename}:{frame.lineno} ({frame.name})"


def cuda_sync_mode(mode: str) -> None:
    import torch

    torch.cuda.set_sync_debug_mode(mode)


class SyncAudit(TrainerCallback):
    """Counts the synchronising calls of the steps `first_step+1 .. last_step` (1-based global steps).

    `counts` maps call site to number of calls; `per_step` is the total divided by the audited steps. `set_mode` is
    the switch (torch's CUDA sync debug mode; a test passes its own)."""

    def __init__(self, first_step: int, last_step: int, set_mode=cuda_sync_mode):
        self.first_step, self.last_step, self.set_mode = first_step, last_step, set_mode
        self.counts: Counter = Counter()
        self.steps = 0
        self._catch = None

    def _record(self, message, category, filename, lineno, file=None, line=None):
        if SYNC_WARNING in str(message):
            self.counts[call_site(traceback.extract_stack()[:-1])] += 1

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_step <= state.global_step < self.last_step:
            self._catch = warnings.catch_warnings()
            self._catch.__enter__()
            warnings.simplefilter("always")
            warnings.showwarning = self._record
            self.set_mode("warn")

    def on_step_end(self, args, state, control, **kwargs):
        if self.close():
            self.steps += 1

    def close(self) -> bool:
        """Switch the audit off (CUDA's default mode, the warnings as they were) if it is on; True if it was. Also
        for the caller to run when a step raised (`on_step_end` is not reached then)."""
        if self._catch is None:
            return False
        self.set_mode("default")
        self._catch.__exit__(None, None, None)
        self._catch = None
        return True

    def report(self) -> dict:
        total = sum(self.counts.values())
        return {"steps": self.steps, "syncs_per_step": total / max(self.steps, 1),
                "sites": [{"site": site, "per_step": n / max(self.steps, 1)} for site, n in self.counts.most_common()]}
