"""Fixtures shared by every test directory.

`patched_tree(target)` builds the patched tree of a target once per session with
`apply.py --offline` (upstream from the ganpatch cache or $GANPATCH_MIRROR) and returns its path.
It skips the calling test only when apply.py exits with 3 ("no upstream source available");
any other failure of apply.py fails the test.
"""
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
APPLY = REPO_ROOT / 'apply.py'
EXIT_NO_SOURCE = 3  # apply.py's exit code when neither the cache nor a mirror holds the upstream


@pytest.fixture(scope='session')
def patched_tree(tmp_path_factory):
    """Factory: `patched_tree('stylegan3') -> Path` of a fresh patched tree (built once per session)."""
    root = tmp_path_factory.mktemp('patched')
    built: dict[str, Path | str] = {}

    def build(target: str) -> Path:
        if target not in built:
            built[target] = _run_apply(target, root / target)
        result = built[target]
        if isinstance(result, str):
            pytest.skip(result)
        return result

    return build


def _run_apply(target: str, dest: Path) -> Path | str:
    """The built tree, or the reason to skip when no upstream source is available."""
    command = [sys.executable, str(APPLY), '--target', target, '--offline', '--dest', str(dest)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode == EXIT_NO_SOURCE:
        return (f'no cached or mirrored upstream for {target}; run apply.py with --mirror/--source once '
                f'(apply.py said: {result.stderr.strip().splitlines()[0]})')
    if result.returncode != 0:
        pytest.fail(f'apply.py --target {target} failed with exit code {result.returncode}:\n{result.stderr}')
    return dest
