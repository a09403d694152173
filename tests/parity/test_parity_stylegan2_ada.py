"""Parity of ganpatch's stylegan2-ada tree with GAN-BMC's StyleGAN2-ADA code (TianjiaoLuo/GAN-BMC@7d9eae2,
training/loss.py: the BMC term on the generator, the last commit where it is active), same seed and flags, on the
CPU and a tiny synthetic 32x32 dataset.

Their side is our compat-only tree with their training/loss.py (tests/parity/conftest.py); ganpatch's runs
--bmc=G. Their loss drew the increments b1, b2 from torch's global generator, ganpatch from a generator seeded
with --seed; the runner answers their torch.normal calls with ganpatch's draws (stylegan_runner.py,
`bmc_draws_seed`), so both sides use the same increments and the same other random numbers. docs/parity.md
explains the case.
"""
import subprocess
from pathlib import Path

import pytest

from sides import IDENTICAL, Case, both, image_dataset, max_difference, names, run_sides, side_argv

pytestmark = [pytest.mark.integration, pytest.mark.parity]

TARGET = 'stylegan2-ada'
RUNNER = Path(__file__).resolve().parent / 'stylegan_runner.py'
ITERATIONS = 8  # G's path-length regularization (interval 4) runs at minibatches 0 and 4, D's R1 (16) at 0
COMMON = ('--gpus=1 --batch=4 --cbase=256 --cmax=32 --map-depth=2 --aug=noaug --snap=1 --grid=4x2 --metrics=none '
          '--workers=1 --seed=0 --device=cpu')
CASES = {
    'bmc-G': Case('', IDENTICAL, ours='--bmc=G'),
}
AUTHORS_RUNNER_OPTIONS = dict(bmc_draws_seed=0)  # ganpatch's draws with --seed=0, injected into their loss


@pytest.fixture(scope='module')
def work(parity_trees, tmp_path_factory):
    """32 generated 32x32 images (python -m ganpatch.fake_data images), packed by dataset_tool.py."""
    ours, _ = parity_trees(TARGET)
    return image_dataset(ours, tmp_path_factory.mktemp('parity-stylegan2-ada'))


@pytest.fixture(scope='module')
def runs(parity_trees, work):
    trees = dict(zip(['ganpatch', 'authors'], parity_trees(TARGET)))
    common = [*COMMON.split(), f'--data={work}/data.zip']
    jobs = {side: [[case, side_argv(CASES, case, side, work, common, [], 'outdir'), ITERATIONS,
                    AUTHORS_RUNNER_OPTIONS if side == 'authors' else {}] for case in CASES] for side in trees}
    return run_sides(trees, RUNNER, jobs, work)


def test_their_side_is_the_compat_tree_with_their_loss(parity_trees):
    """`git show HEAD` in their tree: their training/loss.py, whose only change is the BMC term (and a BOM)."""
    _, theirs = parity_trees(TARGET)
    diff = subprocess.run(['git', 'show', '--stat', '--format=%s', 'HEAD'], cwd=theirs, capture_output=True, text=True).stdout
    assert "The authors' training/loss.py" in diff and 'training/loss.py | 6 +++++-' in diff, diff


@pytest.mark.parametrize('case', names(CASES, IDENTICAL))
def test_identical(runs, case):
    """Every `Loss/...` report theirs makes (losses, penalties, scores of Gmain, Greg, Dmain, Dreg) and the final G, D
    and G_ema, bit for bit, with the generator's BMC term in every Gmain."""
    theirs, ours = both(runs, case)
    reported = {name for name, _ in theirs['reports'] if name.startswith('Loss/')}
    assert {'Loss/G/loss', 'Loss/G/reg', 'Loss/D/loss', 'Loss/D/reg'} <= reported
    theirs_losses, mine = [[r for r in record['reports'] if r[0] in reported] for record in (theirs, ours)]
    assert len(theirs_losses) == len(mine) > 0
    for i, (a, b) in enumerate(zip(theirs_losses, mine)):
        assert a == b, f'report {i}: the authors {a}, ganpatch {b}'
    assert any(name == 'Loss/G/bmc' and max(values) > 0 for name, values in ours['reports'])  # the term was there
    assert max_difference(theirs, ours) == {'G': 0.0, 'D': 0.0, 'G_ema': 0.0}
