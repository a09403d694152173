"""CPU smoke runs of the patched pytorch-gan-collections tree: wgangp.py, sngan.py (with its discretization-drift
options), dcgan.py, the commands of the authors' README (github.com/busycalibrating/clipped-stochastic-methods, the
`SEED_*` commands below), the drift paper's command of docs/pytorch-gan-collections.md (`SNGAN_PAPER_COMMAND`),
--evaluate in all three scripts, --helpshort, flagfile.txt and every bad flag value.

Everything trains on a tiny CIFAR-10 copy written by the documented command
`python -m ganpatch.fake_data cifar10 ./data --images 40` (read offline by torchvision's CIFAR-10
reader) with the cnn32 networks at batch 4 for one step. Importing torch and torchvision costs about
6 CPU seconds per process, so the jobs of a script, and every bad flag value (each one a command whose
argv absl parses and which must fail before any work), share one driver process per script (`DRIVER`:
absl parses each job's argv, then the script's main runs, as app.run does): wgangp.py, sngan.py, and
sngan.py as it was before the drift patch (for the bit-identity of the default loop). dcgan.py (training
and --evaluate), the drift paper's sngan.py command, wgangp.py --helpshort and two startup errors run
through the real command line. All processes start at once, each with one torch thread (on the shared 2-core machine, default
threading made every step about ten times slower).

Finite losses are checked by the patched scripts themselves: they stop with a message on a NaN or
infinite loss (`test_nan_loss_stops_the_run` shows that they do).
"""

import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch

from driver_jobs import read_jobs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = ('--arch=cnn32 --batch_size=4 --n_dis=1 --total_steps=1 --sample_size=4 --norecord --num_workers=0 '
        '--device=cpu').split()
SGD_NORM = '--opt=sgd --lr_G=0.01 --lr_D=0.01 --clip_mode=norm --clip_G=1 --clip_D=1'.split()

WGANGP_RUNS = {  # name -> extra wgangp.py options
    'adam': [],
    'sgd-norm': SGD_NORM,
    'extrasgd-value': '--opt=extrasgd --lr_G=0.01 --lr_D=0.01 --clip_mode=value --clip_G=0.01 --clip_D=0.01 '
                      '--n_dis=2'.split(),
    'extra_adam': ['--opt=extra_adam'],  # The authors' StyleGAN spelling of extraadam.
    'bmc-D': ['--bmc=D'],
    'optimistic_adam': '--opt=optimistic_adam --betas=0.5 --betas=0.99'.split(),
    'paper_acclip': ['--opt=paper_acclip'],
    'norm_sgd-inf-eps': '--opt=norm_sgd --lr_G=0.01 --lr_D=0.01 --clip_mode=norm --clip_G=1 --clip_D=1 '
                        '--clip_norm_type=inf --clip_norm_eps=1e-6'.split(),
}
# The drift paper's CIFAR-10 setting (SGD, lr D 1e-2 / G 5e-3, simultaneous, one D step per G step, zero-sum loss).
PAPER = '--opt=sgd --lr_D=0.01 --lr_G=0.005 --n_dis=1 --update=simultaneous --loss=zero-sum'.split()
SNGAN_RUNS = {  # name -> extra sngan.py options
    'sngan-sgd-norm': SGD_NORM,
    'default-n_dis2': ['--total_steps=2', '--n_dis=2', '--eval_step=2'],  # Upstream's loop, also run before the drift patch.
    'dd-none-sim': [*PAPER, '--dd=none'],
    'cancel-interaction-sim': [*PAPER, '--dd=cancel-interaction'],  # The paper's run.
    'strengthen-self-alt': '--opt=sgd --lr_D=0.01 --lr_G=0.005 --n_dis=2 --dd=cancel-interaction-strengthen-self '
                           '--dd_estimator=biased --dd_convention=common-clock'.split(),
    'co-sim-clipnorm': [*PAPER, '--dd=co', '--dd_lambda=0.1', '--clip_mode=norm', '--clip_G=1', '--clip_D=1'],
    'sga-alt-seg': '--opt=extra_sgd --lr_D=0.01 --lr_G=0.005 --dd=sga --dd_lambda=0.1 --dd_estimator=biased'.split(),
    'seg-sim-clipvalue': [*PAPER, '--opt=extrasgd', '--dd=cancel-interaction', '--clip_mode=value', '--clip_G=0.01',
                          '--clip_D=0.01'],
    'rk4-sga': [*PAPER, '--lr_G=0.01', '--integrator=rk4', '--dd=sga', '--dd_lambda=0.1', '--dd_estimator=biased'],
    'rk2-adam': '--opt=adam --n_dis=1 --update=simultaneous --integrator=rk2'.split(),
}
CLI_RUNS = {'dcgan-sgd-norm': 'dcgan.py'}  # with SGD_NORM
PREDRIFT = 'predrift/sngan.py'  # sngan.py before the drift patch, written into `work` by the `work` fixture.

# Runs jobs of one script (argv[1], a path) in one process, with one torch thread. For each job: parse its argv
# with absl, run the script's main, record the calls that show how minibatches, optimizer calls and spectral
# norm's power iterations pair up, the BMC terms of D's loss, the optimizers built and whether --evaluate left the
# networks equal to the checkpoint; print one JSON line per job.
DRIVER = r"""
import importlib, json, os, sys, time
import torch
from absl import flags
import ganpatch.bmc
import ganpatch.buffers
import ganpatch.optim
import ganpatch_flags

torch.set_num_threads(1)
path = sys.argv[1]
sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
script = importlib.import_module(os.path.splitext(os.path.basename(path))[0])

FLAGS = flags.FLAGS
events, nets, bmc_terms, optimizers = [], [], [], []

def trace(owner, name, label):
    if not hasattr(owner, name):
        return
    original = getattr(owner, name)
    def traced(*args, **kwargs):
        events.append(label)
        return original(*args, **kwargs)
    setattr(owner, name, traced)

for name in ['loss_D', 'loss_G', 'sample_D', 'drift_loss_D', 'sample_G']:
    trace(script, name, name)
discriminator_term = ganpatch.bmc.BrownianMotionController.discriminator_term
def recorded_discriminator_term(self, *args):
    term = discriminator_term(self, *args)
    bmc_terms.append(term.mean().item())
    return term
ganpatch.bmc.BrownianMotionController.discriminator_term = recorded_discriminator_term
trace(ganpatch.optim.Extragradient, 'extrapolate', 'extrapolate')
trace(ganpatch.optim.Extragradient, 'step', 'step')
trace(ganpatch.buffers, 'advance_power_iteration', 'power_iteration')
build_optimizers = ganpatch_flags.build_optimizers
def recorded_build_optimizers(*args):
    built = build_optimizers(*args)
    optimizers.extend(dict(type=type(opt).__name__, betas=opt.param_groups[0].get('betas'),
                           clip_norm_type=getattr(opt, 'clip_norm_type', None),
                           clip_norm_eps=getattr(opt, 'clip_norm_eps', None)) for opt in built)
    return built
ganpatch_flags.build_optimizers = recorded_build_optimizers
infiniteloop = script.infiniteloop
def traced_loop(dataloader):
    for images in infiniteloop(dataloader):
        events.append('real')
        yield images
script.infiniteloop = traced_loop
for models in [script.net_G_models, script.net_D_models]:
    for arch, cls in list(models.items()):
        models[arch] = lambda *args, cls=cls: nets.append(cls(*args)) or nets[-1]

for name, argv in json.loads(sys.argv[2]):
    for recorded in [events, nets, bmc_terms, optimizers]:
        recorded.clear()
    error, unchanged = None, None
    start = time.process_time()
    try:
        FLAGS.unparse_flags()
        FLAGS([path, *argv])
        script.main([path])
    except (flags.Error, SystemExit) as exc:
        error = ' '.join(str(exc).split())
    if error is None and FLAGS.evaluate:
        checkpoint = torch.load(FLAGS.pretrain, map_location='cpu', weights_only=True)
        unchanged = all(torch.equal(value, checkpoint[key][name].cpu())
                        for key, net in zip(['net_G', 'net_D'], nets) for name, value in net.state_dict().items())
    print('JOB ' + json.dumps({'name': name, 'error': error, 'events': events, 'unchanged': unchanged,
                               'bmc_terms': bmc_terms, 'optimizers': optimizers,
                               'cpu_s': time.process_time() - start}), flush=True)
"""

# The WGAN-GP commands of the authors' README (github.com/busycalibrating/clipped-stochastic-methods), verbatim: their
# common first lines, then per command --opt, --lr_D, --lr_G, the clipping (--clip_mode with one threshold for
# --clip_G and --clip_D, or none) and --desc (`seed_train_command` writes them out line by line, as the README does).
SEED_TRAIN_HEAD = r'''python wgangp.py --arch=res32 --batch_size=64 --dataset=cifar10 --seed=0  --alpha=10 \
        --fid_cache=./stats/cifar10.train.npz  --loss=was --num_images=50000 \
        --record --sample_step=500 --sample_size=64 --total_steps=100000 --z_dim=128 \
        --logdir=./logs/wgangp'''
SEED_TRAIN_OPTIONS = {  # desc -> (--opt, --lr_D, --lr_G, --clip_mode, its threshold)
    'reproduce': ('sgd', '0.02', '0.02', 'value', '0.01'),
    'sgda': ('sgd', '0.0004', '0.0002', None, None),
    'clipnorm-sgda': ('sgd', '0.2', '0.2', 'norm', '1'),
    'clipnorm-seg': ('extrasgd', '0.2', '0.2', 'norm', '1'),
    'clipval-sgda': ('sgd', '0.02', '0.02', 'value', '0.01'),
    'clipval-seg': ('extrasgd', '0.02', '0.02', 'value', '0.01'),
}


def seed_train_command(desc, opt, lr_D, lr_G, clip_mode, threshold):
    """The README's command `desc`, line for line (with its two spaces before the backslash after --clip_mode)."""
    lines = [SEED_TRAIN_HEAD, f'--opt={opt}', f'--lr_D={lr_D}', f'--lr_G={lr_G}']
    if clip_mode is not None:
        lines += [f'--clip_mode={clip_mode} ', f'--clip_G={threshold}', f'--clip_D={threshold}']
    return ' \\\n        '.join([*lines, f"--desc='{desc}'"]) + '\n'


SEED_TRAIN_COMMANDS = {desc: seed_train_command(desc, *options) for desc, options in SEED_TRAIN_OPTIONS.items()}
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

# The drift paper's configuration as docs/pytorch-gan-collections.md gives it, verbatim (CPU overrides appended).
SNGAN_PAPER_COMMAND = r"""python sngan.py --arch=cnn32 --dataset=cifar10 --batch_size=128 --z_dim=128 \
    --loss=zero-sum --opt=sgd --lr_D=0.01 --lr_G=0.005 --n_dis=1 --update=simultaneous \
    --dd=cancel-interaction --total_steps=300000 --seed=0 \
    --record --fid_cache=./stats/cifar10.train.npz --logdir=./logs/sngan_drift --desc=paper
"""
PAPER_CPU_OVERRIDES = '--total_steps=1 --norecord --num_workers=0 --batch_size=4 --device=cpu'.split()

# Ours (ganpatch.gradnoise), then the clipped-methods authors' names for the same measurement.
EVALUATE_OUTPUTS = ['results_norm.png', 'results_lognorm.png', 'D_stoch_noise.npy', 'G_stoch_noise.npy',
                    'D_full_grad.pth', 'G_full_grad.pth', 'noise_stats.json', 'flagfile.txt',
                    'full_grad_G.pth', 'full_grad_D.pth', 'stoch_noise_G.npy', 'stoch_noise_D.npy']


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


def write_dcgan_checkpoint(tree, path):
    """A checkpoint of dcgan.py's cnn32 networks at their initialization (what --evaluate reads)."""
    models = load_models(tree, 'dcgan')
    torch.manual_seed(0)
    torch.save({'net_G': models.Generator32(100).state_dict(), 'net_D': models.Discriminator32().state_dict()}, path)


def write_predrift_sngan(tree, path):
    """sngan.py as the tree's commit before the drift patch (the commit that introduced DriftLoop) left it."""
    commits = subprocess.run(['git', '-C', tree, 'log', '--format=%H', '-S', 'DriftLoop', '--', 'sngan.py'],
                             capture_output=True, text=True, check=True).stdout.split()
    assert len(commits) == 1, commits
    source = subprocess.run(['git', '-C', tree, 'show', f'{commits[0]}^:sngan.py'], capture_output=True, text=True,
                            check=True).stdout
    assert 'DriftLoop' not in source and "'zero-sum'" in source
    os.makedirs(os.path.dirname(path))
    with open(path, 'w') as f:
        f.write(source)


def run(args, cwd, env=None):
    """Runs `python args...` in `cwd`; fails the test on a non-zero exit status."""
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, f'{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}'
    return result


def command_argv(command, script='wgangp.py', **paths):
    """The arguments of a documented command after `python <script>`, with placeholders substituted."""
    for placeholder, path in paths.items():
        command = command.replace(placeholder, path)
    args = shlex.split(command.replace('\\\n', ' '))
    assert args[:2] == ['python', script]
    return args[2:]


def defined_flags(tree, filename):
    """Names of the absl flags that `filename` of the tree defines (flags.DEFINE_*('<name>', ...))."""
    with open(os.path.join(tree, filename)) as f:
        return set(re.findall(r"flags\.DEFINE_\w+\(\s*'(\w+)'", f.read()))


def flagfile_names(lines, known):
    """Flag names of `--name=value`, `--name` and `--noname` lines."""
    names = {line[2:].split('=')[0] for line in lines}
    return {name[2:] if name not in known and name.startswith('no') else name for name in names}


def job_argv(work, name, extra):
    return [*TINY, f'--data_dir={work}/data', f'--logdir={work}/runs/{name}', f'--desc={name}', *extra]


def cli_commands(tree, work):
    """name -> argv after `python` of the commands that run through the real command line."""
    wgangp = os.path.join(tree, 'wgangp.py')
    dcgan = os.path.join(tree, 'dcgan.py')
    commands = {name: [os.path.join(tree, script), *job_argv(work, name, SGD_NORM)] for name, script in CLI_RUNS.items()}
    commands['dcgan-evaluate'] = [dcgan, *TINY, f'--data_dir={work}/data', f'--logdir={work}/eval_runs/dcgan',
                                  '--evaluate', f'--pretrain={work}/dcgan.pt', '--total_steps=2', '--n_dis=2']
    commands['sngan-paper'] = [os.path.join(tree, 'sngan.py'), *command_argv(SNGAN_PAPER_COMMAND, 'sngan.py'),
                               *PAPER_CPU_OVERRIDES]
    commands['help'] = [wgangp, '--helpshort']
    commands['bad:total_steps'] = [wgangp, '--total_steps=0', f'--logdir={work}/cli-bad', f'--data_dir={work}/data']
    commands['bad:pretrain'] = [wgangp, '--generate', f'--pretrain={work}/random.pt',
                                f'--output={work}/cli-bad/generated']
    return commands


def check_rejected(cases, jobs, logdir):
    """Every job `bad:<argv>` of `cases` (argv -> message) stopped with its message, before creating `logdir`."""
    for argv, expected in cases.items():
        error = jobs[f'bad:{argv}']['error']
        assert error is not None and expected in error, (argv, error)
    assert not os.path.exists(logdir), 'a run directory was created before the error'


def only_run_dir(logdir):
    (run_dir,) = os.listdir(logdir)
    return os.path.join(logdir, run_dir)


def load_models(tree, script):
    """The module source/models/<script>.py of the patched tree (plain torch, no flags)."""
    spec = importlib.util.spec_from_file_location(f'pgc_models_{script}', os.path.join(tree, 'source', 'models', f'{script}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_checkpoint(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def tensors_of(checkpoint):
    """{'net_G.<name>': tensor, ..., 'optim_D.state.<i>.<key>': tensor} of every tensor in a checkpoint."""
    flat = {}
    def walk(prefix, value):
        if torch.is_tensor(value):
            flat[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f'{prefix}.{key}', item)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(f'{prefix}.{index}', item)
    for key, value in checkpoint.items():
        walk(key, value)
    return flat


@pytest.fixture(scope='module')
def tree(patched_tree):
    return str(patched_tree('pytorch-gan-collections'))


@pytest.fixture(scope='module')
def work(tree, tmp_path_factory):
    """A working directory holding ./data/cifar-10-batches-py (the documented commands' --data_dir, 40
    images), two files that are not checkpoints (`write_not_checkpoints`), a dcgan.py checkpoint and the
    pre-drift sngan.py."""
    root = str(tmp_path_factory.mktemp('pgc'))
    write_tiny_cifar10(tree, os.path.join(root, 'data'), images=40)
    write_not_checkpoints(root)
    write_dcgan_checkpoint(tree, os.path.join(root, 'dcgan.pt'))
    write_predrift_sngan(tree, os.path.join(root, PREDRIFT))
    return root


def bad_input_cases(work):
    """wgangp.py argv -> the message it must fail with, before training starts (absl's flag-parsing errors, or ours)."""
    common = f'--norecord --logdir={work}/bad --output={work}/bad/generated --num_workers=0 --data_dir={work}/data'
    checkpoint = f'{work}/runs/adam/00000-adam/model_00000001.pt'  # cnn32, written by an earlier job
    cases = {f'{common} {flag}': 'must be a positive integer'
             for flag in ['--total_steps=0', '--total_steps=-1', '--n_dis=0', '--eval_step=0', '--sample_step=0',
                          '--batch_size=0', '--sample_size=0', '--num_images=0', '--z_dim=0']}
    cases.update({
        f'{common} --clip_mode=norm --clip_G=1': '--clip_mode=norm needs --clip_D > 0 (got None)',
        f'{common} --clip_mode=value --clip_G=0 --clip_D=1': '--clip_mode=value needs --clip_G > 0 (got 0.0)',
        f'{common} --clip_G=1 --clip_D=1': '--clip_G/--clip_D need --clip_mode=norm or --clip_mode=value',
        f'{common} --opt=rmsprop': 'value should be one of <adam|sgd|extrasgd|extraadam|norm_sgd|optimistic_adam|acclip|'
                                   'paper_acclip|nomom_acclip|nomom_paper_acclip|extra_sgd|extra_adam>',
        f'{common} --opt=sgd --betas=0.5 --betas=0.9': '--betas is for adam, extraadam, optimistic_adam; --opt=sgd would',
        f'{common} --opt=nomom_acclip --betas=0.5 --betas=0.9': '--opt=nomom_acclip would ignore it',
        f'{common} --clip_norm_type=inf': '--clip_norm_type needs --clip_mode=norm (got --clip_mode=none',
        f'{common} --clip_mode=value --clip_G=0.01 --clip_D=0.01 --clip_norm_eps=1e-6':
            '--clip_norm_eps needs --clip_mode=norm (got --clip_mode=value',
        f'{common} --clip_mode=norm --clip_G=1 --clip_D=1 --clip_norm_type=0.5':
            'flag --clip_norm_type=0.5: must be a number >= 1, or inf',
        f'{common} --clip_mode=norm --clip_G=1 --clip_D=1 --clip_norm_eps=-1': 'flag --clip_norm_eps=-1.0: must be >= 0',
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


def bad_drift_cases(work):
    """sngan.py argv -> the message it must fail with at startup: every drift setting that cannot run as meant."""
    common = f'--norecord --logdir={work}/bad-drift --num_workers=0 --data_dir={work}/data --arch=cnn32 --batch_size=4'
    simultaneous = '--update=simultaneous --n_dis=1'
    checkpoint = f'{work}/runs/default-n_dis2/00000-default-n_dis2/model_00000002.pt'
    return {
        f'{common} --dd=cancel': 'flag --dd=cancel: value should be one of <none|cancel-interaction|'
                                 'cancel-interaction-strengthen-self|co|sga>',
        f'{common} --dd_lambda=0.1': "lambda is only used by the presets co, sga; 'none' takes none",
        f'{common} --dd=cancel-interaction --dd_lambda=0.1': "'cancel-interaction' takes none, got lambda = 0.1",
        f'{common} --dd=co': "--dd=co: The drift preset 'co' needs lambda",
        f'{common} --dd=sga --dd_lambda=0': "--dd=sga --dd_lambda=0.0: lambda of 'sga' must be a finite number > 0",
        f'{common} --dd=co --dd_lambda=inf': 'flag --dd_lambda=inf: must be a finite number',
        f'{common} --update=simultaneous': '--update=simultaneous moves both networks once per step: pass --n_dis=1 '
                                           '(got --n_dis=5)',
        f'{common} --integrator=rk4': 'they need simultaneous updates, got \'alternating\'',
        f'{common} {simultaneous} --integrator=rk4 --opt=extra_sgd':
            "Runge-Kutta updates cannot drive the extragradient optimizer 'extrasgd'",
        f'{common} {simultaneous} --integrator=rk2 --dd=cancel-interaction':
            "Runge-Kutta of order 2 has no first-order drift to cancel",
        f'{common} --integrator=rk3': 'flag --integrator=rk3: value should be one of <euler|rk2|rk4>',
        f'{common} --dd=cancel-interaction --lr_G=0': '(it scales with --lr_D=0.0002 and --lr_G=0.0): lr_gen must be a '
                                                      'finite number > 0',
        f'{common} --dd_estimator=biased': '--dd_estimator=biased needs a --dd regularizer',
        f'{common} --dd=sga --dd_lambda=1 --dd_convention=common-clock': '--dd_convention applies to the drift-scaled '
                                                                         'presets',
        f'{common} --evaluate --pretrain={checkpoint} --total_steps=2 --dd=cancel-interaction':
            '--evaluate measures the noise of the loss gradients at the checkpoint; --dd=cancel-interaction does not',
    }


@pytest.fixture(scope='module')
def processes(tree, work):
    """Every process of the suite, started at once (one torch thread each): {'wgangp': jobs, 'sngan': jobs,
    'predrift': jobs, 'cli': {name: CompletedProcess}}."""
    wgangp_runs = [[name, job_argv(work, name, extra)] for name, extra in WGANGP_RUNS.items()]
    wgangp_runs.append(['nan', [*TINY, f'--data_dir={work}/data', f'--logdir={work}/nan', '--total_steps=5',
                                '--eval_step=1', '--opt=sgd', '--lr_D=1e30', '--lr_G=1e30']])
    wgangp_runs.append(['evaluate-default-desc', [*TINY, f'--data_dir={work}/data', f'--logdir={work}/evaluate-default-desc',
                                                  '--evaluate', f'--pretrain={work}/runs/adam/00000-adam/model_00000001.pt',
                                                  '--total_steps=2']])
    wgangp_runs.append(['flagfile-replay', [f'--flagfile={work}/runs/adam/00000-adam/flagfile.txt', f'--logdir={work}/replay']])
    wgangp_runs += [[f'bad:{argv}', argv.split()] for argv in bad_input_cases(work)]
    wgangp_runs += [[f'seed:{desc}', [*command_argv(command), *SEED_CPU_OVERRIDES]]
                    for desc, command in SEED_TRAIN_COMMANDS.items()]
    # The authors' --evaluate command on the cnn32 checkpoint of their first command (BatchNorm in G).
    checkpoint = './logs/wgangp/00000-reproduce/model_00000001.pt'
    wgangp_runs.append(['seed:evaluate', [*command_argv(SEED_EVALUATE_COMMAND, **{SEED_PLACEHOLDER: checkpoint}),
                                          *SEED_CPU_OVERRIDES, '--total_steps=2', '--n_dis=2']])

    sngan_runs = [[name, job_argv(work, name, extra)] for name, extra in SNGAN_RUNS.items()]
    # Spectral norm in D, BatchNorm in G: both sets of buffers must stay as in the checkpoint.
    sngan_runs.append(['sngan-evaluate', [*TINY, f'--data_dir={work}/data', f'--logdir={work}/eval_runs/sngan', '--evaluate',
                                          f'--pretrain={work}/runs/default-n_dis2/00000-default-n_dis2/model_00000002.pt',
                                          '--total_steps=2', '--n_dis=2']])
    sngan_runs += [[f'bad:{argv}', argv.split()] for argv in bad_drift_cases(work)]
    predrift_runs = [['default-n_dis2', [*job_argv(work, 'default-n_dis2', SNGAN_RUNS['default-n_dis2']),
                                         f'--logdir={work}/predrift/runs']]]

    env = {**os.environ, 'PYTHONPATH': tree, 'OMP_NUM_THREADS': '1'}
    drivers = {'wgangp': (os.path.join(tree, 'wgangp.py'), wgangp_runs),
               'sngan': (os.path.join(tree, 'sngan.py'), sngan_runs),
               'predrift': (os.path.join(work, PREDRIFT), predrift_runs)}
    started = {name: subprocess.Popen([sys.executable, '-c', DRIVER, path, json.dumps(runs)], cwd=work, env=env,
                                      text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name, (path, runs) in drivers.items()}
    started.update({f'cli:{name}': subprocess.Popen([sys.executable, *argv], cwd=work, env=env, text=True,
                                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    for name, argv in cli_commands(tree, work).items()})
    results = {}
    for name, process in started.items():
        stdout, stderr = process.communicate()
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    outcome = {name: read_jobs(results[name], [job for job, _ in runs]) for name, (_, runs) in drivers.items()}
    outcome['cli'] = {name[len('cli:'):]: result for name, result in results.items() if name.startswith('cli:')}
    return outcome


@pytest.fixture(scope='module')
def jobs(processes):
    """name -> result of every wgangp.py job (DRIVER, in this order)."""
    return processes['wgangp']


@pytest.fixture(scope='module')
def sngan_jobs(processes):
    """name -> result of every sngan.py job (DRIVER, in this order)."""
    return processes['sngan']


@pytest.fixture(scope='module')
def cli(processes):
    """name -> CompletedProcess of every command of `cli_commands`."""
    return processes['cli']


def run_result(name, jobs, sngan_jobs, cli):
    """(script, error or None) of a training run of WGANGP_RUNS, SNGAN_RUNS or CLI_RUNS."""
    if name in CLI_RUNS:
        result = cli[name]
        return CLI_RUNS[name], None if result.returncode == 0 else f'{result.stdout[-3000:]}\n{result.stderr[-6000:]}'
    if name in SNGAN_RUNS:
        return 'sngan.py', sngan_jobs[name]['error']
    return 'wgangp.py', jobs[name]['error']


@pytest.mark.parametrize('name', [*WGANGP_RUNS, *SNGAN_RUNS, *CLI_RUNS])
def test_smoke_run(tree, work, jobs, sngan_jobs, cli, name):
    script, error = run_result(name, jobs, sngan_jobs, cli)
    assert error is None
    run_dir = only_run_dir(f'{work}/runs/{name}')
    assert os.path.basename(run_dir) == f'00000-{name}'
    # flagfile.txt: the script's own flags and ganpatch's, none of absl's (--nohelp, --nopdb, ...).
    expected = defined_flags(tree, script) | defined_flags(tree, 'ganpatch_flags.py')
    with open(os.path.join(run_dir, 'flagfile.txt')) as f:
        lines = f.read().splitlines()
    assert f'--desc={name}' in lines and '--device=cpu' in lines
    recorded = flagfile_names(lines, expected)
    assert recorded <= expected, recorded - expected
    assert expected - recorded <= {'pretrain', 'clip_G', 'clip_D', 'dd_lambda'}  # flags without a value are not written
    extra = {**WGANGP_RUNS, **SNGAN_RUNS}.get(name, SGD_NORM)
    steps = 2 if '--total_steps=2' in extra else 1
    assert os.listdir(os.path.join(run_dir, 'sample')) == ['1.png']  # --sample_step=500
    checkpoint = load_checkpoint(os.path.join(run_dir, f'model_{steps:08d}.pt'))
    tensors = [*checkpoint['net_G'].values(), *checkpoint['net_D'].values()]
    assert all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())
    # The linear lr decay drives every optimizer: after the last step the lr has reached 0.
    for network in 'GD':
        (group,) = checkpoint[f'optim_{network}']['param_groups']
        option = [o for o in extra if o.startswith(f'--lr_{network}=')]
        assert group['initial_lr'] == (float(option[-1].split('=')[1]) if option else 2e-4)
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


def test_opt_builds_every_optimizer_with_its_hyperparameters(jobs):
    """Aliases build their optimizer; --betas reaches the Adam family only (paper_acclip keeps the betas its name
    fixes, not wgangp.py's default --betas 0 0.9); the norm type and eps reach the optimizers."""
    def built(name):
        (opt_G, opt_D) = jobs[name]['optimizers']
        assert opt_G == opt_D
        return opt_G
    assert built('extra_adam')['type'] == 'ExtraAdam'
    assert built('extrasgd-value')['type'] == 'ExtraSGD'
    assert built('optimistic_adam') == dict(type='OptimisticAdam', betas=[0.5, 0.99], clip_norm_type=2.0, clip_norm_eps=0.0)
    assert built('paper_acclip')['type'] == 'ACClip' and built('paper_acclip')['betas'] == [0.9, 0.99]
    assert built('norm_sgd-inf-eps') == dict(type='NormalizedSGD', betas=None, clip_norm_type=float('inf'),
                                             clip_norm_eps=1e-6)
    assert built('adam') == dict(type='Adam', betas=[0.0, 0.9], clip_norm_type=None, clip_norm_eps=None)  # torch's


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


def check_evaluate_outputs(run_dir, counts):
    """Every output file of --evaluate in `run_dir`, with {network: number of pass-2 norms}; the authors' files hold
    the same measurement as ours in their formats (a bare flat float32 tensor, float64 norms)."""
    assert sorted(os.listdir(run_dir)) == sorted(EVALUATE_OUTPUTS)
    with open(os.path.join(run_dir, 'noise_stats.json')) as f:
        stats = json.load(f)
    assert sorted(stats) == ['D', 'G'] and {network: stats[network]['n'] for network in 'DG'} == counts
    for network, count in counts.items():
        norms = np.load(os.path.join(run_dir, f'{network}_stoch_noise.npy'))
        assert norms.shape == (count,) and np.isfinite(norms).all() and (norms > 0).all()
        theirs = np.load(os.path.join(run_dir, f'stoch_noise_{network}.npy'))
        assert theirs.dtype == np.float64 and np.array_equal(theirs, norms)
        ours = load_checkpoint(os.path.join(run_dir, f'{network}_full_grad.pth'))
        full_grad = load_checkpoint(os.path.join(run_dir, f'full_grad_{network}.pth'))
        assert type(full_grad) is torch.Tensor and full_grad.dtype == torch.float32
        assert full_grad.shape == (sum(math.prod(shape) for shape in ours['shapes']),)
        assert torch.equal(full_grad, ours['full_grad'])


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
    check_evaluate_outputs(run_dir, {'D': 4, 'G': 2})


def test_evaluate_in_sngan_and_dcgan(work, sngan_jobs, cli):
    """sngan.py: nothing changes, spectral norm's power-iteration vectors (weight_u, weight_v) included, and no power
    iteration is advanced; dcgan.py (BatchNorm in G and D) through the real command line."""
    job = sngan_jobs['sngan-evaluate']
    assert job['error'] is None and job['unchanged'] is True
    assert job['events'].count('loss_D') == 8 and job['events'].count('loss_G') == 4
    assert 'power_iteration' not in job['events']
    check_evaluate_outputs(only_run_dir(f'{work}/eval_runs/sngan'), {'D': 4, 'G': 2})
    result = cli['dcgan-evaluate']
    assert result.returncode == 0, result.stderr[-6000:]
    check_evaluate_outputs(only_run_dir(f'{work}/eval_runs/dcgan'), {'D': 4, 'G': 2})


def test_default_sngan_loop_is_bit_identical_to_the_tree_before_the_drift_patch(work, sngan_jobs, processes):
    """--dd=none with alternating updates (the defaults, here with Adam and n_dis=2 for 2 steps): every tensor of the
    checkpoint (networks, spectral-norm vectors, BatchNorm statistics, optimizer states) equals that of sngan.py
    without the drift patch, run with the same flags in another process."""
    assert sngan_jobs['default-n_dis2']['error'] is None and processes['predrift']['default-n_dis2']['error'] is None
    ours = tensors_of(load_checkpoint(f'{work}/runs/default-n_dis2/00000-default-n_dis2/model_00000002.pt'))
    before = tensors_of(load_checkpoint(f'{work}/predrift/runs/00000-default-n_dis2/model_00000002.pt'))
    assert ours.keys() == before.keys() and any('weight_u' in key for key in ours)
    assert [key for key in ours if not torch.equal(ours[key], before[key])] == []
    assert sngan_jobs['default-n_dis2']['events'] == processes['predrift']['default-n_dis2']['events']


def test_drift_regularizer_changes_the_step(work, sngan_jobs):
    """The paper's setting with and without --dd=cancel-interaction, same seed: the same minibatches (no extra draws:
    each player's loss gradient serves as the other's stop-gradient factor), one power iteration per D update, and
    other parameters of both networks after the step."""
    plain, regularized = sngan_jobs['dd-none-sim'], sngan_jobs['cancel-interaction-sim']
    assert plain['events'] == regularized['events'] == ['power_iteration', 'sample_D', 'real', 'drift_loss_D', 'sample_G']
    def networks(name):
        checkpoint = load_checkpoint(f'{work}/runs/{name}/00000-{name}/model_00000001.pt')
        return {f'{net}.{key}': value for net in ['net_G', 'net_D'] for key, value in checkpoint[net].items()}
    before, after = networks('dd-none-sim'), networks('cancel-interaction-sim')
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    for net in ['net_G', 'net_D']:
        assert any(key.startswith(net) and key.endswith('weight' if net == 'net_G' else 'weight_orig') for key in changed)
    assert all(torch.isfinite(value).all() for value in after.values() if value.is_floating_point())


def test_drift_loop_schedules(sngan_jobs):
    """Which minibatches each schedule draws, and where D's power iteration advances (once per D update)."""
    for name in SNGAN_RUNS:
        assert sngan_jobs[name]['error'] is None, (name, sngan_jobs[name]['error'])
    # Alternating, n_dis=2, cancel-interaction-strengthen-self, biased: the self term reuses the step minibatch,
    # the interaction term's stop-gradient factor comes from a fresh draw of the other player.
    d_step = ['power_iteration', 'sample_D', 'real', 'drift_loss_D', 'sample_G']
    g_step = ['sample_G', 'sample_D', 'real', 'drift_loss_D']
    assert sngan_jobs['strengthen-self-alt']['events'] == [*d_step, *d_step, *g_step]
    # Simultaneous SEG: both networks extrapolate from one point, then both update from the extrapolated point.
    both = ['sample_D', 'real', 'drift_loss_D', 'sample_G']
    assert sngan_jobs['seg-sim-clipvalue']['events'] == ['power_iteration', *both, 'extrapolate', 'extrapolate',
                                                         *both, 'step', 'step']
    # Alternating SEG: a complete SEG step of D, then one of G.
    alternating_seg = [e for e in sngan_jobs['sga-alt-seg']['events'] if e in ('extrapolate', 'step', 'power_iteration')]
    assert alternating_seg == ['power_iteration', 'extrapolate', 'step', 'extrapolate', 'step']
    # RK4 with sga (biased): four stages, each with both players' losses and one draw of each for the other_norm
    # terms; one power iteration for the step.
    rk4 = sngan_jobs['rk4-sga']['events']
    assert rk4.count('power_iteration') == 1 and rk4.count('sample_G') == 8 and rk4.count('drift_loss_D') == 8


def test_bad_drift_settings_are_rejected_at_startup(work, sngan_jobs):
    check_rejected(bad_drift_cases(work), sngan_jobs, f'{work}/bad-drift')


def test_paper_command_of_the_docs_runs(work, cli):
    """docs/pytorch-gan-collections.md's drift-paper command, verbatim but for PAPER_CPU_OVERRIDES."""
    result = cli['sngan-paper']
    assert result.returncode == 0, result.stderr[-6000:]
    run_dir = only_run_dir(f'{work}/logs/sngan_drift')
    assert os.path.basename(run_dir) == '00000-paper'
    with open(os.path.join(run_dir, 'flagfile.txt')) as f:
        lines = set(f.read().splitlines())
    assert {'--dd=cancel-interaction', '--update=simultaneous', '--loss=zero-sum', '--lr_D=0.01', '--lr_G=0.005',
            '--n_dis=1', '--opt=sgd'} <= lines
    assert os.path.isfile(os.path.join(run_dir, 'model_00000001.pt'))


def test_docs_give_the_paper_command(tree):
    """The command the test runs is the one the docs show (the docs are in the checkout, beside the tests)."""
    docs = os.path.join(os.path.dirname(__file__), '..', '..', 'docs', 'pytorch-gan-collections.md')
    with open(docs) as f:
        assert SNGAN_PAPER_COMMAND.strip() in f.read()


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
    check_rejected(bad_input_cases(work), jobs, f'{work}/bad')


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
        run([script, *command_argv(command), *SEED_GPU_OVERRIDES], cwd=tmp_path)
        assert (tmp_path / 'logs' / 'wgangp' / f'{index:05d}-{desc}' / 'model_00000002.pt').is_file()
    args = command_argv(SEED_EVALUATE_COMMAND, **{SEED_PLACEHOLDER: './logs/wgangp/00000-reproduce/model_00000002.pt'})
    run([script, *args, *SEED_GPU_OVERRIDES], cwd=tmp_path)
    assert sorted(os.listdir(tmp_path / 'eval_runs' / 'wgangp' / '00000-eval')) == sorted(EVALUATE_OUTPUTS)


@pytest.mark.gpu
def test_drift_presets_on_gpu(tree, tmp_path):
    """On CUDA: the drift paper's command of the docs (cnn32, batch 128) for two steps with each preset, and RK4."""
    if not torch.cuda.is_available():
        pytest.skip('needs CUDA')
    write_tiny_cifar10(tree, tmp_path / 'data', images=5 * 128)
    command = [os.path.join(tree, 'sngan.py'), *command_argv(SNGAN_PAPER_COMMAND, 'sngan.py'),
               '--total_steps=2', '--norecord', '--num_workers=0', '--device=cuda']
    variants = {'none': ['--dd=none'], 'cancel-interaction': [],
                'cancel-interaction-strengthen-self': ['--dd=cancel-interaction-strengthen-self'],
                'co': ['--dd=co', '--dd_lambda=0.1'], 'sga': ['--dd=sga', '--dd_lambda=0.1'],
                'rk4': ['--dd=none', '--integrator=rk4']}
    for index, (name, extra) in enumerate(variants.items()):
        run([*command, *extra, f'--desc={name}'], cwd=tmp_path)
        assert (tmp_path / 'logs' / 'sngan_drift' / f'{index:05d}-{name}' / 'model_00000001.pt').is_file()


def test_wgan_py_is_left_as_upstream(tree):
    diff = subprocess.run(['git', '-C', tree, 'diff', '--stat', 'upstream', 'HEAD', '--', 'wgan.py'],
                          capture_output=True, text=True, check=True)
    assert diff.stdout == ''
