"""Moving a work tree from one commit to another the way `git checkout` does, without losing anything.

`plan_checkout` finds what would be lost:

- a tracked file whose content (in the work tree or staged in the index) is neither the old nor the
  new commit's version: a modification, a staged new file, an edit hidden by skip-worktree or
  assume-unchanged;
- an untracked or ignored file (or folder) where the new commit puts a file, or a file where it
  needs a folder.

Everything else stays: untracked and ignored files (outputs, datasets, caches), and the repository
itself (stashes, branches, tags, remotes, hooks, config). A file already at its new version counts
as done, so the same plan finishes an interrupted checkout.

`move_aside` moves the blocking files into `<tree>.aside-<time>/` (never deletes); `checkout` then
writes the new commit with `git read-tree --reset -u` on a private copy of the index that is renamed
over `.git/index` at the end, so a killed checkout leaves no `index.lock` behind.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import stat
from pathlib import Path

from .destination import unique_sibling
from .git import Repo
from .trees import MODE_EXEC, MODE_FILE, MODE_LINK

CHECKOUT_INDEX = 'ganpatch-checkout.index'
Entry = tuple[str, str]  # (mode, object id)


@dataclasses.dataclass(frozen=True)
class Blocker:
    path: str
    why: str
    staged: str | None = None  # the staged blob, when it differs from the work tree file (saved too)

    def __str__(self) -> str:
        return f'{self.path} ({self.why})'


def plan_checkout(repo: Repo, old: str | None, new: str) -> list[Blocker]:
    """What moving the work tree from commit `old` (None: nothing) to `new` would overwrite or delete."""
    tree = repo.work_tree
    old_files = repo.list_tree(old) if old else {}
    new_files = repo.list_tree(new)
    index, flagged = _index_entries(repo)
    candidates = set(flagged) | set(_changed_in_work_tree(repo))
    candidates |= {path for path in set(index) | set(old_files) if index.get(path) != old_files.get(path)}
    added = [path for path in new_files if path not in old_files and path not in index]
    candidates |= {path for path in added if os.path.lexists(tree / path)}
    states = _work_tree_states(repo, sorted(candidates))
    blockers = []
    for path in sorted(candidates):
        known = {old_files.get(path), new_files.get(path)}
        current, staged = states.get(path), index.get(path)
        tracked = path in old_files or path in index
        if current == 'folder':
            if path in new_files and _holds_untracked(tree / path, path, old_files, index):
                blockers.append(Blocker(path, 'a folder where an incoming file goes'))
            elif tracked:
                blockers.append(Blocker(path, 'a tracked file replaced by a folder'))
            continue
        staged_is_known = staged is None or staged in known
        current_is_known = current is None or current in known
        if not tracked:
            if not current_is_known:
                blockers.append(Blocker(path, 'untracked; an incoming file would overwrite it'))
        elif not current_is_known or not staged_is_known:
            why = 'modified' if path in old_files else 'staged new file'
            keep_staged = staged is not None and not staged_is_known and staged != current
            blockers.append(Blocker(path, why, staged[1] if keep_staged else None))
    blockers += _files_where_folders_go(tree, old_files, index, new_files)
    return blockers


def _index_entries(repo: Repo) -> tuple[dict[str, Entry], list[str]]:
    """Stage-0 index entries, and the paths whose work tree git does not look at (skip-worktree,
    assume-unchanged) or that are unmerged."""
    if not (repo.git_dir / 'index').exists():
        return {}, []
    entries, flagged = {}, []
    for record in filter(None, repo.run(['ls-files', '-s', '-v', '-z']).stdout.split(b'\0')):
        meta, path = record.split(b'\t', 1)
        tag, mode, oid, stage = meta.decode().split()
        name = path.decode('utf-8', 'surrogateescape')
        if stage != '0' or tag == 'S' or tag.islower():
            flagged.append(name)
        if stage == '0':
            entries[name] = (mode, oid)
    return entries, flagged


def _changed_in_work_tree(repo: Repo) -> list[str]:
    if not (repo.git_dir / 'index').exists():
        return []
    out = repo.run(['diff-files', '--name-only', '-z', '--no-renames']).stdout
    return [path.decode('utf-8', 'surrogateescape') for path in out.split(b'\0') if path]


def _work_tree_states(repo: Repo, paths: list[str]) -> dict[str, Entry | str | None]:
    """(mode, blob id) of each path as it is in the work tree; 'folder' for a folder, None if absent."""
    states: dict[str, Entry | str | None] = {}
    files, links = [], {}
    for path in paths:
        full = repo.work_tree / path
        try:
            info = full.lstat()
        except OSError:
            states[path] = None
            continue
        if stat.S_ISLNK(info.st_mode):
            links[path] = os.readlink(full).encode('utf-8', 'surrogateescape')
        elif stat.S_ISDIR(info.st_mode):
            states[path] = 'folder'
        else:
            files.append((path, MODE_EXEC if info.st_mode & 0o100 else MODE_FILE))
    if files:
        listing = ''.join(f'{path}\n' for path, _ in files).encode('utf-8', 'surrogateescape')
        oids = repo.run(['hash-object', '--stdin-paths'], stdin=listing).stdout.decode().split()
        states.update({path: (mode, oid) for (path, mode), oid in zip(files, oids)})
    for path, target in links.items():
        states[path] = (MODE_LINK, repo.run(['hash-object', '--stdin'], stdin=target).stdout.decode().strip())
    return states


def _holds_untracked(folder: Path, prefix: str, old_files: dict, index: dict) -> bool:
    """Whether a folder holds anything besides files the old commit tracks (which the checkout removes)."""
    for base, _, names in os.walk(folder):
        for name in names:
            relative = f'{prefix}/{Path(base, name).relative_to(folder).as_posix()}'
            if relative not in old_files and relative not in index:
                return True
    return any(os.path.islink(os.path.join(base, name)) for base, dirs, _ in os.walk(folder) for name in dirs)


def _files_where_folders_go(tree: Path, old_files: dict, index: dict, new_files: dict) -> list[Blocker]:
    """An untracked file or link where the new commit needs a folder."""
    new_folders = {'/'.join(path.split('/')[:i]) for path in new_files for i in range(1, path.count('/') + 1)}
    old_folders = {'/'.join(path.split('/')[:i]) for path in old_files for i in range(1, path.count('/') + 1)}
    blockers = []
    for folder in sorted(new_folders - old_folders):
        full = tree / folder
        if folder in old_files or folder in index or not os.path.lexists(full):
            continue
        if full.is_symlink() or not full.is_dir():
            blockers.append(Blocker(folder, 'untracked; an incoming folder goes there'))
    return blockers


def move_aside(repo: Repo, blockers: list[Blocker]) -> Path:
    """Moves the blocking files (and staged versions that differ) to `<tree>.aside-<time>/`."""
    tree = repo.work_tree
    aside = unique_sibling(tree, 'aside')
    for blocker in blockers:
        source, kept = tree / blocker.path, aside / blocker.path
        kept.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(source):
            shutil.move(source, kept)
        if blocker.staged:
            kept.with_name(kept.name + '.staged').write_bytes(repo.run(['cat-file', 'blob', blocker.staged]).stdout)
    return aside


def checkout(repo: Repo, commit: str) -> None:
    """Work tree and index to `commit` (files the index tracks and the commit lacks are removed)."""
    private, real = repo.git_dir / CHECKOUT_INDEX, repo.git_dir / 'index'
    if real.exists():
        shutil.copyfile(real, private)
    else:
        private.unlink(missing_ok=True)
    Path(str(private) + '.lock').unlink(missing_ok=True)  # left by a killed run; nobody else uses this index
    repo.run(['read-tree', '--reset', '-u', commit], index=private)
    os.replace(private, real)
