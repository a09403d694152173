"""The cache: `$GANPATCH_CACHE/trees/<tree id>.tar` (default ~/.cache/ganpatch), one plain tar per tree.

It is only a cache: an entry is re-verified on every read, and one that cannot be read as the
verified tree (corrupt, a folder, unreadable) is discarded with a warning, never fatal. A cache
that cannot be written (read-only, or a file) only costs a warning; a verified source still builds.
"""
from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from .archives import match_tree, read_archive
from .errors import GanpatchError, log
from .pins import Source
from .trees import MODE_EXEC, MODE_LINK, Entry, Files


def cache_dir() -> Path:
    return Path(os.environ.get('GANPATCH_CACHE') or Path.home() / '.cache' / 'ganpatch')


def cache_path(source: Source) -> Path:
    return cache_dir() / 'trees' / f'{source.tree}.tar'


def is_cached(source: Source) -> bool:
    return cache_path(source).is_file()


def read_cache(source: Source) -> Files | None:
    """The cached verified tree, or None (no entry, or a bad one, which is then discarded)."""
    path = cache_path(source)
    if not os.path.lexists(path):
        return None
    origin = f'cache entry {path}'
    try:
        return match_tree(read_archive(path, origin), source, origin)
    except (GanpatchError, OSError, ValueError) as exc:
        log(f'warning: {exc}; discarding the cache entry')
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as exc:
        log(f'warning: cannot remove {path} ({exc.strerror or exc}); ignoring it')
    return None


def write_cache(source: Source, files: Files) -> str | None:
    """Stores the tree (a deterministic tar, written under a temporary name and renamed into place).

    Returns None, or why it could not be stored (the caller decides whether that matters).
    """
    path = cache_path(source)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f'.{source.tree}.', suffix='.tmp', delete=False)
    except OSError as exc:
        return f'cannot write the cache {cache_dir()} ({exc.strerror or exc})'
    try:
        with handle, tarfile.open(fileobj=handle, mode='w', format=tarfile.PAX_FORMAT) as archive:
            for name in sorted(files):
                archive.addfile(*tar_member(name, files[name]))
        os.replace(handle.name, path)
    except OSError as exc:
        Path(handle.name).unlink(missing_ok=True)
        return f'cannot write {path} ({exc.strerror or exc})'
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return None


def tar_member(name: str, entry: Entry) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    if entry.mode == MODE_LINK:
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.data.decode('utf-8', 'surrogateescape'), 0o777
        return info, None
    info.size, info.mode = len(entry.data), 0o755 if entry.mode == MODE_EXEC else 0o644
    return info, io.BytesIO(entry.data)
