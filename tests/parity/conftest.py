"""Fixtures of the parity suite: ganpatch's tree and the original authors' tree of a target, side by side.

`parity_trees(target) -> (ours, theirs)`: `ours` is the patched tree built with `apply.py --with-authors`
(the `patched_tree` fixture of tests/conftest.py, so a missing upstream or authors' code fails the test, or
skips it with GANPATCH_ALLOW_SKIP=1); `theirs` is a clone of its branch `authors` (the pinned upstream plus
the authors' change) with our CPU shims `shims/<target>.patch` applied on top, as a commit, so that
`git -C theirs show HEAD` shows exactly what the shims change. Built once per session.
"""
import os
import subprocess
from pathlib import Path

import pytest

SHIMS = Path(__file__).resolve().parent / 'shims'
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
            git('clone', '--quiet', '--branch', 'authors', str(ours), str(theirs), cwd=ours.parent)
            git('am', '--quiet', '--whitespace=nowarn', str(SHIMS / f'{target}.patch'), cwd=theirs)
            built[target] = ours, theirs
        return built[target]

    return build
