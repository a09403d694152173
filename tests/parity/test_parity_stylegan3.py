"""Parity of ganpatch's stylegan3 train.py with the clipped-methods authors' (busycalibrating/clipped-stochastic-methods,
clipped_stylegan3.patch), same seed and flags, on the CPU and a tiny synthetic 32x32 dataset.

The stylegan2 config at cbase 256, cmax 32, map-depth 2, batch 4, without augmentation, for ITERATIONS minibatches:
G's path-length and D's R1 lazy regularization (intervals 4 and 16) run at minibatches 0 and 4 and 0. Both sides
run every case of `CASES` in one process each (`stylegan3_runner.py`: every training_stats report, and the final
G, D and G_ema). docs/parity.md explains each case.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from sides import IDENTICAL, NORM_ROUNDING, Case, both, max_difference, names, run_sides, side_argv

pytestmark = [pytest.mark.integration, pytest.mark.parity]

TARGET = 'stylegan3'
RUNNER = Path(__file__).resolve().parent / 'stylegan3_runner.py'
ITERATIONS = 8
COMMON = ('--cfg=stylegan2 --gpus=1 --batch=4 --gamma=1 --cbase=256 --cmax=32 --map-depth=2 --mbstd-group=2 '
          '--aug=noaug --snap=1 --metrics=none --workers=1 --seed=0')
OURS_ONLY = '--device=cpu'  # the authors' train.py, shimmed, runs on the CPU
CASES = {
    'sgd-value': Case('--optimizer=sgd --glr=0.01 --dlr=0.01 --clip-mode=value --clip-gmax=0.01 --clip-dmax=0.01',
                      IDENTICAL),
    'sgd-norm': Case('--optimizer=sgd --glr=0.01 --dlr=0.01 --clip-mode=norm --clip-gmax=0.1 --clip-dmax=0.1',
                     NORM_ROUNDING),
}
NORM_CLIP_ROUNDING = 1e-5  # bound on the weight differences after ITERATIONS norm-clipped minibatches


def argv(case, side, work):
    """train.py's argv for `case` on `side`, with its own --outdir."""
    return side_argv(CASES, case, side, work, [*COMMON.split(), f'--data={work}/data.zip'], OURS_ONLY.split(),
                     'outdir')


@pytest.fixture(scope='module')
def work(parity_trees, tmp_path_factory):
    """32 generated 32x32 images (python -m ganpatch.fake_data images), packed by dataset_tool.py."""
    ours, _ = parity_trees(TARGET)
    root = tmp_path_factory.mktemp('parity-stylegan3')
    for command in [['-m', 'ganpatch.fake_data', 'images', str(root / 'png'), '--images', '32', '--resolution', '32'],
                    ['dataset_tool.py', f'--source={root / "png"}', f'--dest={root / "data.zip"}']]:
        subprocess.run([sys.executable, *command], cwd=ours, check=True, capture_output=True)
    return root


@pytest.fixture(scope='module')
def runs(parity_trees, work):
    trees = dict(zip(['ganpatch', 'authors'], parity_trees(TARGET)))
    jobs = {side: [[case, argv(case, side, work), ITERATIONS] for case in CASES] for side in trees}
    return run_sides(trees, RUNNER, jobs, work)


def losses(theirs, ours):
    """The `Loss/...` reports of both sides, restricted to the names the authors' code reports (ganpatch reports
    more, e.g. the gradient norms); every one of those names must be reported by ganpatch too."""
    reported = {name for name, _ in theirs['reports'] if name.startswith('Loss/')}
    assert reported and reported <= {name for name, _ in ours['reports']}
    return [[r for r in record['reports'] if r[0] in reported] for record in (theirs, ours)]


@pytest.mark.parametrize('case', names(CASES, IDENTICAL))
def test_identical(runs, case):
    """Every loss of every phase (Gmain, Greg, Dmain, Dreg) and the final G, D and G_ema, bit for bit."""
    theirs, ours = losses(*both(runs, case))
    assert len(theirs) == len(ours) > 0
    for i, (a, b) in enumerate(zip(theirs, ours)):
        assert a == b, f'report {i}: the authors {a}, ganpatch {b}'
    assert {'Loss/G/reg', 'Loss/D/reg'} <= {name for name, _ in theirs}  # lazy regularization ran
    assert max_difference(*both(runs, case)) == {'G': 0.0, 'D': 0.0, 'G_ema': 0.0}


def test_norm_clipping_differs_by_rounding_only(runs):
    """clip_grad_norm_'s c / (||g|| + 1e-6) on their side, min(1, c / ||g||) folded into the step on ours: the first
    phase's losses agree, the weights after ITERATIONS minibatches differ by rounding only."""
    theirs, ours = losses(*both(runs, 'sgd-norm'))
    first_phase = next(i for i, (name, _) in enumerate(theirs) if name == 'Loss/G/loss') + 1
    assert theirs[:first_phase] == ours[:first_phase]
    difference = max_difference(*both(runs, 'sgd-norm'))
    print(f'weights after {ITERATIONS} norm-clipped minibatches differ by at most',
          {net: f'{value:.3g}' for net, value in difference.items()})
    assert 0 < max(difference.values()) < NORM_CLIP_ROUNDING
