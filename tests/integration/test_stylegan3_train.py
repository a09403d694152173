"""CPU smoke runs of the patched stylegan3 tree: train.py, gradnoise_train.py and the seed's commands.

Everything runs on a tiny synthetic dataset (32 generated 32x32 PNGs packed by upstream's
dataset_tool.py) with a tiny stylegan2 config, for a few minibatches (fractional --kimg), so the
whole file takes a few minutes on 2 cores.
"""

import json
import math
import os
import shlex
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = ('--cfg=stylegan2 --gpus=1 --batch=4 --gamma=1 --cbase=256 --cmax=32 --map-depth=2 --mbstd-group=2 '
        '--kimg=0.016 --tick=0.008 --snap=1 --grid=4x2 --metrics=none --workers=1 --device=cpu').split()

SMOKE_RUNS = {  # name -> extra train.py options
    'adam': [],
    'sgd-value': '--optimizer=sgd --glr=0.01 --dlr=0.01 --clip-mode=value --clip-gmax=0.01 --clip-dmax=0.01'.split(),
    'extrasgd-norm': '--optimizer=extrasgd --glr=0.01 --dlr=0.01 --clip-mode=norm --clip-gmax=1 --clip-dmax=1'.split(),
    'bmc-G': ['--bmc=G'],
}

# The seed README's StyleGAN commands (000_*.txt), verbatim apart from --data/--resume; the third
# one with its two missing line-continuation backslashes restored.
SEED_TRAIN_COMMANDS = {
    'best_pt1': r'''python train.py --outdir=./logs/ --data={data} --cfg=stylegan2 \
        --gpus=1 --batch=32 --gamma=0.1024 --map-depth=2 --cbase=16384 \
        --optimizer=sgd \
        --glr=0.35  \
        --dlr=0.35  \
        --clip-mode=value \
        --clip-gmax=0.0025 \
        --clip-dmax=0.0025 \
        --kimg=6000 \
        --desc="best_pt1"''',
    'best_pt2': r'''python train.py --outdir=./logs/ --data={data} --cfg=stylegan2 \
        --gpus=1 --batch=32 --gamma=0.1024 --map-depth=2 --cbase=16384 \
        --optimizer=sgd \
        --glr=0.035  \
        --dlr=0.035  \
        --clip-mode=value \
        --clip-gmax=0.0025 \
        --clip-dmax=0.0025 \
        --kimg=3600 \
        --resume={resume} \
        --desc="best_pt2"''',
    'best_pt3': r'''python train.py --outdir=./logs/ --data={data} --cfg=stylegan2 \
        --gpus=1 --batch=32 --gamma=0.1024 --map-depth=2 --cbase=16384 \
        --optimizer=sgd \
        --glr=0.0035  \
        --dlr=0.0035  \
        --clip-mode=value \
        --clip-gmax=0.0025 \
        --clip-dmax=0.0025 \
        --kimg=8000 \
        --resume={resume} \
        --desc="best_pt3"''',
}
SEED_GRADNOISE_COMMAND = r'''python gradnoise_train.py --outdir=./eval_runs --cfg=stylegan2 --data={data} \
        --gpus=1 --batch=32 --gamma=0.1024 --cbase=16384 --kimg=1000 --mode=both --metrics=none \
        --desc="eval" \
        --resume={resume}'''

LOAD_AND_GENERATE = r'''
import sys, torch, dnnlib, legacy
with dnnlib.util.open_url(sys.argv[1]) as f:
    data = legacy.load_network_pkl(f)
G = data['G_ema']
img = G(torch.randn([1, G.z_dim]), torch.zeros([1, G.c_dim]), noise_mode='const')
print('IMAGE', list(img.shape), bool(torch.isfinite(img).all()))
'''


def run(tree, args, cwd=None, timeout=900):
    """Run a python script of the tree; fail with its output unless it succeeds."""
    proc = subprocess.run([sys.executable, *args], cwd=cwd or tree, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{shlex.join(args)} failed ({proc.returncode}):\n{output[-6000:]}'
    return output


def seed_args(command, **paths):
    """The argv of a seed command after 'python', with paths substituted."""
    return shlex.split(command.format(**paths).replace('\\\n', ' '))[1:]


@pytest.fixture(scope='module')
def tree(patched_tree):
    return patched_tree('stylegan3')


@pytest.fixture(scope='module')
def dataset(tree, tmp_path_factory):
    """32 generated 32x32 RGB images (discs on plain backgrounds), packed by dataset_tool.py."""
    root = tmp_path_factory.mktemp('stylegan3-data')
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:32]
    for i in range(32):
        img = np.zeros([32, 32, 3]) + rng.uniform(0, 80, 3)
        cx, cy = rng.uniform(8, 24, 2)
        img[(x - cx) ** 2 + (y - cy) ** 2 < rng.uniform(4, 12) ** 2] = rng.uniform(0, 255, 3)
        (root / 'png').mkdir(exist_ok=True)
        PIL.Image.fromarray(img.astype(np.uint8)).save(root / 'png' / f'{i:03d}.png')
    run(tree, ['dataset_tool.py', f'--source={root / "png"}', f'--dest={root / "data.zip"}'])
    return root / 'data.zip'


@pytest.fixture(scope='module')
def smoke_runs(tree, dataset, tmp_path_factory):
    """One tiny CPU training run per entry of SMOKE_RUNS: name -> run directory."""
    runs = {}
    for name, extra in SMOKE_RUNS.items():
        outdir = tmp_path_factory.mktemp(f'stylegan3-{name}')
        run(tree, ['train.py', f'--outdir={outdir}', f'--data={dataset}', *TINY, *extra])
        [run_dir] = outdir.iterdir()
        runs[name] = run_dir
    return runs


def stats_means(run_dir):
    """Every stat of every tick in stats.jsonl: name -> list of means."""
    means = {}
    for line in (run_dir / 'stats.jsonl').read_text().splitlines():
        for name, value in json.loads(line).items():
            if isinstance(value, dict):
                means.setdefault(name, []).append(value['mean'])
    return means


def check_finite_losses_and_snapshot(tree, run_dir):
    """Every tick's losses are finite and the last snapshot loads and generates a finite image; returns the stats."""
    means = stats_means(run_dir)
    for key in ['Loss/G/loss', 'Loss/D/loss', 'Loss/G/reg', 'Loss/D/reg']:
        assert key in means and all(math.isfinite(v) for v in means[key]), (key, means.get(key))
    snapshots = sorted(run_dir.glob('network-snapshot-*.pkl'))
    assert snapshots, list(run_dir.iterdir())
    output = run(tree, ['-c', LOAD_AND_GENERATE, str(snapshots[-1])])
    assert 'IMAGE [1, 3, 32, 32] True' in output
    return means


@pytest.mark.parametrize('name', list(SMOKE_RUNS))
def test_smoke_run_trains_and_snapshots(name, tree, smoke_runs):
    run_dir = smoke_runs[name]
    means = check_finite_losses_and_snapshot(tree, run_dir)

    options = json.loads((run_dir / 'training_options.json').read_text())
    if name == 'adam':
        assert options['G_opt_kwargs'] == {'class_name': 'torch.optim.Adam', 'betas': [0.0, 0.99], 'eps': 1e-08, 'lr': 0.002}
        assert 'bmc_target' not in options['loss_kwargs']
    if name in ['sgd-value', 'extrasgd-norm']:
        optimizer, mode = name.split('-')
        for key, threshold in [('G_opt_kwargs', options['G_opt_kwargs']['clip_threshold']), ('D_opt_kwargs', options['D_opt_kwargs']['clip_threshold'])]:
            assert options[key]['class_name'] == 'ganpatch.optim.build_optimizer'
            assert (options[key]['name'], options[key]['clip_mode']) == (optimizer, mode)
            assert 'betas' not in options[key]
        for phase in ['Gmain', 'Greg', 'Dmain', 'Dreg']:
            assert all(math.isfinite(v) for v in means[f'Grad/{phase}_norm']), phase
    if name == 'bmc-G':
        assert options['loss_kwargs']['bmc_target'] == 'G'
        assert options['loss_kwargs']['bmc_kwargs'] == dict(rho1=0.1, rho2=0.01, b1_mean=0.0, b1_std=0.01, b2_mean=1.0, b2_std=0.05, seed=0)
        assert all(math.isfinite(v) and v >= 0 for v in means['Loss/G/bmc'])


def test_gradnoise_both_passes_on_snapshot(tree, dataset, smoke_runs, tmp_path):
    snapshot = sorted(smoke_runs['adam'].glob('network-snapshot-*.pkl'))[-1]
    output = run(tree, ['gradnoise_train.py', f'--outdir={tmp_path}', '--cfg=stylegan2', f'--data={dataset}', '--gpus=1',
        '--batch=4', '--batch-gpu=2', '--gamma=1', '--cbase=16384', '--kimg=0.012', '--mode=both', '--metrics=none',
        '--desc=eval', f'--resume={snapshot}', '--workers=1', '--device=cpu', '--pl-mean-batches=2'])
    assert '--cbase=16384 disagrees with the pickle (256)' in output
    [run_dir] = tmp_path.iterdir()
    assert run_dir.name == '00000-gradnoise-eval'
    phases = ['Gmain', 'Greg', 'Dmain', 'Dreg']
    expected = {'results_norm.png', 'results_lognorm.png', 'noise_stats.json'}
    expected |= {f'{phase}_{suffix}' for phase in phases for suffix in ['full_grad.pth', 'stoch_noise.npy']}
    assert expected <= {path.name for path in run_dir.iterdir()}
    stats = json.loads((run_dir / 'noise_stats.json').read_text())
    assert set(stats) == set(phases)
    for phase in phases:
        norms = np.load(run_dir / f'{phase}_stoch_noise.npy')
        assert norms.shape == (3,) and np.isfinite(norms).all() and (norms > 0).all(), (phase, norms)


NO_SIDE_EFFECTS = r'''
import sys, copy, torch, dnnlib, legacy
from gradnoise_train import FrozenStatisticsLoss
with dnnlib.util.open_url(sys.argv[1]) as f:
    data = legacy.load_network_pkl(f)
G, D = data['G'].train(), data['D'].train()
loss = FrozenStatisticsLoss(device=torch.device('cpu'), G=G, D=D, r1_gamma=1, style_mixing_prob=0.9, pl_weight=2, pl_no_weight_grad=True)
loss.pl_mean.fill_(0.5)
before = {name: t.clone() for name, t in [*G.named_buffers(), *D.named_buffers(), ('pl_mean', loss.pl_mean)]}
img = torch.rand([4, 3, 32, 32]) * 2 - 1
for phase, module in [('Gmain', G), ('Greg', G), ('Dmain', D), ('Dreg', D)]:
    module.requires_grad_(True)
    loss.accumulate_gradients(phase=phase, real_img=img, real_c=torch.zeros([4, 0]), gen_z=torch.randn([4, G.z_dim]), gen_c=torch.zeros([4, 0]), gain=1, cur_nimg=0)
    module.requires_grad_(False)
after = {name: t for name, t in [*G.named_buffers(), *D.named_buffers(), ('pl_mean', loss.pl_mean)]}
changed = [name for name in before if not torch.equal(before[name], after[name])]
print('CHANGED', changed, 'W_AVG_NONZERO', bool(before['mapping.w_avg'].abs().sum() > 0))
'''


def test_gradnoise_loss_leaves_running_statistics_alone(tree, smoke_runs):
    snapshot = sorted(smoke_runs['adam'].glob('network-snapshot-*.pkl'))[-1]
    output = run(tree, ['-c', NO_SIDE_EFFECTS, str(snapshot)])
    assert 'CHANGED [] W_AVG_NONZERO True' in output, output[-3000:]


def test_two_gloo_processes_with_clipping_stay_identical(tree, dataset, tmp_path):
    """2 CPU processes (gloo), clipped SGD: every snapshot runs upstream's check_ddp_consistency,
    which broadcasts rank 0's parameters and buffers (EMAs and averages excepted) and asserts that
    each rank's are bit-identical; a difference fails the run."""
    args = [a for a in TINY if not a.startswith(('--gpus', '--batch'))]
    output = run(tree, ['train.py', f'--outdir={tmp_path}', f'--data={dataset}', *args, '--gpus=2', '--batch=8',
        '--optimizer=sgd', '--glr=0.01', '--dlr=0.01', '--clip-mode=norm', '--clip-gmax=0.5', '--clip-dmax=0.5'])
    assert 'Distributing across 2 GPUs' in output
    [run_dir] = tmp_path.iterdir()
    assert len(list(run_dir.glob('network-snapshot-*.pkl'))) >= 1
    means = stats_means(run_dir)
    assert all(math.isfinite(v) for v in means['Grad/Dmain_norm'])


@pytest.mark.parametrize('name', list(SEED_TRAIN_COMMANDS))
def test_seed_train_command_dry_run(name, tree, dataset, smoke_runs, tmp_path):
    snapshot = sorted(smoke_runs['adam'].glob('network-snapshot-*.pkl'))[-1]
    args = seed_args(SEED_TRAIN_COMMANDS[name], data=dataset, resume=snapshot)
    output = run(tree, [str(tree / args[0]), *args[1:], '--dry-run'], cwd=tmp_path)
    assert 'Dry run; exiting.' in output
    options = json.loads(output.split('Training options:', 1)[1].split('\nOutput directory:', 1)[0])
    lr = {'best_pt1': 0.35, 'best_pt2': 0.035, 'best_pt3': 0.0035}[name]
    for key in ['G_opt_kwargs', 'D_opt_kwargs']:
        assert options[key] == dict(class_name='ganpatch.optim.build_optimizer', name='sgd', clip_mode='value', clip_threshold=0.0025, lr=lr)
    assert options['total_kimg'] == {'best_pt1': 6000, 'best_pt2': 3600, 'best_pt3': 8000}[name]
    assert (options['batch_size'], options['loss_kwargs']['r1_gamma'], options['G_kwargs']['channel_base']) == (32, 0.1024, 16384)
    assert options['G_kwargs']['mapping_kwargs']['num_layers'] == 2
    assert options.get('resume_pkl') == (None if name == 'best_pt1' else str(snapshot))
    assert not (tmp_path / 'logs').exists()


def test_seed_gradnoise_command_dry_run(tree, dataset, smoke_runs, tmp_path):
    snapshot = sorted(smoke_runs['adam'].glob('network-snapshot-*.pkl'))[-1]
    args = seed_args(SEED_GRADNOISE_COMMAND, data=dataset, resume=snapshot)
    output = run(tree, [str(tree / args[0]), *args[1:], '--dry-run'], cwd=tmp_path)
    assert 'Dry run; exiting.' in output
    assert 'Phases:              Gmain, Greg, Dmain, Dreg' in output
    assert 'Passes:              both, 31250 minibatches of 32 images each' in output
    assert not (tmp_path / 'eval_runs').exists()


BAD_OPTIONS = [  # (options, the start of the error message click must print)
    (['--clip-mode=norm'], '--clip-mode=norm requires --clip-gmax and --clip-dmax'),
    (['--clip-mode=value', '--clip-gmax=0', '--clip-dmax=1'], "Invalid value for '--clip-gmax'"),
    (['--clip-gmax=1', '--clip-dmax=1'], '--clip-gmax and --clip-dmax require --clip-mode=norm or --clip-mode=value'),
    (['--optimizer=rmsprop'], "Invalid value for '--optimizer'"),
    (['--bmc=both'], "Invalid value for '--bmc'"),
    (['--grid=4by2'], "Invalid value for '--grid'"),
]

RUN_BAD_OPTIONS = r'''
import json, sys, click, train
for args in json.loads(sys.argv[1]):
    try:
        train.main(args, standalone_mode=False)
        print('ACCEPTED', json.dumps(args))
    except click.ClickException as err:
        print('REJECTED', json.dumps(err.format_message()))
'''


def test_bad_options_fail_at_startup(tree, dataset, tmp_path):
    """All in one process (train.main with standalone_mode=False), to save interpreter start-ups."""
    argv = [[f'--outdir={tmp_path}', f'--data={dataset}', *TINY, *bad, '--dry-run'] for bad, _ in BAD_OPTIONS]
    output = run(tree, ['-c', RUN_BAD_OPTIONS, json.dumps(argv)])
    results = [line for line in output.splitlines() if line.startswith(('ACCEPTED', 'REJECTED'))]
    assert len(results) == len(BAD_OPTIONS), output[-3000:]
    for (bad, message), result in zip(BAD_OPTIONS, results):
        assert result.startswith('REJECTED') and message in json.loads(result.split(' ', 1)[1]), (bad, result)
    assert list(tmp_path.iterdir()) == []


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


def test_default_adam_run_matches_the_tree_before_the_method_patches(tree, dataset, smoke_runs, tmp_path):
    """The optimizer, SEG and BMC patches leave the default (Adam, no clipping, no BMC) run bit-identical."""
    subject = 'Optimizers and clipping'
    first = subprocess.run(['git', '-C', str(tree), 'log', '--format=%H', f'--grep=^{subject}', 'upstream..HEAD'],
                           capture_output=True, text=True, check=True).stdout.split()
    assert len(first) == 1, f'no single patch commit titled "{subject}..." in {tree}'
    before = tmp_path / 'before'
    before.mkdir()
    subprocess.run(f'git -C {tree} archive {first[0]}~1 | tar -x -C {before}', shell=True, check=True)
    run(before, ['train.py', f'--outdir={tmp_path / "runs"}', f'--data={dataset}', *TINY])
    [run_dir] = (tmp_path / 'runs').iterdir()
    name = sorted(smoke_runs['adam'].glob('network-snapshot-*.pkl'))[-1].name
    output = run(tree, ['-c', SNAPSHOTS_EQUAL, str(smoke_runs['adam'] / name), str(run_dir / name)])
    assert 'DIFFER [] COUNT' in output and 'COUNT 0' not in output, output[-3000:]


# On a CUDA GPU (skipped elsewhere): the custom ops, not the reference path, and a short real run.

CUSTOM_OPS_AGAINST_REFERENCE = r'''
import json
import numpy as np
import torch
from torch_utils.ops import bias_act, filtered_lrelu, upfirdn2d

torch.manual_seed(0)
x = torch.randn([4, 16, 32, 32], device='cuda')
b = torch.randn([16], device='cuda')
f = upfirdn2d.setup_filter([1, 3, 3, 1], device='cuda')
calls = {
    'bias_act': (bias_act, lambda impl: bias_act.bias_act(x, b, act='lrelu', impl=impl)),
    'upfirdn2d': (upfirdn2d, lambda impl: upfirdn2d.upsample2d(x, f, impl=impl)),
    'filtered_lrelu': (filtered_lrelu, lambda impl: filtered_lrelu.filtered_lrelu(
        x, fu=f, fd=f, b=b, up=2, down=2, padding=1, gain=np.sqrt(2), slope=0.2, impl=impl)),
}
results = {}
for name, (module, call) in calls.items():
    fast, ref = call('cuda'), call('ref')
    results[name] = dict(plugin=module._plugin is not None, max_abs_diff=float((fast - ref).abs().max()),
                         ref_max_abs=float(ref.abs().max()))
print('RESULT ' + json.dumps(results))
'''

CUDA_RUN = ('--cfg=stylegan2 --gpus=1 --batch=8 --gamma=1 --cbase=512 --cmax=32 --map-depth=2 --kimg=0.2 '
            '--tick=0.1 --snap=1 --grid=4x2 --metrics=none --workers=1 --device=cuda').split()


def needs_cuda():
    import torch
    if not torch.cuda.is_available():
        pytest.skip('needs a CUDA GPU')


@pytest.mark.gpu
def test_cuda_custom_ops_are_loaded_and_agree_with_the_reference(tree):
    needs_cuda()
    output = run(tree, ['-c', CUSTOM_OPS_AGAINST_REFERENCE])
    results = json.loads(output.split('RESULT ', 1)[1].splitlines()[0])
    for name, result in results.items():
        assert result['plugin'], f'{name}: the CUDA plugin was not loaded'
        assert result['max_abs_diff'] <= 1e-3 * max(1.0, result['ref_max_abs']), (name, result)


@pytest.mark.gpu
def test_cuda_sgd_value_clip_run_uses_the_custom_ops(tree, dataset, tmp_path):
    needs_cuda()
    options = '--optimizer=sgd --glr=0.01 --dlr=0.01 --clip-mode=value --clip-gmax=0.01 --clip-dmax=0.01'.split()
    output = run(tree, ['train.py', f'--outdir={tmp_path}', f'--data={dataset}', *CUDA_RUN, *options])
    for plugin in ['bias_act_plugin', 'upfirdn2d_plugin']:
        assert f'Setting up PyTorch plugin "{plugin}"... Done.' in output, output[-6000:]
    [run_dir] = tmp_path.iterdir()
    check_finite_losses_and_snapshot(tree, run_dir)
