"""Writing files atomically: the content goes to a temporary file in the same folder, which is then renamed over the
target (`os.replace`, atomic on POSIX and Windows). A process killed at any moment leaves the old file or the new
one, never a torn one (at worst a stray `.NAME.*.tmp` beside it). The one writer of results, configurations,
catalogues, caches and command-line outputs; it imports nothing but the standard library."""

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in `path`'s folder to write to; on success it replaces `path`, on any error it is
    removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode(path))  # mkstemp's 0600 would make the result private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_mode(path: Path) -> int:
    """The permissions a replaced file keeps, or those a new file gets under the process's umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_text_atomic(path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through a temporary file in the same folder, then rename: never half-written."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def move_files_atomically(source, destination) -> None:
    """Move every file under the folder `source` to the same relative path under `destination`, each by one rename
    (atomic), then remove `source`: for writers that fill a folder in place (`save_pretrained`), point them at a
    temporary folder beside the destination and move it over, so a killed process leaves each file old or new."""
    source, destination = Path(source), Path(destination)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        target = destination / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    for folder in sorted((p for p in source.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        folder.rmdir()
    source.rmdir()
