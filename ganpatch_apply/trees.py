"""Trees in memory: path -> Entry, their git tree ids, and the checks that make them safe to write.

A tree id is a hash of the unpacked content (file bytes, exec bits, symlinks, names), so it is the
same whether the files come from a git repository, a tarball or a zip, and it does not depend on how
GitHub compresses its archives. `check_safe` runs before any id is computed or anything written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import posixpath

from .errors import RejectedError

MODE_FILE, MODE_EXEC, MODE_LINK, MODE_DIR = '100644', '100755', '120000', '40000'


@dataclasses.dataclass(frozen=True)
class Entry:
    """A file of a tree: git mode (100644, 100755 or 120000) and content (a link's target for 120000)."""
    mode: str
    data: bytes


Files = dict[str, Entry]  # POSIX path relative to the tree root -> Entry


def git_object_id(kind: str, body: bytes) -> bytes:
    """The binary sha1 git gives an object: sha1(b'<kind> <size>\\0' + body)."""
    return hashlib.sha1(b'%s %d\0' % (kind.encode(), len(body)) + body).digest()


def tree_id(files: Files) -> str:
    """The git tree id of `files` (checked by `check_safe`), as `git rev-parse <commit>^{tree}` prints it.

    A tree object lists `<mode> <name>\\0<20-byte id>` per entry, sorted by name where a
    subdirectory sorts as `name/` (git's `base_name_compare`). Empty directories do not exist.
    """
    root: dict = {}
    for path, entry in files.items():
        *parents, leaf = path.split('/')
        node = root
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = entry
    return _hash_directory(root).hex()


def _hash_directory(node: dict) -> bytes:
    records = []
    for name, child in node.items():
        raw = name.encode('utf-8', 'surrogateescape')
        if isinstance(child, dict):
            records.append((raw + b'/', MODE_DIR, raw, _hash_directory(child)))
        else:
            records.append((raw, child.mode, raw, git_object_id('blob', child.data)))
    body = b''.join(b'%s %s\0%s' % (mode.encode(), raw, oid) for _, mode, raw, oid in sorted(records))
    return git_object_id('tree', body)


def check_safe(files: Files, origin: str) -> None:
    """Refuses paths that could write outside the tree, into git's own files, or through a link,
    and a path that is both a file and a folder (an archive can hold `a.py` and `a.py/b.py`)."""
    folders = {'/'.join(path.split('/')[:i]) for path in files for i in range(1, path.count('/') + 1)}
    for path, entry in files.items():
        parts = path.split('/')
        if path.startswith('/') or any(part in ('', '.', '..') for part in parts):
            raise RejectedError(f'{origin}: unsafe path {path!r}', 'archives must hold relative paths without ..')
        if any(part.casefold() == '.git' for part in parts):
            raise RejectedError(f'{origin}: refusing path {path!r} inside .git', 'an upstream tree never holds .git')
        if path in folders:
            below = next(other for other in files if other.startswith(path + '/'))
            if entry.mode == MODE_LINK:
                raise RejectedError(f'{origin}: {below!r} lies behind the symbolic link {path!r}',
                                    'refusing to write through links')
            raise RejectedError(f'{origin}: {path!r} is both a file and a folder (it holds {below!r})',
                                'the archive is malformed or hostile; nothing was cached or written')
        if entry.mode not in (MODE_FILE, MODE_EXEC, MODE_LINK):
            raise RejectedError(f'{origin}: {path!r} has the unsupported mode {entry.mode}',
                                'an upstream tree holds only files, executables and symbolic links')
        if entry.mode == MODE_LINK:
            target = entry.data.decode('utf-8', 'surrogateescape')
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if target.startswith('/') or resolved == '..' or resolved.startswith('../'):
                raise RejectedError(f'{origin}: symbolic link {path!r} -> {target!r} points outside the tree',
                                    'refusing links that escape the tree')
