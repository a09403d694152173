"""CPU runs of the patched stylegan2-ada tree: train.py per optimizer / clip / BMC variant, 2 gloo processes,
bit-identity with the compat-only tree, network pickles both ways, gradnoise_train.py, and the GAN-BMC
README's commands with local files instead of URLs.

Tiny configs throughout (32x32 generated images, cbase 256, cmax 32, map-depth 2, a few minibatches),
the training runs of one fixture in one process, so the file takes a few minutes on 2 cores.
"""

import json
import math
import zipfile

import numpy as np
import pytest

from stylegan_support import (DIAGNOSTICS_RUN, LOAD_AND_GENERATE, SHARED_BAD_VALUES, SNAPSHOTS_EQUAL, cache_stand_in,
                              check_bad_values_fail_at_startup, check_cuda_run_used_the_plugins, check_custom_ops_against_reference,
                              check_diagnostics_run, check_every_optimizer_is_accepted, check_finite_losses_and_snapshot,
                              check_gradnoise_authors_files, check_gradnoise_leaves_statistics, compat_only_tree, last_snapshot, needs_cuda, run, run_click_commands,
                              run_trainings, seed_args, stats_means)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = ('--gpus=1 --batch=4 --cbase=256 --cmax=32 --map-depth=2 --kimg=0.016 --tick=0.008 --snap=1 --grid=4x2 '
        '--metrics=none --workers=1 --device=cpu').split()

SMOKE_RUNS = {  # name -> extra train.py options; 'adam' trains class-conditionally on the CIFAR-10 zip
    'adam': ['--cond=1'],
    'sgd-value': '--optimizer=sgd --glr=0.01 --dlr=0.01 --clip-mode=value --clip-gmax=0.01 --clip-dmax=0.01'.split(),
    'extrasgd-norm': '--optimizer=extrasgd --glr=0.01 --dlr=0.01 --clip-mode=norm --clip-gmax=1 --clip-dmax=1'.split(),
    'bmc-G': ['--bmc=G'],
    'diagnostics': DIAGNOSTICS_RUN,
}

# The GAN-BMC README's commands (TianjiaoLuo/GAN-BMC), verbatim apart from local files in place of URLs and ~.
SEED_TRAIN_DRY_RUNS = [
    'python train.py --outdir={outdir} --data={data} --gpus=1 --dry-run',
    'python train.py --outdir={outdir} --data={cifar} --gpus=2 --cfg=cifar --cond=1 --dry-run',
    'python train.py --outdir={outdir} --data={data} --gpus=8 --cfg=stylegan2 --mirror=1 --aug=noaug --dry-run',
]
SEED_TOOL_COMMANDS = [  # run in this order: projector.py writes the projected_w.npz that generate.py reads
    'python generate.py --outdir=out --trunc=1 --seeds=85,265,297,849 --network={network}',
    'python generate.py --outdir=out --trunc=0.7 --seeds=600-605 --network={network}',
    'python generate.py --outdir=out --seeds=0-35 --class=1 --network={conditional}',
    'python style_mixing.py --outdir=out --rows=85,100,75,458,1500 --cols=55,821,1789,293 --network={network}',
    'python legacy.py --source={network} --dest=stylegan2-cat-config-f.pkl',
    'python projector.py --outdir=out --target={target} --network={network}',
    'python generate.py --outdir=out --projected_w=out/projected_w.npz --network={network}',
]


@pytest.fixture(scope='module')
def tree(patched_tree):
    return patched_tree('stylegan2-ada')


@pytest.fixture(scope='module')
def datasets(tree, tmp_path_factory):
    """dataset_tool.py from an image folder (32 generated 32x32 PNGs) and from a CIFAR-10 python tarball."""
    root = tmp_path_factory.mktemp('stylegan2-ada-data')
    run(tree, ['-m', 'ganpatch.fake_data', 'images', str(root / 'png'), '--images', '32', '--resolution', '32'])
    run(tree, ['-m', 'ganpatch.fake_data', 'cifar10', str(root), '--images', '40', '--tarball'])
    run(tree, ['dataset_tool.py', f'--source={root / "png"}', f'--dest={root / "data.zip"}'])
    run(tree, ['dataset_tool.py', f'--source={root / "cifar-10-python.tar.gz"}', f'--dest={root / "cifar10.zip"}'])
    return dict(data=root / 'data.zip', cifar=root / 'cifar10.zip', png=root / 'png')


def test_dataset_tool_packs_the_image_folder_and_the_cifar_tarball(datasets):
    with zipfile.ZipFile(datasets['data']) as z:
        assert sum(name.endswith('.png') for name in z.namelist()) == 32
    with zipfile.ZipFile(datasets['cifar']) as z:
        labels = json.loads(z.read('dataset.json'))['labels']
        assert sum(name.endswith('.png') for name in z.namelist()) == len(labels) >= 40
        assert {label for _, label in labels} <= set(range(10)) and len({label for _, label in labels}) == 10


@pytest.fixture(scope='module')
def compat_run(tree, datasets, tmp_path_factory):
    """The default (adam) run of the tree before the method patches, and that tree."""
    root = tmp_path_factory.mktemp('stylegan2-ada-compat')
    before = compat_only_tree(tree, root / 'tree')
    run(before, ['train.py', f'--outdir={root / "runs"}', f'--data={datasets["cifar"]}', *TINY, *SMOKE_RUNS['adam']])
    [run_dir] = (root / 'runs').iterdir()
    return before, run_dir


@pytest.fixture(scope='module')
def smoke_runs(tree, datasets, compat_run, tmp_path_factory):
    """One tiny CPU run per SMOKE_RUNS entry, plus 'resumed': ours resuming from the compat-only tree's snapshot."""
    root = tmp_path_factory.mktemp('stylegan2-ada-runs')
    argv = [[f'--outdir={root / name}', f'--data={datasets["cifar" if name == "adam" else "data"]}', *TINY, *extra]
            for name, extra in SMOKE_RUNS.items()]
    argv.append([f'--outdir={root / "resumed"}', f'--data={datasets["cifar"]}', *TINY, '--cond=1', f'--resume={last_snapshot(compat_run[1])}'])
    run_trainings(tree, argv, cwd=root)
    return {name: next((root / name).iterdir()) for name in [*SMOKE_RUNS, 'resumed']}


@pytest.mark.parametrize('name', list(SMOKE_RUNS))
def test_smoke_run_trains_and_snapshots(name, tree, smoke_runs):
    run_dir = smoke_runs[name]
    means = check_finite_losses_and_snapshot(tree, run_dir)
    options = json.loads((run_dir / 'training_options.json').read_text())
    assert options['device_type'] == 'cpu' and options['kimg_per_tick'] == 0.008 and options['image_grid_size'] == [4, 2]
    assert options['G_kwargs']['synthesis_kwargs']['channel_base'] == 256 and options['G_kwargs']['mapping_kwargs']['num_layers'] == 2
    if name == 'adam':
        assert options['G_opt_kwargs'] == {'class_name': 'torch.optim.Adam', 'lr': 0.0025, 'betas': [0, 0.99], 'eps': 1e-08}
        assert 'bmc_target' not in options['loss_kwargs']
    if name in ['sgd-value', 'extrasgd-norm']:
        optimizer, mode = name.split('-')
        for key in ['G_opt_kwargs', 'D_opt_kwargs']:
            assert options[key] == dict(class_name='ganpatch.optim.build_optimizer', lr=0.01, name=optimizer, clip_mode=mode,
                                        clip_threshold=options[key]['clip_threshold'], momentum=0.0, weight_decay=0.0,
                                        **(dict(clip_norm_type=2.0, clip_norm_eps=0.0) if mode == 'norm' else {}))
        for phase in ['Gmain', 'Greg', 'Dmain', 'Dreg']:
            assert all(math.isfinite(v) for v in means[f'Grad/{phase}_norm']), phase
    if name == 'bmc-G':
        assert options['loss_kwargs']['bmc_target'] == 'G'
        assert options['loss_kwargs']['bmc_kwargs'] == dict(rho1=0.1, rho2=0.01, b1_mean=0.0, b1_std=0.01, b2_mean=1.0, b2_std=0.05, seed=0)
        assert all(math.isfinite(v) and v >= 0 for v in means['Loss/G/bmc'])
    if name == 'diagnostics':
        check_diagnostics_run(tree, run_dir)
        assert '-gregint0-dregint2-' in run_dir.name # Overrides of the config, as upstream names them.


def test_every_optimizer_name_is_accepted(tree, datasets, tmp_path):
    check_every_optimizer_is_accepted(tree, [f'--data={datasets["data"]}', *TINY], tmp_path)


def test_default_adam_run_matches_the_compat_only_tree(tree, smoke_runs, compat_run):
    """The method patches leave the default (Adam, no clipping, no BMC) run bit-identical."""
    name = last_snapshot(smoke_runs['adam']).name
    output = run(tree, ['-c', SNAPSHOTS_EQUAL, str(smoke_runs['adam'] / name), str(compat_run[1] / name)])
    assert 'DIFFER [] COUNT' in output and 'COUNT 0' not in output, output[-3000:]


def test_network_pickles_load_both_ways(tree, smoke_runs, compat_run):
    """Ours load in the compat-only tree (nothing of ganpatch inside); the compat-only tree's resume in ours."""
    for name in ['bmc-G', 'extrasgd-norm', 'adam']:
        snapshot = last_snapshot(smoke_runs[name])
        assert b'ganpatch' not in snapshot.read_bytes(), name
    output = run(compat_run[0], ['-c', LOAD_AND_GENERATE.replace("torch.zeros([1, G.c_dim])", "torch.eye(G.c_dim)[:1]"),
                                 str(last_snapshot(smoke_runs['extrasgd-norm']))])
    assert 'IMAGE [1, 3, 32, 32] True' in output
    resumed = smoke_runs['resumed']
    assert 'Resuming from' in (resumed / 'log.txt').read_text()
    assert json.loads((resumed / 'training_options.json').read_text())['resume_pkl'] == str(last_snapshot(compat_run[1]))
    check_finite_losses_and_snapshot(tree, resumed)


def test_two_gloo_processes_with_clipping_and_bmc_on_D_stay_identical(tree, datasets, tmp_path):
    """2 CPU processes (gloo) under DistributedDataParallel. Every snapshot runs upstream's
    check_ddp_consistency, which asserts that each rank's parameters and buffers equal rank 0's; before the
    broadcast fix the first snapshot failed on the noise_const buffers."""
    args = [a for a in TINY if not a.startswith(('--gpus', '--batch'))]
    output = run(tree, ['train.py', f'--outdir={tmp_path}', f'--data={datasets["data"]}', *args, '--gpus=2', '--batch=8',
        '--optimizer=sgd', '--glr=0.01', '--dlr=0.01', '--clip-mode=norm', '--clip-gmax=0.5', '--clip-dmax=0.5', '--bmc=D'])
    assert 'Distributing across 2 GPUs' in output
    [run_dir] = tmp_path.iterdir()
    assert len(list(run_dir.glob('network-snapshot-*.pkl'))) == 1 # Rewritten at every tick (all below 1 kimg).
    means = stats_means(run_dir)
    assert len(means['Progress/tick']) >= 2 # --snap=1: a snapshot, and so a consistency check, at every tick.
    assert all(math.isfinite(v) for v in means['Grad/Dmain_norm'] + means['Loss/D/bmc'])


def test_gradnoise_both_passes_on_snapshot(tree, datasets, smoke_runs, tmp_path):
    output = run(tree, ['gradnoise_train.py', f'--outdir={tmp_path}', f'--data={datasets["data"]}', '--gpus=1', '--batch=8',
        '--batch-gpu=4', '--gamma=1', '--cfg=cifar', '--kimg=0.024', '--mode=both', '--metrics=none', '--desc=eval',
        f'--resume={last_snapshot(smoke_runs["sgd-value"])}', '--workers=1', '--device=cpu', '--pl-mean-batches=2'])
    assert '--cfg=cifar disagrees with the pickle' in output
    assert 'Augmentation:        a fresh pipe at p=0 (--aug=ada)' in output
    [run_dir] = tmp_path.iterdir()
    assert run_dir.name == '00000-gradnoise-eval'
    phases = ['Gmain', 'Greg', 'Dmain', 'Dreg']
    stats = json.loads((run_dir / 'noise_stats.json').read_text())
    assert set(stats) == set(phases)
    for phase in phases:
        norms = np.load(run_dir / f'{phase}_stoch_noise.npy')
        assert norms.shape == (3,) and np.isfinite(norms).all() and (norms > 0).all(), (phase, norms)
    assert {'results_norm.png', 'results_lognorm.png', 'Gmain_full_grad.pth'} <= {p.name for p in run_dir.iterdir()}
    check_gradnoise_authors_files(run_dir)


def test_gradnoise_loss_leaves_running_statistics_alone(tree, smoke_runs):
    check_gradnoise_leaves_statistics(tree, last_snapshot(smoke_runs['sgd-value']), 'StyleGAN2ADATree')


def test_bad_values_fail_at_startup(tree, datasets, tmp_path):
    check_bad_values_fail_at_startup(tree, [f'--data={datasets["data"]}', *TINY], SHARED_BAD_VALUES, tmp_path)


def test_seed_train_commands_dry_run(tree, datasets, tmp_path):
    argv = [seed_args(command, outdir=tmp_path / 'training-runs', **datasets)[1:] for command in SEED_TRAIN_DRY_RUNS]
    results = run_click_commands(tree, 'train', 'main', argv, tmp_path)
    assert all(accepted for accepted, _ in results), results
    assert not (tmp_path / 'training-runs').exists()


# FID's Inception network and projector.py's VGG16 come from URLs: small TorchScript stand-ins with the same
# call signatures are put in dnnlib's download cache under those URLs, so the tools' own URL code paths run
# unchanged offline (the outputs are then not real FIDs or LPIPS distances). fid64 is fid50k_full with 64
# generated images.
STAND_INS = r'''
import sys, torch
class Features(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer('proj', torch.randn([3 * 4 * 4, 16], generator=torch.Generator().manual_seed(0)))
    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(img / 255, 4).flatten(1) @ self.proj
class Lpips(torch.nn.Module):
    def forward(self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(img / 255, 8).flatten(1)
        return x / x.square().sum(dim=1, keepdim=True).sqrt()
torch.jit.save(torch.jit.script(Features()), sys.argv[1])
torch.jit.save(torch.jit.script(Lpips()), sys.argv[2])
'''

TOOLS = r'''
import json, multiprocessing, shlex, sys
import calc_metrics, generate, legacy, projector, style_mixing
from metrics import frechet_inception_distance, metric_main
@metric_main.register_metric
def fid64(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    return dict(fid64=frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=64))
commands = dict(generate=generate.generate_images, style_mixing=style_mixing.generate_style_mix, legacy=legacy.convert_network_pickle,
                projector=projector.run_projection, calc_metrics=calc_metrics.calc_metrics)
for argv in json.loads(sys.argv[1]):
    multiprocessing.set_start_method(None, force=True) # calc_metrics sets 'spawn' once per process.
    print('COMMAND', shlex.join(argv), flush=True)
    commands[argv[0]].main(argv[1:], standalone_mode=False)
'''


def test_seed_tool_commands_with_local_files(tree, datasets, smoke_runs, tmp_path):
    cache = tmp_path / 'dnnlib-cache'
    fid_url = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt'
    vgg_url = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt'
    fid_path = cache_stand_in(cache, fid_url, lambda path: None)
    vgg_path = cache_stand_in(cache, vgg_url, lambda path: None)
    (tmp_path / 'stand_ins.py').write_text(STAND_INS) # TorchScript compiles from source files, not from -c.
    run(tree, [str(tmp_path / 'stand_ins.py'), str(fid_path), str(vgg_path)])
    paths = dict(network=last_snapshot(smoke_runs['sgd-value']), conditional=last_snapshot(smoke_runs['adam']),
                 target=sorted(datasets['png'].iterdir())[0])
    argv = [[command.split()[1].removesuffix('.py'), *seed_args(command, **paths)[1:]] for command in SEED_TOOL_COMMANDS]
    [projector] = [args for args in argv if args[0] == 'projector']
    projector.append('--num-steps=20') # Verbatim but for the length: the default 1000 steps take minutes on a CPU.
    argv.append(['calc_metrics', '--metrics=fid64', f'--network={paths["network"]}', f'--data={datasets["data"]}'])
    output = run(tree, ['-c', TOOLS, json.dumps(argv)], cwd=tmp_path, env={'DNNLIB_CACHE_DIR': str(cache)})
    out = {path.name for path in (tmp_path / 'out').iterdir()}
    assert {f'seed{seed:04d}.png' for seed in [85, 265, 297, 849, *range(600, 606), *range(36)]} <= out
    assert {'grid.png', '85-55.png', '1500-293.png'} <= out
    assert {'proj.mp4', 'proj.png', 'target.png', 'projected_w.npz', 'proj00.png'} <= out
    assert (tmp_path / 'stylegan2-cat-config-f.pkl').is_file()
    fid = float(output.split('"fid64": ', 1)[1].split('}', 1)[0])
    assert math.isfinite(fid) and fid >= 0, output[-3000:]


# On a CUDA GPU (skipped elsewhere): the custom ops, not the reference path, and a short real run.

CUDA_RUN = ('--gpus=1 --batch=8 --cbase=512 --cmax=32 --map-depth=2 --kimg=0.2 --tick=0.1 --snap=1 --grid=4x2 '
            '--metrics=none --workers=1 --device=cuda').split()


@pytest.mark.gpu
def test_cuda_custom_ops_are_loaded_and_agree_with_the_reference(tree):
    needs_cuda()
    check_custom_ops_against_reference(tree, ['bias_act', 'upfirdn2d'])


@pytest.mark.gpu
def test_cuda_sgd_value_clip_run_uses_the_custom_ops(tree, datasets, tmp_path):
    needs_cuda()
    options = '--optimizer=sgd --glr=0.01 --dlr=0.01 --clip-mode=value --clip-gmax=0.01 --clip-dmax=0.01 --bmc=G'.split()
    output = run(tree, ['train.py', f'--outdir={tmp_path}', f'--data={datasets["data"]}', *CUDA_RUN, *options])
    [run_dir] = tmp_path.iterdir()
    check_cuda_run_used_the_plugins(tree, output, run_dir, ['bias_act_plugin', 'upfirdn2d_plugin'])
