"""--3way: when a patch does not apply, a conflict tree beside the destination for the maintainer.

The tree `<dest>.conflict-<time>` holds the upstream and the patches before the failing one as
commits; the failing patch and the rest of the series go to `git am -3`. A 3-way merge needs the
blobs the patch was made against (its `index` lines): the previous tree at the destination usually
has them, so its objects are fetched first. Without them, the hunks that apply are applied and the
others are written to `*.rej` files. Its stamp says `state: conflict`; once resolved, `--refresh
--dest <it>` exports the rebased series.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .commits import BRANCH, BUILD_INDEX, UPSTREAM_TAG, SeriesError, apply_series, ensure_upstream
from .checkout import checkout
from .destination import display, unique_sibling
from .git import Repo, run_git
from .inputs import Inputs
from .stamp import write_stamp
from .trees import Files


def keep_conflict_tree(inputs: Inputs, error: SeriesError, dest: Path, upstream_files: Callable[[], Files]) -> str:
    """Makes the conflict tree; returns the hint saying where it is and what to do next."""
    kept = unique_sibling(dest, 'conflict')
    kept.mkdir(parents=True)
    run_git(['init', '-q', f'--initial-branch={BRANCH}', str(kept)], cwd=kept)
    repo = Repo.of_tree(kept)
    if (dest / '.git').is_dir():
        repo.run(['fetch', '-q', '--no-tags', str(dest), 'HEAD'], check=False)
    upstream = ensure_upstream(repo, inputs.pin.upstream, upstream_files)
    index = repo.git_dir / BUILD_INDEX
    try:
        repo.run(['read-tree', upstream], index=index)
        applied = apply_series(repo, upstream, inputs.patches[:error.number - 1], index)
    finally:
        index.unlink(missing_ok=True)
    tip = applied[-1] if applied else upstream
    checkout(repo, tip)
    repo.run(['update-ref', f'refs/heads/{BRANCH}', tip])
    repo.run(['update-ref', f'refs/tags/{UPSTREAM_TAG}', upstream])
    details = merge_rest(repo, inputs.patches[error.number - 1:])
    error.details = details
    write_stamp(repo.git_dir, {'target': inputs.pin.target, **inputs.digest(), 'head': None, 'state': 'conflict'})
    unfinished = (repo.git_dir / 'rebase-apply').exists()
    todo = ('resolve the conflict markers, `git add` the files and `git am --continue` there (repeat until the '
            'series is done), then ' if unfinished else 'the 3-way merge needed no help; ')
    return (f'tree kept at {display(kept)}: {todo}export the rebased patches with '
            f'`apply.py --target {inputs.pin.target} --refresh --dest {display(kept)}` and rebuild')


def merge_rest(repo: Repo, patches: tuple[Path, ...]) -> list[str]:
    """`git am -3` of the failing patch and the rest of the series; what it left for the maintainer."""
    repo.run(['am', '--keep-cr', '-3', *map(str, patches)], check=False)
    conflicted = repo.text(['diff', '--name-only', '--diff-filter=U']).splitlines()
    if conflicted:
        return [f'conflict markers in {path}' for path in conflicted]
    if not (repo.git_dir / 'rebase-apply').exists():
        return ['the 3-way merge resolved every patch without conflicts']
    repo.run(['apply', '--reject', str(patches[0])], check=False)
    rejects = sorted(path.relative_to(repo.work_tree).as_posix() for path in repo.work_tree.rglob('*.rej'))
    return ['no 3-way merge (the blobs the patch was made against are unknown here); failed hunks are in '
            + ', '.join(rejects)]
