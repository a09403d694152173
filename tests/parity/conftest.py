"""Fixtures of the parity suite: ganpatch's tree and the original authors' tree of a target, side by side.

`parity_trees(target) -> (ours, theirs)`: `ours` is the patched tree built with `apply.py --with-authors`
(the `patched_tree` fixture of tests/conftest.py, so a missing upstream or authors' code fails the test, or
skips it with GANPATCH_ALLOW_SKIP=1); `theirs` is, for most targets, a clone of its branch `authors` (the pinned
upstream plus the authors' change) with our CPU shims `shims/<target>.patch` applied on top, as a commit, so that
`git -C theirs show HEAD` shows exactly what the shims change. Built once per session.

stylegan2-ada is the exception: GAN-BMC's change is one file, training/loss.py, but the pinned upstream does not
run on today's stack without our compat patches (torch 2.x, NumPy 2, Python 3.12, the CPU). Rather than copying
those as shims, `theirs` is our compat-only tree (upstream + the compat patches, up to the first method patch,
with the ganpatch package they import) with their training/loss.py dropped in: `git -C theirs show HEAD` is
exactly their change to that tree.
"""
import os
import subprocess
from pathlib import Path

import pytest

SHIMS = Path(__file__).resolve().parent / 'shims'
METHOD_PATCH_SUBJECT = 'Optimizers and clipping'  # the first method patch of the StyleGAN series
# git without the user's or system's configuration (core.autocrlf and the like must not alter the trees).
GIT_ENV = {**os.environ, 'GIT_CONFIG_NOSYSTEM': '1', 'GIT_CONFIG_GLOBAL': os.devnull,
           'GIT_AUTHOR_NAME': 'ganpatch', 'GIT_AUTHOR_EMAIL': 'ganpatch@localhost',
           'GIT_COMMITTER_NAME': 'ganpatch', 'GIT_COMMITTER_EMAIL': 'ganpatch@localhost'}


def git(*args, cwd):
    result = subprocess.run(['git', *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True)
    assert result.returncode == 0, f'git {" ".join(args)} failed:\n{result.stderr}'
    return result.stdout


@pytest.fixture(scope='session')
def parity_trees(patched_tree, tmp_path_factory):
    """Factory: `parity_trees('pytorch-gan-collections') -> (ours, theirs)`, both Paths."""
    built = {}

    def build(target):
        if target not in built:
            ours = patched_tree(target, with_authors=True)
            theirs = tmp_path_factory.mktemp('authors') / target
            if target == 'stylegan2-ada':
                compat_tree_with_their_file(ours, theirs, 'training/loss.py')
            else:
                git('clone', '--quiet', '--branch', 'authors', str(ours), str(theirs), cwd=ours.parent)
                git('am', '--quiet', '--whitespace=nowarn', str(SHIMS / f'{target}.patch'), cwd=theirs)
            built[target] = ours, theirs
        return built[target]

    return build


def compat_tree_with_their_file(ours, theirs, path):
    """In `theirs`: our tree at the commit before the first method patch, plus our ganpatch package (one commit),
    plus `path` from branch `authors` (one commit)."""
    git('clone', '--quiet', str(ours), str(theirs), cwd=ours.parent)
    [method_patch] = git('log', '--format=%H', f'--grep=^{METHOD_PATCH_SUBJECT}', 'upstream..HEAD', cwd=theirs).split()
    git('checkout', '--quiet', '-b', 'theirs', f'{method_patch}~1', cwd=theirs)
    git('checkout', 'main', '--', 'ganpatch', cwd=theirs)
    git('commit', '--quiet', '-m', 'ganpatch package (the compat patches import it)', cwd=theirs)
    git('checkout', 'origin/authors', '--', path, cwd=theirs)
    git('commit', '--quiet', '-m', f"The authors' {path}", cwd=theirs)
