"""Reading a source into a `Files` mapping: tar and zip archives, and git repositories.

Nothing is extracted to disk: archives are read into memory, checked (`trees.check_safe`) and
matched against the pinned tree id before anything is written anywhere.
"""
from __future__ import annotations

import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from .errors import GanpatchError, RejectedError
from .git import first_error, run_git
from .pins import Source
from .trees import MODE_EXEC, MODE_FILE, MODE_LINK, Entry, Files, check_safe, tree_id


class UnreadableSource(GanpatchError):
    """A git repository that exists but that git refuses to read (ownership, corruption, permissions)."""


def _member_path(name: str, origin: str) -> str:
    path = name.removeprefix('./').rstrip('/')
    if path.startswith('/') or '\\' in path or '..' in path.split('/'):
        raise RejectedError(f'{origin}: unsafe path {name!r}', 'archives must hold relative paths without ..')
    return path


def read_tar(fileobj, origin: str) -> Files:
    """Regular files, symlinks and hardlinks to earlier files; anything else is refused."""
    files: Files = {}
    try:
        with tarfile.open(fileobj=fileobj, mode='r:*') as archive:
            for member in archive:
                path = _member_path(member.name, origin)
                if member.isdir():
                    continue
                if member.isreg():
                    data = archive.extractfile(member).read()
                    files[path] = Entry(MODE_EXEC if member.mode & 0o100 else MODE_FILE, data)
                elif member.issym():
                    files[path] = Entry(MODE_LINK, member.linkname.encode('utf-8', 'surrogateescape'))
                elif member.islnk():
                    target = _member_path(member.linkname, origin)
                    if files.get(target, Entry(MODE_LINK, b'')).mode == MODE_LINK:
                        raise RejectedError(f'{origin}: hard link {path!r} -> {member.linkname!r} does not name '
                                            'an earlier file of the archive', 'refusing hard links out of the tree')
                    files[path] = files[target]
                else:
                    raise RejectedError(f'{origin}: special file {member.name!r} (device, fifo or similar)',
                                        'an upstream tree holds only files, links and directories')
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise RejectedError(f'{origin}: not a readable tar archive ({exc})',
                            'check the file or fetch it again') from exc
    return files


def read_zip(path: Path, origin: str) -> Files:
    """Zip entries with their unix modes; special files are refused."""
    files: Files = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = _member_path(info.filename, origin)
                mode = info.external_attr >> 16
                if info.is_dir() or stat.S_ISDIR(mode):
                    continue
                if stat.S_ISLNK(mode):
                    files[name] = Entry(MODE_LINK, archive.read(info))
                elif stat.S_ISREG(mode) or mode == 0:
                    files[name] = Entry(MODE_EXEC if mode & 0o100 else MODE_FILE, archive.read(info))
                else:
                    raise RejectedError(f'{origin}: special file {info.filename!r}',
                                        'an upstream tree holds only files, links and directories')
    except (zipfile.BadZipFile, OSError, zlib.error, EOFError) as exc:
        raise RejectedError(f'{origin}: not a readable zip archive ({exc})',
                            'check the file or fetch it again') from exc
    return files


def read_archive(path: Path, origin: str) -> Files:
    if path.suffix == '.zip':
        return read_zip(path, origin)
    try:
        with path.open('rb') as fileobj:
            return read_tar(fileobj, origin)
    except OSError as exc:  # a folder, or no permission
        raise RejectedError(f'{origin}: cannot read it ({exc.strerror or exc})', 'check the file') from exc


def is_git_repository(path: Path) -> bool:
    return path.is_dir() and ((path / '.git').exists() or ((path / 'objects').is_dir() and (path / 'HEAD').is_file()))


def read_git(repository: Path, commit: str, origin: str) -> Files | None:
    """The tree of `commit` in a (bare or not) git repository; None when the commit is not there.

    The repository may belong to another user (a shared mirror): it is read with
    `-c safe.directory=<it>`, so git's ownership check does not turn it into "lacks the commit".
    Any other failure is reported with git's own message.
    """
    trusted = ['-c', f'safe.directory={repository.resolve()}']
    probe = run_git([*trusted, 'rev-parse', '--verify', '--quiet', f'{commit}^{{commit}}'], cwd=repository,
                    check=False)
    if probe.returncode == 1 and not probe.stderr.strip():
        return None
    if probe.returncode != 0:
        raise UnreadableSource(f'{origin}: git cannot read it: {first_error(probe.stderr)}',
                               'check its permissions and integrity (git fsck), or use another source')
    listing = run_git([*trusted, 'ls-tree', '-r', '-z', '--full-tree', commit], cwd=repository, check=False)
    if listing.returncode != 0:
        raise RejectedError(f'{origin}: cannot list commit {commit[:12]}: {first_error(listing.stderr)}',
                            'the repository is damaged (git fsck); use another source')
    entries = []
    for record in filter(None, listing.stdout.split(b'\0')):
        meta, path = record.split(b'\t', 1)
        mode, kind, oid = meta.decode().split()
        if kind != 'blob':
            raise RejectedError(f'{origin}: {path.decode()!r} is a {kind} (submodules are not supported)')
        entries.append((path.decode('utf-8', 'surrogateescape'), mode, oid))
    blobs = _read_blobs(repository, trusted, {oid for _, _, oid in entries}, origin)
    return {path: Entry(mode, blobs[oid]) for path, mode, oid in entries}


def _read_blobs(repository: Path, trusted: list[str], oids: set[str], origin: str) -> dict[str, bytes]:
    """All blobs in one `git cat-file --batch` call; a missing one (a broken or partial clone) is refused."""
    ordered = sorted(oids)
    out = run_git([*trusted, 'cat-file', '--batch'], cwd=repository,
                  stdin=''.join(f'{oid}\n' for oid in ordered).encode()).stdout
    blobs, offset = {}, 0
    for oid in ordered:
        header_end = out.index(b'\n', offset)
        header = out[offset:header_end].split()
        if len(header) != 3:
            raise RejectedError(f'{origin}: object {oid} is {header[-1].decode(errors="replace")} '
                                '(a damaged or partial clone)', 'repair it (git fsck, git fetch) or use another source')
        start = header_end + 1
        blobs[oid] = out[start:start + int(header[2])]
        offset = start + int(header[2]) + 1
    return blobs


def read_source(path: Path, source: Source) -> Files | None:
    """A git repository or an archive; None when a repository lacks the commit."""
    origin = str(path)
    if is_git_repository(path):
        return read_git(path, source.commit, origin)
    if path.is_file():
        return read_archive(path, origin)
    raise GanpatchError(f'{path} is neither a git repository nor an archive',
                        'give a git repository, a .tar.gz/.tgz/.tar or a .zip')


def match_tree(files: Files, source: Source, origin: str) -> Files:
    """The files whose tree id is the pinned one, stripping an archive's single top directory.

    GitHub's archives put everything under `<repo>-<commit>/`; a tree that has a single top
    directory of its own is recognised by trying the unstripped id second.
    """
    candidates = []
    tops = {path.split('/', 1)[0] for path in files}
    if len(tops) == 1 and all('/' in path for path in files):
        top = tops.pop()
        candidates.append({path[len(top) + 1:]: entry for path, entry in files.items()})
    candidates.append(files)
    found = []
    for candidate in candidates:
        check_safe(candidate, origin)
        found.append(tree_id(candidate))
        if found[-1] == source.tree:
            return candidate
    raise RejectedError(f'{origin}: tree id {found[0]} does not match the lock ({source.tree}) '
                        f'for {source.slug}@{source.commit}',
                        'the source is not the pinned commit or was altered; nothing was cached or written')
