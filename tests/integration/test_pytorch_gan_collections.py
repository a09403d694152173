"""CPU smoke runs of the patched pytorch-gan-collections tree: wgangp.py, sngan.py, dcgan.py, the commands of the
authors' README (github.com/busycalibrating/clipped-stochastic-methods, the `SEED_*` commands below), --helpshort,
flagfile.txt and every bad flag value.

Everything trains on a tiny CIFAR-10 copy written by the documented command
`python -m ganpatch.fake_data cifar10 ./data --images 40` (read offline by torchvision's CIFAR-10
reader) with the cnn32 networks at batch 4 for one step. Importing torch and torchvision costs about
6 CPU seconds per process, so all wgangp.py runs, and every bad flag value (each one a command whose
argv absl parses and which must fail before any work), share one driver process (`DRIVER`: absl
parses each job's argv, then wgangp.main runs, as app.run does). sngan.py, dcgan.py, wgangp.py
--helpshort and two startup errors run through the real command line, concurrently.

Finite losses are checked by the patched scripts themselves: they stop with a message on a NaN or
infinite loss (`test_nan_loss_stops_the_run` shows that they do).
"""

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = ('--arch=cnn32 --batch_size=4 --n_dis=1 --total_steps=1 --sample_size=4 --norecord --num_workers=0 '
        '--device=cpu').split()
SGD_NORM = '--opt=sgd --lr_G=0.01 --lr_D=0.01 --clip_mode=norm --clip_G=1 --clip_D=1'.split()

WGANGP_RUNS = {  # name -> extra wgangp.py options
    'adam': [],
    'sgd-norm': SGD_NORM,
    'extrasgd-value': '--opt=extrasgd --lr_G=0.01 --lr_D=0.01 --clip_mode=value --clip_G=0.01 --clip_D=0.01 '
                      '--n_dis=2'.split(),
    'extraadam': ['--opt=extraadam'],
    'bmc-D': ['--bmc=D'],
}
CLI_RUNS = {'sngan-sgd-norm': 'sngan.py', 'dcgan-sgd-norm': 'dcgan.py'}  # with SGD_NORM

# Runs wgangp.py jobs in one process. For each job: parse its argv with absl, run wgangp.main,
# record the calls that show how minibatches and optimizer calls pair up, the BMC terms of D's loss,
# and whether --evaluate left the networks equal to the checkpoint; print one JSON line per job.
DRIVER = r'''
import json, sys, time
import torch
from absl import flags
import ganpatch.bmc
import ganpatch.optim
import wgangp

FLAGS = flags.FLAGS
events, nets, bmc_terms = [], [], []

def trace(owner, name, label):
    original = getattr(owner, name)
    def traced(*args, **kwargs):
        events.append(label)
        return original(*args, **kwargs)
    setattr(owner, name, traced)

trace(wgangp, 'loss_D', 'loss_D')
discriminator_term = ganpatch.bmc.BrownianMotionController.discriminator_term
def recorded_discriminator_term(self, *args):
    term = discriminator_term(self, *args)
    bmc_terms.append(term.mean().item())
    return term
ganpatch.bmc.BrownianMotionController.discriminator_term = recorded_discriminator_term
trace(wgangp, 'loss_G', 'loss_G')
trace(ganpatch.optim.Extragradient, 'extrapolate', 'extrapolate')
trace(ganpatch.optim.Extragradient, 'step', 'step')
infiniteloop = wgangp.infiniteloop
def traced_loop(dataloader):
    for images in infiniteloop(dataloader):
        events.append('real')
        yield images
wgangp.infiniteloop = traced_loop
for models in [wgangp.net_G_models, wgangp.net_D_models]:
    for arch, cls in list(models.items()):
        models[arch] = lambda *args, cls=cls: nets.append(cls(*args)) or nets[-1]

for name, argv in json.loads(sys.argv[1]):
    events.clear()
    nets.clear()
    bmc_terms.clear()
    error, unchanged = None, None
    start = time.process_time()
    try:
        FLAGS.unparse_flags()
        FLAGS(['wgangp.py', *argv])
        wgangp.main(['wgangp.py'])
    except (flags.Error, SystemExit) as exc:
        error = ' '.join(str(exc).split())
    if error is None and FLAGS.evaluate:
        checkpoint = torch.load(FLAGS.pretrain, map_location='cpu', weights_only=True)
        unchanged = all(torch.equal(value, checkpoint[key][name].cpu())
                        for key, net in zip(['net_G', 'net_D'], nets) for name, value in net.state_dict().items())
    print('JOB ' + json.dumps({'name': name, 'error': error, 'events': events, 'unchanged': unchanged,
                               'bmc_terms': bmc_terms, 'cpu_s': time.process_time() - start}), flush=True)
'''

# The WGAN-GP commands of the authors' README (github.com/busycalibrating/clipped-stochastic-methods), verbatim.
SEED_TRAIN_COMMANDS = {
    'reproduce': r'''python wgangp.py --arch=res32 --batch_size=64 --dataset=cifar10 --seed=0  --alpha=10 \
        --fid_cache=./stats/cifar10.train.npz  --loss=was --num_images=50000 \
        --record --sample_step=500 --sample_size=64 --total_steps=100000 --z_dim=128 \
        --logdir=./logs/wgangp \
        --opt=sgd \
        --lr_D=0.02 \
        --lr_G=0.02 \
        --clip_mode=value  \
        --clip_G=0.01 \
        --clip_D=0.01 \
        --desc='reproduce'
''',
    'sgda': r'''python wgangp.py --arch=res32 --batch_size=64 --dataset=cifar10 --seed=0  --alpha=10 \
        --fid_cache=./stats/cifar10.train.npz  --loss=was --num_images=50000 \
        --record --sample_step=500 --sample_size=64 --total_steps=100000 --z_dim=128 \
        --logdir=./logs/wgangp \
        --opt=sgd \
        --lr_D=0.0004 \
        --lr_G=0.0002 \
        --desc='sgda'
''',
    'clipnorm-sgda': r'''python wgangp.py --arch=res32 --batch_size=64 --dataset=cifar10 --seed=0  --alpha=10 \
        --fid_cache=./stats/cifar10.train.npz  --loss=was --num_images=50000 \
        --record --sample_step=500 --sample_size=64 --total_steps=100000 --z_dim=128 \
        --logdir=./logs/wgangp \
        --opt=sgd \
        --lr_D=0.2 \
        --lr_G=0.2 \
        --clip_mode=norm  \
        --clip_G=1 \
        --clip_D=1 \
        --desc='clipnorm-sgda'
''',
    'clipnorm-seg': r'''python wgangp.py --arch=res32 --batch_size=64 --dataset=cifar10 --seed=0  --alpha=10 \
        --fid_cache=./stats/cifar10.train.npz  --loss=was --num_images=50000 \
        --record --sample_step=500 --sample_size=64 --total_steps=100000 --z_dim=128 \
        --logdir=./logs/wgangp \
        --opt=extrasgd \
        --lr_D=0.2 \
        --lr_G=0.2 \
        --clip_mode=norm  \
        --clip_G=1 \
        --clip_D=1 \
        --desc='clipnorm-seg'
''',
    'clipval-sgda': r'''python wgangp.py --arch=res32 --batch_size=64 --dataset=cifar10 --seed=0  --alpha=10 \
        --fid_cache=./stats/cifar10.train.npz  --loss=was --num_images=50000 \
        --record --sample_step=500 --sample_size=64 --total_steps=100000 --z_dim=128 \
        --logdir=./logs/wgangp \
        --opt=sgd \
        --lr_D=0.02 \
        --lr_G=0.02 \
        --clip_mode=value  \
        --clip_G=0.01 \
        --clip_D=0.01 \
        --desc='clipval-sgda'
''',
    'clipval-seg': r'''python wgangp.py --arch=res32 --batch_size=64 --dataset=cifar10 --seed=0  --alpha=10 \
        --fid_cache=./stats/cifar10.train.npz  --loss=was --num_images=50000 \
        --record --sample_step=500 --sample_size=64 --total_steps=100000 --z_dim=128 \
        --logdir=./logs/wgangp \
        --opt=extrasgd \
        --lr_D=0.02 \
        --lr_G=0.02 \
        --clip_mode=value  \
        --clip_G=0.01 \
        --clip_D=0.01 \
        --desc='clipval-seg'
''',
}
SEED_EVALUATE_COMMAND = r'''python wgangp.py --arch=res32 --batch_size=64 --dataset=cifar10 \
        --fid_cache=./stats/cifar10.train.npz --loss=was --record --sample_step=500 \
        --sample_size=20 --total_steps=1000 --logdir=./eval_runs/wgangp \
        --seed=0 --evaluate \
        --pretrain=./logs/wgangp/<EXPERIMENT ID>/model_xxxxxxxx.pt \
        --desc='eval'
'''

SEED_PLACEHOLDER = './logs/wgangp/<EXPERIMENT ID>/model_xxxxxxxx.pt'

# Appended after the verbatim arguments (absl: the last value wins): one step, no IS/FID (it would
# download the Inception weights), and the tiny network with one D step per G step: res32 at the
# commands' batch 64 with n_dis=5 is far too slow for a CPU test; `test_seed_commands_on_gpu` runs
# the commands unchanged but for the step count (and a checkpoint at step 2), without FID.
SEED_CPU_OVERRIDES = '--total_steps=1 --norecord --num_workers=0 --arch=cnn32 --batch_size=4 --n_dis=1'.split()
SEED_GPU_OVERRIDES = '--total_steps=2 --eval_step=2 --norecord --num_workers=0 --device=cuda'.split()

EVALUATE_OUTPUTS = ['results_norm.png', 'results_lognorm.png', 'D_stoch_noise.npy', 'G_stoch_noise.npy',
                    'D_full_grad.pth', 'G_full_grad.pth', 'noise_stats.json', 'flagfile.txt']


def write_tiny_cifar10(tree, root, images):
    """The documented command `python -m ganpatch.fake_data cifar10 <root> --images N`, with the tree's ganpatch."""
    run(['-m', 'ganpatch.fake_data', 'cifar10', str(root), '--images', str(images)], cwd=tree)


def write_not_checkpoints(root):
    """`random.pt` (random bytes) and `truncated.pt` (the first half of a torch.save file): not checkpoints."""
    rng = np.random.default_rng(0)
    with open(os.path.join(root, 'random.pt'), 'wb') as f:
        f.write(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    whole = os.path.join(root, 'whole.pt')
    torch.save({'net_G': {'weight': torch.zeros(4096)}}, whole)
    with open(whole, 'rb') as f:
        content = f.read()
    with open(os.path.join(root, 'truncated.pt'), 'wb') as f:
        f.write(content[:len(content) // 2])


def run(args, cwd, env=None):
    """Runs `python args...` in `cwd`; fails the test on a non-zero exit status."""
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, f'{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}'
    return result


def seed_argv(command, **paths):
    """The arguments of one of the authors' commands after `python wgangp.py`, with placeholders substituted."""
    for placeholder, path in paths.items():
        command = command.replace(placeholder, path)
    args = shlex.split(command.replace('\\\n', ' '))
    assert args[:2] == ['python', 'wgangp.py']
    return args[2:]


def defined_flags(tree, filename):
    """Names of the absl flags that `filename` of the tree defines (flags.DEFINE_*('<name>', ...))."""
    with open(os.path.join(tree, filename)) as f:
        return set(re.findall(r"flags\.DEFINE_\w+\(\s*'(\w+)'", f.read()))


def flagfile_names(lines, known):
    """Flag names of `--name=value`, `--name` and `--noname` lines."""
    names = {line[2:].split('=')[0] for line in lines}
    return {name[2:] if name not in known and name.startswith('no') else name for name in names}


def cli_commands(tree, work):
    """name -> argv after `python` of the commands that run through the real command line, concurrently."""
    wgangp = os.path.join(tree, 'wgangp.py')
    commands = {name: [os.path.join(tree, script), *TINY, f'--data_dir={work}/data', f'--logdir={work}/runs/{name}',
                       f'--desc={name}', *SGD_NORM] for name, script in CLI_RUNS.items()}
    commands['help'] = [wgangp, '--helpshort']
    commands['bad:total_steps'] = [wgangp, '--total_steps=0', f'--logdir={work}/cli-bad', f'--data_dir={work}/data']
    commands['bad:pretrain'] = [wgangp, '--generate', f'--pretrain={work}/random.pt',
                                f'--output={work}/cli-bad/generated']
    return commands


def only_run_dir(logdir):
    (run_dir,) = os.listdir(logdir)
    return os.path.join(logdir, run_dir)


def load_models(tree, script):
    """The module source/models/<script>.py of the patched tree (plain torch, no flags)."""
    spec = importlib.util.spec_from_file_location(f'pgc_models_{script}', os.path.join(tree, 'source', 'models', f'{script}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tree(patched_tree):
    return str(patched_tree('pytorch-gan-collections'))


@pytest.fixture(scope='module')
def work(tree, tmp_path_factory):
    """A working directory holding ./data/cifar-10-batches-py (the authors' commands' --data_dir, 40
    images) and two files that are not checkpoints (`write_not_checkpoints`)."""
    root = str(tmp_path_factory.mktemp('pgc'))
    write_tiny_cifar10(tree, os.path.join(root, 'data'), images=40)
    write_not_checkpoints(root)
    return root


def bad_input_cases(work):
    """argv -> the message it must fail with, before training starts (absl's flag-parsing errors, or ours)."""
    common = f'--norecord --logdir={work}/bad --output={work}/bad/generated --num_workers=0 --data_dir={work}/data'
    checkpoint = f'{work}/runs/adam/00000-adam/model_00000001.pt'  # cnn32, written by an earlier job
    cases = {f'{common} {flag}': 'must be a positive integer'
             for flag in ['--total_steps=0', '--total_steps=-1', '--n_dis=0', '--eval_step=0', '--sample_step=0',
                          '--batch_size=0', '--sample_size=0', '--num_images=0', '--z_dim=0']}
    cases.update({
        f'{common} --clip_mode=norm --clip_G=1': '--clip_mode=norm needs --clip_D > 0 (got None)',
        f'{common} --clip_mode=value --clip_G=0 --clip_D=1': '--clip_mode=value needs --clip_G > 0 (got 0.0)',
        f'{common} --clip_G=1 --clip_D=1': '--clip_G/--clip_D need --clip_mode=norm or --clip_mode=value',
        f'{common} --opt=rmsprop': 'value should be one of <adam|sgd|extrasgd|extraadam>',
        f'{common} --bmc=both': 'value should be one of <none|G|D>',
        f'{common} --data_dir={work}/nodata --nodownload': f'CIFAR-10 not found: {work}/nodata/cifar-10-batches-py lacks',
        f'{common} --record --fid_cache={work}/missing.npz': '--record needs the FID statistics',
        f'{common} --evaluate --pretrain={work}/missing.pt': f'flag --pretrain={work}/missing.pt: not a file',
        f'{common} --evaluate --pretrain={work}/data/cifar-10-batches-py/batches.meta --total_steps=1 --n_dis=5':
            '--evaluate needs --total_steps >= 2',
        f'{common} --lr_G=-0.1': 'flag --lr_G=-0.1: must be >= 0',
        f'{common} --alpha=nan': 'flag --alpha=nan: must be a finite number',
        f'{common} --lr_D=inf --opt=sgd': 'flag --lr_D=inf: must be a finite number',
        f'{common} --betas=0.5': 'needs two values in [0, 1)',
        f'{common} --betas=1 --betas=0.9': 'needs two values in [0, 1)',
        f'{common} --seed=-1': 'flag --seed=-1: must be in [0, 4294967295]',
        f'{common} --bmc_rho1=0.5': '--bmc_rho1 needs --bmc=D or --bmc=G',
        f'{common} --bmc_per_sample': '--bmc_per_sample needs --bmc=D or --bmc=G',
        f'{common} --bmc=D --bmc_b2_std=inf': 'flag --bmc_b2_std=inf: must be a finite number',
        f'{common} --batch_size=64 --arch=cnn32': '--batch_size=64 is larger than the dataset',
        f'{common} --generate': '--generate needs a checkpoint: --pretrain=',
        f'{common} --pretrain={checkpoint}': '--pretrain is read only by --generate or --evaluate',
        f'{common} --generate --evaluate --pretrain={checkpoint}': '--generate and --evaluate exclude each other',
        f'{common} --generate --pretrain={work}/random.pt': f'--pretrain={work}/random.pt is not a checkpoint',
        f'{common} --evaluate --pretrain={work}/truncated.pt': f'--pretrain={work}/truncated.pt is not a checkpoint',
        f'{common} --evaluate --pretrain={work}/whole.pt': 'is not a checkpoint of this script: it holds no net_D',
        f'{common} --generate --pretrain={checkpoint}': 'its net_G does not fit the ResGenerator32 of --arch=res32',
    })
    if not torch.cuda.is_available():
        cases[f'{common} --device=cuda'] = 'CUDA is not available'
    return cases


@pytest.fixture(scope='module')
def cli(tree, work):
    """name -> CompletedProcess of every command of `cli_commands`, all started at once."""
    processes = {name: subprocess.Popen([sys.executable, *argv], cwd=work, text=True, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
                 for name, argv in cli_commands(tree, work).items()}
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate()
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results


@pytest.fixture(scope='module')
def jobs(tree, work):
    """name -> result of every wgangp.py job, all run by DRIVER in one process (in this order)."""
    runs = [[name, [*TINY, f'--data_dir={work}/data', f'--logdir={work}/runs/{name}', f'--desc={name}', *extra]]
            for name, extra in WGANGP_RUNS.items()]
    runs.append(['nan', [*TINY, f'--data_dir={work}/data', f'--logdir={work}/nan', '--total_steps=5',
                         '--eval_step=1', '--opt=sgd', '--lr_D=1e30', '--lr_G=1e30']])
    runs.append(['evaluate-default-desc', [*TINY, f'--data_dir={work}/data', f'--logdir={work}/evaluate-default-desc',
                                           '--evaluate', f'--pretrain={work}/runs/adam/00000-adam/model_00000001.pt',
                                           '--total_steps=2']])
    runs.append(['flagfile-replay', [f'--flagfile={work}/runs/adam/00000-adam/flagfile.txt', f'--logdir={work}/replay']])
    runs += [[f'bad:{argv}', argv.split()] for argv in bad_input_cases(work)]
    runs += [[f'seed:{desc}', [*seed_argv(command), *SEED_CPU_OVERRIDES]] for desc, command in SEED_TRAIN_COMMANDS.items()]
    # The authors' --evaluate command on the cnn32 checkpoint of their first command (BatchNorm in G).
    checkpoint = './logs/wgangp/00000-reproduce/model_00000001.pt'
    runs.append(['seed:evaluate', [*seed_argv(SEED_EVALUATE_COMMAND, **{SEED_PLACEHOLDER: checkpoint}),
                                   *SEED_CPU_OVERRIDES, '--total_steps=2', '--n_dis=2']])
    result = run(['-c', DRIVER, json.dumps(runs)], cwd=work, env={'PYTHONPATH': tree})
    results = {}
    for line in result.stdout.splitlines():
        if line.startswith('JOB '):
            job = json.loads(line[len('JOB '):])
            results[job['name']] = job
            print(f"{job['name']}: {job['cpu_s']:.1f} CPU s")
    assert list(results) == [name for name, _ in runs], result.stderr[-6000:]
    return results


@pytest.mark.parametrize('name', [*WGANGP_RUNS, *CLI_RUNS])
def test_smoke_run(tree, work, jobs, cli, name):
    if name in CLI_RUNS:
        result = cli[name]
        assert result.returncode == 0, f'{result.stdout[-3000:]}\n{result.stderr[-6000:]}'
    else:
        assert jobs[name]['error'] is None
    run_dir = only_run_dir(f'{work}/runs/{name}')
    assert os.path.basename(run_dir) == f'00000-{name}'
    # flagfile.txt: the script's own flags and ganpatch's, none of absl's (--nohelp, --nopdb, ...).
    script = CLI_RUNS.get(name, 'wgangp.py')
    expected = defined_flags(tree, script) | defined_flags(tree, 'ganpatch_flags.py')
    with open(os.path.join(run_dir, 'flagfile.txt')) as f:
        lines = f.read().splitlines()
    assert f'--desc={name}' in lines and '--device=cpu' in lines
    recorded = flagfile_names(lines, expected)
    assert recorded <= expected, recorded - expected
    assert expected - recorded <= {'pretrain', 'clip_G', 'clip_D'}  # flags without a value are not written
    assert os.listdir(os.path.join(run_dir, 'sample')) == ['1.png']
    checkpoint = torch.load(os.path.join(run_dir, 'model_00000001.pt'), weights_only=True)
    tensors = [*checkpoint['net_G'].values(), *checkpoint['net_D'].values()]
    assert all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())
    # The linear lr decay drives every optimizer: after 1 of 1 steps the lr has reached 0.
    extra = WGANGP_RUNS.get(name, SGD_NORM)
    for network in 'GD':
        (group,) = checkpoint[f'optim_{network}']['param_groups']
        option = next((o for o in extra if o.startswith(f'--lr_{network}=')), None)
        assert group['initial_lr'] == (float(option.split('=')[1]) if option else 2e-4)
        assert group['lr'] == 0
    # The checkpoint loads into the script's networks, which then generate finite images.
    script = script.removesuffix('.py')
    models = load_models(tree, script)
    z_dim = 100 if script == 'dcgan' else 128
    net_G, net_D = models.Generator32(z_dim), models.Discriminator32()
    net_G.load_state_dict(checkpoint['net_G'])
    net_D.load_state_dict(checkpoint['net_D'])
    with torch.no_grad():
        assert torch.isfinite(net_D(net_G.eval()(torch.randn(2, z_dim)))).all()


def test_seg_pairs_each_step_on_two_fresh_minibatches(jobs):
    """extrasgd, n_dis=2: each D step and the G step extrapolate and update, each on its own minibatch."""
    d_step = ['loss_D', 'real', 'extrapolate', 'loss_D', 'real', 'step']
    g_step = ['loss_G', 'extrapolate', 'loss_G', 'step']
    assert jobs['extrasgd-value']['events'] == 2 * d_step + g_step


def test_bmc_term_is_in_the_D_loss_only_with_bmc_D(jobs):
    # The batch mean of the term loss_D() adds: exact zeros by default, eq. 18's term with --bmc=D.
    assert jobs['adam']['bmc_terms'] == [0.0]
    (term,) = jobs['bmc-D']['bmc_terms']
    assert term != 0


def test_plain_optimizers_take_one_minibatch_per_step(jobs):
    assert jobs['sgd-norm']['events'] == ['loss_D', 'real', 'loss_G']


def test_evaluate_writes_every_output_and_updates_nothing(work, jobs):
    job = jobs['seed:evaluate']
    assert job['error'] is None
    assert job['unchanged'] is True  # parameters and BatchNorm running statistics
    assert 'step' not in job['events'] and 'extrapolate' not in job['events']
    # Per pass, --total_steps * --n_dis = 4 minibatches of D (its gradient with the penalty) and
    # --total_steps = 2 of G: one per D and G step of training, as the authors measured.
    assert job['events'].count('loss_D') == 8 and job['events'].count('loss_G') == 4
    run_dir = only_run_dir(f'{work}/eval_runs/wgangp')
    assert os.path.basename(run_dir) == '00000-eval'
    assert sorted(os.listdir(run_dir)) == sorted(EVALUATE_OUTPUTS)
    with open(os.path.join(run_dir, 'noise_stats.json')) as f:
        stats = json.load(f)
    assert sorted(stats) == ['D', 'G'] and stats['D']['n'] == 4 and stats['G']['n'] == 2
    for network, count in [('D', 4), ('G', 2)]:
        norms = np.load(os.path.join(run_dir, f'{network}_stoch_noise.npy'))
        assert norms.shape == (count,) and np.isfinite(norms).all() and (norms > 0).all()


def test_nan_loss_stops_the_run(work, jobs):
    error = jobs['nan']['error']
    assert error is not None and error.startswith('Stopping at step ')
    assert '=nan' in error or '=inf' in error
    stop_step = int(error.split()[3].rstrip(':'))
    assert stop_step < 5
    # --eval_step=1: a checkpoint for every completed step, none for the step that diverged.
    checkpoints = sorted(f for f in os.listdir(only_run_dir(f'{work}/nan')) if f.startswith('model_'))
    assert checkpoints == [f'model_{step:08d}.pt' for step in range(1, stop_step)]


def test_run_directories_without_desc_name_the_optimizer_or_evaluate(work, jobs):
    assert jobs['evaluate-default-desc']['error'] is None
    assert os.path.basename(only_run_dir(f'{work}/evaluate-default-desc')) == '00000-evaluate'
    assert os.path.basename(only_run_dir(f'{work}/nan')) == '00000-sgd'


def test_bad_input_is_reported_before_training(work, jobs):
    for argv, expected in bad_input_cases(work).items():
        error = jobs[f'bad:{argv}']['error']
        assert error is not None and expected in error, (argv, error)
    assert not os.path.exists(f'{work}/bad'), 'a run directory was created before the error'


def test_bad_input_fails_at_startup_on_the_command_line(work, cli):
    """The real command line: exit status 1 and one message, no traceback, nothing written."""
    for name, expected in [('bad:total_steps', 'FATAL Flags parsing error: flag --total_steps=0: must be a positive '
                                               'integer'),
                           ('bad:pretrain', f'--pretrain={work}/random.pt is not a checkpoint')]:
        result = cli[name]
        assert result.returncode == 1 and expected in result.stderr, result.stderr[-3000:]
        assert 'Traceback' not in result.stderr
    assert not os.path.exists(f'{work}/cli-bad')


def test_helpshort_lists_ganpatch_flags(tree, cli):
    """wgangp.py --helpshort lists its own flags and ganpatch's (its key flags), none of absl's. For sngan.py and
    dcgan.py, test_smoke_run checks the same set in flagfile.txt, which records the key flags too."""
    result = cli['help']
    listed = set(re.findall(r'^  --(?:\[no\])?(\w+)', result.stdout + result.stderr, re.MULTILINE))
    assert listed == defined_flags(tree, 'wgangp.py') | defined_flags(tree, 'ganpatch_flags.py')
    assert {'opt', 'clip_mode', 'clip_G', 'clip_D', 'device', 'data_dir', 'desc', 'evaluate', 'bmc', 'bmc_rho1'} <= listed


def test_flagfile_repeats_the_run(work, jobs):
    """--flagfile=<run>/flagfile.txt of a --bmc=none run (it records the BMC defaults) trains the same run again."""
    assert jobs['flagfile-replay']['error'] is None
    with open(os.path.join(work, 'runs', 'adam', '00000-adam', 'flagfile.txt')) as f:
        original = f.read().splitlines()
    with open(os.path.join(only_run_dir(f'{work}/replay'), 'flagfile.txt')) as f:
        repeated = f.read().splitlines()
    assert [line for line in original if not line.startswith('--logdir=')] == \
        [line for line in repeated if not line.startswith('--logdir=')]


def test_seed_commands_are_accepted(work, jobs):
    """The six training commands and the --evaluate command of the authors' README, verbatim but for
    SEED_CPU_OVERRIDES, run by DRIVER in `work` (so ./data and ./logs/wgangp are its folders)."""
    for index, desc in enumerate(SEED_TRAIN_COMMANDS):
        assert jobs[f'seed:{desc}']['error'] is None
        run_dir = os.path.join(work, 'logs', 'wgangp', f'{index:05d}-{desc}')
        assert os.path.isfile(os.path.join(run_dir, 'model_00000001.pt'))
    assert jobs['seed:evaluate']['error'] is None  # its outputs: test_evaluate_writes_every_output_...


@pytest.mark.gpu
def test_seed_commands_on_gpu(tree, tmp_path):
    """On CUDA: the authors' commands with their own network, batch size and n_dis, for two steps."""
    if not torch.cuda.is_available():
        pytest.skip('needs CUDA')
    write_tiny_cifar10(tree, tmp_path / 'data', images=5 * 64)
    script = os.path.join(tree, 'wgangp.py')
    for index, (desc, command) in enumerate(SEED_TRAIN_COMMANDS.items()):
        run([script, *seed_argv(command), *SEED_GPU_OVERRIDES], cwd=tmp_path)
        assert (tmp_path / 'logs' / 'wgangp' / f'{index:05d}-{desc}' / 'model_00000002.pt').is_file()
    args = seed_argv(SEED_EVALUATE_COMMAND, **{SEED_PLACEHOLDER: './logs/wgangp/00000-reproduce/model_00000002.pt'})
    run([script, *args, *SEED_GPU_OVERRIDES], cwd=tmp_path)
    assert sorted(os.listdir(tmp_path / 'eval_runs' / 'wgangp' / '00000-eval')) == sorted(EVALUATE_OUTPUTS)


def test_wgan_py_is_left_as_upstream(tree):
    diff = subprocess.run(['git', '-C', tree, 'diff', '--stat', 'upstream', 'HEAD', '--', 'wgan.py'],
                          capture_output=True, text=True, check=True)
    assert diff.stdout == ''
