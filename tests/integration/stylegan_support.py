"""Helpers shared by the integration tests of the two StyleGAN trees (stylegan3, stylegan2-ada).

Imported by tests/integration/test_stylegan*.py (pytest puts this folder on sys.path).
"""

import hashlib
import json
import math
import os
import shlex
import subprocess
import sys

import localhost_launch

METHOD_PATCH_SUBJECT = 'Optimizers and clipping' # The first method patch of both series.

LOAD_AND_GENERATE = r'''
import sys, torch, dnnlib, legacy
with dnnlib.util.open_url(sys.argv[1]) as f:
    data = legacy.load_network_pkl(f)
G = data['G_ema']
img = G(torch.randn([1, G.z_dim]), torch.zeros([1, G.c_dim]), noise_mode='const')
print('IMAGE', list(img.shape), bool(torch.isfinite(img).all()))
'''

SNAPSHOTS_EQUAL = r'''
import sys, torch, dnnlib, legacy
def load(path):
    with dnnlib.util.open_url(path) as f:
        return legacy.load_network_pkl(f)
a, b = load(sys.argv[1]), load(sys.argv[2])
differ = [f'{key}.{name}' for key in ['G', 'D', 'G_ema']
          for (name, x), (_, y) in zip(a[key].state_dict().items(), b[key].state_dict().items()) if not torch.equal(x, y)]
print('DIFFER', differ, 'COUNT', sum(len(a[key].state_dict()) for key in ['G', 'D', 'G_ema']))
'''

# Runs train.main (or any click command) on many argument lists in one process; prints one line each. With a
# fourth argument, a list of environments: each command runs with its own (the whole os.environ).
RUN_CLICK_COMMANDS = r'''
import json, os, sys, click, importlib
command = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])
envs = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
for index, args in enumerate(json.loads(sys.argv[3])):
    if envs is not None:
        os.environ.clear()
        os.environ.update(envs[index])
    try:
        command.main(args, standalone_mode=False)
        print('ACCEPTED', json.dumps(args))
    except click.ClickException as err:
        print('REJECTED', json.dumps(str(err.format_message()))) # str: stylegan2-ada's ctx.fail(err) passes the exception
'''


def run(tree, args, cwd=None, timeout=900, env=None):
    """Run a python script of the tree (importable from any `cwd`); fail with its output unless it succeeds."""
    path = os.pathsep.join([str(tree), *filter(None, [os.environ.get('PYTHONPATH')])])
    proc = subprocess.run([sys.executable, *args], cwd=cwd or tree, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, 'PYTHONPATH': path, **(env or {})})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{shlex.join(map(str, args))} failed ({proc.returncode}):\n{output[-6000:]}'
    return output


def seed_args(command, **paths):
    """The argv of a seed command after 'python', with paths substituted."""
    return shlex.split(command.format(**paths).replace('\\\n', ' '))[1:]


def stats_means(run_dir):
    """Every stat of every tick in stats.jsonl: name -> list of means."""
    means = {}
    for line in (run_dir / 'stats.jsonl').read_text().splitlines():
        for name, value in json.loads(line).items():
            if isinstance(value, dict):
                means.setdefault(name, []).append(value['mean'])
    return means


def last_snapshot(run_dir):
    snapshots = sorted(run_dir.glob('network-snapshot-*.pkl'))
    assert snapshots, list(run_dir.iterdir())
    return snapshots[-1]


def check_finite_losses_and_snapshot(tree, run_dir, resolution=32):
    """Every tick's losses are finite and the last snapshot loads and generates a finite image; returns the stats."""
    means = stats_means(run_dir)
    for key in ['Loss/G/loss', 'Loss/D/loss', 'Loss/G/reg', 'Loss/D/reg']:
        assert key in means and all(math.isfinite(v) for v in means[key]), (key, means.get(key))
    output = run(tree, ['-c', LOAD_AND_GENERATE, str(last_snapshot(run_dir))])
    assert f'IMAGE [1, 3, {resolution}, {resolution}] True' in output, output[-3000:]
    return means


def run_click_commands(tree, module, command, argv_list, tmp_path, envs=None):
    """[(accepted, message-or-args)] for each argument list, all in one process; `envs`: one dict of variables per
    argument list, set for that command on top of os.environ without launch variables (localhost_launch)."""
    extra = [] if envs is None else [json.dumps([localhost_launch.launch_free_environ(tree, **env) for env in envs])]
    output = run(tree, ['-c', RUN_CLICK_COMMANDS, module, command, json.dumps(argv_list), *extra], cwd=tmp_path)
    results = [line for line in output.splitlines() if line.startswith(('ACCEPTED', 'REJECTED'))]
    assert len(results) == len(argv_list), output[-3000:]
    return [(line.startswith('ACCEPTED'), json.loads(line.split(' ', 1)[1])) for line in results]


def compat_only_tree(tree, dest):
    """The tree before the method patches (upstream + compat series) with the ganpatch package, in `dest`."""
    found = subprocess.run(['git', '-C', str(tree), 'log', '--format=%H', f'--grep=^{METHOD_PATCH_SUBJECT}', 'upstream..HEAD'],
                           capture_output=True, text=True, check=True).stdout.split()
    assert len(found) == 1, f'no single patch commit titled "{METHOD_PATCH_SUBJECT}..." in {tree}'
    dest.mkdir()
    subprocess.run(f'git -C {tree} archive {found[0]}~1 | tar -x -C {dest}', shell=True, check=True)
    subprocess.run(f'git -C {tree} archive HEAD ganpatch | tar -x -C {dest}', shell=True, check=True)
    return dest


def cache_stand_in(cache_dir, url, write):
    """Put a stand-in for the file at `url` where dnnlib.util.open_url looks first ($DNNLIB_CACHE_DIR/downloads),
    so the tree's URL code path runs unchanged without a network; `write(path)` writes the stand-in."""
    downloads = cache_dir / 'downloads'
    downloads.mkdir(parents=True, exist_ok=True)
    path = downloads / f'{hashlib.md5(url.encode("utf-8")).hexdigest()}_{url.split("/")[-1]}'
    write(path)
    return path


# Runs train.py's main on many argument lists in one process, each as if alone: the once-per-process state
# (multiprocessing's start method, training_stats' counters and its init-once flag, dnnlib's stdout loggers)
# is reset in between. Prints 'RUN <i> OK' or the error of each.
RUN_TRAININGS = r'''
import json, multiprocessing, sys, traceback
import dnnlib, train
from torch_utils import training_stats
for index, args in enumerate(json.loads(sys.argv[1])):
    multiprocessing.set_start_method(None, force=True) # train.py sets 'spawn' once per process.
    training_stats._counters.clear(), training_stats._cumulative.clear()
    training_stats._sync_called = False
    try:
        train.main.main(args, standalone_mode=False)
        print(f'RUN {index} OK', flush=True)
    except BaseException: # pylint: disable=broad-except
        print(f'RUN {index} FAILED\n' + traceback.format_exc(), flush=True)
    while isinstance(sys.stdout, dnnlib.util.Logger):
        sys.stdout.close() # Restores the stream the logger wrapped.
'''


def run_trainings(tree, argv_list, cwd):
    """Run train.py on each argument list in one process; fail with the first failure's output."""
    output = run(tree, ['-c', RUN_TRAININGS, json.dumps(argv_list)], cwd=cwd)
    for index in range(len(argv_list)):
        assert f'RUN {index} OK' in output, f'train.py {shlex.join(argv_list[index])} failed:\n{output[-6000:]}'
    return output


# On a CUDA GPU: the custom ops named in argv against upstream's reference implementation.
CUSTOM_OPS_AGAINST_REFERENCE = r'''
import importlib, json, sys
import numpy as np
import torch

torch.manual_seed(0)
x = torch.randn([4, 16, 32, 32], device='cuda')
b = torch.randn([16], device='cuda')
ops = {name: importlib.import_module(f'torch_utils.ops.{name}') for name in sys.argv[1:]}
f = ops['upfirdn2d'].setup_filter([1, 3, 3, 1], device='cuda')
calls = {
    'bias_act': lambda impl: ops['bias_act'].bias_act(x, b, act='lrelu', impl=impl),
    'upfirdn2d': lambda impl: ops['upfirdn2d'].upsample2d(x, f, impl=impl),
    'filtered_lrelu': lambda impl: ops['filtered_lrelu'].filtered_lrelu(
        x, fu=f, fd=f, b=b, up=2, down=2, padding=1, gain=np.sqrt(2), slope=0.2, impl=impl),
}
results = {}
for name, module in ops.items():
    fast, ref = calls[name]('cuda'), calls[name]('ref')
    results[name] = dict(plugin=module._plugin is not None, max_abs_diff=float((fast - ref).abs().max()),
                         ref_max_abs=float(ref.abs().max()))
print('RESULT ' + json.dumps(results))
'''


def needs_cuda():
    import torch
    if not torch.cuda.is_available():
        import pytest
        pytest.skip('needs a CUDA GPU')


def check_custom_ops_against_reference(tree, ops):
    """Each CUDA plugin in `ops` is loaded and agrees with the reference implementation."""
    output = run(tree, ['-c', CUSTOM_OPS_AGAINST_REFERENCE, *ops])
    results = json.loads(output.split('RESULT ', 1)[1].splitlines()[0])
    assert sorted(results) == sorted(ops), results
    for name, result in results.items():
        assert result['plugin'], f'{name}: the CUDA plugin was not loaded'
        assert result['max_abs_diff'] <= 1e-3 * max(1.0, result['ref_max_abs']), (name, result)


def check_cuda_run_used_the_plugins(tree, output, run_dir, plugins):
    """A CUDA training run set up `plugins` without falling back, and produced finite losses and a snapshot."""
    for plugin in plugins:
        assert f'Setting up PyTorch plugin "{plugin}"... Done.' in output, output[-6000:]
    assert 'Failed to build CUDA kernels' not in output and 'not supported on PyTorch' not in output, output[-6000:]
    check_finite_losses_and_snapshot(tree, run_dir)


# Records the output_mask (input, weight, bias) of every aten.convolution_backward call in the first-order
# path-length and R1 passes, and whether their double backward reaches the conv weights; `{networks}` builds
# a generator G (mapping + synthesis, w_dim 32, 32x32) and a discriminator D of the tree.
CONVOLUTION_BACKWARD_MASKS = r'''
import warnings
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch_utils.ops import conv2d_gradfix

class OutputMasks(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.masks = set()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default:
            self.masks.add(tuple(args[-1]))
        return func(*args, **(kwargs or {{}}))

warnings.simplefilter('error') # No fallback warnings either.
torch.manual_seed(0)
conv2d_gradfix.enabled = True # As the training loop sets it.
{networks}
ws = G.mapping(torch.randn([2, 32]), None)
img = G.synthesis(ws)
with OutputMasks() as pl, conv2d_gradfix.no_weight_gradients():
    pl_grads = torch.autograd.grad([(img * torch.randn_like(img)).sum()], [ws], create_graph=True)[0]
real = torch.randn([4, 3, 32, 32], requires_grad=True)
with OutputMasks() as r1, conv2d_gradfix.no_weight_gradients():
    r1_grads = torch.autograd.grad([D(real, None).sum()], [real], create_graph=True)[0]
with OutputMasks() as second:
    (pl_grads.square().sum() + r1_grads.square().sum()).backward()
print('PL', sorted(pl.masks))
print('R1', sorted(r1.masks))
print('SECOND_WEIGHT', any(mask[1] for mask in second.masks))
conv_weight_grads = [p.grad is not None for name, p in D.named_parameters() if name.endswith('conv0.weight')]
print('D_WEIGHT_GRAD', len(conv_weight_grads) > 0 and all(conv_weight_grads))
'''


def check_regularizer_passes_compute_no_conv_weight_gradients(tree, networks):
    output = run(tree, ['-c', CONVOLUTION_BACKWARD_MASKS.format(networks=networks)])
    for line in ['PL [(True, False, False)]', 'R1 [(True, False, False)]', 'SECOND_WEIGHT True', 'D_WEIGHT_GRAD True']:
        assert line in output, output


# Bad values of the options ganpatch defines for both trees' train.py: (options, a part of the error message).
# Each must be a click error before any run directory exists.
SHARED_BAD_VALUES = [
    (['--clip-mode=norm'], '--clip-mode=norm requires --clip-gmax and --clip-dmax'),
    (['--clip-mode=value', '--clip-gmax=0', '--clip-dmax=1'], "Invalid value for '--clip-gmax'"),
    (['--clip-gmax=1', '--clip-dmax=1'], '--clip-gmax and --clip-dmax require --clip-mode=norm or --clip-mode=value'),
    (['--optimizer=rmsprop'], "Invalid value for '--optimizer'"),
    (['--bmc=both'], "Invalid value for '--bmc'"),
    (['--bmc-rho1=0.5'], '--bmc-rho1 requires --bmc=G or --bmc=D'),
    (['--grid=4by2'], "Invalid value for '--grid'"),
    (['--kimg=nan'], "Invalid value for '--kimg': 'nan' is not a finite number"),
    (['--kimg=0'], "Invalid value for '--kimg'"),
    (['--tick=inf'], "Invalid value for '--tick': 'inf' is not a finite number"),
    (['--gamma=nan'], "Invalid value for '--gamma'"),
    (['--glr=nan'], "Invalid value for '--glr'"),
    (['--dlr=inf'], "Invalid value for '--dlr'"),
    (['--p=nan', '--aug=fixed'], "Invalid value for '--p'"),
    (['--target=nan'], "Invalid value for '--target'"),
    (['--clip-mode=norm', '--clip-gmax=nan', '--clip-dmax=1'], "Invalid value for '--clip-gmax'"),
    (['--bmc=G', '--bmc-rho1=nan'], "Invalid value for '--bmc-rho1'"),
    (['--bmc=D', '--bmc-b2-std=inf'], "Invalid value for '--bmc-b2-std'"),
    (['--bmc=D', '--bmc-b1-mean=-inf'], "Invalid value for '--bmc-b1-mean'"),
    (['--resume=missing.pkl'], '--resume=missing.pkl: cannot load a network pickle: FileNotFoundError'),
    (['--resume=corrupt.pkl'], '--resume=corrupt.pkl: cannot load a network pickle'),
    (['--resume=corrupt.pkl', '--dry-run'], '--resume=corrupt.pkl: cannot load a network pickle'),
    (['--clip-norm-eps=1e-6'], '--clip-norm-eps requires --clip-mode=norm'),
    (['--clip-mode=value', '--clip-gmax=1', '--clip-dmax=1', '--clip-norm-type=inf'], '--clip-norm-type requires --clip-mode=norm'),
    (['--clip-mode=norm', '--clip-gmax=1', '--clip-dmax=1', '--clip-norm-type=0.5'], "Invalid value for '--clip-norm-type'"),
    (['--clip-mode=norm', '--clip-gmax=1', '--clip-dmax=1', '--clip-norm-eps=nan'], "Invalid value for '--clip-norm-eps'"),
    (['--gregint=-1'], "Invalid value for '--gregint'"),
    (['--dregint=two'], "Invalid value for '--dregint'"),
]


def check_bad_values_fail_at_startup(tree, base_args, bad_values, tmp_path):
    """All in one process (train.main with standalone_mode=False). The runs are real ones (no --dry-run unless
    listed), so an accepted value would train; none may create the output directory."""
    (tmp_path / 'corrupt.pkl').write_bytes(b'\x80\x04 not a pickle at all')
    outdir = tmp_path / 'runs'
    argv = [[f'--outdir={outdir}', *base_args, *bad] for bad, _ in bad_values]
    for (bad, message), (accepted, text) in zip(bad_values, run_click_commands(tree, 'train', 'main', argv, tmp_path)):
        assert not accepted and message in text, (bad, text)
    assert not outdir.exists()


# gradnoise_train.py's accumulation leaves every buffer of G and D (w_avg, magnitude EMAs) and the loss's
# pl_mean as they were, in all four phases; `{tree_class}` is the tree's class in its gradnoise_train.py.
GRADNOISE_LEAVES_STATISTICS = r'''
import sys, torch, dnnlib, legacy
from ganpatch.stylegan.gradnoise_driver import FrozenPathLengthMean
from gradnoise_train import {tree_class} as Tree
with dnnlib.util.open_url(sys.argv[1]) as f:
    data = legacy.load_network_pkl(f)
G, D = data['G'].train(), data['D'].train()
loss = FrozenPathLengthMean(Tree, Tree.make_loss(device=torch.device('cpu'), G=G, D=D, augment_pipe=None, r1_gamma=1, **Tree.loss_kwargs(G, D)))
loss.loss.pl_mean.fill_(0.5)
before = {{name: t.clone() for name, t in [*G.named_buffers(), *D.named_buffers(), ('pl_mean', loss.loss.pl_mean)]}}
for phase, module in [('Gmain', G), ('Greg', G), ('Dmain', D), ('Dreg', D)]:
    module.requires_grad_(True)
    loss.accumulate(phase=phase, real_img=torch.rand([4, 3, 32, 32]) * 2 - 1, real_c=torch.zeros([4, 0]),
                    gen_z=torch.randn([4, G.z_dim]), gen_c=torch.zeros([4, 0]), gain=1)
    module.requires_grad_(False)
after = dict([*G.named_buffers(), *D.named_buffers(), ('pl_mean', loss.loss.pl_mean)])
print('CHANGED', [name for name in before if not torch.equal(before[name], after[name])], 'W_AVG_NONZERO', bool(before['mapping.w_avg'].abs().sum() > 0))
'''


def check_gradnoise_leaves_statistics(tree, snapshot, tree_class):
    output = run(tree, ['-c', GRADNOISE_LEAVES_STATISTICS.format(tree_class=tree_class), str(snapshot)])
    assert 'CHANGED [] W_AVG_NONZERO True' in output, output[-3000:]


# A run with the clipped-methods authors' remaining options: an ACClip variant (whose betas lazy regularization
# rescales), norm clipping with their p and clip_grad_norm_ arithmetic, G without and D with lazy regularization
# (every 2 minibatches), and both diagnostics.
DIAGNOSTICS_RUN = ('--optimizer=acclip --glr=0.001 --dlr=0.001 --clip-mode=norm --clip-gmax=1 --clip-dmax=1 --clip-norm-type=inf '
                   '--clip-norm-eps=1e-6 --gregint=0 --dregint=2 --log-grad --log-update-norm').split()


def check_diagnostics_run(tree, run_dir):
    """DIAGNOSTICS_RUN: its options recorded, Gboth/Dmain/Dreg phases, an update norm per phase in stats.jsonl, and
    one TensorBoard histogram per network and tick with 150 bins over all of the network's gradient entries."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    means = check_finite_losses_and_snapshot(tree, run_dir)
    options = json.loads((run_dir / 'training_options.json').read_text())
    assert (options['G_reg_interval'], options['D_reg_interval'], options['log_grad'], options['log_update_norm']) == (None, 2, True, True)
    for key in ['G_opt_kwargs', 'D_opt_kwargs']:
        assert options[key] == dict(class_name='ganpatch.optim.build_optimizer', lr=0.001, name='acclip', clip_mode='norm', clip_threshold=1.0,
            clip_norm_type='inf', clip_norm_eps=1e-6, betas=[0.9, 0.99], eps=1e-5, weight_decay=1e-5, alpha=2.0, second_moment=True)
    for phase in ['Gboth', 'Dmain', 'Dreg']:
        assert all(math.isfinite(v) and v > 0 for v in means[f'Update/{phase}_norm']), phase
        assert all(math.isfinite(v) for v in means[f'Grad/{phase}_norm']), phase
    assert not any(name.startswith(('Update/Gmain', 'Update/Greg')) for name in means)
    [events] = run_dir.glob('events.out.tfevents.*')
    accumulator = EventAccumulator(str(events), size_guidance={'histograms': 0})
    accumulator.Reload()
    assert sorted(accumulator.Tags()['histograms']) == ['Histogram/D_grads', 'Histogram/G_grads']
    output = run(tree, ['-c', PARAMETER_COUNTS, str(last_snapshot(run_dir))])
    numels = json.loads(output.split('NUMEL ', 1)[1].splitlines()[0])
    for network in ['G', 'D']:
        histograms = accumulator.Histograms(f'Histogram/{network}_grads')
        assert len(histograms) == len(means['Progress/tick']) # One per tick.
        numel = numels[network]
        for event in histograms:
            assert event.histogram_value.num == numel and len(event.histogram_value.bucket) == 151 # 150 bins and the edge.
    return means


PARAMETER_COUNTS = r'''
import json, sys, dnnlib, legacy
with dnnlib.util.open_url(sys.argv[1]) as f:
    data = legacy.load_network_pkl(f)
print('NUMEL ' + json.dumps({name: sum(p.numel() for p in data[name].parameters()) for name in ['G', 'D']}))
'''


def check_every_optimizer_is_accepted(tree, base_args, tmp_path):
    """Every name of ganpatch.optim.OPTIMIZER_CHOICES (the authors' extra_sgd / extra_adam too), with and without
    clipping, in --dry-run (one process)."""
    import ganpatch.optim
    argv = [[f'--outdir={tmp_path / "runs"}', *base_args, f'--optimizer={name}', *clip, '--dry-run']
            for name in ganpatch.optim.OPTIMIZER_CHOICES for clip in [[], ['--clip-mode=value', '--clip-gmax=1', '--clip-dmax=1']]]
    results = run_click_commands(tree, 'train', 'main', argv, tmp_path)
    assert all(accepted for accepted, _ in results), results
    assert not (tmp_path / 'runs').exists()


def check_gradnoise_authors_files(run_dir):
    """gradnoise_train.py also wrote the clipped-methods authors' StyleGAN files for Gmain and Dmain (their names, a
    bare flat full gradient, float64 noise norms), the same numbers as ours, and measured with a fresh pipe at p=0."""
    import numpy as np
    import torch
    for phase, network in [('Gmain', 'generator'), ('Dmain', 'discriminator')]:
        ours = torch.load(run_dir / f'{phase}_full_grad.pth', weights_only=True)
        theirs = torch.load(run_dir / f'{network}_full_grad.pth', weights_only=True)
        assert isinstance(theirs, torch.Tensor) and theirs.ndim == 1 and torch.equal(theirs, ours['full_grad']), phase
        norms = np.load(run_dir / f'{network}_stoch_noise.npy')
        assert norms.dtype == np.float64 and np.array_equal(norms, np.load(run_dir / f'{phase}_stoch_noise.npy')), phase
    options = json.loads((run_dir / 'options.json').read_text())
    assert (options['aug'], options['augment_p']) == ('ada', 0.0)
