"""The original authors' code pinned in upstream.lock, against the real pinned upstreams.

- clipped-stochastic-methods@ea53b72: its two patches apply to the pinned stylegan3 and
  pytorch-gan-collections commits with zero fuzz and zero offset; the lines they add with trailing
  whitespace (44 and 33) are kept verbatim on branch `authors`.
- GAN-BMC@7d9eae2: its tree differs from the pinned stylegan2-ada-pytorch only in README.md and
  training/loss.py; branch `authors` carries training/loss.py alone: the BMC term (five lines in the
  generator's main phase) and the UTF-8 byte-order mark dropped from line 1.

Sources: the cache or $GANPATCH_MIRROR, never the network.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from ganpatch_apply.authors import build_authors_commit  # noqa: E402
from ganpatch_apply.commits import ensure_upstream  # noqa: E402
from ganpatch_apply.errors import NoSourceError  # noqa: E402
from ganpatch_apply.fetch import Sources, fetch  # noqa: E402
from ganpatch_apply.git import Repo, run_git  # noqa: E402
from ganpatch_apply.inputs import Project  # noqa: E402
from ganpatch_apply.trees import git_object_id  # noqa: E402

pytestmark = pytest.mark.integration

PINS = Project(REPO_ROOT).load_lock()
WITH_AUTHORS = [target for target, pin in PINS.items() if pin.authors is not None]
TRAILING_WHITESPACE_LINES = {'stylegan3': 44, 'pytorch-gan-collections': 33}


def offline() -> Sources:
    mirror = os.environ.get('GANPATCH_MIRROR')
    return Sources(None, Path(mirror) if mirror else None, offline=True)


@pytest.fixture(scope='module')
def authors_repo(missing_upstream):
    """`authors_repo(target) -> (Repo, upstream commit, authors commit)` in a scratch repository."""
    scratch = tempfile.TemporaryDirectory(prefix='ganpatch-authors-test-')
    run_git(['init', '-q', '--bare', scratch.name], cwd=Path(scratch.name))
    repo = Repo(Path(scratch.name))
    made = {}

    def make(target):
        if target not in made:
            pin = PINS[target]
            try:
                upstream_files = fetch(pin.upstream, offline(), fill_cache=False)[0]
                authors_files = fetch(pin.authors.source, offline(), fill_cache=False)[0]
            except NoSourceError as exc:
                missing_upstream(f'{target}: {exc}')
            upstream = ensure_upstream(repo, pin.upstream, lambda: upstream_files)
            made[target] = (upstream, build_authors_commit(repo, pin, upstream, lambda: authors_files), authors_files)
        return repo, *made[target]

    yield make
    scratch.cleanup()


def test_which_targets_have_the_authors_code():
    assert WITH_AUTHORS == ['stylegan3', 'stylegan2-ada', 'pytorch-gan-collections']
    assert PINS['biggan-pytorch'].authors is None


@pytest.mark.parametrize('target', ['stylegan3', 'pytorch-gan-collections'])
def test_the_clipped_methods_patch_applies_without_fuzz_or_offset(target, authors_repo, tmp_path):
    repo, upstream, authors, files = authors_repo(target)
    patch = tmp_path / 'their.patch'
    patch.write_bytes(files[PINS[target].authors.patch].data)
    index = tmp_path / 'index'
    repo.run(['read-tree', upstream], index=index)
    check = repo.run(['apply', '--cached', '--check', '-v', str(patch)], index=index).stderr.decode()
    assert 'offset' not in check and 'fuzz' not in check and 'rejected' not in check
    whitespace = repo.run(['apply', '--cached', '--check', '--whitespace=error-all', str(patch)], index=index,
                          check=False).stderr.decode()
    assert f'{TRAILING_WHITESPACE_LINES[target]} lines add whitespace errors' in whitespace
    kept = repo.run(['diff', '--check', upstream, authors], check=False).stdout.decode()
    assert kept.count('trailing whitespace') == TRAILING_WHITESPACE_LINES[target]


def test_gan_bmc_changes_only_the_generator_loss(authors_repo):
    repo, upstream, authors, files = authors_repo('stylegan2-ada')
    pinned = {path: oid for path, (_, oid) in repo.list_tree(upstream).items()}
    theirs = {path: git_object_id('blob', entry.data).hex() for path, entry in files.items()}
    assert sorted(path for path in pinned | theirs if pinned.get(path) != theirs.get(path)) == \
        ['README.md', 'training/loss.py']
    assert repo.text(['diff', '--name-only', upstream, authors]) == 'training/loss.py'
    diff = repo.text(['diff', upstream, authors, '--', 'training/loss.py'])
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith('+') and not line.startswith('+++')]
    removed = [line[1:] for line in diff.splitlines() if line.startswith('-') and not line.startswith('---')]
    assert removed == ['\ufeff# Copyright (c) 2021, NVIDIA CORPORATION.  All rights reserved.']
    assert added[0] == '# Copyright (c) 2021, NVIDIA CORPORATION.  All rights reserved.'
    assert added[1:3] == ['rou1 = 0.1', 'rou2 = 0.01'] and added[3].startswith('br_weight = 1/2 * rou1*')
    assert added[4] == 'loss_Gmain = loss_Gmain - br_weight' and len(added) == 5


def test_apply_builds_the_authors_branch_and_diff_summarises_it(tmp_path, missing_upstream):
    dest = tmp_path / 'pytorch-gan-collections'
    command = [sys.executable, str(REPO_ROOT / 'apply.py'), '--target', 'pytorch-gan-collections', '--offline',
               '--with-authors', '--dest', str(dest)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 3:
        missing_upstream(result.stderr)
    assert result.returncode == 0, result.stderr
    diff = subprocess.run([sys.executable, str(REPO_ROOT / 'apply.py'), '--target', 'pytorch-gan-collections',
                           '--dest', str(dest), '--diff'], capture_output=True, text=True)
    assert diff.returncode == 0, diff.stderr
    assert "ganpatch against the original authors' code (branch authors: clipped_pytorch-gan-collections.patch" \
        in diff.stdout
    status = subprocess.run([sys.executable, str(REPO_ROOT / 'apply.py'), '--target', 'pytorch-gan-collections',
                             '--dest', str(dest), '--status'], capture_output=True, text=True).stdout
    assert 'branch authors = upstream + clipped_pytorch-gan-collections.patch' in status and ': up to date' in status
