"""The `authors` branch: the upstream commit plus the original authors' change, as one commit.

With `--with-authors`, a built tree gains the branch `authors` so that `git diff authors HEAD` shows
how ganpatch differs from the original authors' code. Their code is pinned in upstream.lock like
an upstream (commit + tree id, verified, cached) and enters in one of two ways:

- `patch`: a diff in their repository, applied to the pinned upstream at zero fuzz, its lines kept
  verbatim (trailing whitespace included: it is their code);
- `files`: files of their repository that replace the upstream's (for a fork on an older base,
  where only those files carry their change).

The commit has ganpatch's fixed identity and date, so its id is reproducible.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from .commits import apply_diff, describe_failure
from .errors import GanpatchError, PatchError
from .git import FIXED_DATE, IDENTITY, Repo, commit_object
from .pins import Authors, Pin
from .trees import MODE_EXEC, MODE_FILE, MODE_LINK, Files

AUTHORS_BRANCH = 'authors'
AUTHORS_REF = f'refs/heads/{AUTHORS_BRANCH}'
AUTHORS_INDEX = 'ganpatch-authors.index'


def require_authors(pin: Pin) -> Authors:
    if pin.authors is None:
        raise GanpatchError(f'upstream.lock pins no authors\' code for {pin.target}',
                            'build it without --with-authors (the targets with authors\' code are listed by --list)')
    return pin.authors


def build_authors_commit(repo: Repo, pin: Pin, upstream: str, authors_files: Callable[[], Files]) -> str:
    """The commit `upstream` + the authors' change."""
    authors = require_authors(pin)
    files = authors_files()
    index = repo.git_dir / AUTHORS_INDEX
    try:
        repo.run(['read-tree', upstream], index=index)
        if authors.patch:
            _apply_their_patch(repo, authors, files, index)
        else:
            _take_their_files(repo, authors, files, index)
        tree = repo.text(['write-tree'], index=index)
    finally:
        index.unlink(missing_ok=True)
    source = authors.source
    message = (f"Authors' code: {source.slug}@{source.commit[:7]}\n\n"
               f"{authors.describe()}\n(their tree {source.tree}, license: {source.license}).\n"
               f"Made by ganpatch apply.py --with-authors: `git diff {AUTHORS_BRANCH} HEAD` shows how\n"
               f"ganpatch differs from the original authors' code.\n").encode()
    return repo.write_object('commit', commit_object(tree, [upstream], f'{IDENTITY} {FIXED_DATE}', message))


def _their_file(authors: Authors, files: Files, path: str):
    entry = files.get(path)
    if entry is None:
        raise GanpatchError(f'{authors.source.slug}@{authors.source.commit[:12]} has no file {path}',
                            'fix the [<target>.authors] entry of upstream.lock')
    return entry


def _apply_their_patch(repo: Repo, authors: Authors, files: Files, index: Path) -> None:
    entry = _their_file(authors, files, authors.patch)
    with tempfile.TemporaryDirectory(prefix='ganpatch-authors-') as scratch:
        diff = Path(scratch) / Path(authors.patch).name
        diff.write_bytes(entry.data)
        failure = apply_diff(repo, diff, index)
        if failure is not None:
            raise PatchError(f'the authors\' {describe_failure(repo, diff, diff, failure, index)}',
                             'their patch no longer fits the pinned upstream: pin their code at a matching commit')


def _take_their_files(repo: Repo, authors: Authors, files: Files, index: Path) -> None:
    records = []
    for path in authors.files:
        entry = _their_file(authors, files, path)
        oid = repo.run(['hash-object', '-w', '--no-filters', '--stdin'], stdin=entry.data).stdout.decode().strip()
        mode = entry.mode if entry.mode in (MODE_FILE, MODE_EXEC, MODE_LINK) else MODE_FILE
        records.append(b'%s %s\t%s\0' % (mode.encode(), oid.encode(), path.encode('utf-8', 'surrogateescape')))
    repo.run(['update-index', '-z', '--index-info'], stdin=b''.join(records), index=index)


def authors_stamp(pin: Pin, commit: str) -> dict:
    return {**require_authors(pin).as_dict(), 'commit': commit}
