"""Parity of ganpatch's wgangp.py with the clipped-methods authors' (busycalibrating/clipped-stochastic-methods,
clipped_pytorch-gan-collections.patch), same seed and flags, on the CPU and a tiny synthetic CIFAR-10.

`CASES` holds one line per comparison: the flags both sides get, the flags only ganpatch gets, and what the test
expects of it. Both sides run every case in one driver process each (`wgangp_runner.py`, which records every
loss, every optimizer call and the final weights), the two processes side by side. docs/parity.md explains each
case and each measured difference.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from sides import IDENTICAL, NOISE_STATISTICS, NORM_ROUNDING, SEG_SEQUENCES, Case, both, max_difference, names, \
    run_sides, side_argv

pytestmark = [pytest.mark.integration, pytest.mark.parity]

TARGET = 'pytorch-gan-collections'
RUNNER = Path(__file__).resolve().parent / 'wgangp_runner.py'
IMAGES = 64  # the tiny CIFAR-10 (python -m ganpatch.fake_data cifar10 DIR --images 64)

# Both sides: cnn32 at batch 4, 4 outer steps of n_dis=5 D updates and one G update, no IS/FID.
COMMON = '--arch=cnn32 --batch_size=4 --sample_size=4 --n_dis=5 --total_steps=4 --norecord --seed=0'
OURS_ONLY = '--device=cpu --num_workers=0'  # the authors' script, shimmed, runs on the CPU in the main process
SGD_VALUE = '--opt=sgd --lr_G=0.02 --lr_D=0.02 --clip_mode=value --clip_G=0.01 --clip_D=0.01'
SGD_NORM = '--opt=sgd --lr_G=0.2 --lr_D=0.2 --clip_mode=norm --clip_G=1 --clip_D=1'
CASES = {
    'sgd-value': Case(SGD_VALUE, IDENTICAL),
    'sgd': Case('--opt=sgd --lr_G=0.0002 --lr_D=0.0004', IDENTICAL),
    'adam-value': Case('--opt=adam --clip_mode=value --clip_G=0.01 --clip_D=0.01', IDENTICAL),
    'sgd-norm': Case(SGD_NORM, NORM_ROUNDING),
    # --clip_norm_eps=1e-6 reproduces the authors' clip_grad_norm_ arithmetic, c/(|g|+1e-6): bit-identical.
    'sgd-norm-eps': Case(SGD_NORM, IDENTICAL, ours='--clip_norm_eps=1e-6'),
    'sgd-norm-one-D-update': Case(f'{SGD_NORM} --total_steps=1 --n_dis=1', NORM_ROUNDING),
    'extrasgd-value': Case('--opt=extrasgd --lr_G=0.02 --lr_D=0.02 --clip_mode=value --clip_G=0.01 --clip_D=0.01 '
                           '--total_steps=2', SEG_SEQUENCES),
    # Gradient noise at the step-1 checkpoint of 'sgd-value' (the same weights on both sides: test_identical):
    # 30 minibatches per network and pass.
    'evaluate': Case('--evaluate --pretrain={sgd-value}/*/model_*1.pt --total_steps=30 --n_dis=1',
                     NOISE_STATISTICS),
}

# The optimizer calls of --opt=extrasgd over 2 outer steps of n_dis=5, per network: E = extrapolation, U = update,
# followed by the minibatch its gradient came from (D: the real minibatch, G: the latent minibatch, counted from 1).
THEIR_SEG = 'D E1 U2 E3 U4 E5 | G E1 | D U6 E7 U8 E9 U10 | G U2'
OUR_SEG = ('D E1 U2 E3 U4 E5 U6 E7 U8 E9 U10 | G E1 U2 | '
           'D E11 U12 E13 U14 E15 U16 E17 U18 E19 U20 | G E3 U4')
NOISE_Z = 3  # noise means of the two sides differ by less than this many combined standard errors
NORM_CLIP_ROUNDING = 1e-6  # bound on the weight difference after one norm-clipped update (measured: docs/parity.md)


def argv(case, side, work):
    """wgangp.py's argv for `case` on `side`, with its own --logdir."""
    return side_argv(CASES, case, side, work, [*COMMON.split(), f'--data_dir={work}/data'], OURS_ONLY.split(),
                     'logdir')


@pytest.fixture(scope='module')
def work(parity_trees, tmp_path_factory):
    ours, _ = parity_trees(TARGET)
    root = tmp_path_factory.mktemp('parity-pgc')
    command = [sys.executable, '-m', 'ganpatch.fake_data', 'cifar10', str(root / 'data'), '--images', str(IMAGES)]
    subprocess.run(command, cwd=ours, check=True, capture_output=True)
    return root


@pytest.fixture(scope='module')
def runs(parity_trees, work):
    """side -> case -> the runner's record; both sides at once."""
    trees = dict(zip(['ganpatch', 'authors'], parity_trees(TARGET)))
    jobs = {side: [[case, argv(case, side, work)] for case in CASES] for side in trees}
    return run_sides(trees, RUNNER, jobs, work)


def sequence(calls):
    """The optimizer calls as THEIR_SEG / OUR_SEG write them."""
    groups = []
    for call in calls:
        token = ('E' if call['call'] == 'extrapolate' else 'U') + str(call['batch'])
        if groups and groups[-1][0] == call['net']:
            groups[-1].append(token)
        else:
            groups.append([call['net'], token])
    return ' | '.join(' '.join(group) for group in groups)


@pytest.mark.parametrize('case', names(CASES, IDENTICAL))
def test_identical(runs, case):
    theirs, ours = both(runs, case)
    assert len(theirs['losses']) == len(ours['losses']) > 0
    for i, (a, b) in enumerate(zip(theirs['losses'], ours['losses'])):
        assert a == b, f'call {i}: the authors {a}, ganpatch {b}'
    assert theirs['calls'] == ours['calls']
    assert max_difference(theirs, ours) == {'net_G': 0.0, 'net_D': 0.0}


def test_norm_clipping_differs_by_rounding_only(runs):
    """Their clip_grad_norm_ scales .grad by c / (||g|| + 1e-6); ganpatch folds min(1, c / ||g||) into the step.
    One norm-clipped D update at lr 0.2, c = 1 moves D's weights by at most 0.2; the two results differ by
    rounding only (NORM_CLIP_ROUNDING); the differences then grow through training, as any perturbation does."""
    theirs, ours = both(runs, 'sgd-norm-one-D-update')
    assert theirs['losses'][:2] == ours['losses'][:2]  # D's loss and penalty before any update: the same gradient
    one_update = max_difference(theirs, ours)['net_D']
    print(f'D weights after one norm-clipped update differ by at most {one_update:.3g}')
    assert 0 < one_update < NORM_CLIP_ROUNDING
    theirs, ours = both(runs, 'sgd-norm')
    assert theirs['losses'][:2] == ours['losses'][:2] and theirs['losses'] != ours['losses']
    assert [(c['net'], c['call'], c['batch']) for c in theirs['calls']] == \
        [(c['net'], c['call'], c['batch']) for c in ours['calls']]
    print('final weights after 4 outer steps differ by at most',
          {net: f'{value:.3g}' for net, value in max_difference(theirs, ours).items()})


def test_seg_takes_full_steps_where_the_authors_alternate_call_by_call(runs):
    theirs, ours = both(runs, 'extrasgd-value')
    assert sequence(theirs['calls']) == THEIR_SEG
    assert sequence(ours['calls']) == OUR_SEG
    # Theirs: D's pair (E5, U6) straddles the lr schedule's step (lr 0.02, then 0.01); ganpatch's pairs never do.
    lr = {side: {(c['net'], c['call'], c['batch']): c['lr'] for c in record['calls']}
          for side, record in [('theirs', theirs), ('ours', ours)]}
    assert lr['theirs'][('D', 'extrapolate', 5)] == 0.02 and lr['theirs'][('D', 'update', 6)] == 0.01
    ours_calls = ours['calls']
    for extrapolation, update in zip(ours_calls[::2], ours_calls[1::2]):
        assert (extrapolation['call'], update['call']) == ('extrapolate', 'update')
        assert extrapolation['net'] == update['net'] and extrapolation['lr'] == update['lr']


def noise(run_dir, side, network):
    """(stochastic noise norms, flattened full gradient) that --evaluate wrote for `network`."""
    if side == 'authors':
        return np.load(run_dir / f'stoch_noise_{network}.npy'), torch.load(run_dir / f'full_grad_{network}.pth')
    full_grad = torch.load(run_dir / f'{network}_full_grad.pth', weights_only=True)['full_grad']
    return np.load(run_dir / f'{network}_stoch_noise.npy'), full_grad


def test_evaluate_measures_the_same_noise(runs, work):
    """Same quantity (||g_b - g_bar||_2, D's gradient of loss + alpha * GP) and counts on the same checkpoint; the
    samples differ (each side draws its own minibatches), so the means are compared within standard errors."""
    both(runs, 'evaluate')
    checkpoints = [torch.load(next((work / side / 'sgd-value').glob('*/model_*1.pt')), weights_only=True)
                   for side in ('authors', 'ganpatch')]
    assert all(torch.equal(checkpoints[0][net][k], checkpoints[1][net][k])
               for net in ('net_G', 'net_D') for k in checkpoints[0][net])
    run_dirs = {side: next((work / side / 'evaluate').iterdir()) for side in ('authors', 'ganpatch')}
    for network in ('D', 'G'):
        (theirs, theirs_full), (ours, ours_full) = [noise(run_dirs[side], side, network) for side in run_dirs]
        assert len(theirs) == len(ours) == 30 and theirs_full.shape == ours_full.shape
        standard_error = np.hypot(theirs.std(ddof=1) / np.sqrt(len(theirs)), ours.std(ddof=1) / np.sqrt(len(ours)))
        z = (ours.mean() - theirs.mean()) / standard_error
        print(f'{network}: noise mean {theirs.mean():.4g} (authors) vs {ours.mean():.4g} (ganpatch), '
              f'{z:+.2f} standard errors, KS p {stats.ks_2samp(theirs, ours).pvalue:.2f}')
        assert abs(z) < NOISE_Z
