"""Parity of ganpatch's stylegan3 tree with the clipped-methods authors' (busycalibrating/clipped-stochastic-methods,
clipped_stylegan3.patch), same seed and flags, on the CPU and a tiny synthetic 32x32 dataset.

The stylegan2 config at cbase 256, cmax 32, map-depth 2, batch 4, without augmentation: G's path-length and D's R1
lazy regularization (intervals 4 and 16) run at minibatches 0 and 4 and at 0. Both sides run every case of `CASES`
in one process each (`stylegan_runner.py`: every training_stats report, and the final G, D and G_ema; the
optimizer calls and the minibatches where a case traces them). docs/parity.md explains each case.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from sides import (IDENTICAL, NORM_ROUNDING, SEG_SEQUENCES, Case, both, image_dataset, max_difference, names, run_sides,
                   side_argv)

pytestmark = [pytest.mark.integration, pytest.mark.parity]

TARGET = 'stylegan3'
RUNNER = Path(__file__).resolve().parent / 'stylegan_runner.py'
COMMON = ('--cfg=stylegan2 --gpus=1 --batch=4 --gamma=1 --cbase=256 --cmax=32 --map-depth=2 --mbstd-group=2 '
          '--aug=noaug --snap=1 --metrics=none --workers=1 --seed=0')
OURS_ONLY = '--device=cpu'  # the authors' train.py, shimmed, runs on the CPU
SGD = '--optimizer=sgd --glr=0.01 --dlr=0.01'
VALUE_CLIP = '--clip-mode=value --clip-gmax=0.01 --clip-dmax=0.01'
NORM_CLIP = '--clip-mode=norm --clip-gmax=0.1 --clip-dmax=0.1'
CLIP_AFTER_ALL_REDUCE = 'clip after the all-reduce'  # 2 processes: the same first phase, then the clip's place
GRADIENT_NOISE = 'gradient noise'                    # the minibatches of both passes and the files per phase

# The gradient-noise measurement of both sides at the sgd-value case's final snapshot (the same weights on both
# sides: test_identical). Their gradnoise_eval.py builds the networks from the flags (hence the architecture flags
# here, which ganpatch only checks against the pickle) and takes whole kimg: the runner stops each of its passes
# after GRADNOISE_BATCHES minibatches, ganpatch's --kimg says the same.
GRADNOISE_BATCHES = 6
GRADNOISE_COMMON = ('--cfg=stylegan2 --gpus=1 --batch=4 --gamma=1 --cbase=256 --cmax=32 --map-depth=2 --mbstd-group=2 '
                    '--aug=noaug --metrics=none --workers=1 --seed=0 --kimg=1 --mode=both')
GRADNOISE_OURS_ONLY = f'--device=cpu --kimg={GRADNOISE_BATCHES * 4 / 1000} --pl-mean-batches=2'

CASES = {
    'sgd-value': Case(f'{SGD} {VALUE_CLIP}', IDENTICAL),
    'sgd-norm': Case(f'{SGD} {NORM_CLIP}', NORM_ROUNDING),
    'sgd-norm-eps': Case(f'{SGD} {NORM_CLIP}', IDENTICAL, ours='--clip-norm-eps=1e-6'),
    'gloo-value': Case(f'--gpus=2 --batch=8 {SGD} {VALUE_CLIP}', CLIP_AFTER_ALL_REDUCE),
    'extrasgd': Case(f'--optimizer=extra_sgd --glr=0.01 --dlr=0.01 {VALUE_CLIP}', SEG_SEQUENCES),
    'gradnoise': Case('--resume={sgd-value}/*/network-snapshot-*.pkl', GRADIENT_NOISE),
}
ITERATIONS = {'sgd-value': 8, 'sgd-norm': 8, 'sgd-norm-eps': 8, 'gloo-value': 4, 'extrasgd': 2, 'gradnoise': GRADNOISE_BATCHES}
RUNNER_OPTIONS = {
    'extrasgd': dict(trace=['calls']),
    'gradnoise': dict(trace=['minibatches'], command={'authors': 'gradnoise_eval:main', 'ganpatch': 'gradnoise_train:main'}),
}
NORM_CLIP_ROUNDING = 1e-5  # bound on the weight differences after 8 norm-clipped minibatches


def argv(case, side, work):
    """The script's argv for `case` on `side`, with its own --outdir."""
    if case == 'gradnoise':
        return side_argv(CASES, case, side, work, [*GRADNOISE_COMMON.split(), f'--data={work}/data.zip'],
                         GRADNOISE_OURS_ONLY.split(), 'outdir')
    return side_argv(CASES, case, side, work, [*COMMON.split(), f'--data={work}/data.zip'], OURS_ONLY.split(), 'outdir')


def runner_options(case, side):
    options = dict(RUNNER_OPTIONS.get(case, {}))
    if isinstance(options.get('command'), dict):
        options['command'] = options['command'][side]
    return options


@pytest.fixture(scope='module')
def work(parity_trees, tmp_path_factory):
    """32 generated 32x32 images (python -m ganpatch.fake_data images), packed by dataset_tool.py."""
    ours, _ = parity_trees(TARGET)
    return image_dataset(ours, tmp_path_factory.mktemp('parity-stylegan3'))


@pytest.fixture(scope='module')
def runs(parity_trees, work):
    trees = dict(zip(['ganpatch', 'authors'], parity_trees(TARGET)))
    jobs = {side: [[case, argv(case, side, work), ITERATIONS[case], runner_options(case, side)] for case in CASES]
            for side in trees}
    return run_sides(trees, RUNNER, jobs, work)


def losses(theirs, ours):
    """The `Loss/...` reports of both sides, restricted to the names the authors' code reports (ganpatch reports
    more, e.g. the gradient norms); every one of those names must be reported by ganpatch too."""
    reported = {name for name, _ in theirs['reports'] if name.startswith('Loss/')}
    assert reported and reported <= {name for name, _ in ours['reports']}
    return [[r for r in record['reports'] if r[0] in reported] for record in (theirs, ours)]


def first_phase(reports):
    """The reports up to and including the first phase's loss (Gmain of minibatch 0)."""
    return reports[:next(i for i, (name, _) in enumerate(reports) if name == 'Loss/G/loss') + 1]


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
    phase's losses agree, the weights after 8 minibatches differ by rounding only (sgd-norm-eps: identical)."""
    theirs, ours = losses(*both(runs, 'sgd-norm'))
    assert first_phase(theirs) == first_phase(ours)
    difference = max_difference(*both(runs, 'sgd-norm'))
    print('weights after 8 norm-clipped minibatches differ by at most', {net: f'{value:.3g}' for net, value in difference.items()})
    assert 0 < max(difference.values()) < NORM_CLIP_ROUNDING


def test_two_processes_clip_before_or_after_the_all_reduce(runs):
    """2 gloo processes, value clipping: theirs clamps each process's gradient, then averages; ganpatch averages,
    then clamps. The first phase (before any update) agrees on rank 0; the weights then differ by more than
    rounding. Both sides' snapshots pass upstream's check that the processes hold identical weights."""
    theirs, ours = losses(*both(runs, 'gloo-value'))
    assert first_phase(theirs) == first_phase(ours) and len(first_phase(theirs)) > 0
    assert theirs != ours
    difference = max_difference(*both(runs, 'gloo-value'))
    print('weights after 4 minibatches on 2 processes differ by at most', {net: f'{value:.3g}' for net, value in difference.items()})
    assert max(difference.values()) > NORM_CLIP_ROUNDING


def calls(record):
    """The optimizer calls of a SEG run as one line: G E(-) U(Gmain:z0) ..., the network named when it changes."""
    words, network = [], None
    for net, kind, gradient in record['calls']:
        words.append(f'{net + " " if net != network else ""}{kind}({gradient})')
        network = net
    return ' '.join(words)


# The call sequences of --optimizer=extra_sgd over 2 minibatches (docs/parity.md explains them). Each entry is an
# extrapolation E or update U with the gradient in .grad at that moment: <phase>:<minibatch>, '-' for none.
SEG_CALLS = {
    'authors': ('G E(-) U(Gmain:z0) E(Gmain:z0) U(Greg:z1) D E(-) U(Dmain:z2) E(Dmain:z2) U(Dreg:z3) '
                'G E(Greg:z1) U(Gmain:z4) D E(Dreg:z3) U(Dmain:z5)'),
    'ganpatch': ('G E(Gmain:z0) U(Gmain:z1) E(Greg:z2) U(Greg:z3) D E(Dmain:z4) U(Dmain:z5) E(Dreg:z6) U(Dreg:z7) '
                 'G E(Gmain:z8) U(Gmain:z9) D E(Dmain:z10) U(Dmain:z11)'),
}


def test_seg_call_sequences(runs):
    """Theirs: one gradient per phase, the extrapolation with the gradient the network had before the phase (the
    previous phase's: past extragradient; none at first). Ganpatch: two per phase, the extrapolation on a fresh
    minibatch (clipped SEG)."""
    theirs, ours = both(runs, 'extrasgd')
    print('authors ', calls(theirs))
    print('ganpatch', calls(ours))
    assert calls(theirs) == SEG_CALLS['authors']
    assert calls(ours) == SEG_CALLS['ganpatch']


def passes(record):
    """{'full': [[phase, minibatch], ...], 'stochastic': [...]} of a gradient-noise run."""
    found, current = {}, None
    for phase, name in record['minibatches']:
        if phase == 'pass':
            current = found.setdefault(name, [])
        elif current is not None:
            current.append([phase, name])
    return found


def test_gradient_noise_minibatches_and_phases(runs, work):
    """Theirs: pass 2 evaluates the very minibatches of pass 1, and the regularization phases' gradients never reach
    their files (their flattening fails). Ganpatch: fresh minibatches in pass 2, each phase in its own files, and
    the authors' files (names, formats, lengths) for Gmain and Dmain."""
    theirs, ours = both(runs, 'gradnoise')
    theirs_passes, ours_passes = passes(theirs), passes(ours)
    print('authors ', theirs_passes)
    print('ganpatch', ours_passes)
    assert theirs_passes['stochastic'] == theirs_passes['full']
    assert not {name for _, name in ours_passes['stochastic']} & {name for _, name in ours_passes['full']}
    for passes_ in (theirs_passes, ours_passes):
        for found in passes_.values():
            assert {phase for phase, _ in found} == {'Gmain', 'Greg', 'Dmain', 'Dreg'}
    [theirs_dir], [ours_dir] = [list((work / side / 'gradnoise').iterdir()) for side in ('authors', 'ganpatch')]
    evaluations = {phase: sum(p == phase for p, _ in theirs_passes['stochastic']) for phase in ('Gmain', 'Greg', 'Dmain', 'Dreg')}
    for network, main in [('generator', 'Gmain'), ('discriminator', 'Dmain')]:
        a, b = [np.load(folder / f'{network}_stoch_noise.npy') for folder in (theirs_dir, ours_dir)]
        assert a.dtype == b.dtype == np.float64 and len(a) == evaluations[main] == GRADNOISE_BATCHES == len(b)
        assert np.array_equal(b, np.load(ours_dir / f'{main}_stoch_noise.npy'))
        full = [torch.load(folder / f'{network}_full_grad.pth', weights_only=True) for folder in (theirs_dir, ours_dir)]
        assert all(isinstance(t, torch.Tensor) and t.ndim == 1 for t in full) and full[0].shape == full[1].shape
        print(f'{network}: noise mean {a.mean():.4g} (authors, pass-1 minibatches) vs {b.mean():.4g} (ganpatch, fresh)')
    for phase in ('Greg', 'Dreg'):
        assert len(np.load(ours_dir / f'{phase}_stoch_noise.npy')) == GRADNOISE_BATCHES and evaluations[phase] > 0
