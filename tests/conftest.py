"""Fixtures shared by every test directory.

`patched_tree(target)` builds the patched tree of a target once per session with
`apply.py --offline` (upstream from the ganpatch cache or $GANPATCH_MIRROR) and returns its path;
`patched_tree(target, with_authors=True)` builds another one with `--with-authors` (branch `authors`:
the upstream plus the original authors' change).

A missing upstream (apply.py exits with 3, "no upstream source available") fails the calling test
with apply.py's hint: a green run must never hide untested patches. With GANPATCH_ALLOW_SKIP=1 it
skips instead (a machine that deliberately has no upstreams). Any other failure of apply.py fails.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
APPLY = REPO_ROOT / 'apply.py'
EXIT_NO_SOURCE = 3  # apply.py's exit code when neither the cache nor a mirror holds the upstream


def _missing_upstream(reason: str):
    """Fails the calling test for an upstream that no source holds; skips with GANPATCH_ALLOW_SKIP=1."""
    if os.environ.get('GANPATCH_ALLOW_SKIP') == '1':
        pytest.skip(reason)
    pytest.fail(f'{reason}\n(set GANPATCH_ALLOW_SKIP=1 to skip such tests instead)', pytrace=False)


@pytest.fixture(scope='session')
def missing_upstream():
    """The function that fails (or, with GANPATCH_ALLOW_SKIP=1, skips) a test whose upstream is missing."""
    return _missing_upstream


@pytest.fixture(scope='session')
def patched_tree(tmp_path_factory):
    """Factory: `patched_tree('stylegan3') -> Path` of a fresh patched tree (built once per session);
    `patched_tree('stylegan3', with_authors=True)`: one that also has branch `authors`."""
    root = tmp_path_factory.mktemp('patched')
    built: dict[tuple[str, bool], Path | str] = {}

    def build(target: str, with_authors: bool = False) -> Path:
        key = (target, with_authors)
        if key not in built:
            options = ['--with-authors'] if with_authors else []
            built[key] = _run_apply(target, root / (target + '-with-authors' * with_authors), options)
        result = built[key]
        if isinstance(result, str):
            _missing_upstream(result)
        return result

    return build


def _run_apply(target: str, dest: Path, options: list[str]) -> Path | str:
    """The built tree, or what is missing when no upstream source (or authors' code) is available."""
    command = [sys.executable, str(APPLY), '--target', target, '--offline', '--dest', str(dest), *options]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode == EXIT_NO_SOURCE:
        what = "upstream or authors' code" if options else 'upstream'
        return (f'no cached or mirrored {what} for {target}; apply.py said:\n{result.stderr.strip()}')
    if result.returncode != 0:
        pytest.fail(f'apply.py --target {target} {" ".join(options)} failed with exit code {result.returncode}:\n{result.stderr}')
    return dest
