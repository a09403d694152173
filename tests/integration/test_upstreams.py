"""The four real pinned upstreams: content verified against upstream.lock, series applied.

Sources: the ganpatch cache or $GANPATCH_MIRROR (never the network). A test fails, saying why,
when neither holds the target's upstream (it skips instead with GANPATCH_ALLOW_SKIP=1).
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location('ganpatch_apply_integration', REPO_ROOT / 'apply.py')
apply = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = apply
_spec.loader.exec_module(apply)
PINS = apply.load_lock()


def git(tree, *args):
    return subprocess.run(['git', *args], cwd=tree, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize('target', PINS)
def test_upstream_tree_id_matches_the_lock(target, missing_upstream):
    pin = PINS[target]
    mirror = os.environ.get('GANPATCH_MIRROR')
    sources = apply.Sources(source=None, mirror=Path(mirror) if mirror else None, offline=True)
    try:
        files, origin = apply.fetch_upstream(pin, sources, fill_cache=False)
    except apply.NoSourceError as exc:
        missing_upstream(f'no cached or mirrored upstream for {target}: {exc}')
    assert apply.tree_id(files) == pin.tree, origin


@pytest.mark.parametrize('target', PINS)
def test_series_applies_to_the_pinned_upstream(target, patched_tree):
    pin = PINS[target]
    tree = patched_tree(target)
    series = apply.read_series(target)
    assert git(tree, 'rev-parse', 'upstream^{tree}') == pin.tree
    subjects = git(tree, 'log', '--reverse', '--format=%s', 'upstream..HEAD').splitlines()
    assert len(subjects) == len(series) + 1 and subjects[-1] == apply.OVERLAY_SUBJECT
    assert git(tree, 'status', '--porcelain') == ''
    for name, subject in zip(series, subjects):
        header = (REPO_ROOT / 'patches' / target / name).read_text(encoding='utf-8').split('\n\n', 1)[0]
        first_line = header.split('Subject: ', 1)[1].split('\n')[0]
        assert first_line.split('] ', 1)[-1] in subject, name
