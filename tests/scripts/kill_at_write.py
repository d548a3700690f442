"""Used by tests/test_faults.py: run one of ilrec-trl's commands and SIGKILL it at the moment it writes TARGET.

    python tests/scripts/kill_at_write.py TARGET MODULE ARG...      # e.g. ilrec_trl.scripts.train --output_dir ...

The process dies, with nothing flushed or cleaned up, at the first of:
- TARGET opened for writing by Python (`open`, `io.open`, `Path.write_text`): the file is truncated first, as the
  open itself does, so a writer that writes TARGET in place leaves it torn;
- a rename onto TARGET (`os.replace` / `os.rename`: the last step of an atomic write);
- `safetensors.torch.save_file` or `torch.save` to TARGET (written in place by their own code).
A command that never writes TARGET exits normally (the test then sees exit 0, not -9)."""

import builtins
import importlib
import io
import os
import signal
import sys

target = os.path.realpath(sys.argv[1])


def is_target(path) -> bool:
    return isinstance(path, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(path)) == target


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def killing_open(real):
    def open_(file, mode="r", *args, **kwargs):
        if is_target(file) and any(c in mode for c in "wax+"):
            real(file, mode, *args, **kwargs).close()
            die()
        return real(file, mode, *args, **kwargs)
    return open_


def killing_rename(real):
    def rename(src, dst, *args, **kwargs):
        if is_target(dst):
            die()
        return real(src, dst, *args, **kwargs)
    return rename


def killing_save(real, position):
    def save(*args, **kwargs):
        if len(args) > position and is_target(args[position]):
            open(target, "wb").close()
            die()
        return real(*args, **kwargs)
    return save


builtins.open = killing_open(builtins.open)
io.open = killing_open(io.open)
os.replace = killing_rename(os.replace)
os.rename = killing_rename(os.rename)
# before the package is imported, so that `from safetensors.torch import save_file` binds the killing one too
import safetensors.torch  # noqa: E402
import torch  # noqa: E402

safetensors.torch.save_file = killing_save(safetensors.torch.save_file, 1)
torch.save = killing_save(torch.save, 1)

module = importlib.import_module(sys.argv[2])
module.main(sys.argv[3:])
