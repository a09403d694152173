"""The real pinned upstreams: content verified against upstream.lock, series applied.

Sources: the ganpatch cache or $GANPATCH_MIRROR (never the network). A test fails, saying why,
when neither holds the target's upstream (it skips instead with GANPATCH_ALLOW_SKIP=1).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from ganpatch_apply.commits import OVERLAY_SUBJECT  # noqa: E402
from ganpatch_apply.errors import NoSourceError  # noqa: E402
from ganpatch_apply.fetch import Sources, fetch  # noqa: E402
from ganpatch_apply.inputs import Project, read_inputs  # noqa: E402
from ganpatch_apply.trees import tree_id  # noqa: E402

pytestmark = pytest.mark.integration

PROJECT = Project(REPO_ROOT)
PINS = PROJECT.load_lock()


def git(tree, *args):
    return subprocess.run(['git', *args], cwd=tree, capture_output=True, text=True, check=True).stdout.strip()


def offline_sources() -> Sources:
    mirror = os.environ.get('GANPATCH_MIRROR')
    return Sources(source=None, mirror=Path(mirror) if mirror else None, offline=True)


@pytest.mark.parametrize('target', PINS)
def test_upstream_tree_id_matches_the_lock(target, missing_upstream):
    source = PINS[target].upstream
    try:
        files, origin = fetch(source, offline_sources(), fill_cache=False)
    except NoSourceError as exc:
        missing_upstream(f'no cached or mirrored upstream for {target}: {exc}')
    assert tree_id(files) == source.tree, origin


@pytest.mark.parametrize('target', PINS)
def test_series_applies_to_the_pinned_upstream(target, patched_tree):
    pin = PINS[target]
    tree = patched_tree(target)
    series = read_inputs(PROJECT, pin).patches
    assert git(tree, 'rev-parse', 'upstream^{tree}') == pin.upstream.tree
    subjects = git(tree, 'log', '--reverse', '--format=%s', 'upstream..HEAD').splitlines()
    assert len(subjects) == len(series) + 1 and subjects[-1] == OVERLAY_SUBJECT
    assert git(tree, 'status', '--porcelain') == ''
    for path, subject in zip(series, subjects):
        header = path.read_text(encoding='utf-8').split('\n\n', 1)[0]
        first_line = header.split('Subject: ', 1)[1].split('\n')[0]
        assert first_line.split('] ', 1)[-1] in subject, path.name


@pytest.mark.parametrize('target', PINS)
def test_every_target_states_whether_it_is_usable(target):
    assert PINS[target].status, f'upstream.lock gives {target} no status'
