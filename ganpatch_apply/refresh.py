"""--refresh: the way back from a tree to patches/ and overlays/, proved before anything is written.

1. The patch commits are found: those between `upstream` and the overlay commit, plus commits made
   after the overlay commit that touch only upstream files (replayed before it: new patches at the
   end of the series). Commits touching only overlay files need nothing (their files are copied
   back); a commit mixing both is refused; a commit that changes nothing is left out, with a note.
2. Messages that would not survive a patch file are refused, naming the line (`export.py`).
3. The commits are exported (`export.py`: no renumbering, unchanged patches keep their files) and
   overlay files edited in the tree are planned for copying back; everything is staged outside
   patches/ and overlays/ (`staging.py`).
4. Proof: the staged series and overlays are built on the pinned upstream in a scratch repository
   (borrowing the tree's objects), with the same code as a build. Every patch commit must come out
   with the tree's author, message and tree, and the result must have the tree id of the tree's
   HEAD (with its uncommitted overlay edits). Otherwise nothing is written and the error says why.
5. The staged files are installed (a journal makes that safe against a kill) and the tree's stamp
   records what was exported.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from . import locking
from .commits import BUILD_INDEX, OVERLAY_SUBJECT, UPSTREAM_TAG, build_commits, stripspace
from .destination import display, resolve_dest
from .errors import EXIT_OK, GanpatchError, PatchError, log, plural
from .export import export_series, message_problems, plan_patch_files
from .fetch import Sources
from .git import FIXED_DATE, IDENTITY, Repo, run_git
from .inputs import (PACKAGE_DIR_IN_TREE, Inputs, Project, file_digest, is_skipped_overlay, overlay_files,
                     overlay_source, read_inputs, read_series)
from .journal import read_journal
from .pins import Pin
from .sourcing import Lazy
from .staging import Change, discard, inputs_lock, install, stage
from .stamp import built_inputs, read_stamp
from .state import modified_files, operation_in_progress, untracked_paths

REFRESH_INDEX = 'ganpatch-refresh.index'


def refresh_target(project: Project, pin: Pin, dest: Path, sources: Sources, *, force: bool) -> int:
    tree = resolve_dest(project, dest)
    shown = display(tree)
    with locking.destination(tree, shown), inputs_lock(project, pin.target, exclusive=True):
        repo, stamp = open_tree(tree, pin)
        inputs = read_inputs(project, pin)
        baseline = stamp.get('refreshed') or built_inputs(stamp)
        if baseline['upstream'] != inputs.digest()['upstream']:
            raise GanpatchError(f'{shown} was built on another upstream than upstream.lock pins now',
                                f'update the tree first (apply.py --target {pin.target}, with --3way if a patch '
                                'no longer applies), then refresh')
        if baseline['patches'] != inputs.digest()['patches'] and not force:
            raise GanpatchError(f'patches/{pin.target} changed since {shown} was built or refreshed',
                                'rebuild the tree first, or pass --force to overwrite patches/ with the tree')
        is_overlay = overlay_predicate(project, pin.target, baseline['overlays'])
        check_uncommitted(repo, is_overlay, shown)
        conflict_tree = stamp.get('state') == 'conflict'
        upstream = repo.resolve(UPSTREAM_TAG)
        if upstream is None:
            raise GanpatchError(f'{shown} has no tag {UPSTREAM_TAG}',
                                'tag the pristine upstream commit again, or rebuild')
        tip = 'HEAD' if conflict_tree else patch_commits_tip(repo, find_overlay_commit(repo, shown), is_overlay)
        commits, tip = without_empty_commits(repo, upstream, repo.resolve(tip))
        check_messages(repo, commits)
        changes, patch_lines = plan_patches(project, pin.target, repo, upstream, tip)
        overlay_plan = [] if conflict_tree else plan_overlay_copies(project, tree, pin.target, baseline['overlays'],
                                                                     force=force)
        changes += [change for change, _ in overlay_plan]
        staged = stage(project, pin.target, changes)
        try:
            view = staged_inputs(project, pin, changes, staged, overlay_plan)
            prove(repo, view, commits, conflict_tree, is_overlay, Lazy(pin.upstream, sources))
        except BaseException:
            discard(project, pin.target)
            raise
        refreshed = {**view.digest(), 'head': repo.resolve('HEAD')}
        install(project, pin.target, changes, staged, (repo.git_dir, {**stamp, 'refreshed': refreshed}))
    lines = patch_lines + [overlay_line for _, overlay_line in overlay_plan]
    for line in lines:
        print(f'{pin.target}: {line}')
    print(f'{pin.target}: refreshed from {shown}: {plural(len(lines), "file") if lines else "no files"} changed '
          f'(the exported series rebuilds the tree: verified)')
    return EXIT_OK


def open_tree(tree: Path, pin: Pin) -> tuple[Repo, dict]:
    shown = display(tree)
    stamp = read_stamp(tree / '.git') if (tree / '.git').is_dir() else None
    if stamp is None or stamp.get('target') != pin.target:
        raise GanpatchError(f'{shown} is not a ganpatch tree of {pin.target}',
                            f'build one with `apply.py --target {pin.target}` and edit it there')
    if read_journal(tree / '.git') is not None:
        raise GanpatchError(f'an update of {shown} was interrupted',
                            f'finish it first: apply.py --target {pin.target} --dest {shown}')
    if operation := operation_in_progress(tree / '.git'):
        raise GanpatchError(f'{operation} is still in progress in {shown}',
                            'finish it there (for git am: `git am --continue`, or `git am --abort`)')
    return Repo.of_tree(tree), stamp


def overlay_predicate(project: Project, target: str, baseline_overlays: dict):
    """Whether a tree path belongs to the overlays (then --refresh copies it back, never patches it)."""
    known = set(baseline_overlays) | set(overlay_files(project, target))
    return lambda path: path.startswith(PACKAGE_DIR_IN_TREE + '/') or path in known


def check_uncommitted(repo: Repo, is_overlay, shown: str) -> None:
    """Uncommitted edits to upstream files are refused (they would not be exported); untracked files
    are never exported and only noted."""
    uncommitted = [entry for entry in modified_files(repo)
                   if not is_overlay(entry[3:]) and not is_skipped_overlay(Path(entry[3:]))]
    if uncommitted:
        raise GanpatchError(f'{shown} has uncommitted changes to upstream files',
                            'commit them (a commit becomes a patch) or discard them, then refresh again',
                            details=uncommitted)
    untracked = [path for path in untracked_paths(repo) if not is_overlay(path) and not is_skipped_overlay(Path(path))]
    if untracked:
        listed = ', '.join(untracked[:5]) + (', ...' if len(untracked) > 5 else '')
        log(f'note: not exported: {plural(len(untracked), "untracked or ignored path")} outside the overlays '
            f'({listed}); `git add` and commit a file that belongs in a patch')


def find_overlay_commit(repo: Repo, shown: str) -> str:
    """The one commit after `upstream` whose subject is OVERLAY_SUBJECT (tags do not survive rebases)."""
    log_out = repo.text(['log', '--format=%H %s', f'{UPSTREAM_TAG}..HEAD']).splitlines()
    found = [line.split(' ', 1)[0] for line in log_out if line.split(' ', 1)[1:] == [OVERLAY_SUBJECT]]
    if len(found) != 1:
        raise GanpatchError(f'{shown} has {len(found)} commits with the subject {OVERLAY_SUBJECT!r}, not one',
                            'keep exactly one overlay commit (git rebase -i upstream) and refresh again')
    if repo.text(['rev-list', '--merges', f'{UPSTREAM_TAG}..HEAD']):
        raise GanpatchError(f'{shown} has merge commits', 'linearise the history (git rebase upstream)')
    return found[0]


def patch_commits_tip(repo: Repo, overlay_commit: str, is_overlay) -> str:
    """A commit whose history from `upstream` is exactly the patch series (see the module docstring)."""
    replay = []
    for commit in repo.text(['rev-list', '--reverse', f'{overlay_commit}..HEAD']).split():
        paths = repo.run(['diff-tree', '--no-commit-id', '--name-only', '-r', '-z', commit]).stdout
        kinds = {is_overlay(path) for path in paths.decode('utf-8', 'surrogateescape').split('\0') if path}
        if kinds == {True, False}:
            raise GanpatchError(f'commit {commit[:12]} changes both overlay and upstream files',
                                'split it (git rebase -i) into an overlay commit and an upstream commit')
        if kinds == {False}:
            replay.append(commit)
    return replay_commits(repo, repo.text(['rev-parse', f'{overlay_commit}^']), replay)


def replay_commits(repo: Repo, base: str, commits: list[str]) -> str:
    """Copies `commits` onto `base` with a private index (the work tree and HEAD stay as they are)."""
    tip = base
    if not commits:
        return tip
    index = repo.git_dir / REFRESH_INDEX
    try:
        repo.run(['read-tree', tip], index=index)
        for commit in commits:
            diff = repo.run(['diff-tree', '-p', '--binary', '--full-index', f'{commit}^', commit]).stdout
            if repo.run(['apply', '--cached'], stdin=diff, index=index, check=False).returncode != 0:
                raise GanpatchError(f'commit {commit[:12]} (after the overlay commit) does not apply before it',
                                    'move it before the overlay commit yourself (git rebase -i upstream)')
            new_tree = repo.text(['write-tree'], index=index)
            header, message = repo.run(['cat-file', 'commit', commit]).stdout.split(b'\n\n', 1)
            author = next(line for line in header.splitlines() if line.startswith(b'author '))
            body = b'tree %s\nparent %s\n%s\ncommitter %s %s\n\n%s' % (
                new_tree.encode(), tip.encode(), author, IDENTITY.encode(), FIXED_DATE.encode(), message)
            tip = repo.write_object('commit', body)
    finally:
        index.unlink(missing_ok=True)
    return tip


def without_empty_commits(repo: Repo, base: str, tip: str) -> tuple[list[str], str]:
    """The commits of `base..tip` that change something, and their tip (empty ones are noted and left out)."""
    log_out = repo.text(['log', '--reverse', '--format=%H %T %P', f'{base}..{tip}'])
    records = [line.split() for line in log_out.splitlines()]
    trees = {base: repo.text(['rev-parse', f'{base}^{{tree}}']), **{record[0]: record[1] for record in records}}
    commits = [record[0] for record in records if record[1] != trees.get(record[2] if len(record) > 2 else '')]
    if len(commits) == len(records):
        return commits, tip
    for commit, *_ in records:
        if commit not in commits:
            log(f'note: commit {repo.text(["log", "-1", "--format=%h %s", commit])} changes no file; not exported '
                '(a patch must change something)')
    tip = replay_commits(repo, base, commits)
    return repo.text(['rev-list', '--reverse', f'{base}..{tip}']).split(), tip


def check_messages(repo: Repo, commits: list[str]) -> None:
    problems = []
    for commit in commits:
        message = repo.run(['cat-file', 'commit', commit]).stdout.split(b'\n\n', 1)[1]
        subject = message.split(b'\n', 1)[0].decode('utf-8', 'replace')
        problems += [f'commit {commit[:12]} ({subject[:50]}): {problem}' for problem in message_problems(message)]
    if problems:
        raise GanpatchError(f'a patch file would change {plural(len(problems), "commit message")} (or part of it)',
                            'reword them (git rebase -i upstream, `reword`) and refresh again',
                            details=problems)


def plan_patches(project: Project, target: str, repo: Repo, upstream: str, tip: str) -> tuple[list[Change], list[str]]:
    """The Changes to patches/<target>/ (files and series) and a line for each."""
    directory = project.patches_dir / target
    old_names = [name for name in read_series(project.series_path(target)) if (directory / name).is_file()]
    old = {name: (directory / name).read_bytes() for name in old_names}
    with tempfile.TemporaryDirectory(prefix='ganpatch-refresh-') as scratch:
        plan = plan_patch_files(old, export_series(repo, upstream, tip, Path(scratch)))
    changes, lines = [], []
    relative = f'patches/{target}'
    for name, data in plan:
        if data is not None:
            lines.append(f'{"rewrote" if name in old else "added"} {relative}/{name}')
            changes.append(Change(f'{relative}/{name}', data))
    names = [name for name, _ in plan]
    for name in old_names:
        if name not in names:
            lines.append(f'removed {relative}/{name}')
            changes.append(Change(f'{relative}/{name}', None))
    series = series_text(project.series_path(target), target, names)
    path = project.series_path(target)
    if not path.is_file() or path.read_bytes() != series:
        lines.append(f'updated {relative}/series')
        changes.append(Change(f'{relative}/series', series))
    return changes, lines


def series_text(path: Path, target: str, names: list[str]) -> bytes:
    """The series: the existing leading comment block (or a default one), then one name per line."""
    header = [f'# Patch series for {target}, applied in order by apply.py.']
    if path.is_file():
        lines = path.read_text(encoding='utf-8').splitlines()
        header = list(next((lines[:i] for i, line in enumerate(lines) if line and not line.startswith('#')), lines))
    return ''.join(f'{line}\n' for line in [*header, *names]).encode()


def plan_overlay_copies(project: Project, tree: Path, target: str, baseline: dict, *, force: bool
                        ) -> list[tuple[Change, str]]:
    """A Change (and its line) for every overlay file the tree changed since the baseline.

    When overlays/ changed the same file too (to something else), that is a conflict that needs --force.
    """
    package = tree / PACKAGE_DIR_IN_TREE
    in_tree = {path.relative_to(tree).as_posix() for path in package.rglob('*')
               if path.is_file() and not is_skipped_overlay(path.relative_to(tree))} if package.is_dir() else set()
    plan, conflicts = [], []
    for tree_path in sorted(in_tree | set(baseline) | set(overlay_files(project, target))):
        copy, source = tree / tree_path, overlay_source(project, target, tree_path)
        now = file_digest(copy) if copy.is_file() else None
        repo_version = file_digest(source) if source.is_file() else None
        if now == baseline.get(tree_path) or now == repo_version:
            continue
        relative = project.relative(source)
        if repo_version != baseline.get(tree_path) and not force:
            conflicts.append(f'{tree_path} (and {relative})')
        if now is None:
            plan.append((Change(relative, None), f'removed {relative}'))
        else:
            change = Change(relative, copy.read_bytes(), bool(copy.stat().st_mode & 0o100))
            plan.append((change, f'{"updated" if source.is_file() else "added"} {relative}'))
    if conflicts:
        raise GanpatchError('overlay files changed both in the tree and in overlays/ since the build',
                            'merge them by hand, or pass --force to take the tree\'s version', details=conflicts)
    return plan


def staged_inputs(project: Project, pin: Pin, changes: list[Change], staged: dict[str, Path],
                  overlay_plan: list[tuple[Change, str]]) -> Inputs:
    """The Inputs patches/ and overlays/ will hold once the staged changes are installed."""
    directory = f'patches/{pin.target}'
    series = next((staged[c.path] for c in changes if c.path == f'{directory}/series'), project.series_path(pin.target))
    patches = tuple(staged.get(f'{directory}/{name}', project.patches_dir / pin.target / name)
                    for name in read_series(series))
    overlays = overlay_files(project, pin.target)
    by_source = {project.relative(source): tree_path for tree_path, source in overlays.items()}
    for change, _ in overlay_plan:
        tree_path = by_source.get(change.path) or _tree_path_of(project, pin.target, change.path)
        if change.data is None:
            overlays.pop(tree_path, None)
        else:
            overlays[tree_path] = staged[change.path]
    return Inputs(pin, patches, dict(sorted(overlays.items())))


def _tree_path_of(project: Project, target: str, relative: str) -> str:
    common = project.relative(project.common_overlay_dir) + '/'
    if relative.startswith(common):
        return PACKAGE_DIR_IN_TREE + '/' + relative.removeprefix(common)
    return relative.removeprefix(f'{project.relative(project.overlays_dir)}/{target}/')


def prove(repo: Repo, view: Inputs, commits: list[str], conflict_tree: bool, is_overlay, upstream_files: Lazy
          ) -> None:
    """Builds `view` on the pinned upstream in a scratch repository and compares it with the tree."""
    with tempfile.TemporaryDirectory(prefix='ganpatch-prove-') as scratch:
        run_git(['init', '-q', '--bare', scratch], cwd=Path(scratch))
        alternates = (repo.git_dir.resolve() / 'objects',)
        rebuilt_repo = Repo(Path(scratch), alternates=alternates)
        try:
            built = build_commits(rebuilt_repo, view, upstream_files)
        except PatchError as exc:
            raise PatchError(f'the exported series does not rebuild the tree: {exc}',
                             'patches/ and overlays/ were not changed; please report this as a bug in apply.py'
                             ) from exc
        problems = compare_commits(rebuilt_repo, commits, list(built.patches))
        if not problems and not conflict_tree:
            expected = tree_with_overlay_edits(repo, rebuilt_repo, is_overlay)
            actual = rebuilt_repo.text(['rev-parse', f'{built.overlays}^{{tree}}'])
            if actual != expected:
                files = rebuilt_repo.text(['diff-tree', '-r', '--name-only', expected, actual]).splitlines()
                problems.append(f'the rebuilt tree differs from the tree\'s HEAD (with its overlay edits) in: '
                                f'{", ".join(files[:10])}')
    if problems:
        raise PatchError('the exported files would not rebuild the tree; patches/ and overlays/ were not changed',
                         'fix what is listed (in the tree: git rebase -i upstream) and refresh again', details=problems)


def compare_commits(repo: Repo, originals: list[str], rebuilt: list[str]) -> list[str]:
    """What differs between each tree commit and the commit its exported patch rebuilds."""
    if len(originals) != len(rebuilt):
        return [f'the export holds {len(rebuilt)} patches for {len(originals)} commits']
    problems = []
    for number, (original, copy) in enumerate(zip(originals, rebuilt), 1):
        mine, theirs = commit_fields(repo, original), commit_fields(repo, copy)
        subject = mine['message'].split(b'\n', 1)[0].decode('utf-8', 'replace')[:50]
        where = f'patch {number} ({subject})'
        if mine['tree'] != theirs['tree']:
            files = repo.text(['diff-tree', '-r', '--name-only', mine['tree'], theirs['tree']]).splitlines()
            problems.append(f'{where}: the patch gives another tree than commit {original[:12]} '
                            f'(files: {", ".join(files[:10])})')
        if mine['author'] != theirs['author']:
            problems.append(f'{where}: author {theirs["author"]!r} instead of {mine["author"]!r}')
        if stripspace(mine['message']) != theirs['message']:
            problems.append(f'{where}: its message would change (to {theirs["message"][:80]!r})')
    return problems


def commit_fields(repo: Repo, commit: str) -> dict:
    header, message = repo.run(['cat-file', 'commit', commit]).stdout.split(b'\n\n', 1)
    fields = dict(line.split(b' ', 1) for line in header.splitlines() if b' ' in line)
    return {'tree': fields[b'tree'].decode(), 'author': fields[b'author'].decode('utf-8', 'replace'),
            'message': message}


def tree_with_overlay_edits(repo: Repo, scratch: Repo, is_overlay) -> str:
    """The tree id of the tree's HEAD with every overlay file as it is in the work tree."""
    index = scratch.git_dir / BUILD_INDEX
    tree = repo.work_tree
    head_paths = [path for path in repo.list_tree('HEAD') if is_overlay(path)]
    package = tree / PACKAGE_DIR_IN_TREE
    in_tree = [path.relative_to(tree).as_posix() for path in package.rglob('*')
               if path.is_file() and not is_skipped_overlay(path.relative_to(tree))] if package.is_dir() else []
    paths = sorted({*head_paths, *in_tree} - {p for p in head_paths if is_skipped_overlay(Path(p))})
    present = [path for path in paths if (tree / path).is_file() and not (tree / path).is_symlink()]
    listing = ''.join(f'{tree / path}\n' for path in present).encode('utf-8', 'surrogateescape')
    oids = scratch.run(['hash-object', '-w', '--no-filters', '--stdin-paths'], stdin=listing).stdout.decode().split()
    records = [b'%s %s\t%s\0' % (b'100755' if (tree / path).stat().st_mode & 0o100 else b'100644', oid.encode(),
                                  path.encode('utf-8', 'surrogateescape')) for path, oid in zip(present, oids)]
    records += [b'0 %s\t%s\0' % (b'0' * 40, path.encode('utf-8', 'surrogateescape'))
                for path in paths if path not in present]
    try:
        scratch.run(['read-tree', repo.text(['rev-parse', 'HEAD^{tree}'])], index=index)
        if records:
            scratch.run(['update-index', '-z', '--index-info'], stdin=b''.join(records), index=index)
        return scratch.text(['write-tree'], index=index)
    finally:
        index.unlink(missing_ok=True)
