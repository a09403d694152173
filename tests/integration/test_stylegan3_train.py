"""CPU smoke runs of the patched stylegan3 tree: train.py, gradnoise_train.py and the seed's commands.

Everything runs on a tiny synthetic dataset (32 generated 32x32 PNGs packed by upstream's
dataset_tool.py) with a tiny stylegan2 config, for a few minibatches (fractional --kimg), so the
whole file takes a few minutes on 2 cores.
"""

import json
import math

import numpy as np
import pytest

from stylegan_support import (DIAGNOSTICS_RUN, SHARED_BAD_VALUES, SNAPSHOTS_EQUAL, cache_stand_in, check_bad_values_fail_at_startup,
                              check_cuda_run_used_the_plugins, check_custom_ops_against_reference, check_diagnostics_run,
                              check_every_optimizer_is_accepted, check_finite_losses_and_snapshot, check_gradnoise_authors_files,
                              check_gradnoise_leaves_statistics, compat_only_tree, last_snapshot, needs_cuda, run, run_click_commands,
                              seed_args, stats_means)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = ('--cfg=stylegan2 --gpus=1 --batch=4 --gamma=1 --cbase=256 --cmax=32 --map-depth=2 --mbstd-group=2 '
        '--kimg=0.016 --tick=0.008 --snap=1 --grid=4x2 --metrics=none --workers=1 --device=cpu').split()

SMOKE_RUNS = {  # name -> extra train.py options
    'adam': [],
    'sgd-value': '--optimizer=sgd --glr=0.01 --dlr=0.01 --clip-mode=value --clip-gmax=0.01 --clip-dmax=0.01'.split(),
    'extrasgd-norm': '--optimizer=extrasgd --glr=0.01 --dlr=0.01 --clip-mode=norm --clip-gmax=1 --clip-dmax=1'.split(),
    'bmc-G': ['--bmc=G'],
    'diagnostics': DIAGNOSTICS_RUN,
}

# The StyleGAN commands of the clipped-methods authors' README (busycalibrating/clipped-stochastic-methods),
# verbatim apart from --data/--resume; the third one with its two missing line-continuation backslashes restored.
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

@pytest.fixture(scope='module')
def tree(patched_tree):
    return patched_tree('stylegan3')


@pytest.fixture(scope='module')
def dataset(tree, tmp_path_factory):
    """32 generated 32x32 RGB images (ganpatch.fake_data), packed by dataset_tool.py."""
    root = tmp_path_factory.mktemp('stylegan3-data')
    run(tree, ['-m', 'ganpatch.fake_data', 'images', str(root / 'png'), '--images', '32', '--resolution', '32'])
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
            assert 'betas' not in options[key] and options[key]['momentum'] == 0.0
        for phase in ['Gmain', 'Greg', 'Dmain', 'Dreg']:
            assert all(math.isfinite(v) for v in means[f'Grad/{phase}_norm']), phase
    if name == 'bmc-G':
        assert options['loss_kwargs']['bmc_target'] == 'G'
        assert options['loss_kwargs']['bmc_kwargs'] == dict(rho1=0.1, rho2=0.01, b1_mean=0.0, b1_std=0.01, b2_mean=1.0, b2_std=0.05, seed=0)
        assert all(math.isfinite(v) and v >= 0 for v in means['Loss/G/bmc'])
    if name == 'diagnostics':
        check_diagnostics_run(tree, run_dir)


def test_every_optimizer_name_is_accepted(tree, dataset, tmp_path):
    check_every_optimizer_is_accepted(tree, [f'--data={dataset}', *TINY], tmp_path)


def test_gradnoise_both_passes_on_snapshot(tree, dataset, smoke_runs, tmp_path):
    snapshot = last_snapshot(smoke_runs['adam'])
    output = run(tree, ['gradnoise_train.py', f'--outdir={tmp_path}', '--cfg=stylegan2', f'--data={dataset}', '--gpus=1',
        '--batch=4', '--batch-gpu=2', '--gamma=1', '--cbase=16384', '--kimg=0.012', '--mode=both', '--metrics=none',
        '--desc=eval', f'--resume={snapshot}', '--workers=1', '--device=cpu', '--pl-mean-batches=2'])
    assert '--cbase=16384 disagrees with the pickle (256)' in output
    assert 'Augmentation:        a fresh pipe at p=0 (--aug=ada)' in output
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
    check_gradnoise_authors_files(run_dir)


def test_gradnoise_loss_leaves_running_statistics_alone(tree, smoke_runs):
    check_gradnoise_leaves_statistics(tree, last_snapshot(smoke_runs['adam']), 'StyleGAN3Tree')


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
    snapshot = last_snapshot(smoke_runs['adam'])
    args = seed_args(SEED_TRAIN_COMMANDS[name], data=dataset, resume=snapshot)
    output = run(tree, [str(tree / args[0]), *args[1:], '--dry-run'], cwd=tmp_path)
    assert 'Dry run; exiting.' in output
    options = json.loads(output.split('Training options:', 1)[1].split('\nOutput directory:', 1)[0])
    lr = {'best_pt1': 0.35, 'best_pt2': 0.035, 'best_pt3': 0.0035}[name]
    for key in ['G_opt_kwargs', 'D_opt_kwargs']:
        assert options[key] == dict(class_name='ganpatch.optim.build_optimizer', name='sgd', clip_mode='value', clip_threshold=0.0025, lr=lr,
                                    momentum=0.0, weight_decay=0.0)
    assert options['total_kimg'] == {'best_pt1': 6000, 'best_pt2': 3600, 'best_pt3': 8000}[name]
    assert (options['batch_size'], options['loss_kwargs']['r1_gamma'], options['G_kwargs']['channel_base']) == (32, 0.1024, 16384)
    assert options['G_kwargs']['mapping_kwargs']['num_layers'] == 2
    assert options.get('resume_pkl') == (None if name == 'best_pt1' else str(snapshot))
    assert not (tmp_path / 'logs').exists()


def test_seed_gradnoise_command_dry_run(tree, dataset, smoke_runs, tmp_path):
    snapshot = last_snapshot(smoke_runs['adam'])
    args = seed_args(SEED_GRADNOISE_COMMAND, data=dataset, resume=snapshot)
    output = run(tree, [str(tree / args[0]), *args[1:], '--dry-run'], cwd=tmp_path)
    assert 'Dry run; exiting.' in output
    assert 'Phases:              Gmain, Greg, Dmain, Dreg' in output
    assert 'Passes:              both, 31250 minibatches of 32 images each' in output
    assert 'Augmentation:        a fresh pipe at p=0 (--aug=ada)' in output # As the authors' measurement ran.
    assert not (tmp_path / 'eval_runs').exists()


def test_bad_values_fail_at_startup(tree, dataset, tmp_path):
    check_bad_values_fail_at_startup(tree, [f'--data={dataset}', *TINY], SHARED_BAD_VALUES, tmp_path)


def test_gradnoise_rejects_bad_values_before_writing(tree, dataset, tmp_path):
    (tmp_path / 'corrupt.pkl').write_bytes(b'\x80\x04 not a pickle at all')
    common = [f'--outdir={tmp_path / "eval"}', f'--data={dataset}', '--gpus=1', '--batch=4', '--gamma=1', '--device=cpu']
    results = run_click_commands(tree, 'gradnoise_train', 'main', [[*common, '--resume=missing.pkl'],
        [*common, '--resume=corrupt.pkl', '--dry-run'], [*common, '--resume=corrupt.pkl', '--kimg=nan'],
        [*common, '--resume=corrupt.pkl', '--p=0.5'], [*common, '--resume=corrupt.pkl', '--aug=fixed', '--p=1.5']], tmp_path)
    assert [accepted for accepted, _ in results] == [False] * 5
    assert results[3][1] == '--p requires --aug=fixed' and "Invalid value for '--p'" in results[4][1]
    assert 'missing.pkl: cannot load a network pickle' in results[0][1] and 'corrupt.pkl: cannot load' in results[1][1]
    assert "'--kimg': 'nan' is not a finite number" in results[2][1]
    assert not (tmp_path / 'eval').exists()


def test_default_adam_run_matches_the_tree_before_the_method_patches(tree, dataset, smoke_runs, tmp_path):
    """The optimizer, SEG, BMC and later patches leave the default (Adam, no clipping, no BMC) run bit-identical."""
    before = compat_only_tree(tree, tmp_path / 'before')
    run(before, ['train.py', f'--outdir={tmp_path / "runs"}', f'--data={dataset}', *TINY])
    [run_dir] = (tmp_path / 'runs').iterdir()
    name = last_snapshot(smoke_runs['adam']).name
    output = run(tree, ['-c', SNAPSHOTS_EQUAL, str(smoke_runs['adam'] / name), str(run_dir / name)])
    assert 'DIFFER [] COUNT' in output and 'COUNT 0' not in output, output[-3000:]


# Upstream's tools on a snapshot of ours, on the CPU, in one process. FID's Inception network comes from a
# URL: a small stand-in feature network is put in dnnlib's download cache under that URL, so the tree's own
# download code path runs unchanged offline; fid64 is fid50k_full with 64 generated images.
STAND_IN_DETECTOR = r'''
import pickle, sys, torch
from torch_utils import persistence
@persistence.persistent_class
class StandInFeatures(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer('proj', torch.randn([3 * 4 * 4, 16], generator=torch.Generator().manual_seed(0)))
    def forward(self, img, return_features=False, **_):
        x = torch.nn.functional.adaptive_avg_pool2d(img.to(torch.float32) / 255, 4).flatten(1)
        return x @ self.proj
if __name__ == '__main__': # The pickle carries this file's source (persistence) and runs it when loaded.
    with open(sys.argv[1], 'wb') as f:
        pickle.dump(StandInFeatures(), f)
'''

TOOLS = r'''
import multiprocessing, sys
import avg_spectra, calc_metrics, gen_images, gen_video
from metrics import frechet_inception_distance, metric_main
@metric_main.register_metric
def fid64(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    return dict(fid64=frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=64))
snapshot, data, out = sys.argv[1:4]
gen_images.generate_images.main([f'--network={snapshot}', '--seeds=0-1', f'--outdir={out}/images', '--device=cpu'], standalone_mode=False)
gen_video.generate_images.main([f'--network={snapshot}', '--seeds=0-1', '--w-frames=2', f'--output={out}/lerp.mp4', '--device=cpu'], standalone_mode=False)
for command, args in [(calc_metrics.calc_metrics, ['--metrics=fid64', f'--network={snapshot}', f'--data={data}', '--device=cpu']),
        (avg_spectra.main, ['stats', f'--source={snapshot}', '--num=4', '--device=cpu']),
        (avg_spectra.main, ['calc', f'--source={snapshot}', f'--dest={out}/spectrum.npz', '--mean=100', '--std=60', '--num=4', '--device=cpu']),
        (avg_spectra.main, ['heatmap', f'{out}/spectrum.npz', f'--save={out}/heatmap.png'])]:
    multiprocessing.set_start_method(None, force=True) # Each command sets 'spawn' once, as in its own process.
    command.main(args, standalone_mode=False)
'''


def test_upstream_tools_run_on_the_cpu_on_our_snapshot(tree, dataset, smoke_runs, tmp_path):
    import imageio.v2 as imageio
    url = 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/inception-2015-12-05.pkl'
    cache = tmp_path / 'dnnlib-cache'
    (tmp_path / 'stand_in.py').write_text(STAND_IN_DETECTOR) # persistence pickles the defining file's source.
    cache_stand_in(cache, url, lambda path: run(tree, [str(tmp_path / 'stand_in.py'), str(path)]))
    output = run(tree, ['-c', TOOLS, str(last_snapshot(smoke_runs['adam'])), str(dataset), str(tmp_path)], env={'DNNLIB_CACHE_DIR': str(cache)})
    assert sorted(p.name for p in (tmp_path / 'images').iterdir()) == ['seed0000.png', 'seed0001.png']
    frames = imageio.mimread(tmp_path / 'lerp.mp4')
    assert len(frames) == 4 and frames[0].shape == (32, 32, 3), (len(frames), frames[0].shape)
    fid = float(output.split('"fid64": ', 1)[1].split('}', 1)[0])
    assert math.isfinite(fid) and fid >= 0, output[-3000:]
    assert '--mean=' in output and (tmp_path / 'spectrum.npz').is_file() and (tmp_path / 'heatmap.png').is_file()


# On a CUDA GPU (skipped elsewhere): the custom ops, not the reference path, and a short real run.

CUDA_RUN = ('--cfg=stylegan2 --gpus=1 --batch=8 --gamma=1 --cbase=512 --cmax=32 --map-depth=2 --kimg=0.2 '
            '--tick=0.1 --snap=1 --grid=4x2 --metrics=none --workers=1 --device=cuda').split()


@pytest.mark.gpu
def test_cuda_custom_ops_are_loaded_and_agree_with_the_reference(tree):
    needs_cuda()
    check_custom_ops_against_reference(tree, ['bias_act', 'upfirdn2d', 'filtered_lrelu'])


@pytest.mark.gpu
def test_cuda_sgd_value_clip_run_uses_the_custom_ops(tree, dataset, tmp_path):
    needs_cuda()
    options = '--optimizer=sgd --glr=0.01 --dlr=0.01 --clip-mode=value --clip-gmax=0.01 --clip-dmax=0.01'.split()
    output = run(tree, ['train.py', f'--outdir={tmp_path}', f'--data={dataset}', *CUDA_RUN, *options])
    [run_dir] = tmp_path.iterdir()
    check_cuda_run_used_the_plugins(tree, output, run_dir, ['bias_act_plugin', 'upfirdn2d_plugin'])
