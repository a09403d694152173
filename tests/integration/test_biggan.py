"""CPU runs of the patched BigGAN-PyTorch tree on a tiny generated CIFAR-10 (C10) copy.

All train.py runs of the methods share one driver process (`DRIVER`: each job sets sys.argv and calls
train.main(), as `python train.py ...` would; importing torch costs about 6 CPU seconds per process). The
driver traces the calls that show how minibatches, half-steps, EMA updates, checkpoints and buffers line up.
The compat-only tree (the commit before the first method patch) trains the default configuration in a
second process for the bit-identity check. The seed's data preparation, scripts/launch_cifar_ema.sh and
scripts/sample_cifar_ema.sh run through the real command line in a copy of the tree, as a user runs them.

Networks are tiny (--G_ch 8 --D_ch 8, no attention) and runs last a few iterations.
"""

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from driver_jobs import read_jobs
from ganpatch.fake_data import write_cifar10
from ganpatch.optim import describe_choices

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = ('--dataset C10 --G_ch 8 --D_ch 8 --G_attn 0 --D_attn 0 --num_workers 0 --num_epochs 1 --test_every 0 '
        '--ema --use_ema --device cpu').split()
DEFAULT = [*TINY, '--batch_size', '8', '--num_D_steps', '1', '--save_every', '5'] # 40 images: 5 iterations.
SEG = ('--optimizer extrasgd --G_lr 0.01 --D_lr 0.01 --clip_mode norm --G_clip 1 --D_clip 1 --batch_size 2 '
       '--num_D_steps 2 --num_D_accumulations 2 --num_G_accumulations 2 --save_every 1').split() # 2 iterations.
RUNS = { # name -> train.py options after TINY; each run writes under --base_root <work>/runs/<name>
    'default': DEFAULT[len(TINY):],
    'no-toggle-grads': [*DEFAULT[len(TINY):], '--no_toggle_grads'],
    'sgd-norm-linear': [*DEFAULT[len(TINY):], *'--optimizer sgd --G_lr 0.01 --D_lr 0.01 --clip_mode norm --G_clip 1 '
                        '--D_clip 1 --lr_schedule linear'.split()],
    'adam-value': [*DEFAULT[len(TINY):], *'--clip_mode value --G_clip 0.01 --D_clip 0.01'.split()],
    'extrasgd-norm': SEG,
    'extraadam-value-bmcG': [*SEG, *'--optimizer extraadam --G_lr 2e-4 --D_lr 2e-4 --clip_mode value --G_clip 0.1 '
                             '--D_clip 0.1 --bmc G'.split()],
    'bmc-D': [*DEFAULT[len(TINY):], '--bmc', 'D'],
}
DATA_IMAGES = 40

# Runs train.py jobs in one process and prints one JSON line per job. Traces: each D/G step gradient with
# the chunk of real data it used (its storage offset), whether the network was extrapolated and digests of
# its buffers before and after; every extrapolate()/step() of ganpatch's optimizers; every EMA update, save
# and test with the optimizers' state; and, for gradnoise jobs, the networks against the loaded checkpoint.
DRIVER = r'''
import contextlib, hashlib, io, json, shutil, sys, time
import torch
import ganpatch.optim
import train, train_fns, utils

events = []

def digest(module):
    return hashlib.sha1(b''.join(b.detach().cpu().numpy().tobytes() for b in module.buffers())).hexdigest()[:12]

def extrapolated(net):
    return bool(getattr(net.optim, 'is_extrapolated', False))

D_gradient, G_gradient = train_fns.D_gradient, train_fns.G_gradient
def traced_D_gradient(GD, D, z_, y_, x, y, bmc, config):
    before = digest(D)
    result = D_gradient(GD, D, z_, y_, x, y, bmc, config)
    events.append(['D_gradient', x.storage_offset(), extrapolated(D), before, digest(D), float(result[2])])
    return result
def traced_G_gradient(GD, G, z_, y_, bmc, config):
    before = digest(G)
    result = G_gradient(GD, G, z_, y_, bmc, config)
    events.append(['G_gradient', None, extrapolated(G), before, digest(G), float(result[1])])
    return result
train_fns.D_gradient, train_fns.G_gradient = traced_D_gradient, traced_G_gradient

for name in ['extrapolate', 'step']:
    original = getattr(ganpatch.optim.Extragradient, name)
    def traced(self, *args, _original=original, _name=name, **kwargs):
        events.append([_name])
        return _original(self, *args, **kwargs)
    setattr(ganpatch.optim.Extragradient, name, traced)

nets = {}
update = utils.ema.update
def traced_update(self, itr=None):
    nets['G'] = self.source
    update(self, itr)
    events.append(['ema', extrapolated(self.source), digest(self.source)])
utils.ema.update = traced_update
save_and_sample = train_fns.save_and_sample
def traced_save_and_sample(G, D, *args, **kwargs):
    events.append(['save', extrapolated(G), extrapolated(D)])
    return save_and_sample(G, D, *args, **kwargs)
train_fns.save_and_sample = traced_save_and_sample

gradient_noise = train_fns.gradient_noise
def traced_gradient_noise(G, D, GD, state_dict, config, experiment_name, device):
    root = '%s/%s' % (config['weights_root'], experiment_name)
    loaded = {'G': G.state_dict(), 'D': D.state_dict()}
    loaded = {net: {k: v.clone() for k, v in sd.items()} for net, sd in loaded.items()}
    gradient_noise(G, D, GD, state_dict, config, experiment_name, device)
    nets['unchanged'] = all(torch.equal(value, loaded[net][key])
                            for net, module in [('G', G), ('D', D)] for key, value in module.state_dict().items())
    nets['requires_grad'] = all(p.requires_grad for p in [*G.parameters(), *D.parameters()])
    nets['checkpoint_digests'] = [digest(G), digest(D)]
train_fns.gradient_noise = traced_gradient_noise

for name, argv in json.loads(sys.argv[1]):
    if name.startswith('load:'): # utils.load_file(root, name): argv = [root, name].
        loaded = utils.load_file(*argv)
        print('JOB ' + json.dumps({'name': name, 'loaded': repr(loaded)}), flush=True)
        continue
    if name.startswith('copy:'): # Copy a run's outputs: argv = [source base_root, destination base_root].
        for folder in ['weights', 'logs', 'samples']:
            shutil.copytree(f'{argv[0]}/{folder}', f'{argv[1]}/{folder}')
        continue
    events.clear()
    nets.clear()
    error, out, err = None, io.StringIO(), io.StringIO()
    start = time.process_time()
    sys.argv = ['train.py', *argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            train.main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            error = ' '.join((str(exc.code) if not isinstance(exc.code, int) else err.getvalue()).split())
    extra = {k: v for k, v in nets.items() if k != 'G'}
    print('JOB ' + json.dumps({'name': name, 'error': error, 'events': events, 'stdout': out.getvalue()[-3000 if name != 'help' else 0:],
                               'cpu_s': time.process_time() - start, **extra}), flush=True)
'''

# scripts/utils/prepare_data.sh and upstream's CIFAR scripts (its README's flow), run as they are. Appended to
# them (argparse: the last value wins) for a CPU run of seconds on a 10-image C10 copy:
SEED_TINY = ('--G_ch 8 --D_ch 8 --batch_size 2 --num_epochs 1 --num_workers 0 --save_every 1 --test_every 1 '
             '--num_inception_images 10 --no_fid').split()
# --no_fid: FID's 50 Newton-Schulz iterations on 2048x2048 matrices take about a minute on 2 busy CPU cores;
# IS, the Inception network and the moments file run. sample.py also gets what to produce:
SAMPLE_OUTPUTS = '--sample_sheets --sample_interps --sample_random --sample_npz --sample_num_npz 8'.split()
SEED_GPU = '--num_epochs 1 --num_workers 0 --save_every 2 --test_every 2 --num_inception_images 500'.split() # 600 images: 3 iterations.

GRADNOISE_OUTPUTS = ['results_norm.png', 'results_lognorm.png', 'D_stoch_noise.npy', 'G_stoch_noise.npy',
                     'D_full_grad.pth', 'G_full_grad.pth', 'noise_stats.json', 'config.json']


def run(args, cwd, env=None):
    """Runs `args` in `cwd`; fails the test on a non-zero exit status."""
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert result.returncode == 0, f'{args[:3]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}'
    return result


def experiment_dir(root):
    """The single experiment folder under `root` (weights/, logs/ or samples/ of a run)."""
    (name,) = [entry for entry in os.listdir(root) if os.path.isdir(os.path.join(root, entry))]
    return os.path.join(root, name)


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def write_random_inception_weights(torch_home):
    """torchvision's Inception v3 weight file with random weights, where torch.hub looks for it first:
    the real code path of IS/FID without a download (the numbers are meaningless)."""
    from torchvision.models.inception import Inception3, Inception_V3_Weights
    folder = os.path.join(torch_home, 'hub', 'checkpoints')
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    state = Inception3(aux_logits=True, init_weights=False).state_dict()
    torch.save(state, os.path.join(folder, os.path.basename(Inception_V3_Weights.IMAGENET1K_V1.url)))
    return torch_home


def compat_only_tree(tree, dest):
    """The patched tree at the commit before the first method patch: upstream plus the compat series."""
    found = subprocess.run(['git', '-C', str(tree), 'log', '--format=%H', '--grep=^Optimizers and clipping',
                            'upstream..HEAD'], capture_output=True, text=True, check=True).stdout.split()
    assert len(found) == 1, 'no single "Optimizers and clipping" patch commit'
    os.makedirs(dest)
    subprocess.run(f'git -C {tree} archive {found[0]}~1 | tar -x -C {dest}', shell=True, check=True)
    return dest


def script_argv(tree, script, extra):
    """A seed script's command as bash runs it, with `extra` appended to its last line."""
    with open(os.path.join(tree, script)) as f:
        text = f.read().rstrip()
    return text + ' ' + shlex.join(extra) + '\n'


@pytest.fixture(scope='module')
def tree(patched_tree):
    return str(patched_tree('biggan-pytorch'))


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    """A working directory with a C10 copy of DATA_IMAGES images in data/cifar (train.py's layout)."""
    root = str(tmp_path_factory.mktemp('biggan'))
    write_cifar10(os.path.join(root, 'data', 'cifar'), images=DATA_IMAGES)
    return root


def run_argv(work, name, options):
    """train.py options of a run under --base_root runs/<name> (which reads its data from runs/<name>/data)."""
    base_root = os.path.join(work, 'runs', name)
    if not os.path.exists(base_root):
        os.makedirs(base_root)
        os.symlink(os.path.join(work, 'data'), os.path.join(base_root, 'data'))
    return [*TINY, '--base_root', base_root, *options]


def bad_input_cases(work):
    """train.py options -> the message they must stop with, before any folder is made."""
    bad = [*TINY, '--data_root', f'{work}/data', *[f'--{key}_root={work}/bad/{key}' for key in ['weights', 'logs', 'samples']]]
    cases = {
        '--clip_mode norm --G_clip 1': '--clip_mode norm needs --D_clip > 0 (got None)',
        '--clip_mode value --G_clip 0 --D_clip 1': '--clip_mode value needs --G_clip > 0 (got 0.0)',
        '--G_clip 1 --D_clip 1': '--G_clip/--D_clip need --clip_mode norm or --clip_mode value',
        '--optimizer rmsprop': "argument --optimizer: invalid choice: 'rmsprop'",
        '--bmc both': "argument --bmc: invalid choice: 'both'",
        '--bmc D --bmc_rho1 -1': '--bmc_rho1 must be >= 0',
        '--lr_schedule cosine': "argument --lr_schedule: invalid choice: 'cosine'",
        '--G_mixed_precision --optimizer sgd': '--G_mixed_precision trains with utils.Adam16',
        '--which_train_fn gradnoise': '--which_train_fn gradnoise measures the weights of a trained run: add --resume',
        '--which_train_fn gradnoise --resume --gradnoise_itrs 1': '--gradnoise_itrs must be >= 2',
        f'--data_root {work}/nodata': f'C10 not found: {work}/nodata/cifar/cifar-10-batches-py lacks data_batch_1',
        '--test_every 5': 'IS/FID need the Inception moments C10_inception_moments.npz',
        '--resume --experiment_name never-trained': 'never-trained lacks G.pth, G_optim.pth, D.pth',
        '--device nonsense': '--device nonsense is not a torch device',
    }
    if not torch.cuda.is_available():
        cases['--device cuda'] = '--device cuda: CUDA is not available'
    return {f'bad:{options}': ([*bad, *options.split()], message) for options, message in cases.items()}


@pytest.fixture(scope='module')
def jobs(tree, work):
    """name -> result of every train.py job, run by DRIVER in one process in this order."""
    runs = [[name, run_argv(work, name, options)] for name, options in RUNS.items()]
    # Resume a copy of the default run for its epoch again (5 more iterations), then measure the gradient
    # noise of its last weights, twice: the second finds the first's folder and must refuse.
    runs.append(['copy:default', [f'{work}/runs/default', f'{work}/runs/resume']])
    runs.append(['resume', run_argv(work, 'resume', [*RUNS['default'], '--resume'])])
    gradnoise = run_argv(work, 'resume', [*RUNS['default'], '--resume', '--which_train_fn', 'gradnoise',
                                          '--gradnoise_itrs', '2', '--test_every', '5000'])
    runs += [['gradnoise', gradnoise], ['gradnoise-again', gradnoise]]
    runs += [[name, argv] for name, (argv, _) in bad_input_cases(work).items()]
    runs.append(['load:legacy', [*write_legacy_state_dicts(work), 'state_dict']])
    runs.append(['load:legacy-numpy1', [f'{work}/legacy', 'state_dict_numpy1']])
    runs.append(['help', ['--help']])
    result = run([sys.executable, '-c', DRIVER, json.dumps(runs)], cwd=work, env={'PYTHONPATH': tree})
    return read_jobs(result, [name for name, _ in runs if not name.startswith('copy:')])


def write_legacy_state_dicts(work):
    """State dicts as upstream saved them: the config holds nn.ReLU modules and best_IS is a NumPy float,
    pickled under NumPy 2's module name and, faking NumPy 1, under numpy.core.multiarray."""
    folder = os.path.join(work, 'legacy')
    os.makedirs(folder)
    state = {'itr': 7, 'best_IS': np.float64(1.5), 'config': {'G_activation': torch.nn.ReLU(inplace=False), 'G_nl': 'relu'}}
    torch.save(state, os.path.join(folder, 'state_dict.pth'))
    scalar = np.float64(0).__reduce__()[0]
    module = scalar.__module__
    scalar.__module__ = 'numpy.core.multiarray'
    try:
        torch.save(state, os.path.join(folder, 'state_dict_numpy1.pth'))
    finally:
        scalar.__module__ = module
    assert 'numpy.core.multiarray.scalar' in torch.serialization.get_unsafe_globals_in_checkpoint(
        os.path.join(folder, 'state_dict_numpy1.pth'))
    return [folder]


def weights(work, name):
    folder = experiment_dir(f'{work}/runs/{name}/weights')
    return {file: load(os.path.join(folder, file)) for file in sorted(os.listdir(folder)) if file.endswith('.pth')}


def logs(work, name):
    folder = experiment_dir(f'{work}/runs/{name}/logs')
    texts = {}
    for file in sorted(os.listdir(folder)):
        if file.endswith('.log'):
            with open(os.path.join(folder, file)) as f:
                texts[file] = f.read()
    return texts


def assert_same(a, b, where=''):
    """Bit-identical nested state (tensors compared exactly)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a, key=str) == sorted(b, key=str), where
        for key in a:
            assert_same(a[key], b[key], f'{where}/{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{index}]')
    else:
        assert a == b, where


@pytest.mark.parametrize('name', RUNS)
def test_smoke_run(work, jobs, name):
    assert jobs[name]['error'] is None, jobs[name]['stdout']
    saved = weights(work, name)
    assert {'G.pth', 'D.pth', 'G_ema.pth', 'G_optim.pth', 'D_optim.pth', 'state_dict.pth'} <= set(saved)
    for net in ['G.pth', 'D.pth', 'G_ema.pth']:
        assert all(torch.isfinite(t).all() for t in saved[net].values() if t.is_floating_point())
    state = saved['state_dict.pth']
    assert state['itr'] == (2 if name in ('extrasgd-norm', 'extraadam-value-bmcG') else 5)
    losses = logs(work, name)
    assert {'G_loss.log', 'D_loss_real.log', 'D_loss_fake.log'} <= set(losses)
    samples = experiment_dir(f'{work}/runs/{name}/samples')
    assert os.path.isfile(os.path.join(samples, f"fixed_samples{state['itr']}.jpg"))
    assert {'samples0.jpg', 'interpZ0.jpg', 'interpY0.jpg', 'interpZY0.jpg'} <= set(os.listdir(os.path.join(samples, str(state['itr']))))


def test_optimizers_and_clipping_reach_the_saved_state(work, jobs):
    config = {name: weights(work, name)['state_dict.pth']['config'] for name in RUNS}
    assert config['default']['optimizer'] == 'adam' and config['default']['clip_mode'] == 'none'
    adam_state = weights(work, 'default')['G_optim.pth']
    assert 'initial_lr' not in adam_state['param_groups'][0]
    # --lr_schedule linear over 5 iterations: the last update used 1/5 of the initial lr.
    sgd = weights(work, 'sgd-norm-linear')
    for net in ['G_optim.pth', 'D_optim.pth']:
        (group,) = sgd[net]['param_groups']
        assert group['initial_lr'] == 0.01 and group['lr'] == pytest.approx(0.01 / 5)
        assert 'betas' not in group and group['momentum'] == 0
    assert config['sgd-norm-linear']['G_clip'] == 1.0
    # ClippedAdam keeps torch.optim.Adam's state layout.
    assert set(weights(work, 'adam-value')['D_optim.pth']['state'][0]) == {'step', 'exp_avg', 'exp_avg_sq'}
    # Experiment names tell the variants apart; the default name is upstream's.
    names = {name: os.path.basename(experiment_dir(f'{work}/runs/{name}/weights')) for name in RUNS}
    assert names['default'] == 'BigGAN_C10_seed0_Gch8_Dch8_bs8_Glr5.0e-05_Dlr2.0e-04_Gnlrelu_Dnlrelu_Ginitortho_Dinitortho_ema'
    assert '_sgd_clipnorm_G1.0e+00_D1.0e+00_lrlinear_' in names['sgd-norm-linear']
    assert '_bmcD_rho1.0e-01_1.0e-02_' in names['bmc-D']


def test_default_run_is_bit_identical_to_the_compat_only_tree(tree, work, jobs, tmp_path):
    """The default configuration trains exactly as in the tree without the method patches."""
    compat = compat_only_tree(tree, str(tmp_path / 'compat'))
    assert not os.path.exists(os.path.join(compat, 'ganpatch'))
    run([sys.executable, os.path.join(compat, 'train.py'), *run_argv(work, 'compat', RUNS['default'])], cwd=work)
    ours, theirs = weights(work, 'default'), weights(work, 'compat')
    for file, state in theirs.items():
        if file.startswith('state_dict'): # Ours also holds the method options, and other roots.
            config, their_config = ours[file].pop('config'), state.pop('config')
            assert {key: config[key] for key in their_config if not key.endswith('_root')} == \
                {key: value for key, value in their_config.items() if not key.endswith('_root')}
    assert_same(ours, theirs)
    assert logs(work, 'default') == logs(work, 'compat')


def test_no_toggle_grads_trains_the_same(work, jobs):
    assert_same(weights(work, 'no-toggle-grads')['G.pth'], weights(work, 'default')['G.pth'])
    assert_same(weights(work, 'no-toggle-grads')['D.pth'], weights(work, 'default')['D.pth'])


def test_seg_completes_each_step_on_fresh_batches_and_updates_the_ema_only_at_real_iterates(jobs):
    """extrasgd, 2 D steps of 2 accumulations, 2 G accumulations, checkpoints every iteration. Per D step:
    the gradient at x on one chunk, extrapolate, the gradient at x~ on the next chunk, step; then the same
    for G; then the EMA update and the checkpoint, with both networks back at real iterates."""
    events = jobs['extrasgd-norm']['events']
    chunk = 2 * 2 * 3 * 32 * 32 # batch_size x num_D_accumulations images: one D gradient's real data.
    iteration = []
    for index in range(4): # Two D steps, each two chunks, never one twice.
        iteration += [['D_gradient', index * chunk, index % 2 == 1], ['extrapolate' if index % 2 == 0 else 'step']]
    iteration += [['G_gradient', None, False], ['extrapolate'], ['G_gradient', None, True], ['step'],
                  ['ema', False], ['save', False, False]]
    assert len(events) == 2 * len(iteration)
    assert all(event[:len(expected)] == expected for event, expected in zip(events, iteration * 2)), events


def test_seg_keeps_buffers_of_the_extrapolation_pass_and_drops_those_of_the_pass_at_x_tilde(jobs):
    """Spectral-norm vectors and BatchNorm statistics: the pass at x updates them, the pass at x~ runs with
    its power iteration and batch statistics but leaves nothing behind, so the EMA copy and checkpoints
    only get buffers from real iterates."""
    events = jobs['extrasgd-norm']['events']
    D_calls = [e for e in events if e[0] == 'D_gradient']
    G_calls = [e for e in events if e[0] == 'G_gradient']
    emas = [e for e in events if e[0] == 'ema']
    for it in range(2):
        extrapolation, update, next_extrapolation = D_calls[4 * it: 4 * it + 3]
        assert update[3] == extrapolation[4] # The extrapolation pass's updates stay ...
        assert update[4] != update[3] # ... the pass at x~ changed the power-iteration vectors ...
        assert next_extrapolation[3] == update[3] # ... and was undone before the next step.
        g_extrapolation, g_update = G_calls[2 * it: 2 * it + 2]
        assert g_update[3] == g_extrapolation[4] and g_update[4] != g_update[3]
        assert emas[it][2] == g_update[3] # G's buffers at the EMA update: those of the real iterate.


def test_plain_optimizers_take_one_pass_per_step(jobs):
    events = jobs['sgd-norm-linear']['events']
    per_iteration = ['D_gradient', 'G_gradient', 'ema']
    assert [e[0] for e in events if e[0] != 'save'] == per_iteration * 5
    assert all(e[1] == 0 for e in events if e[0] == 'D_gradient') # One chunk, the loader's whole batch.


def test_bmc_terms_enter_only_the_chosen_network(work, jobs):
    def terms(name, net):
        return [e[5] for e in jobs[name]['events'] if e[0] == f'{net}_gradient']
    assert set(terms('default', 'D')) == {0.0} and set(terms('default', 'G')) == {0.0}
    assert all(t != 0 for t in terms('bmc-D', 'D')) and set(terms('bmc-D', 'G')) == {0.0}
    assert all(t != 0 for t in terms('extraadam-value-bmcG', 'G'))
    assert set(terms('extraadam-value-bmcG', 'D')) == {0.0}
    assert 'D_bmc.log' in logs(work, 'bmc-D') and 'G_bmc.log' in logs(work, 'extraadam-value-bmcG')
    assert not any(file.endswith('bmc.log') for file in logs(work, 'default'))


def test_resume_continues_the_run_and_loads_plain_state(work, jobs):
    assert jobs['resume']['error'] is None, jobs['resume']['stdout']
    resumed = weights(work, 'resume')
    assert resumed['state_dict.pth']['itr'] == 10
    # The optimizer state was loaded: Adam's step count went on from 5.
    assert all(float(s['step']) == 10 for s in resumed['G_optim.pth']['state'].values())
    config = resumed['state_dict.pth']['config']
    assert 'G_activation' not in config and config['G_nl'] == 'relu'
    assert isinstance(resumed['state_dict.pth']['best_IS'], (int, float))
    assert logs(work, 'resume')['G_loss.log'].count('\n') == 10 # Appended to, not restarted.
    # State dicts saved before this change (nn.ReLU, NumPy scalars) still load, with nothing else allowed.
    for name in ['load:legacy', 'load:legacy-numpy1']:
        assert jobs[name]['loaded'] == "{'itr': 7, 'best_IS': np.float64(1.5), 'config': {'G_activation': ReLU(), 'G_nl': 'relu'}}"


def test_gradient_noise_writes_every_output_and_changes_nothing(work, jobs):
    job = jobs['gradnoise']
    assert job['error'] is None, job['stdout']
    folder = os.path.join(experiment_dir(f'{work}/runs/resume/logs'), 'gradnoise_itr10')
    assert sorted(os.listdir(folder)) == sorted(GRADNOISE_OUTPUTS)
    with open(os.path.join(folder, 'noise_stats.json')) as f:
        stats = json.load(f)
    assert stats['D']['n'] == 2 and stats['G']['n'] == 2 # --gradnoise_itrs 2, one D step per iteration.
    for net in 'DG':
        norms = np.load(os.path.join(folder, f'{net}_stoch_noise.npy'))
        assert norms.shape == (2,) and np.isfinite(norms).all() and (norms > 0).all()
    # Both passes: 2 x (2 D + 2 G) gradients, each at exactly the checkpoint's buffers; no step, no EMA.
    calls = [e[0] for e in job['events']]
    assert calls.count('D_gradient') == 4 and calls.count('G_gradient') == 4 and len(calls) == 8
    G_digest, D_digest = job['checkpoint_digests']
    assert {e[3] for e in job['events'] if e[0] == 'D_gradient'} == {D_digest}
    assert {e[3] for e in job['events'] if e[0] == 'G_gradient'} == {G_digest}
    assert job['unchanged'] is True and job['requires_grad'] is True
    assert logs(work, 'resume')['G_loss.log'].count('\n') == 10 # The trained run's logs are untouched.
    assert 'holds a measurement of these weights already' in jobs['gradnoise-again']['error']


def test_bad_input_stops_before_any_work(work, jobs):
    for name, (_, message) in bad_input_cases(work).items():
        error = jobs[name]['error']
        assert error is not None and message in error, (name, error)
    assert not os.path.exists(f'{work}/bad'), 'a folder was made before the error'


def test_help_works(jobs):
    text = ' '.join(jobs['help']['stdout'].split())
    assert jobs['help']['error'] is None
    assert '%#.#f/ %#.#e' in text # The --logstyle help that made --help crash.
    assert describe_choices() in text and '--no_toggle_grads' in text  # Every ganpatch optimizer, aliases included.


def seed_flow(tree, root, images, train_extra, sample_extra, env=None):
    """Upstream's README CIFAR flow in a copy of the tree (the scripts use paths relative to it):
    scripts/utils/prepare_data.sh for C10 (make_hdf5.py, then the Inception moments from the HDF5 copy),
    scripts/launch_cifar_ema.sh, then scripts/sample_cifar_ema.sh on the weights it wrote. Returns the copy."""
    copy = os.path.join(root, 'BigGAN-PyTorch')
    shutil.copytree(tree, copy, ignore=shutil.ignore_patterns('.git', 'imgs'))
    write_cifar10(os.path.join(copy, 'data', 'cifar'), images=images)
    env = {'TORCH_HOME': write_random_inception_weights(os.path.join(root, 'torch')),
           'PATH': os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH'], **(env or {})}
    with open(os.path.join(copy, 'scripts', 'utils', 'prepare_data.sh')) as f:
        commands = [line for line in f.read().splitlines() if line.startswith('python ')]
    for command in commands: # ImageNet at 128 px -> C10; no worker processes for a few images.
        run(['bash', '-c', command.replace('I128', 'C10') + ' --num_workers 0'], cwd=copy, env=env)
    assert os.path.isfile(os.path.join(copy, 'data', 'C10.hdf5'))
    assert os.path.isfile(os.path.join(copy, 'C10_inception_moments.npz'))
    run(['bash', '-c', script_argv(copy, 'scripts/launch_cifar_ema.sh', train_extra)], cwd=copy, env=env)
    run(['bash', '-c', script_argv(copy, 'scripts/sample_cifar_ema.sh', [*train_extra, *sample_extra])], cwd=copy, env=env)
    return copy


def check_seed_outputs(copy, itr, num_npz):
    name = os.path.basename(experiment_dir(os.path.join(copy, 'weights')))
    assert name.startswith('BigGAN_C10_seed0_') and name.endswith('_ema')
    assert {'G.pth', 'G_ema.pth', 'state_dict.pth', 'G_best0.pth'} <= set(os.listdir(os.path.join(copy, 'weights', name)))
    with open(os.path.join(copy, 'logs', f'{name}_log.jsonl')) as f:
        metrics = [json.loads(line) for line in f]
    assert metrics and metrics[0]['itr'] == itr and np.isfinite(metrics[0]['IS_mean'])
    samples = os.path.join(copy, 'samples', name)
    assert {'random_samples.jpg', 'samples.npz', f'fixed_samples{itr}.jpg'} <= set(os.listdir(samples))
    assert {'samples0.jpg', 'interpZ0.jpg', 'interpY0.jpg', 'interpZY0.jpg'} <= set(os.listdir(os.path.join(samples, '-1')))
    assert np.load(os.path.join(samples, 'samples.npz'))['x'].shape == (num_npz, 3, 32, 32)


def test_seed_data_preparation_cifar_script_and_sample_script(tree, tmp_path):
    """The seed's flow on a 10-image C10 with random Inception weights: every script as written, with
    SEED_TINY appended (one iteration of 4 D steps at batch 2; a checkpoint, sample sheets and IS at it)."""
    copy = seed_flow(tree, str(tmp_path), 10, SEED_TINY, SAMPLE_OUTPUTS)
    check_seed_outputs(copy, itr=1, num_npz=8)


@pytest.mark.gpu
def test_seed_scripts_on_gpu(tree, tmp_path):
    """On CUDA: the CIFAR script with its own batch size (50), 4 D steps and --parallel (nn.DataParallel over
    the visible GPUs) for 3 iterations, with IS and FID; then sample.py on its weights."""
    if not torch.cuda.is_available():
        pytest.skip('needs CUDA')
    copy = seed_flow(tree, str(tmp_path), 600, [*SEED_GPU, '--device', 'cuda'],
                     [*SAMPLE_OUTPUTS, '--sample_inception_metrics', '--num_inception_images', '256'])
    check_seed_outputs(copy, itr=2, num_npz=8)
