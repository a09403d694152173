"""Making a tree's commits inside a repository, without touching its work tree, index or HEAD.

A target's history is

    upstream   the pristine tree (tag `upstream`), committed by ganpatch at a fixed date
    patch 1..n one commit per file of the series, with the patch's author, date, subject and body
    overlays   overlays/common/ganpatch/ as ganpatch/ and overlays/<target>/ at the root (tag
               `ganpatch-overlays`, the tip of branch `main`)

All of it is made with a private index file and plumbing (`git apply --cached`, `write-tree`,
`hash-object`): a build only adds objects, so it can run inside the user's tree before anything
there changes (`update.py` then moves the branch and checks it out). Committer and dates are fixed,
so the same inputs give the same commit ids.

Patches apply at zero fuzz (`git apply` never ignores context lines). A patch's message is read
the way `git am -b` reads it (`git mailinfo -b`: only `[PATCH ...]` prefixes are stripped).
"""
from __future__ import annotations

import dataclasses
import email.utils
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import GanpatchError, PatchError, RejectedError
from .git import FIXED_DATE, IDENTITY, Repo, commit_object
from .inputs import Inputs
from .pins import Source
from .trees import Files, git_object_id

BRANCH = 'main'
UPSTREAM_TAG = 'upstream'
OVERLAY_TAG = 'ganpatch-overlays'
OVERLAY_SUBJECT = 'ganpatch: overlays'
BUILD_INDEX = 'ganpatch-build.index'


@dataclasses.dataclass(frozen=True)
class Built:
    """The commits of one build."""
    upstream: str
    patches: tuple[str, ...]
    overlays: str

    @property
    def head(self) -> str:
        return self.overlays


class SeriesError(PatchError):
    """A patch of the series does not apply; `number` is its 1-based position, `tip` the commit before it."""

    def __init__(self, message: str, hint: str, *, number: int, tip: str):
        super().__init__(message, hint)
        self.number, self.tip = number, tip


def build_commits(repo: Repo, inputs: Inputs, upstream_files: Callable[[], Files], *, stop_before: int | None = None
                  ) -> Built:
    """Upstream, patch and overlay commits for `inputs`; `upstream_files` is called only when the
    repository does not hold the pinned tree yet."""
    upstream = ensure_upstream(repo, inputs.pin.upstream, upstream_files)
    index = repo.git_dir / BUILD_INDEX
    try:
        repo.run(['read-tree', upstream], index=index)
        patches = apply_series(repo, upstream, inputs.patches, index)
        overlays = commit_overlays(repo, patches[-1] if patches else upstream, inputs, index)
    finally:
        index.unlink(missing_ok=True)
    return Built(upstream, tuple(patches), overlays)


# ------------------------------------------------------------------------------------------------
# The upstream commit.

def upstream_commit_body(source: Source) -> bytes:
    message = (f'Upstream {source.slug}@{source.commit}\n\nPristine tree {source.tree} of {source.repo}\n'
               f'(license: {source.license}), imported by ganpatch apply.py.\n').encode()
    return commit_object(source.tree, [], f'{IDENTITY} {FIXED_DATE}', message)


def ensure_upstream(repo: Repo, source: Source, upstream_files: Callable[[], Files]) -> str:
    """The upstream commit's id; its objects are imported only when the repository lacks them."""
    body = upstream_commit_body(source)
    commit = git_object_id('commit', body).hex()
    if repo.has_object(commit):
        return commit
    if repo.has_object(source.tree, 'tree'):
        return repo.write_object('commit', body)
    import_tree(repo, upstream_files(), body)
    if not repo.has_object(commit):
        raise RejectedError(f'imported tree of {source.slug} differs from the lock ({source.tree})',
                            'this is a bug in apply.py; please report it')
    return commit


def import_tree(repo: Repo, files: Files, commit_body: bytes) -> None:
    """The files as one commit (exact bytes, no filters) through `git fast-import`, without moving any branch."""
    header, message = commit_body.split(b'\n\n', 1)
    meta = dict(line.split(b' ', 1) for line in header.splitlines() if not line.startswith(b'tree '))
    stream = [b'commit refs/ganpatch/import\n', b'author %s\n' % meta[b'author'],
              b'committer %s\n' % meta[b'committer'], b'data %d\n%s\n' % (len(message), message)]
    for path in sorted(files):
        entry = files[path]
        stream.append(b'M %s inline %s\ndata %d\n%s\n'
                      % (entry.mode.encode(), _quote_path(path), len(entry.data), entry.data))
    # No compression or delta search: most of the bytes are already-compressed images.
    repo.run(['-c', 'pack.compression=0', 'fast-import', '--quiet', '--big-file-threshold=1'], stdin=b''.join(stream))
    repo.run(['update-ref', '-d', 'refs/ganpatch/import'])


def _quote_path(path: str) -> bytes:
    """A path in git fast-import's C-style quoting."""
    raw = path.encode('utf-8', 'surrogateescape')
    escaped = b''.join(b'\\%03o' % byte if byte < 0x20 or byte in b'"\\' else bytes([byte]) for byte in raw)
    return b'"%s"' % escaped


# ------------------------------------------------------------------------------------------------
# Patches.

@dataclasses.dataclass(frozen=True)
class Mail:
    """A format-patch file as `git am` reads it."""
    author: str      # `Name <email> <epoch> <+hhmm>`
    message: bytes   # subject and body, cleaned up like a commit message
    diff: bytes      # the patch proper


def apply_series(repo: Repo, base: str, patches: tuple[Path, ...], index: Path) -> list[str]:
    """One commit per patch on `base`; `index` must hold `base`'s tree."""
    commits, tip = [], base
    with tempfile.TemporaryDirectory(prefix='ganpatch-mail-') as scratch:
        for number, patch in enumerate(patches, 1):
            mail = read_mail(repo, patch, Path(scratch))
            diff = Path(scratch) / 'diff'
            diff.write_bytes(mail.diff)
            failure = apply_diff(repo, diff, index)
            if failure is not None:
                raise SeriesError(describe_failure(repo, patch, diff, failure, index),
                                  'rebase the patch on the pinned upstream (--3way keeps a conflict tree); '
                                  'the destination was not touched', number=number, tip=tip)
            tree = repo.text(['write-tree'], index=index)
            tip = repo.write_object('commit', commit_object(tree, [tip], mail.author, mail.message))
            commits.append(tip)
    return commits


def apply_diff(repo: Repo, diff: Path, index: Path) -> str | None:
    """Applies a diff to the index at zero fuzz; None, or git apply's complaint."""
    result = repo.run(['apply', '--cached', '--whitespace=nowarn', str(diff)], index=index, check=False)
    return None if result.returncode == 0 else result.stderr.decode(errors='replace')


def read_mail(repo: Repo, patch: Path, scratch: Path) -> Mail:
    """Author, message and diff of a format-patch file, through `git mailinfo -b` as `git am -b` does."""
    info = repo.run(['mailinfo', '-b', '-u', str(scratch / 'msg'), str(scratch / 'patch')],
                    stdin=patch.read_bytes(), check=False)
    if info.returncode != 0:
        reason = info.stderr.decode(errors='replace').strip()
        raise PatchError(f'patch {patch.name} cannot be read as a mail ({reason})',
                         'regenerate it with git format-patch')
    fields = dict(line.split(': ', 1) for line in info.stdout.decode('utf-8', 'replace').splitlines() if ': ' in line)
    name, address = _without_crud(fields.get('Author', '')), _without_crud(fields.get('Email', ''))
    parsed = email.utils.parsedate_tz(fields.get('Date', ''))
    if not address or parsed is None:
        raise PatchError(f'patch {patch.name} lacks a valid From: or Date: header',
                         'regenerate it with git format-patch (apply.py keeps the author and date of every patch)')
    offset = (parsed[9] or 0) // 60
    zone = f'{"-" if offset < 0 else "+"}{abs(offset) // 60:02d}{abs(offset) % 60:02d}'
    diff = (scratch / 'patch').read_bytes()
    if not re.search(rb'^(diff --git |\+\+\+ )', diff, re.M):
        raise PatchError(f'patch {patch.name} holds no change (an empty commit?)',
                         'remove it from the series, or regenerate it from a commit that changes files')
    subject = fields.get('Subject', '').encode()
    message = stripspace(subject + b'\n\n' + (scratch / 'msg').read_bytes())
    return Mail(f'{name} <{address}> {email.utils.mktime_tz(parsed)} {zone}', message, diff)


def _without_crud(text: str) -> str:
    """git's ident cleanup: no leading/trailing whitespace or `.,:;<>"\\'`, no `<`, `>` or newline inside."""
    crud = ' \t\n\r\v\f.,:;<>"\\\''
    return ''.join(ch for ch in text.strip(crud) if ch not in '<>\n')


def stripspace(message: bytes) -> bytes:
    """git's message cleanup: trailing spaces and blank lines at both ends dropped, runs of blank lines
    squeezed to one, a final newline."""
    lines, out, blank = [line.rstrip() for line in message.split(b'\n')], [], False
    for line in lines:
        if not line:
            blank = bool(out)
            continue
        if blank:
            out.append(b'')
        out.append(line)
        blank = False
    return b''.join(line + b'\n' for line in out)


_FAILED_AT = re.compile(r'^error: patch failed: (.+):(\d+)$', re.M)
_FAILED_FILE = re.compile(r'^error: (.+?): (does not exist in index|No such file or directory|already exists in '
                          r'index|already exists in working directory|patch does not apply|does not match index)$',
                          re.M)


def describe_failure(repo: Repo, patch: Path, diff: Path, stderr: str, index: Path) -> str:
    """`patch P does not apply: FILE, hunk #N (@@ ... @@)` from git apply's complaint."""
    if at := _FAILED_AT.search(stderr):
        path, line = at.group(1), int(at.group(2))
        number, header = find_hunk(diff.read_text(encoding='utf-8', errors='replace'), path, line)
        where = f'{path}, hunk #{number} ({header})' if number else f'{path}, line {line}'
    elif failed := _FAILED_FILE.search(stderr):
        where = f'{failed.group(1)} ({failed.group(2)})'
    else:
        where = stderr.strip().splitlines()[-1] if stderr.strip() else 'unknown reason'
    reverse = repo.run(['apply', '--cached', '--check', '-R', str(diff)], index=index, check=False)
    already = '; it applies in reverse, so the upstream already has this change' if reverse.returncode == 0 else ''
    return f'patch {patch.name} does not apply: {where}{already}'


def find_hunk(diff: str, path: str, old_start: int) -> tuple[int | None, str]:
    """The 1-based number and header of the hunk of `path` starting at `old_start` in the old file."""
    current, number = None, 0
    for line in diff.splitlines():
        if line.startswith('diff --git '):
            current, number = line.split(' b/', 1)[-1], 0
        elif line.startswith('@@ ') and current == path:
            number += 1
            start = int(re.match(r'@@ -(\d+)', line).group(1))
            if start == old_start:
                return number, line.split(' @@')[0] + ' @@'
    return None, ''


# ------------------------------------------------------------------------------------------------
# Overlays.

def commit_overlays(repo: Repo, parent: str, inputs: Inputs, index: Path) -> str:
    """The overlay files added to `parent`'s tree (held by `index`) as one commit (also when there are none)."""
    overlays = inputs.overlays
    if overlays:
        check_overlay_paths(repo, overlays, index)
        names = list(overlays)
        listing = '\n'.join(str(overlays[name]) for name in names).encode() + b'\n'
        oids = repo.run(['hash-object', '-w', '--no-filters', '--stdin-paths'], stdin=listing).stdout.decode().split()
        records = b''.join(b'%s %s\t%s\0' % (b'100755' if overlays[name].stat().st_mode & 0o100 else b'100644',
                                               oid.encode(), name.encode('utf-8', 'surrogateescape'))
                           for name, oid in zip(names, oids))
        repo.run(['update-index', '-z', '--index-info'], stdin=records, index=index)
    tree = repo.text(['write-tree'], index=index)
    message = (f'{OVERLAY_SUBJECT}\n\nCopies overlays/common/ganpatch/ to ganpatch/ and overlays/{inputs.pin.target}/ '
               f'to the\ntree root ({len(overlays)} files). Made by apply.py; --refresh copies edits back.\n')
    return repo.write_object('commit', commit_object(tree, [parent], f'{IDENTITY} {FIXED_DATE}', message.encode()))


def check_overlay_paths(repo: Repo, overlays: dict[str, Path], index: Path) -> None:
    """An overlay file may replace a file, never a folder, and is never written through a file or link."""
    tracked = {path.decode('utf-8', 'surrogateescape')
               for path in repo.run(['ls-files', '-z'], index=index).stdout.split(b'\0') if path}
    folders = {'/'.join(path.split('/')[:i]) for path in tracked for i in range(1, path.count('/') + 1)}
    for tree_path in overlays:
        parts = tree_path.split('/')
        blocking = next(('/'.join(parts[:i]) for i in range(1, len(parts)) if '/'.join(parts[:i]) in tracked), None)
        if blocking is not None:
            raise GanpatchError(f'overlay {tree_path} would be written through the file or link {blocking}',
                                'rename the overlay file')
        if tree_path in folders:
            raise GanpatchError(f'overlay {tree_path} would replace the folder {tree_path}/ of the tree',
                                'rename the overlay file')
