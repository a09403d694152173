"""One apply.py at a time per destination, and per target for patches/ and overlays/.

A destination's lock is `flock` on `<parent>/.<name>.ganpatch-lock` (a small file beside the tree
that holds the owner's pid; it stays after use, like any lock file). When the parent folder is
not writable, the parent folder itself is locked. A second apply.py waits, saying for whom.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from .errors import log


@contextlib.contextmanager
def exclusive(path: Path, what: str, *, shared: bool = False):
    """Holds a lock on the file `path` (created if needed; its nearest existing folder as a fallback)."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, is_file = _open_lock(path)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(descriptor, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(descriptor) if is_file else None
            log(f'waiting for another apply.py{f" (pid {owner})" if owner else ""} working on {what} ...')
            fcntl.flock(descriptor, mode)
        if is_file and not shared:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f'{os.getpid()}\n'.encode(), 0)
        yield
    finally:
        os.close(descriptor)


def _open_lock(path: Path) -> tuple[int, bool]:
    """The lock file (read-write, or read-only when another user made it), else the parent folder."""
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
        try:
            return os.open(path, flags, 0o666), flags != os.O_RDONLY
        except OSError:
            continue
    folder = path.parent
    while not folder.is_dir():
        folder = folder.parent
    return os.open(folder, os.O_RDONLY), False


def is_busy(path: Path) -> str | None:
    """None when nobody holds the lock, else a description of the holder (for --status)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        owner = _read_owner(descriptor)
        return f'another apply.py{f" (pid {owner})" if owner else ""} is working on it'
    finally:
        os.close(descriptor)


def _read_owner(descriptor: int) -> str | None:
    try:
        text = os.pread(descriptor, 32, 0).decode().strip()
    except OSError:
        return None
    return text if text.isdigit() else None


def destination_lock_path(dest: Path) -> Path:
    return dest.with_name(f'.{dest.name}.ganpatch-lock')


def destination(dest: Path, shown: str):
    return exclusive(destination_lock_path(dest), shown)
