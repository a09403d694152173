"""Building a tree, and updating an outdated one in place, inside the same repository.

    missing      `git init`, then the same steps as an update from nothing
    foreign      refused; with --force the folder is moved to `<dest>.backup-<time>` first
    up to date   left alone, whatever it holds (with --with-authors, only the `authors` branch is made)
    outdated     the new commits are made in the tree's own repository (`commits.py`: objects only);
                 then, under the destination's lock and right before anything changes, the work
                 tree is checked for what the move would overwrite (`checkout.plan_checkout`).
                 Blocking files stop the update (exit 6) unless --force moves just them aside.
                 Then, in this order, each step recorded in a journal first (`journal.py`):
                 the previous HEAD is kept as `refs/ganpatch/previous/<time>`; the work tree and
                 index move to the new commit (`checkout.checkout`); `main`, the tags and
                 `authors` move; HEAD is put on `main`; the stamp is written; the journal removed.
    interrupted  the journal's update is finished first (the same checks and steps).

Untracked and ignored files, stashes, other branches, tags, remotes, hooks and config are never
touched. Commit ids depend only on the inputs.
"""
from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

from . import locking
from .authors import AUTHORS_BRANCH, AUTHORS_REF, authors_stamp, build_authors_commit
from .checkout import Blocker, checkout, move_aside, plan_checkout
from .commits import BRANCH, OVERLAY_TAG, UPSTREAM_TAG, SeriesError, build_commits, ensure_upstream
from .conflict import keep_conflict_tree
from .destination import display, resolve_dest, unique_sibling
from .errors import EXIT_OK, GanpatchError, LocalWorkError, log, plural
from .fetch import Sources
from .git import Repo, run_git
from .inputs import Inputs, Project, read_inputs
from .journal import journal_path, remove_journal, write_journal
from .pins import Pin
from .staging import inputs_lock
from .sourcing import Lazy
from .stamp import write_stamp
from .state import (TreeState, commits_after, head_branch, inspect_tree, modified_files, operation_in_progress,
                    untracked_paths)

PREVIOUS_REFS = 'refs/ganpatch/previous'


def apply_target(project: Project, pin: Pin, dest: Path, sources: Sources, *, force: bool, three_way: bool,
                 with_authors: bool) -> int:
    dest = resolve_dest(project, dest)
    shown = display(dest)
    upstream_files = Lazy(pin.upstream, sources)
    if not dest.exists():
        upstream_files()  # a new tree needs the upstream: no source, no folder
    with locking.destination(dest, shown), inputs_lock(project, pin.target):
        inputs = read_inputs(project, pin)
        state = inspect_tree(dest, inputs)
        if state.kind == 'interrupted':
            finish_update(dest, state.journal, force=force)
            state = inspect_tree(dest, inputs)
        if state.kind == 'foreign':
            state = move_foreign_tree(dest, pin, force=force)
        repo = Repo.of_tree(dest)
        if state.kind == 'up to date':
            log(f'{pin.target}: {shown} is up to date{local_work_note(repo, state.stamp)}')
            if with_authors:
                update_authors_branch(repo, pin, state.stamp, upstream_files, sources, shown)
            return EXIT_OK
        if state.kind != 'missing':
            return update_tree(repo, inputs, state, upstream_files, sources, force=force, three_way=three_way,
                               with_authors=with_authors)
        made = dest if not dest.exists() else dest / '.git'
        dest.mkdir(parents=True, exist_ok=True)  # the umask decides its mode, as for `git clone`
        try:
            run_git(['init', '-q', f'--initial-branch={BRANCH}', str(dest)], cwd=dest)
            return update_tree(repo, inputs, state, upstream_files, sources, force=force, three_way=three_way,
                               with_authors=with_authors)
        except BaseException:
            if not journal_path(repo.git_dir).exists():  # nothing of the new tree is there yet: leave no trace
                shutil.rmtree(made, ignore_errors=True)
            raise


def move_foreign_tree(dest: Path, pin: Pin, *, force: bool) -> TreeState:
    shown = display(dest)
    what = f'{shown} is not a ganpatch tree of {pin.target}'
    if not force:
        raise LocalWorkError(f'{shown} holds files that are not a ganpatch tree of {pin.target}',
                             'give another --dest, or pass --force to move the folder to a backup (never deleted)',
                             details=[what])
    if Path.cwd().resolve().is_relative_to(dest):
        raise GanpatchError(f'--force would move {shown}, the folder you are in, to a backup',
                            'run apply.py from outside it')
    backup = unique_sibling(dest, 'backup')
    os.rename(dest, backup)
    log(f'{pin.target}: moved {shown} (not a ganpatch tree) to {display(backup)}')
    return TreeState('missing')


def update_tree(repo: Repo, inputs: Inputs, state: TreeState, upstream_files: Lazy, sources: Sources, *,
                force: bool, three_way: bool, with_authors: bool) -> int:
    pin, dest = inputs.pin, repo.work_tree
    shown = display(dest)
    if operation := operation_in_progress(repo.git_dir):
        raise LocalWorkError(f'{operation} is in progress in {shown}', 'finish it (or abort it) there, then rerun')
    if state.stamp and state.stamp.get('state') == 'conflict' and 'refreshed' not in state.stamp:
        raise LocalWorkError(f'{shown} is a --3way conflict tree whose resolution was not exported',
                             f'export it with `apply.py --target {pin.target} --refresh --dest {shown}`')
    try:
        built = build_commits(repo, inputs, upstream_files)
    except SeriesError as exc:
        if three_way:
            exc.hint = keep_conflict_tree(inputs, exc, dest, upstream_files)
        raise
    refs = {f'refs/heads/{BRANCH}': built.head, f'refs/tags/{UPSTREAM_TAG}': built.upstream,
            f'refs/tags/{OVERLAY_TAG}': built.overlays}
    stamp = {'target': pin.target, **inputs.digest(), 'head': built.head, 'upstream_commit': built.upstream}
    if with_authors:
        authors = build_authors_commit(repo, pin, built.upstream, Lazy(pin.authors.source, sources.without_source()))
        refs[AUTHORS_REF] = authors
        stamp['authors'] = authors_stamp(pin, authors)
    elif state.stamp and 'authors' in state.stamp:
        stamp['authors'] = state.stamp['authors']  # the branch stays as it was; --status says it is stale
    old = repo.resolve('HEAD')
    blockers = plan_checkout(repo, old, built.head)
    if blockers and not force:
        raise LocalWorkError(f'{shown}: the update would overwrite or remove {plural(len(blockers), "file")} holding '
                             'work', '--force moves just these to a folder beside the tree (never deletes); '
                             'or commit, stash or move them yourself', details=[str(b) for b in blockers])
    unexported = commits_after(repo, state.stamp) if state.stamp else []
    journal = {'target': pin.target, 'from': old, 'to': built.head, 'refs': refs, 'stamp': stamp,
               'previous': previous_refs(repo, old, refs, ours=ours_authors(state.stamp)),
               'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
    write_journal(repo.git_dir, journal)
    perform(repo, journal, blockers)
    report_update(repo, inputs, state, journal, unexported)
    return 0


def ours_authors(stamp: dict | None) -> set[str]:
    """The `authors` commit apply.py made last (reproducible from the lock, so not worth keeping)."""
    return {((stamp or {}).get('authors') or {}).get('commit')} - {None}


def previous_refs(repo: Repo, old: str | None, refs: dict[str, str], *, ours: set[str] = frozenset()
                  ) -> list[list[str]]:
    """`refs/ganpatch/previous/<time>` for the previous HEAD (`<time>-main` for `main` and
    `<time>-authors` for `authors` when they held something else than HEAD and apply.py's own
    commits), so nothing ever committed becomes unreachable."""
    new_head = refs.get(f'refs/heads/{BRANCH}')
    keep = []
    if old is not None and new_head is not None and old != new_head:
        keep.append(('', old))
    for ref, label in ((f'refs/heads/{BRANCH}', '-main'), (AUTHORS_REF, '-authors')):
        current = repo.resolve(ref)
        if ref in refs and current is not None and current not in (old, refs[ref], *ours):
            keep.append((label, current))
    if not keep:
        return []
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    name, number = f'{PREVIOUS_REFS}/{stamp}', 1
    while any(repo.resolve(name + label) for label, _ in keep):
        number += 1
        name = f'{PREVIOUS_REFS}/{stamp}-{number}'
    return [[name + label, commit] for label, commit in keep]


def perform(repo: Repo, journal: dict, blockers: list[Blocker]) -> None:
    """The steps of an update; each is safe to repeat, so an interrupted run is finished by repeating them."""
    message = f'ganpatch: update {journal["target"]}'
    for ref, commit in journal['previous']:
        repo.run(['update-ref', '-m', f'{message}: the previous HEAD', ref, commit])
    if blockers:
        aside = move_aside(repo, blockers)
        log(f'{journal["target"]}: moved {plural(len(blockers), "file")} that blocked the update to {display(aside)}')
    checkout(repo, journal['to'])
    repo.run(['update-ref', '-m', message, '--stdin'],
             stdin=''.join(f'update {ref} {commit}\n' for ref, commit in journal['refs'].items()).encode())
    repo.run(['symbolic-ref', '-m', message, 'HEAD', f'refs/heads/{BRANCH}'])
    write_stamp(repo.git_dir, journal['stamp'])
    remove_journal(repo.git_dir)


def finish_update(dest: Path, journal: dict, *, force: bool) -> None:
    """Finishes an update that was killed after its journal was written."""
    repo = Repo.of_tree(dest)
    shown = display(dest)
    if not repo.has_object(journal['to']):
        raise GanpatchError(f'{shown}: an interrupted update to {journal["to"][:12]} cannot be finished '
                            '(its commits are gone)', f'delete {repo.git_dir / "ganpatch-update.json"} and rerun')
    blockers = plan_checkout(repo, journal['from'], journal['to'])
    if blockers and not force:
        raise LocalWorkError(f'{shown}: an interrupted update cannot be finished: {plural(len(blockers), "file")} '
                             'changed since',
                             '--force moves just these to a folder beside the tree (never deletes)',
                             details=[str(b) for b in blockers])
    log(f'{journal["target"]}: finishing the interrupted update of {shown} (started {journal.get("started")})')
    for ref in ['HEAD', *journal['refs'], *(ref for ref, _ in journal['previous'])]:
        (repo.git_dir / f'{ref}.lock').unlink(missing_ok=True)  # left by a killed `git update-ref` of that run
    perform(repo, journal, blockers)


def update_authors_branch(repo: Repo, pin: Pin, stamp: dict, upstream_files: Lazy, sources: Sources,
                          shown: str) -> None:
    """`authors` on an up-to-date tree: made or moved; nothing else changes."""
    upstream = ensure_upstream(repo, pin.upstream, upstream_files)
    commit = build_authors_commit(repo, pin, upstream, Lazy(pin.authors.source, sources.without_source()))
    current = repo.resolve(AUTHORS_REF)
    if current != commit:
        if head_branch(repo) == AUTHORS_BRANCH:
            raise LocalWorkError(f'the branch {AUTHORS_BRANCH} is checked out in {shown}; moving it would leave the '
                                 'work tree behind', f'switch to {BRANCH} there (git switch {BRANCH}) and rerun')
        keep = previous_refs(repo, None, {AUTHORS_REF: commit}, ours=ours_authors(stamp))
        for ref, kept in keep:
            repo.run(['update-ref', '-m', 'ganpatch: the previous authors branch', ref, kept])
        repo.run(['update-ref', '-m', f'ganpatch: {AUTHORS_BRANCH}', AUTHORS_REF, commit])
    if stamp.get('authors') != authors_stamp(pin, commit):
        write_stamp(repo.git_dir, {**stamp, 'authors': authors_stamp(pin, commit)})
    log(f'{pin.target}: branch {AUTHORS_BRANCH} in {shown} = upstream + the authors\' code '
        f'({pin.authors.describe()}); `git diff {AUTHORS_BRANCH} HEAD` shows how ganpatch differs')


def local_work_note(repo: Repo, stamp: dict) -> str:
    """`` or ` (kept: 2 modified files, 1 commit after the build)` for an up-to-date tree."""
    parts = []
    if modified := modified_files(repo):
        parts.append(plural(len(modified), 'modified file'))
    if commits := commits_after(repo, stamp):
        parts.append(f'{plural(len(commits), "commit")} after the build (--refresh exports them)')
    return f' (left as it is: {", ".join(parts)})' if parts else ''


def report_update(repo: Repo, inputs: Inputs, state: TreeState, journal: dict, unexported: list[str]) -> None:
    pin, shown = inputs.pin, display(repo.work_tree)
    verb = 'built' if state.kind == 'missing' else 'updated in place'
    log(f'{pin.target}: {verb} {shown}: upstream + {len(inputs.patches)} patches + overlays '
        f'({len(inputs.overlays)} files)')
    previous = next((ref for ref, _ in journal['previous'] if not ref.endswith(('-main', '-authors'))), None)
    if state.kind != 'missing':
        kept = untracked_paths(repo)
        notes = [f'previous HEAD kept as {previous}' if previous else None,
                 f'{plural(len(kept), "untracked or ignored path")} kept' if kept else None]
        if text := '; '.join(filter(None, notes)):
            log(f'  {text}')
    if unexported and previous:
        built = (state.stamp.get('refreshed') or state.stamp).get('head')
        log(f'warning: {plural(len(unexported), "commit")} made in the tree after the build, not in patches/ '
            '(never exported with --refresh):')
        for line in unexported:
            log(f'  {line}')
        log(f'  they stay reachable at {previous}; bring them back with '
            f'`git cherry-pick {built[:12]}..{previous}` in {shown}')
