"""What --list, --status and --diff print (to stdout; nothing is written anywhere)."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from . import locking
from .authors import AUTHORS_BRANCH, AUTHORS_REF, authors_stamp
from .cache import cache_dir, is_cached
from .checkout import plan_checkout
from .commits import BRANCH, UPSTREAM_TAG, build_commits
from .destination import display, resolve_dest
from .errors import EXIT_OK, GanpatchError, NoSourceError, PatchError, plural
from .fetch import Sources
from .git import Repo, run_git
from .inputs import Inputs, Project, read_inputs
from .pins import Pin
from .sourcing import Lazy
from .state import (TreeState, commits_after, head_branch, inspect_tree, modified_files, operation_in_progress,
                    untracked_paths)
from .update import PREVIOUS_REFS


def list_targets(project: Project, pins: dict[str, Pin]) -> int:
    rows = [('target', 'status', 'patches', 'upstream', 'commit', 'cached', "authors' code", 'license')]
    for pin in pins.values():
        aliases = f' ({", ".join(pin.aliases)})' if pin.aliases else ''
        count = len(read_inputs_quietly(project, pin))
        authors = (f'{pin.authors.source.slug}@{pin.authors.source.commit[:7]}'
                   f'{"" if is_cached(pin.authors.source) else " (not cached)"}') if pin.authors else 'none'
        rows.append((pin.target + aliases, pin.status or 'not stated', str(count), pin.upstream.slug,
                     pin.upstream.commit[:12], 'yes' if is_cached(pin.upstream) else 'no', authors,
                     pin.upstream.license))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print('  '.join(cell.ljust(width) for cell, width in zip(row, widths)) + '  ' + row[-1])
    print(f'cache: {cache_dir()}')
    return EXIT_OK


def read_inputs_quietly(project: Project, pin: Pin) -> tuple:
    try:
        return read_inputs(project, pin).patches
    except GanpatchError:
        return ()


@dataclasses.dataclass
class Outlook:
    """What an update of an outdated tree would do: the files that block it, or why that is unknown."""
    blockers: list[str] = dataclasses.field(default_factory=list)
    unknown: str | None = None


def show_status(project: Project, pin: Pin, dest: Path, sources: Sources) -> int:
    dest = resolve_dest(project, dest)
    shown = display(dest)
    if busy := locking.is_busy(locking.destination_lock_path(dest)):
        print(f'{pin.target}: {shown}: busy: {busy}')
        return EXIT_OK
    inputs = read_inputs(project, pin)
    state = inspect_tree(dest, inputs)
    if state.kind == 'missing':
        print(f'{pin.target}: {shown}: missing\n  build it with: python apply.py --target {pin.target}')
        return EXIT_OK
    if state.kind == 'foreign':
        print(f'{pin.target}: {shown}: not a ganpatch tree of {pin.target} (an update refuses it; --force moves it '
              'to a backup)')
        return EXIT_OK
    repo = Repo.of_tree(dest)
    print(f'{pin.target}: {shown}: {headline(repo, inputs, state, sources, pin)}')
    print_details(repo, inputs, state)
    return EXIT_OK


def headline(repo: Repo, inputs: Inputs, state: TreeState, sources: Sources, pin: Pin) -> str:
    if state.kind == 'interrupted':
        journal = state.journal
        blockers = plan_checkout(repo, journal['from'], journal['to'])
        text = (f'interrupted: the update started {journal.get("started")} was killed; the next '
                f'`apply.py --target {pin.target}` finishes it')
        return text + ''.join(f'\n  blocks finishing: {blocker}' for blocker in blockers)
    modified = modified_files(repo)
    if state.kind == 'up to date':
        return 'up to date' + (f' (modified: {plural(len(modified), "file")}, left as is)' if modified else '')
    outlook = update_outlook(repo, inputs, sources)
    if outlook.blockers:
        return (f'modified: the update is blocked by {plural(len(outlook.blockers), "file")} (--force moves just '
                'these aside)' + ''.join(f'\n  blocks: {line}' for line in outlook.blockers))
    kept = untracked_paths(repo)
    text = 'outdated' + (f', {plural(len(kept), "untracked or ignored path")} will be kept' if kept else '')
    return text + (f'\n  blocks: unknown ({outlook.unknown})' if outlook.unknown else '')


def update_outlook(repo: Repo, inputs: Inputs, sources: Sources) -> Outlook:
    """Builds the new commits in a scratch repository that borrows the tree's objects (the tree is not
    written) and plans the checkout against them."""
    with tempfile.TemporaryDirectory(prefix='ganpatch-status-') as scratch:
        run_git(['init', '-q', '--bare', scratch], cwd=Path(scratch))
        rebuilt = Repo(Path(scratch), alternates=(repo.git_dir.resolve() / 'objects',))
        offline = Sources(None, sources.mirror, offline=True)
        try:
            built = build_commits(rebuilt, inputs, Lazy(inputs.pin.upstream, offline, fill_cache=False))
        except NoSourceError:
            return Outlook(unknown='the new upstream is not cached: `apply.py --fetch` fetches it')
        except PatchError as exc:
            return Outlook(unknown=f'an update would fail: {exc}')
        planner = Repo(repo.git_dir, repo.work_tree, alternates=(Path(scratch) / 'objects',))
        return Outlook([str(blocker) for blocker in plan_checkout(planner, repo.resolve('HEAD'), built.head)])


def print_details(repo: Repo, inputs: Inputs, state: TreeState) -> None:
    pin, stamp = inputs.pin, state.stamp or {}
    for line in state.changed_inputs:
        print(f'  outdated: {line}')
    for line in modified_files(repo):
        print(f'  local: {line}')
    for line in commits_after(repo, stamp) if stamp else []:
        print(f'  commit after the build: {line} (--refresh exports it)')
    if operation := operation_in_progress(repo.git_dir):
        print(f'  in progress: {operation} (an update waits until it is finished or aborted)')
    branch = head_branch(repo)
    if branch != BRANCH:
        print(f'  HEAD: {"on branch " + branch if branch else "detached"} (an update checks out {BRANCH})')
    upstream = repo.resolve(UPSTREAM_TAG)
    if upstream is not None:
        tree = repo.text(['rev-parse', f'{upstream}^{{tree}}'])
        pristine = tree == pin.upstream.tree
        verdict = 'pristine (tree id matches the lock)' if pristine else f'not the pinned tree ({tree})'
        print(f'  upstream: {pin.upstream.slug}@{pin.upstream.commit[:12]}, tag {UPSTREAM_TAG} {verdict}')
    built = dict(stamp.get('patches') or [])
    current = inputs.digest()['patches']
    for name, digest in current:
        label = 'applied' if built.get(name) == digest else 'changed' if name in built else 'not applied'
        print(f'  {label:<12}{name}')
    for name in built.keys() - dict(current).keys():
        print(f'  {"dropped":<12}{name} (applied in the tree, no longer in the series)')
    print(f'  authors: {authors_line(repo, pin, stamp)}')
    previous = repo.text(['for-each-ref', '--sort=-refname', '--count=3', '--format=%(refname) %(objectname:short)',
                          PREVIOUS_REFS]).splitlines()
    for line in previous:
        print(f'  previous: {line}')


def authors_line(repo: Repo, pin: Pin, stamp: dict) -> str:
    if pin.authors is None:
        return f'none pinned for {pin.target} (upstream.lock has no [{pin.target}.authors])'
    branch = repo.resolve(AUTHORS_REF)
    if branch is None:
        return f'branch {AUTHORS_BRANCH} not built (`apply.py --target {pin.target} --with-authors` adds it)'
    recorded = stamp.get('authors') or {}
    current = authors_stamp(pin, recorded.get('commit', ''))
    fresh = recorded == current and recorded.get('commit') == branch and \
        repo.resolve(f'{AUTHORS_REF}^') == repo.resolve(UPSTREAM_TAG)
    state = 'up to date' if fresh else 'stale (rerun with --with-authors)'
    return f'branch {AUTHORS_BRANCH} = upstream + {pin.authors.describe()}: {state}'


def show_diff(project: Project, pin: Pin, dest: Path) -> int:
    dest = resolve_dest(project, dest)
    shown = display(dest)
    if not (dest / '.git' / 'ganpatch-stamp.json').is_file():
        raise GanpatchError(f'{shown} is not a ganpatch tree', f'build it with --target {pin.target} first')
    repo = Repo.of_tree(dest)
    log_out = repo.text(['log', '--reverse', '--format=%x00%h %s', '--numstat', f'{UPSTREAM_TAG}..HEAD'])
    print(f'{pin.target}: {shown} on top of {pin.upstream.slug}@{pin.upstream.commit[:12]}')
    for block in filter(None, log_out.split('\0')):
        title, *numstat = [line for line in block.splitlines() if line]
        added, removed = count_lines(numstat)
        print(f'  {title[:72]:<72}  {len(numstat):>3} files  +{added} -{removed}')
    print(repo.text(['diff', '--stat=100', UPSTREAM_TAG]))
    print(f'full diff: git -C {shown} diff {UPSTREAM_TAG}    per patch: git -C {shown} log -p {UPSTREAM_TAG}..')
    if repo.resolve(AUTHORS_REF) is not None:
        numstat = repo.text(['diff', '--numstat', AUTHORS_BRANCH, 'HEAD']).splitlines()
        added, removed = count_lines(numstat)
        print(f'\nganpatch against the original authors\' code (branch {AUTHORS_BRANCH}: '
              f'{pin.authors.describe() if pin.authors else "made from an earlier lock entry"}): '
              f'{len(numstat)} files differ, +{added} -{removed}')
        print(repo.text(['diff', '--stat=100', AUTHORS_BRANCH, 'HEAD']))
        print(f'full diff: git -C {shown} diff {AUTHORS_BRANCH} HEAD    '
              f'their change alone: git -C {shown} show {AUTHORS_BRANCH}')
    elif pin.authors is not None:
        print(f'\n(add the authors\' code for comparison: apply.py --target {pin.target} --with-authors)')
    return EXIT_OK


def count_lines(numstat: list[str]) -> tuple[int, int]:
    added = removed = 0
    for line in numstat:
        plus, minus, _ = line.split('\t', 2)
        added += int(plus) if plus.isdigit() else 0
        removed += int(minus) if minus.isdigit() else 0
    return added, removed
