"""The state of a destination, as --status reports it and as every run checks it first.

    missing       nothing there yet (or an empty folder)
    foreign       a folder that is not a ganpatch tree of this target (refused; --force moves it aside)
    interrupted   an update was killed half-way (`update.py` finishes it on the next run)
    up to date    built from the current lock entry, patches and overlays
    outdated      built from other inputs: an update moves it in place (see `checkout.py` for what
                  may block that)

Local work never changes the kind: it is reported beside it (modified tracked files, commits after
the build, untracked files, a git operation in progress).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .git import Repo
from .inputs import Inputs
from .journal import read_journal
from .stamp import built_inputs, read_stamp

GIT_OPERATIONS = {'rebase-apply': 'a git am or rebase', 'rebase-merge': 'a git rebase', 'MERGE_HEAD': 'a git merge',
                  'CHERRY_PICK_HEAD': 'a git cherry-pick', 'REVERT_HEAD': 'a git revert', 'BISECT_LOG': 'a git bisect'}


@dataclasses.dataclass
class TreeState:
    kind: str
    stamp: dict | None = None
    changed_inputs: list[str] = dataclasses.field(default_factory=list)  # why it is outdated
    journal: dict | None = None  # the interrupted update


def inspect_tree(dest: Path, inputs: Inputs) -> TreeState:
    if not dest.exists() or is_empty_or_abandoned(dest):
        return TreeState('missing')
    git_dir = dest / '.git'
    journal = read_journal(git_dir) if git_dir.is_dir() else None
    stamp = read_stamp(git_dir) if git_dir.is_dir() else None
    if journal is not None and journal.get('target') == inputs.pin.target:
        return TreeState('interrupted', stamp, journal=journal)
    if stamp is None or stamp.get('target') != inputs.pin.target:
        return TreeState('foreign', stamp)
    changed = changed_inputs(built_inputs(stamp), inputs.digest())
    return TreeState('outdated' if changed else 'up to date', stamp, changed)


def is_empty_or_abandoned(dest: Path) -> bool:
    """An empty folder, or one holding only a `.git` without commits, stamp or journal (a build killed
    right after `git init`, or the user's own fresh `git init`): nothing there to keep."""
    if not dest.is_dir():
        return False
    entries = [entry.name for entry in dest.iterdir()]
    if not entries:
        return True
    if entries != ['.git'] or not (dest / '.git').is_dir():
        return False
    git_dir = dest / '.git'
    if read_stamp(git_dir) is not None or read_journal(git_dir) is not None:
        return False
    repo = Repo.of_tree(dest)
    return repo.resolve('HEAD') is None and not repo.text(['for-each-ref', '--count=1'])


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


def operation_in_progress(git_dir: Path) -> str | None:
    """A git am/rebase/merge/... that was started in the tree and not finished."""
    return next((what for name, what in GIT_OPERATIONS.items() if (git_dir / name).exists()), None)


def built_head(stamp: dict) -> str | None:
    """The commit the tree was built, or last refreshed, at."""
    return (stamp.get('refreshed') or stamp).get('head')


def commits_after(repo: Repo, stamp: dict) -> list[str]:
    """`<short id> <subject>` of the commits on HEAD after the build (or the last refresh)."""
    built, head = built_head(stamp), repo.resolve('HEAD')
    if built is None or head is None or head == built:
        return []
    if not repo.has_object(built) or repo.run(['merge-base', '--is-ancestor', built, head], check=False).returncode:
        return [f'HEAD moved from {built[:12]} to {head[:12]} (not a descendant of the build)']
    return repo.text(['log', '--format=%h %s', f'{built}..{head}']).splitlines()


def modified_files(repo: Repo) -> list[str]:
    """`<status> <path>` of tracked files whose index or work tree differs from HEAD."""
    out = repo.run(['status', '--porcelain=v1', '-z', '--untracked-files=no']).stdout
    return _porcelain(out)


def untracked_paths(repo: Repo) -> list[str]:
    """Untracked and ignored paths (a folder wholly untracked or ignored counts once, as `folder/`)."""
    out = repo.run(['status', '--porcelain=v1', '-z', '--untracked-files=normal', '--ignored=matching']).stdout
    return [entry[3:] for entry in _porcelain(out) if entry[:2] in ('??', '!!')]


def _porcelain(out: bytes) -> list[str]:
    records, entries, index = out.split(b'\0'), [], 0
    while index < len(records):
        record = records[index].decode('utf-8', 'surrogateescape')
        index += 1
        if not record:
            continue
        if record[0] in 'RC':
            index += 1  # the rename's source path follows
        entries.append(record)
    return entries


def head_branch(repo: Repo) -> str | None:
    """The branch HEAD is on, or None when detached."""
    result = repo.run(['symbolic-ref', '--quiet', '--short', 'HEAD'], check=False)
    return result.stdout.decode().strip() or None if result.returncode == 0 else None
