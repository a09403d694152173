#!/usr/bin/env python3
"""Build patched trees of the pinned upstream GAN codebases.

The model
---------
`upstream.lock` pins every target to a full upstream commit and to the git *tree id* of that
commit. A tree id is a hash of the unpacked content (file bytes, exec bits, symlinks, names), so
it is the same whether the files come from a git repository, a tarball or a zip, and it does not
depend on how GitHub compresses its archives.

Getting the upstream (`fetch_upstream`). Sources are tried in this order:

1. the cache, `$GANPATCH_CACHE` (default `~/.cache/ganpatch`): `trees/<tree id>.tar`, one plain
   tar per tree, re-verified on every read;
2. `--source PATH`: a git repository holding the commit, or a `.tar.gz`/`.tgz`/`.tar`/`.zip`;
3. `--mirror DIR` or `$GANPATCH_MIRROR`: `DIR/<repo>[.git]`, `DIR/<owner>/<repo>[.git]`
   (git repositories) or `DIR/<repo>-<commit>.tar.gz`/`.zip`;
4. GitHub's archive of the commit over HTTPS (stdlib, proxy variables honoured); `--offline`
   forbids this step.

Every source is read into memory as a `Files` mapping (path -> `Entry(mode, data)`), checked for
unsafe paths, and its tree id is recomputed in pure Python (`tree_id`). A mismatch with the lock is
an error and nothing is cached or written. Cache entries are written under a temporary name and
renamed into place.

Building (`build_tree`), always in a fresh directory beside the destination:

1. `git init`; the pristine tree is imported with `git fast-import` (exact bytes, no filters)
   as one commit under a fixed identity and date, tagged `upstream`;
2. the patches of `patches/<target>/series` are checked with `git apply --check` (zero fuzz, in
   order, all before any is applied) and applied with `git am`: one commit per patch, with the
   patch's subject and description;
3. `overlays/common/ganpatch/` is copied to `ganpatch/` and `overlays/<target>/` to the tree
   root, as one commit with the subject `ganpatch: overlays`, tagged `ganpatch-overlays`;
4. a stamp, `.git/ganpatch-stamp.json`, records the lock entry, the sha256 of every patch and
   overlay file, and the commit the tree was built at.

The finished directory is then renamed onto the destination. Nothing half-built ever appears
there: a failure removes the temporary directory (with `--3way`, a failing patch keeps it as a
conflict tree instead, and its path is printed).

Re-running compares the destination with its stamp (`inspect_tree`): the same stamp and no local
work is a no-op; a clean tree built from older inputs is rebuilt; a tree holding work that is not
in `patches/` or `overlays/` (uncommitted changes, untracked or ignored files other than byte-code,
commits after the built one) is refused unless `--force`, which moves it to a backup directory.

`--refresh` is the way back from a tree to the repository: the commits between `upstream` and the
overlay commit become `patches/<target>/` again (`git format-patch --zero-commit --no-signature`,
only changed files rewritten, series updated), and overlay files edited in the tree are copied back
to `overlays/`. Commits made *after* the overlay commit are handled too: those touching only
overlay files need nothing (the files are copied back), those touching only upstream files become
new patches at the end of the series, and a commit mixing both is refused.

Exit codes: 0 success, 1 error (bad input, lock, git), 2 usage, 3 no upstream source available,
4 upstream rejected (tree id mismatch or unsafe archive), 5 a patch does not apply, 6 the
destination holds local work.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
LOCK_PATH = ROOT / 'upstream.lock'
PATCHES_DIR = ROOT / 'patches'
OVERLAYS_DIR = ROOT / 'overlays'
COMMON_OVERLAY_DIR = OVERLAYS_DIR / 'common' / 'ganpatch'
PACKAGE_DIR_IN_TREE = 'ganpatch'

STAMP_NAME = 'ganpatch-stamp.json'
STAMP_FORMAT = 1
UPSTREAM_TAG = 'upstream'
OVERLAY_TAG = 'ganpatch-overlays'
OVERLAY_SUBJECT = 'ganpatch: overlays'
BRANCH = 'main'
SKIPPED_OVERLAY_NAMES = ('__pycache__', '.pytest_cache')
SKIPPED_OVERLAY_SUFFIXES = ('.pyc', '.pyo')

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_NO_SOURCE, EXIT_REJECTED, EXIT_PATCH, EXIT_LOCAL_WORK = 3, 4, 5, 6

# Every commit apply.py makes uses this identity and date, so a build is reproducible bit for bit.
FIXED_DATE = '946684800 +0000'  # 2000-01-01T00:00:00Z
IDENTITY_ENV = {
    'GIT_AUTHOR_NAME': 'ganpatch', 'GIT_AUTHOR_EMAIL': 'ganpatch@localhost', 'GIT_AUTHOR_DATE': FIXED_DATE,
    'GIT_COMMITTER_NAME': 'ganpatch', 'GIT_COMMITTER_EMAIL': 'ganpatch@localhost', 'GIT_COMMITTER_DATE': FIXED_DATE,
}

MODE_FILE, MODE_EXEC, MODE_LINK, MODE_DIR = '100644', '100755', '120000', '40000'


# ------------------------------------------------------------------------------------------------
# Errors: one line saying what went wrong, one line saying what to do, and an exit code.

class GanpatchError(Exception):
    code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None, details: list[str] | None = None):
        super().__init__(message)
        self.hint = hint
        self.details = details or []


class NoSourceError(GanpatchError):
    code = EXIT_NO_SOURCE


class RejectedError(GanpatchError):
    code = EXIT_REJECTED


class PatchError(GanpatchError):
    code = EXIT_PATCH
    merged = False  # set when --3way handed the patch to `git am -3`


class LocalWorkError(GanpatchError):
    code = EXIT_LOCAL_WORK


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# The lock.

@dataclasses.dataclass(frozen=True)
class Pin:
    """One table of upstream.lock."""
    target: str
    repo: str
    commit: str
    tree: str
    license: str
    aliases: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        """`owner/name` of the GitHub repository."""
        return self.repo.removeprefix('https://github.com/').removesuffix('.git')

    @property
    def owner(self) -> str:
        return self.slug.split('/')[0]

    @property
    def name(self) -> str:
        return self.slug.split('/')[1]

    def as_dict(self) -> dict:
        return {'repo': self.repo, 'commit': self.commit, 'tree': self.tree, 'license': self.license}


_HEX40 = re.compile(r'[0-9a-f]{40}')
_GITHUB_REPO = re.compile(r'https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+')


def load_lock(path: Path = LOCK_PATH) -> dict[str, Pin]:
    """Reads and validates upstream.lock; returns the pins by target name, in file order."""
    hint = f'fix {path.name} (TOML: one table per target with repo, commit, tree, license)'
    try:
        tables = tomllib.loads(path.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise GanpatchError(f'cannot read {path}: {exc}', hint) from exc
    pins = {}
    for target, table in tables.items():
        if not isinstance(table, dict):
            raise GanpatchError(f'{path.name}: [{target}] is not a table', hint)
        missing = [key for key in ('repo', 'commit', 'tree', 'license') if not isinstance(table.get(key), str)]
        if missing:
            raise GanpatchError(f'{path.name}: [{target}] lacks {", ".join(missing)}', hint)
        if not _GITHUB_REPO.fullmatch(table['repo']):
            raise GanpatchError(f'{path.name}: [{target}] repo {table["repo"]!r} is not '
                                'https://github.com/OWNER/NAME', hint)
        for key in ('commit', 'tree'):
            if not _HEX40.fullmatch(table[key]):
                raise GanpatchError(f'{path.name}: [{target}] {key} must be 40 lowercase hex digits, '
                                    f'not {table[key]!r}', hint)
        aliases = table.get('aliases', [])
        if not isinstance(aliases, list) or not all(isinstance(alias, str) for alias in aliases):
            raise GanpatchError(f'{path.name}: [{target}] aliases must be a list of strings', hint)
        pins[target] = Pin(target, table['repo'], table['commit'], table['tree'], table['license'], tuple(aliases))
    if not pins:
        raise GanpatchError(f'{path.name} pins no target', hint)
    return pins


def resolve_targets(name: str, pins: dict[str, Pin]) -> list[Pin]:
    """`all`, a target name or an alias, case-insensitively."""
    wanted = name.casefold()
    if wanted == 'all':
        return list(pins.values())
    for pin in pins.values():
        if wanted in (n.casefold() for n in (pin.target, *pin.aliases)):
            return [pin]
    raise GanpatchError(f'unknown target {name!r}', f'valid targets: {", ".join(pins)} (or all)')


# ------------------------------------------------------------------------------------------------
# Trees in memory and their git ids.

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
    """The git tree id of `files`, as `git rev-parse <commit>^{tree}` prints it.

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
    """Refuses paths that could write outside the tree or into git's own files."""
    links = {path for path, entry in files.items() if entry.mode == MODE_LINK}
    for path, entry in files.items():
        parts = path.split('/')
        if path.startswith('/') or any(part in ('', '.', '..') for part in parts):
            raise RejectedError(f'{origin}: unsafe path {path!r}', 'archives must hold relative paths without ..')
        if any(part.casefold() == '.git' for part in parts):
            raise RejectedError(f'{origin}: refusing path {path!r} inside .git', 'an upstream tree never holds .git')
        if any('/'.join(parts[:i]) in links for i in range(1, len(parts))):
            raise RejectedError(f'{origin}: {path!r} lies behind a symbolic link', 'refusing to write through links')
        if entry.mode == MODE_LINK:
            target = entry.data.decode('utf-8', 'surrogateescape')
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if target.startswith('/') or resolved == '..' or resolved.startswith('../'):
                raise RejectedError(f'{origin}: symbolic link {path!r} -> {target!r} points outside the tree',
                                    'refusing links that escape the tree')


# ------------------------------------------------------------------------------------------------
# Reading sources into Files.

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
    except (zipfile.BadZipFile, OSError) as exc:
        raise RejectedError(f'{origin}: not a readable zip archive ({exc})',
                            'check the file or fetch it again') from exc
    return files


def read_git(repository: Path, commit: str, origin: str) -> Files | None:
    """The tree of `commit` in a (bare or not) git repository; None when the commit is not there."""
    if run_git(['cat-file', '-e', f'{commit}^{{commit}}'], cwd=repository, check=False).returncode != 0:
        return None
    listing = run_git(['ls-tree', '-r', '-z', '--full-tree', commit], cwd=repository).stdout
    entries = []
    for record in listing.split(b'\0'):
        if not record:
            continue
        meta, path = record.split(b'\t', 1)
        mode, kind, oid = meta.decode().split()
        if kind != 'blob':
            raise RejectedError(f'{origin}: {path.decode()!r} is a {kind} (submodules are not supported)')
        entries.append((path.decode('utf-8', 'surrogateescape'), mode, oid))
    blobs = _read_blobs(repository, {oid for _, _, oid in entries})
    return {path: Entry(mode, blobs[oid]) for path, mode, oid in entries}


def _read_blobs(repository: Path, oids: set[str]) -> dict[str, bytes]:
    """All blobs in one `git cat-file --batch` call."""
    ordered = sorted(oids)
    out = run_git(['cat-file', '--batch'], cwd=repository, stdin=''.join(f'{oid}\n' for oid in ordered).encode()).stdout
    blobs, offset = {}, 0
    for oid in ordered:
        header_end = out.index(b'\n', offset)
        _, _, size = out[offset:header_end].split()
        start = header_end + 1
        blobs[oid] = out[start:start + int(size)]
        offset = start + int(size) + 1
    return blobs


def read_archive(path: Path, origin: str) -> Files:
    if path.suffix == '.zip':
        return read_zip(path, origin)
    with path.open('rb') as fileobj:
        return read_tar(fileobj, origin)


def is_git_repository(path: Path) -> bool:
    return path.is_dir() and ((path / '.git').exists() or ((path / 'objects').is_dir() and (path / 'HEAD').is_file()))


def read_source(path: Path, pin: Pin) -> Files | None:
    """A git repository or an archive; None when a repository lacks the commit."""
    origin = str(path)
    if is_git_repository(path):
        return read_git(path, pin.commit, origin)
    if path.is_file():
        return read_archive(path, origin)
    raise GanpatchError(f'{path} is neither a git repository nor an archive',
                        'give a git repository, a .tar.gz/.tgz/.tar or a .zip')


def match_tree(files: Files, pin: Pin, origin: str) -> Files:
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
        found.append(tree_id(candidate))
        if found[-1] == pin.tree:
            check_safe(candidate, origin)
            return candidate
    raise RejectedError(f'{origin}: tree id {found[0]} does not match the lock ({pin.tree}) '
                        f'for {pin.slug}@{pin.commit}',
                        'the source is not the pinned commit or was altered; nothing was cached or written')


# ------------------------------------------------------------------------------------------------
# The cache: trees/<tree id>.tar, written atomically, verified on every read.

def cache_dir() -> Path:
    return Path(os.environ.get('GANPATCH_CACHE') or Path.home() / '.cache' / 'ganpatch')


def cache_path(pin: Pin) -> Path:
    return cache_dir() / 'trees' / f'{pin.tree}.tar'


def read_cache(pin: Pin) -> Files | None:
    """The cached tree, or None. A corrupt entry is removed (it is only a cache) and reported."""
    path = cache_path(pin)
    if not path.is_file():
        return None
    try:
        return match_tree(read_archive(path, f'cache entry {path}'), pin, f'cache entry {path}')
    except RejectedError as exc:
        log(f'warning: {exc}; discarding the cache entry')
        path.unlink(missing_ok=True)
        return None


def write_cache(pin: Pin, files: Files) -> None:
    """A deterministic tar under a temporary name, renamed into place once complete."""
    path = cache_path(pin)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f'.{pin.tree}.', suffix='.tmp', delete=False)
    try:
        with handle, tarfile.open(fileobj=handle, mode='w', format=tarfile.PAX_FORMAT) as archive:
            for name in sorted(files):
                archive.addfile(*_tar_member(name, files[name]))
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _tar_member(name: str, entry: Entry) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    if entry.mode == MODE_LINK:
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.data.decode('utf-8', 'surrogateescape'), 0o777
        return info, None
    info.size, info.mode = len(entry.data), 0o755 if entry.mode == MODE_EXEC else 0o644
    return info, io.BytesIO(entry.data)


# ------------------------------------------------------------------------------------------------
# Fetching: cache, --source, mirror, GitHub.

@dataclasses.dataclass(frozen=True)
class Sources:
    source: Path | None
    mirror: Path | None
    offline: bool


def mirror_candidates(mirror: Path, pin: Pin) -> list[Path]:
    names = [pin.name, f'{pin.name}.git', f'{pin.owner}/{pin.name}', f'{pin.owner}/{pin.name}.git',
             f'{pin.name}-{pin.commit}.tar.gz', f'{pin.name}-{pin.commit}.zip']
    return [mirror / name for name in names if (mirror / name).exists()]


def fetch_upstream(pin: Pin, sources: Sources, *, fill_cache: bool = True) -> tuple[Files, str]:
    """The verified pinned tree and a description of where it came from."""
    cached = read_cache(pin)
    if cached is not None:
        return cached, 'cache'
    files, origin = _fetch_uncached(pin, sources)
    files = match_tree(files, pin, origin)
    if fill_cache:
        write_cache(pin, files)
    return files, origin


def _fetch_uncached(pin: Pin, sources: Sources) -> tuple[Files, str]:
    if sources.source is not None:
        files = read_source(sources.source, pin)
        if files is None:
            raise NoSourceError(f'--source {sources.source} does not contain commit {pin.commit}',
                                f'fetch {pin.slug} into it, or give another --source')
        return files, str(sources.source)
    for candidate in mirror_candidates(sources.mirror, pin) if sources.mirror else []:
        files = read_source(candidate, pin)
        if files is not None:
            return files, str(candidate)
        log(f'note: mirror {candidate} lacks commit {pin.commit}')
    if sources.offline:
        where = f'mirror {sources.mirror}' if sources.mirror else 'no mirror given'
        raise NoSourceError(f'no cached or mirrored upstream for {pin.target} ({pin.slug}@{pin.commit}; {where})',
                            f'run apply.py once with --mirror DIR or --source PATH (or online) to fill {cache_dir()}')
    return download_github(pin), f'https://github.com/{pin.slug} archive'


def download_github(pin: Pin) -> Files:
    """GitHub's tar.gz of the commit, read into memory, with progress on a slow download."""
    url = f'https://github.com/{pin.slug}/archive/{pin.commit}.tar.gz'
    opener = urllib.request.build_opener(urllib.request.ProxyHandler())  # http(s)_proxy, no_proxy
    log(f'{pin.target}: downloading {url}')
    try:
        with opener.open(url, timeout=60) as response:
            data = _read_with_progress(response, int(response.headers.get('Content-Length') or 0))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, 'reason', exc)
        raise NoSourceError(f'cannot download {url}: {reason}',
                            'no network? use --mirror DIR (or $GANPATCH_MIRROR) or --source PATH; '
                            '--offline never tries the network') from exc
    return read_tar(io.BytesIO(data), url)


def _read_with_progress(response, total: int) -> bytes:
    chunks, received, started, shown = [], 0, time.monotonic(), 0.0
    while chunk := response.read(1 << 16):
        chunks.append(chunk)
        received += len(chunk)
        elapsed = time.monotonic() - started
        if elapsed > 1.0 and elapsed - shown >= 1.0:
            shown = elapsed
            of_total = f' of {total / 1e6:.1f} MB ({100 * received // total}%)' if total else ''
            log(f'  {received / 1e6:.1f} MB{of_total}, {received / 1e6 / elapsed:.2f} MB/s')
    return b''.join(chunks)


# ------------------------------------------------------------------------------------------------
# Running git.

def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without git's repository variables and user/system configuration."""
    env = {key: value for key, value in os.environ.items()
           if key not in ('GIT_DIR', 'GIT_WORK_TREE', 'GIT_INDEX_FILE', 'GIT_OBJECT_DIRECTORY')}
    env.update(GIT_CONFIG_NOSYSTEM='1', GIT_CONFIG_GLOBAL=os.devnull, LC_ALL='C', LANGUAGE='C', **IDENTITY_ENV)
    env.update(extra or {})
    return env


def run_git(args: list[str], *, cwd: Path, stdin: bytes | None = None, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(['git', *args], cwd=cwd, input=stdin, capture_output=True, env=git_env(env))
    except FileNotFoundError as exc:
        raise GanpatchError('git is not installed (no `git` on PATH)', 'install git >= 2.32 and retry') from exc
    if check and result.returncode != 0:
        message = result.stderr.decode(errors='replace').strip().splitlines()
        raise GanpatchError(f'git {args[0]} failed in {cwd}: {message[-1] if message else result.returncode}',
                            'this is unexpected; rerun after checking the tree with git status')
    return result


def git_text(args: list[str], cwd: Path) -> str:
    return run_git(args, cwd=cwd).stdout.decode('utf-8', 'surrogateescape').strip()


def require_git() -> None:
    if shutil.which('git') is None:
        raise GanpatchError('git is not installed (no `git` on PATH)', 'install git >= 2.32 and retry')


# ------------------------------------------------------------------------------------------------
# Patches and overlays of a target.

def series_path(target: str) -> Path:
    return PATCHES_DIR / target / 'series'


def read_series(target: str) -> list[str]:
    """Patch file names in order; blank lines and `#` comments are skipped."""
    path = series_path(target)
    if not path.is_file():
        return []
    names = [line.strip() for line in path.read_text(encoding='utf-8').splitlines()]
    return [name for name in names if name and not name.startswith('#')]


def check_series(target: str) -> list[Path]:
    """The series' patch files, all present (checked before any work starts)."""
    patches = []
    for name in read_series(target):
        path = PATCHES_DIR / target / name
        if '/' in name or not path.is_file():
            raise GanpatchError(f'{series_path(target).relative_to(ROOT)} lists {name}, but '
                                f'patches/{target}/{name} is missing', 'restore the file or remove it from the series')
        patches.append(path)
    return patches


def is_skipped_overlay(relative: Path) -> bool:
    return any(part in SKIPPED_OVERLAY_NAMES for part in relative.parts) or relative.suffix in SKIPPED_OVERLAY_SUFFIXES


def overlay_files(target: str) -> dict[str, Path]:
    """Tree path -> overlay source: overlays/common/ganpatch/ as ganpatch/, overlays/<target>/ at the root."""
    mapping: dict[str, Path] = {}
    for base, prefix in ((COMMON_OVERLAY_DIR, PACKAGE_DIR_IN_TREE + '/'), (OVERLAYS_DIR / target, '')):
        for path in sorted(base.rglob('*')) if base.is_dir() else []:
            relative = path.relative_to(base)
            if is_skipped_overlay(relative) or path.is_dir():
                continue
            if path.is_symlink() or not path.is_file():
                raise GanpatchError(f'overlay {path} is not a regular file', 'overlays hold plain files only')
            tree_path = prefix + relative.as_posix()
            if tree_path in mapping:
                raise GanpatchError(f'overlays/{target}/{tree_path} collides with overlays/common/ganpatch',
                                    'the ganpatch/ package comes from overlays/common only')
            mapping[tree_path] = path
    return mapping


def file_digest(path: Path) -> str:
    mode = MODE_EXEC if path.stat().st_mode & 0o100 else MODE_FILE
    return f'{mode} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}'


def inputs_of(pin: Pin) -> dict:
    """What a tree is built from: the lock entry and the hash of every patch and overlay file."""
    return {
        'upstream': pin.as_dict(),
        'patches': [[path.name, hashlib.sha256(path.read_bytes()).hexdigest()] for path in check_series(pin.target)],
        'overlays': {tree_path: file_digest(path) for tree_path, path in overlay_files(pin.target).items()},
    }


# ------------------------------------------------------------------------------------------------
# Building a tree.

@dataclasses.dataclass(frozen=True)
class ThreeWay:
    """--3way: hand a failing patch to `git am -3`, borrowing objects from the previous tree."""
    previous: Path | None


def build_tree(pin: Pin, files: Files, work: Path, *, three_way: ThreeWay | None = None) -> None:
    """Upstream commit, one commit per patch, one overlay commit, stamp: in the empty dir `work`."""
    inputs = inputs_of(pin)
    run_git(['init', '-q', f'--initial-branch={BRANCH}'], cwd=work)
    import_upstream(pin, files, work)
    apply_series(check_series(pin.target), work, three_way)
    commit_overlays(pin.target, work)
    write_stamp(work, {'target': pin.target, **inputs, 'head': git_text(['rev-parse', 'HEAD'], work)})


def import_upstream(pin: Pin, files: Files, work: Path) -> None:
    """The pristine tree as the first commit (exact bytes via fast-import), tagged and checked out."""
    message = (f'Upstream {pin.slug}@{pin.commit}\n\nPristine tree {pin.tree} of {pin.repo}\n'
               f'(license: {pin.license}), imported by ganpatch apply.py.\n').encode()
    stream = [b'commit refs/heads/%s\n' % BRANCH.encode(),
              b'author ganpatch <ganpatch@localhost> %s\n' % FIXED_DATE.encode(),
              b'committer ganpatch <ganpatch@localhost> %s\n' % FIXED_DATE.encode(),
              b'data %d\n%s\n' % (len(message), message)]
    for path in sorted(files):
        entry = files[path]
        stream.append(b'M %s inline %s\ndata %d\n%s\n'
                      % (entry.mode.encode(), _quote_path(path), len(entry.data), entry.data))
    # No compression or delta search: most of the bytes are already-compressed images.
    run_git(['-c', 'pack.compression=0', 'fast-import', '--quiet', '--big-file-threshold=1'],
            cwd=work, stdin=b''.join(stream))
    run_git(['tag', UPSTREAM_TAG], cwd=work)
    run_git(['reset', '-q', '--hard'], cwd=work)
    imported = git_text(['rev-parse', 'HEAD^{tree}'], work)
    if imported != pin.tree:
        raise RejectedError(f'imported tree {imported} differs from the lock ({pin.tree})',
                            'this is a bug in apply.py; please report it')


def _quote_path(path: str) -> bytes:
    """A path in git fast-import's C-style quoting."""
    raw = path.encode('utf-8', 'surrogateescape')
    escaped = b''.join(b'\\%03o' % byte if byte < 0x20 or byte in b'"\\' else bytes([byte]) for byte in raw)
    return b'"%s"' % escaped


def apply_series(patches: list[Path], work: Path, three_way: ThreeWay | None) -> None:
    """The whole series checked by one `git apply --check` and applied by one `git am`.

    `git apply` checks patches that touch the same file in sequence, so this is the same test as
    checking them one by one, in two processes instead of two per patch. When it fails, the
    patches are checked and applied one by one to find the failing one and describe it.
    """
    names = list(map(str, patches))
    if names and run_git(['apply', '--check', *names], cwd=work, check=False).returncode == 0:
        if run_git(['am', '--keep-cr', '-q', *names], cwd=work, check=False).returncode == 0:
            return
        run_git(['am', '--abort'], cwd=work)
    for index, patch in enumerate(patches):
        apply_patch(patch, work, three_way=three_way, remaining=patches[index + 1:])


def apply_patch(patch: Path, work: Path, *, three_way: ThreeWay | None = None, remaining: list[Path] = ()) -> None:
    """`git apply --check` (zero fuzz), then `git am`: one commit with the patch's message.

    In --3way mode a failing patch goes to `merge_patch` instead, with the rest of the series.
    """
    check = run_git(['apply', '--check', '-v', str(patch)], cwd=work, check=False)
    if check.returncode != 0:
        error = PatchError(describe_failure(patch, check.stderr.decode(errors='replace'), work),
                           'rebase the patch on the pinned upstream (--3way keeps a conflict tree); '
                           'the destination was not touched')
        if three_way is not None:
            error.details = merge_patch(patch, remaining, work, three_way.previous)
            error.merged = True
        raise error
    applied = run_git(['am', '--keep-cr', '-q', str(patch)], cwd=work, check=False)
    if applied.returncode != 0:
        reason = applied.stdout.decode(errors='replace').strip() or applied.stderr.decode(errors='replace').strip()
        raise PatchError(f'patch {patch.name} passes `git apply --check` but `git am` fails: {reason.splitlines()[0]}',
                         'regenerate it with git format-patch (an empty patch or a missing mail header?)')


def merge_patch(patch: Path, remaining: list[Path], work: Path, previous: Path | None) -> list[str]:
    """`git am -3` of `patch` and the rest of the series; returns what it left for the maintainer.

    A 3-way merge needs the blobs the patch was made against (its `index` lines). The previous
    tree at the destination usually has them (the old upstream and the old patches), so its
    objects are fetched first. Without them, the hunks that apply are applied and the others are
    written to `*.rej` files.
    """
    if previous is not None and (previous / '.git').is_dir():
        run_git(['fetch', '-q', '--no-tags', str(previous), 'HEAD'], cwd=work, check=False)
    run_git(['am', '--keep-cr', '-3', str(patch), *map(str, remaining)], cwd=work, check=False)
    conflicted = git_text(['diff', '--name-only', '--diff-filter=U'], work).splitlines()
    if conflicted:
        return [f'conflict markers in {path}' for path in conflicted]
    if not (work / '.git' / 'rebase-apply').exists():
        return ['the 3-way merge resolved every patch without conflicts']
    run_git(['apply', '--reject', str(patch)], cwd=work, check=False)
    rejects = sorted(path.relative_to(work).as_posix() for path in work.rglob('*.rej'))
    return ['no 3-way merge (the blobs the patch was made against are unknown here); failed hunks are in '
            + ', '.join(rejects)]


_FAILED_AT = re.compile(r'^error: patch failed: (.+):(\d+)$', re.M)
_FAILED_FILE = re.compile(r'^error: (.+?): (does not exist in index|No such file or directory|already exists in '
                          r'working directory|patch does not apply|does not match index)$', re.M)


def describe_failure(patch: Path, stderr: str, work: Path) -> str:
    """`patch P does not apply: FILE, hunk #N (@@ ... @@)` from git apply's complaint."""
    if at := _FAILED_AT.search(stderr):
        path, line = at.group(1), int(at.group(2))
        number, header = find_hunk(patch, path, line)
        where = f'{path}, hunk #{number} ({header})' if number else f'{path}, line {line}'
    elif failed := _FAILED_FILE.search(stderr):
        where = f'{failed.group(1)} ({failed.group(2)})'
    else:
        where = stderr.strip().splitlines()[-1] if stderr.strip() else 'unknown reason'
    reverse = run_git(['apply', '--check', '-R', str(patch)], cwd=work, check=False)
    already = '; it applies in reverse, so the upstream already has this change' if reverse.returncode == 0 else ''
    return f'patch {patch.name} does not apply: {where}{already}'


def find_hunk(patch: Path, path: str, old_start: int) -> tuple[int | None, str]:
    """The 1-based number and header of the hunk of `path` starting at `old_start` in the old file."""
    current, number = None, 0
    for line in patch.read_text(encoding='utf-8', errors='replace').splitlines():
        if line.startswith('diff --git '):
            current, number = line.split(' b/', 1)[-1], 0
        elif line.startswith('@@ ') and current == path:
            number += 1
            start = int(re.match(r'@@ -(\d+)', line).group(1))
            if start == old_start:
                return number, line.split(' @@')[0] + ' @@'
    return None, ''


def commit_overlays(target: str, work: Path) -> None:
    """Copies the overlay files into the tree as one commit (also when there are none)."""
    overlays = overlay_files(target)
    for tree_path, source in overlays.items():
        destination = work / tree_path
        for parent in reversed(destination.relative_to(work).parents[:-1]):
            if (work / parent).is_symlink():
                raise GanpatchError(f'overlay {tree_path} would be written through the link {parent}',
                                    'rename the overlay file')
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.is_symlink():
            destination.unlink()
        shutil.copyfile(source, destination)
        os.chmod(destination, 0o755 if source.stat().st_mode & 0o100 else 0o644)
    tops = sorted({tree_path.split('/')[0] for tree_path in overlays})
    if tops:
        run_git(['add', '-A', '-f', '--', *tops], cwd=work)
    message = (f'{OVERLAY_SUBJECT}\n\nCopies overlays/common/ganpatch/ to ganpatch/ and overlays/{target}/ to the\n'
               f'tree root ({len(overlays)} files). Made by apply.py; --refresh copies edits back.\n')
    run_git(['commit', '-q', '--allow-empty', '--no-verify', '-m', message], cwd=work)
    run_git(['tag', OVERLAY_TAG], cwd=work)


# ------------------------------------------------------------------------------------------------
# The stamp.

def stamp_path(tree: Path) -> Path:
    return tree / '.git' / STAMP_NAME


def write_stamp(tree: Path, stamp: dict) -> None:
    path = stamp_path(tree)
    temporary = path.with_suffix('.tmp')
    temporary.write_text(json.dumps({'format': STAMP_FORMAT, **stamp}, indent=1, sort_keys=True) + '\n')
    os.replace(temporary, path)


def read_stamp(tree: Path) -> dict | None:
    try:
        stamp = json.loads(stamp_path(tree).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and stamp.get('format') == STAMP_FORMAT else None


def built_inputs(stamp: dict) -> dict:
    return {key: stamp.get(key) for key in ('upstream', 'patches', 'overlays')}


# ------------------------------------------------------------------------------------------------
# The state of a destination.

@dataclasses.dataclass
class TreeState:
    kind: str  # missing | foreign | modified | outdated | up to date
    stamp: dict | None = None
    local_work: list[str] = dataclasses.field(default_factory=list)  # what a rebuild would lose
    changed_inputs: list[str] = dataclasses.field(default_factory=list)  # why it is outdated


def inspect_tree(dest: Path, pin: Pin) -> TreeState:
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        return TreeState('missing')
    stamp = read_stamp(dest) if dest.is_dir() else None
    if stamp is None or stamp.get('target') != pin.target:
        return TreeState('foreign', stamp, [f'{dest} is not a ganpatch tree of {pin.target}'])
    if stamp.get('state') == 'conflict' and 'refreshed' not in stamp:
        return TreeState('modified', stamp, ['a --3way conflict tree whose resolution was not exported (--refresh)'])
    local_work = find_local_work(dest, pin.target, stamp)
    changed = changed_inputs(built_inputs(stamp), inputs_of(pin))
    kind = 'modified' if local_work else 'outdated' if changed else 'up to date'
    return TreeState(kind, stamp, local_work, changed)


def find_local_work(tree: Path, target: str, stamp: dict) -> list[str]:
    """Commits and files in `tree` that patches/ and overlays/ do not hold (byte-code excepted).

    The stamp's `head` is the commit the tree was built (or last refreshed) at. A changed overlay
    file counts as held when it equals its source in overlays/ (after --refresh it does).
    """
    work = []
    head, built = git_text(['rev-parse', 'HEAD'], tree), (stamp.get('refreshed') or stamp)['head']
    if head != built:
        log_lines = git_text(['log', '--format=%h %s', f'{built}..HEAD'], tree).splitlines()
        work += [f'commit {line}' for line in log_lines] or [f'HEAD moved from {built[:12]} to {head[:12]}']
    overlays = overlay_files(target)
    for code, path in porcelain_status(tree):
        if is_skipped_overlay(Path(path)):
            continue
        if path in overlays or path.startswith(PACKAGE_DIR_IN_TREE + '/'):
            source, copy = overlays.get(path), tree / path
            if (source is None and not copy.exists()) or (source and copy.is_file() and same_file(source, copy)):
                continue
        work.append(f'{code} {path}')
    return work


def porcelain_status(tree: Path) -> list[tuple[str, str]]:
    """(status code, path) of every changed, untracked or ignored file."""
    out = run_git(['status', '--porcelain=v1', '-z', '--untracked-files=all', '--ignored=matching'], cwd=tree).stdout
    records, entries = out.split(b'\0'), []
    index = 0
    while index < len(records):
        record = records[index].decode('utf-8', 'surrogateescape')
        index += 1
        if not record:
            continue
        code, path = record[:2], record[3:]
        if code[0] in 'RC':
            index += 1  # the rename's source path follows
        entries.append((code.strip() or code, path))
    return entries


def same_file(a: Path, b: Path) -> bool:
    return (a.read_bytes() == b.read_bytes()
            and bool(a.stat().st_mode & 0o100) == bool(b.stat().st_mode & 0o100))


def changed_inputs(built: dict, now: dict) -> list[str]:
    changes = []
    if built['upstream'] != now['upstream']:
        changes.append('upstream.lock entry changed')
    if built['patches'] != now['patches']:
        old, new = dict(built['patches'] or []), dict(now['patches'])
        names = [name for name in dict.fromkeys([*old, *new]) if old.get(name) != new.get(name)]
        changes.append('patches changed: ' + ', '.join(names) if names else 'series order changed')
    if built['overlays'] != now['overlays']:
        old, new = built['overlays'] or {}, now['overlays']
        changes.append('overlays changed: ' + ', '.join(sorted(p for p in {*old, *new} if old.get(p) != new.get(p))))
    return changes


# ------------------------------------------------------------------------------------------------
# Installing into the destination.

def default_dest(pin: Pin, dest: Path | None, many: bool) -> Path:
    if dest is None:
        return ROOT / 'build' / pin.target
    return dest / pin.target if many else dest


@contextlib.contextmanager
def staging_dir(dest: Path):
    """A fresh directory beside `dest`, removed unless the body renames it away."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f'.{dest.name}.', suffix='.tmp', dir=dest.parent))
    try:
        yield work
    finally:
        if work.exists():
            shutil.rmtree(work)


def unique_sibling(dest: Path, label: str) -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    candidate, number = dest.with_name(f'{dest.name}.{label}-{stamp}'), 1
    while candidate.exists():
        number += 1
        candidate = dest.with_name(f'{dest.name}.{label}-{stamp}-{number}')
    return candidate


def move_into_place(work: Path, dest: Path, *, keep_old: bool) -> Path | None:
    """Renames `work` onto `dest`; an old `dest` goes to a backup (returned) or, if clean, away."""
    if not dest.exists():
        os.rename(work, dest)
        return None
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
        os.rename(work, dest)
        return None
    old = unique_sibling(dest, 'backup' if keep_old else 'old')
    os.rename(dest, old)
    os.rename(work, dest)
    if keep_old:
        return old
    shutil.rmtree(old)
    return None


def apply_target(pin: Pin, dest: Path, sources: Sources, *, force: bool, three_way: bool) -> int:
    state = inspect_tree(dest, pin)
    if state.kind == 'up to date':
        log(f'{pin.target}: {display(dest)} is up to date')
        return EXIT_OK
    if state.kind in ('modified', 'foreign') and not force:
        raise LocalWorkError(f'{display(dest)} holds work that a rebuild would lose',
                             'export it with --refresh, or rebuild with --force (the old tree is moved to a backup)',
                             details=state.local_work)
    files, origin = fetch_upstream(pin, sources)
    log(f'{pin.target}: {pin.slug}@{pin.commit[:12]} from {origin} (tree {pin.tree[:12]} verified)')
    with staging_dir(dest) as work:
        try:
            build_tree(pin, files, work, three_way=ThreeWay(dest) if three_way else None)
        except PatchError as exc:
            if exc.merged:
                exc.hint = keep_conflict_tree(pin, work, dest)
            raise
        backup = move_into_place(work, dest, keep_old=state.kind in ('modified', 'foreign'))
    if backup:
        log(f'{pin.target}: moved the previous tree to {display(backup)}')
    count = len(read_series(pin.target))
    log(f'{pin.target}: built {display(dest)}: upstream + {count} patches + overlays '
        f'({len(overlay_files(pin.target))} files)')
    return EXIT_OK


def keep_conflict_tree(pin: Pin, work: Path, dest: Path) -> str:
    """Moves a --3way tree with conflict markers beside `dest`; returns what to do next."""
    write_stamp(work, {'target': pin.target, **inputs_of(pin), 'head': None, 'state': 'conflict'})
    kept = unique_sibling(dest, 'conflict')
    os.rename(work, kept)
    unfinished = (kept / '.git' / 'rebase-apply').exists()
    todo = ('resolve the conflict markers, `git add` the files and `git am --continue` there (repeat until the '
            'series is done), then ' if unfinished else 'the 3-way merge needed no help; ')
    return (f'tree kept at {display(kept)}: {todo}export the rebased patches with '
            f'`apply.py --target {pin.target} --refresh --dest {display(kept)}` and rebuild')


def check_target(pin: Pin, sources: Sources) -> int:
    """Fetch, verify and build in a temporary directory; nothing is written anywhere else."""
    files, origin = fetch_upstream(pin, sources, fill_cache=False)
    with tempfile.TemporaryDirectory(prefix='ganpatch-check-') as scratch:
        work = Path(scratch) / pin.target
        work.mkdir()
        build_tree(pin, files, work)
    for patch in check_series(pin.target):
        if not patch_description(patch):
            log(f'warning: {patch.relative_to(ROOT)} has no description (say why, and where it comes from: '
                'ours, or a backport naming the upstream commit, issue or PR)')
    log(f'{pin.target}: ok: tree {pin.tree[:12]} from {origin} verified, {len(read_series(pin.target))} patches '
        f'apply at zero fuzz, {len(overlay_files(pin.target))} overlay files')
    return EXIT_OK


def patch_description(patch: Path) -> str:
    """The body of a format-patch mail: between the headers and the `---` line."""
    text = patch.read_text(encoding='utf-8', errors='replace')
    body = text.split('\n\n', 1)[1] if '\n\n' in text else ''
    return ('\n' + body).split('\n---\n', 1)[0].strip()


# ------------------------------------------------------------------------------------------------
# --refresh: from the tree back to patches/ and overlays/.

def refresh_target(pin: Pin, tree: Path, *, force: bool) -> int:
    """Exports the tree's patch commits and overlay edits; only files whose bytes change are written.

    The baseline is what patches/ and overlays/ held when the tree was built (or last refreshed).
    If they changed since, exporting would overwrite someone's work, so that needs --force.
    """
    stamp = read_stamp(tree)
    if stamp is None or stamp.get('target') != pin.target:
        raise GanpatchError(f'{display(tree)} is not a ganpatch tree of {pin.target}',
                            f'build one with `apply.py --target {pin.target}` and edit it there')
    if (tree / '.git' / 'rebase-apply').exists():
        raise GanpatchError(f'git am is still in progress in {display(tree)}',
                            'finish it there with `git am --continue` (or `git am --abort`)')
    baseline = stamp.get('refreshed') or built_inputs(stamp)
    if baseline['patches'] != inputs_of(pin)['patches'] and not force:
        raise GanpatchError(f'patches/{pin.target} changed since {display(tree)} was built or refreshed',
                            'rebuild the tree first, or pass --force to overwrite patches/ with the tree')
    is_overlay = overlay_predicate(pin.target, baseline['overlays'])
    uncommitted = [f'{code} {path}' for code, path in porcelain_status(tree)
                   if code != '!!' and not is_overlay(path) and not is_skipped_overlay(Path(path))]
    if uncommitted:
        raise GanpatchError(f'{display(tree)} has uncommitted changes outside the overlays',
                            'commit them (each commit becomes a patch) or discard them, then refresh again',
                            details=uncommitted)
    conflict_tree = stamp.get('state') == 'conflict'
    tip = 'HEAD' if conflict_tree else patch_commits_tip(tree, find_overlay_commit(tree), is_overlay)
    plan = [] if conflict_tree else plan_overlay_copies(tree, pin.target, baseline['overlays'], force=force)
    changes = export_patches(tree, pin.target, tip) + copy_overlays_back(plan)
    stamp['refreshed'] = {**inputs_of(pin), 'head': git_text(['rev-parse', 'HEAD'], tree)}
    write_stamp(tree, stamp)
    for change in changes:
        print(f'{pin.target}: {change}')
    print(f'{pin.target}: refreshed from {display(tree)}: '
          f'{len(changes) or "no"} file{"s" if len(changes) != 1 else ""} changed')
    return EXIT_OK


def overlay_predicate(target: str, baseline_overlays: dict):
    """Whether a tree path belongs to the overlays (then --refresh copies it back, never patches it)."""
    known = set(baseline_overlays) | set(overlay_files(target))
    return lambda path: path.startswith(PACKAGE_DIR_IN_TREE + '/') or path in known


def find_overlay_commit(tree: Path) -> str:
    """The one commit after `upstream` whose subject is OVERLAY_SUBJECT (tags do not survive rebases)."""
    log_out = git_text(['log', '--format=%H %s', f'{UPSTREAM_TAG}..HEAD'], tree).splitlines()
    found = [line.split(' ', 1)[0] for line in log_out if line.split(' ', 1)[1:] == [OVERLAY_SUBJECT]]
    if len(found) != 1:
        raise GanpatchError(f'{display(tree)} has {len(found)} commits with the subject {OVERLAY_SUBJECT!r}, not one',
                            'keep exactly one overlay commit (git rebase -i upstream) and refresh again')
    if git_text(['rev-list', '--merges', f'{UPSTREAM_TAG}..HEAD'], tree):
        raise GanpatchError(f'{display(tree)} has merge commits', 'linearise the history (git rebase upstream)')
    return found[0]


def patch_commits_tip(tree: Path, overlay_commit: str, is_overlay) -> str:
    """A commit whose history from `upstream` is exactly the patch series.

    Commits before the overlay commit are patches. Of the later ones, those touching only overlay
    files are skipped (their files are copied back), those touching only upstream files are replayed
    onto the commit before the overlays (new patches at the end of the series), mixed ones refused.
    """
    replay = []
    for commit in git_text(['rev-list', '--reverse', f'{overlay_commit}..HEAD'], tree).split():
        paths = run_git(['diff-tree', '--no-commit-id', '--name-only', '-r', '-z', commit], cwd=tree).stdout
        kinds = {is_overlay(path) for path in paths.decode('utf-8', 'surrogateescape').split('\0') if path}
        if kinds == {True, False}:
            raise GanpatchError(f'commit {commit[:12]} changes both overlay and upstream files',
                                'split it (git rebase -i) into an overlay commit and an upstream commit')
        if kinds == {False}:
            replay.append(commit)
    return replay_commits(tree, f'{overlay_commit}^', replay)


def replay_commits(tree: Path, base: str, commits: list[str]) -> str:
    """Copies `commits` onto `base` with a private index (the work tree and HEAD stay as they are)."""
    tip = git_text(['rev-parse', base], tree)
    if not commits:
        return tip
    index = {'GIT_INDEX_FILE': str(tree / '.git' / 'ganpatch-refresh.index')}
    try:
        run_git(['read-tree', tip], cwd=tree, env=index)
        for commit in commits:
            diff = run_git(['diff-tree', '-p', '--binary', '--full-index', f'{commit}^', commit], cwd=tree).stdout
            if run_git(['apply', '--cached'], cwd=tree, stdin=diff, env=index, check=False).returncode != 0:
                raise GanpatchError(f'commit {commit[:12]} (after the overlay commit) does not apply before it',
                                    'move it before the overlay commit yourself (git rebase -i upstream)')
            new_tree = run_git(['write-tree'], cwd=tree, env=index).stdout.decode().strip()
            header, message = run_git(['cat-file', 'commit', commit], cwd=tree).stdout.split(b'\n\n', 1)
            author = next(line for line in header.splitlines() if line.startswith(b'author '))
            body = b'tree %s\nparent %s\n%s\ncommitter ganpatch <ganpatch@localhost> %s\n\n%s' % (
                new_tree.encode(), tip.encode(), author, FIXED_DATE.encode(), message)
            written = run_git(['hash-object', '-t', 'commit', '-w', '--stdin'], cwd=tree, stdin=body)
            tip = written.stdout.decode().strip()
    finally:
        Path(index['GIT_INDEX_FILE']).unlink(missing_ok=True)
    return tip


def export_patches(tree: Path, target: str, tip: str) -> list[str]:
    """format-patch `upstream..tip` into patches/<target>/; rewrites only files whose bytes differ."""
    directory = PATCHES_DIR / target
    changes = []
    with tempfile.TemporaryDirectory(prefix='ganpatch-refresh-') as scratch:
        run_git(['-c', 'core.abbrev=7', 'format-patch', '--zero-commit', '--no-signature', '-o', scratch,
                 f'{UPSTREAM_TAG}..{tip}'], cwd=tree)
        exported = sorted(Path(scratch).iterdir())
        for patch in exported:
            old = directory / patch.name
            if not old.is_file() or old.read_bytes() != patch.read_bytes():
                changes.append(f'{"rewrote" if old.is_file() else "added"} patches/{target}/{patch.name}')
                write_atomically(old, patch.read_bytes())
    names = [patch.name for patch in exported]
    for name in read_series(target):
        if name not in names and (directory / name).is_file():
            (directory / name).unlink()
            changes.append(f'removed patches/{target}/{name}')
    series = series_text(target, names)
    if not series_path(target).is_file() or series_path(target).read_text(encoding='utf-8') != series:
        write_atomically(series_path(target), series.encode())
        changes.append(f'updated patches/{target}/series')
    return changes


def series_text(target: str, names: list[str]) -> str:
    """The series: the existing leading comment block (or a default one), then one name per line."""
    header = [f'# Patch series for {target}, applied in order by apply.py.']
    if series_path(target).is_file():
        lines = series_path(target).read_text(encoding='utf-8').splitlines()
        header = list(next((lines[:i] for i, line in enumerate(lines) if line and not line.startswith('#')), lines))
    return ''.join(f'{line}\n' for line in [*header, *names])


def plan_overlay_copies(tree: Path, target: str, baseline: dict, *, force: bool) -> list[tuple[Path, Path | None]]:
    """(overlay source, tree file or None to delete it) for every overlay file the tree changed.

    A file counts only when the tree changed it since the baseline; when overlays/ changed it too
    (to something else), that is a conflict that needs --force.
    """
    package = tree / PACKAGE_DIR_IN_TREE
    in_tree = {path.relative_to(tree).as_posix() for path in package.rglob('*')
               if path.is_file() and not is_skipped_overlay(path.relative_to(tree))} if package.is_dir() else set()
    plan, conflicts = [], []
    for tree_path in sorted(in_tree | set(baseline) | set(overlay_files(target))):
        copy, source = tree / tree_path, overlay_source(target, tree_path)
        now = file_digest(copy) if copy.is_file() else None
        repo = file_digest(source) if source.is_file() else None
        if now == baseline.get(tree_path) or now == repo:
            continue
        if repo != baseline.get(tree_path) and not force:
            conflicts.append(f'{tree_path} (and {source.relative_to(ROOT)})')
        plan.append((source, copy if now else None))
    if conflicts:
        raise GanpatchError('overlay files changed both in the tree and in overlays/ since the build',
                            'merge them by hand, or pass --force to take the tree\'s version', details=conflicts)
    return plan


def copy_overlays_back(plan: list[tuple[Path, Path | None]]) -> list[str]:
    changes = []
    for source, copy in plan:
        if copy is None:
            source.unlink()
            changes.append(f'removed {source.relative_to(ROOT)}')
        else:
            existed = source.is_file()
            write_atomically(source, copy.read_bytes(), executable=bool(copy.stat().st_mode & 0o100))
            changes.append(f'{"updated" if existed else "added"} {source.relative_to(ROOT)}')
    return changes


def overlay_source(target: str, tree_path: str) -> Path:
    if tree_path.startswith(PACKAGE_DIR_IN_TREE + '/'):
        return COMMON_OVERLAY_DIR / tree_path.removeprefix(PACKAGE_DIR_IN_TREE + '/')
    return OVERLAYS_DIR / target / tree_path


def write_atomically(path: Path, data: bytes, *, executable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f'.{path.name}.tmp')
    temporary.write_bytes(data)
    os.chmod(temporary, 0o755 if executable else 0o644)
    os.replace(temporary, path)


# ------------------------------------------------------------------------------------------------
# Reports: --list, --status, --diff.

def list_targets(pins: dict[str, Pin]) -> int:
    rows = [('target', 'upstream', 'commit', 'license', 'patches', 'cached')]
    for pin in pins.values():
        aliases = f' ({", ".join(pin.aliases)})' if pin.aliases else ''
        rows.append((pin.target + aliases, pin.slug, pin.commit[:12], pin.license,
                     str(len(read_series(pin.target))), 'yes' if cache_path(pin).is_file() else 'no'))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print('  '.join(cell.ljust(width) for cell, width in zip(row, widths)) + '  ' + row[-1])
    print(f'cache: {cache_dir()}')
    return EXIT_OK


def show_status(pin: Pin, dest: Path) -> int:
    state = inspect_tree(dest, pin)
    print(f'{pin.target}: {display(dest)}: {state.kind}')
    if state.kind == 'missing':
        print(f'  build it with: python apply.py --target {pin.target}')
        return EXIT_OK
    for line in state.local_work:
        print(f'  local: {line}')
    for line in state.changed_inputs:
        print(f'  outdated: {line}')
    if state.stamp is None:
        return EXIT_OK
    upstream = git_text(['rev-parse', f'{UPSTREAM_TAG}^{{tree}}'], dest)
    verdict = 'pristine (tree id matches the lock)' if upstream == pin.tree else f'ALTERED (tree {upstream})'
    print(f'  upstream: {pin.slug}@{pin.commit[:12]}, tag {UPSTREAM_TAG} {verdict}')
    built = dict(state.stamp.get('patches') or [])
    current = inputs_of(pin)['patches']
    for name, digest in current:
        label = 'applied' if built.get(name) == digest else 'changed' if name in built else 'not applied'
        print(f'  {label:<12}{name}')
    for name in built.keys() - dict(current).keys():
        print(f'  {"dropped":<12}{name} (applied in the tree, no longer in the series)')
    return EXIT_OK


def show_diff(pin: Pin, dest: Path) -> int:
    if read_stamp(dest) is None:
        raise GanpatchError(f'{display(dest)} is not a ganpatch tree', f'build it with --target {pin.target} first')
    log_out = git_text(['log', '--reverse', '--format=%x00%h %s', '--numstat', f'{UPSTREAM_TAG}..HEAD'], dest)
    print(f'{pin.target}: {display(dest)} on top of {pin.slug}@{pin.commit[:12]}')
    for block in filter(None, log_out.split('\0')):
        title, *numstat = [line for line in block.splitlines() if line]
        added = removed = 0
        for line in numstat:
            plus, minus, _ = line.split('\t', 2)
            added += int(plus) if plus.isdigit() else 0
            removed += int(minus) if minus.isdigit() else 0
        print(f'  {title[:72]:<72}  {len(numstat):>3} files  +{added} -{removed}')
    print(git_text(['diff', '--stat=100', UPSTREAM_TAG], dest))
    print(f'full diff: git -C {display(dest)} diff {UPSTREAM_TAG}    '
          f'per patch: git -C {display(dest)} log -p {UPSTREAM_TAG}..')
    return EXIT_OK


def display(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    return str(path)


# ------------------------------------------------------------------------------------------------
# Command line.

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Build build/<target>/: the pinned upstream (tag `upstream`), one commit per patch, one '
                    'overlay commit. Exit codes: 0 ok, 1 error, 2 usage, 3 no upstream source, '
                    '4 upstream rejected, 5 patch does not apply, 6 local work in the destination.')
    parser.add_argument('--target', help='a target of upstream.lock (case-insensitive, aliases too) or `all`')
    parser.add_argument('--dest', type=Path, help='destination (default build/<target>; with `all`, the parent)')
    parser.add_argument('--source', type=Path,
                        help='git repository or .tar.gz/.zip of the pinned upstream (one target)')
    parser.add_argument('--mirror', type=Path, default=os.environ.get('GANPATCH_MIRROR') or None,
                        help='directory of git mirrors or archives (default $GANPATCH_MIRROR)')
    parser.add_argument('--offline', action='store_true', help='never use the network')
    parser.add_argument('--force', action='store_true', help='rebuild over local work, moving the old tree to a backup')
    parser.add_argument('--3way', dest='three_way', action='store_true',
                        help='on a failing patch, keep a conflict tree with markers and print its path')
    commands = parser.add_mutually_exclusive_group()
    for name, text in (('list', 'targets, pins, patch counts, cache state'),
                       ('check', 'fetch, verify and try every patch; write nothing'),
                       ('status', 'state of the destination and its patches'),
                       ('diff', 'per-patch summary and `git diff --stat upstream`'),
                       ('refresh', 'export the tree\'s commits and overlay edits back to patches/ and overlays/')):
        commands.add_argument(f'--{name}', action='store_true', help=text)
    return parser.parse_args(argv)


def validate_args(args: argparse.Namespace, pins: dict[str, Pin]) -> list[Pin]:
    if args.list:
        return []
    if not args.target:
        raise GanpatchError('--target is required', f'valid targets: {", ".join(pins)} (or all); --list shows them')
    targets = resolve_targets(args.target, pins)
    building = not (args.check or args.status or args.diff or args.refresh)
    if args.source is not None and (args.target.casefold() == 'all' or len(targets) != 1):
        raise GanpatchError('--source names the upstream of one target', 'give --target NAME, or use --mirror for all')
    if args.source is not None and not args.source.exists():
        raise GanpatchError(f'--source {args.source} does not exist', 'give a git repository or an archive')
    if args.mirror is not None and not args.mirror.is_dir():
        raise GanpatchError(f'mirror {args.mirror} is not a directory', 'fix --mirror or $GANPATCH_MIRROR')
    if (args.three_way or args.force) and not building and not (args.force and args.refresh):
        raise GanpatchError('--force and --3way only apply when building (and --force to --refresh)',
                            'drop them, or drop --check/--status/--diff')
    return targets


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        require_git()
        pins = load_lock()
        targets = validate_args(args, pins)
        if args.list:
            return list_targets(pins)
        sources = Sources(args.source, args.mirror, args.offline)
        code = EXIT_OK
        for pin in targets:
            try:
                code = run_command(args, pin, default_dest(pin, args.dest, len(targets) > 1), sources) or code
            except GanpatchError as exc:
                report(exc, pin.target if len(targets) > 1 else None)
                code = code or exc.code
        return code
    except GanpatchError as exc:
        report(exc)
        return exc.code


def run_command(args: argparse.Namespace, pin: Pin, dest: Path, sources: Sources) -> int:
    if args.check:
        return check_target(pin, sources)
    if args.status:
        return show_status(pin, dest)
    if args.diff:
        return show_diff(pin, dest)
    if args.refresh:
        return refresh_target(pin, dest, force=args.force)
    return apply_target(pin, dest, sources, force=args.force, three_way=args.three_way)


def report(exc: GanpatchError, target: str | None = None) -> None:
    prefix = f'{target}: ' if target else ''
    log(f'error: {prefix}{exc}')
    for line in exc.details:
        log(f'  {line}')
    if exc.hint:
        log(f'hint: {exc.hint}')


if __name__ == '__main__':
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OK)
