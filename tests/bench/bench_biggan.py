"""Training speed of the patched biggan-pytorch tree, as ratios to the same tree before the method patches.

Usage: python tests/bench/bench_biggan.py [--tree build/biggan-pytorch] [--device cpu|cuda] [--iters N]

Trains each variant for one epoch of a generated C10 copy and times every call of the train function
(the D steps, the G step and the EMA update of one iteration; data loading, logging and saving are not
timed). Prints iterations/s (1 / median seconds per iteration, after 2 warm-up iterations) per variant
and its ratio to the baseline measured in the same invocation. Numbers only: no thresholds.

- baseline: the tree at the commit before the "Optimizers and clipping" patch, i.e. upstream plus only
  the compat series; its default run is bit-identical to the patched tree's
  (tests/integration/test_biggan.py), so "patched adam / baseline" is the cost of our patches on
  upstream's own path. It is timed before and after the variants; ratios use the mean of the two.
- An SEG iteration is one complete SEG step per D step and for G: twice the gradient evaluations and
  twice the real data of an iteration of the other optimizers.
- configs: CPU, a narrow BigGAN at 32x32 (G_ch 16, D_ch 16, batch 16, 2 D steps); CUDA, the seed's
  scripts/launch_cifar_ema.sh (G_ch 64, D_ch 64, batch 50, 4 D steps, --ema).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / 'overlays' / 'common'))
from ganpatch.fake_data import write_cifar10  # noqa: E402
from trees import compat_only_commit, export_commit  # noqa: E402

DEVICE_CONFIGS = {  # device -> (train.py options both trees know, images per plain iteration, default --iters)
    'cpu': ('--G_ch 16 --D_ch 16 --batch_size 16 --num_D_steps 2 --G_attn 0 --D_attn 0', 32, 12),
    'cuda': ('--shuffle --batch_size 50 --num_D_steps 4 --G_lr 2e-4 --D_lr 2e-4 --G_ortho 0.0 --G_attn 0 '
             '--D_attn 0 --G_init N02 --D_init N02', 200, 40),
}
COMMON = '--dataset C10 --num_epochs 1 --num_workers 0 --test_every 0 --save_every 100000 --ema --use_ema --ema_start 1000'
VARIANTS = {
    'adam (default)': '',
    'adam + norm clip': '--clip_mode norm --G_clip 1 --D_clip 1',
    'sgd + norm clip': '--optimizer sgd --G_lr 0.01 --D_lr 0.01 --clip_mode norm --G_clip 1 --D_clip 1',
    'sgd + value clip + linear lr': '--optimizer sgd --G_lr 0.01 --D_lr 0.01 --clip_mode value --G_clip 0.01 '
                                    '--D_clip 0.01 --lr_schedule linear',
    'extrasgd + norm clip (SEG)': '--optimizer extrasgd --G_lr 0.01 --D_lr 0.01 --clip_mode norm --G_clip 1 --D_clip 1',
    'extraadam (SEG)': '--optimizer extraadam',
    'adam + BMC on D': '--bmc D',
    'adam + BMC on G': '--bmc G',
}

# Runs train.py once per job in this process, timing each call of the train function.
DRIVER = r'''
import contextlib, io, json, sys, time
import torch
import train, train_fns

times = []
make = train_fns.GAN_training_function
def timed_function(*args, **kwargs):
    train_step = make(*args, **kwargs)
    def timed(x, y):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = train_step(x, y)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        return out
    return timed
train_fns.GAN_training_function = timed_function

for name, argv in json.loads(sys.argv[1]):
    times.clear()
    sys.argv = ['train.py', *argv]
    with contextlib.redirect_stdout(io.StringIO()):
        train.main()
    print('RUN ' + json.dumps({'name': name, 'times': times}), flush=True)
'''


def timed_runs(tree, work, runs):
    """{name: seconds per iteration} for [name, argv] runs of train.py in `tree`, in one process."""
    proc = subprocess.run([sys.executable, '-c', DRIVER, json.dumps(runs)], cwd=work, capture_output=True, text=True,
                          env={**os.environ, 'PYTHONPATH': str(tree)})
    if proc.returncode != 0:
        sys.exit(f'{tree}: training failed:\n{proc.stderr[-4000:]}')
    results = [json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith('RUN ')]
    return {r['name']: r['times'] for r in results}


def iterations_per_second(times):
    if len(times) < 4:
        sys.exit(f'only {len(times)} iterations timed: raise --iters')
    return 1.0 / float(np.median(times[2:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tree', type=pathlib.Path, default=pathlib.Path('build/biggan-pytorch'))
    parser.add_argument('--device', choices=sorted(DEVICE_CONFIGS), default='cpu')
    parser.add_argument('--iters', type=int, help='iterations per plain run (default: 12 on cpu, 40 on cuda); SEG runs get half')
    args = parser.parse_args()
    tree = args.tree.resolve()
    config, per_iteration, default_iters = DEVICE_CONFIGS[args.device]
    iters = args.iters or default_iters
    import torch
    print(f'{args.device}: {config}, {iters} iterations per plain run, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}', flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        write_cifar10(str(tmp / 'data' / 'cifar'), images=iters * per_iteration)
        options = lambda extra, index: [*COMMON.split(), *config.split(), '--device', args.device, '--data_root',
                                        str(tmp / 'data'), '--experiment_name', f'run{index}', *extra.split()]
        baseline_tree = export_commit(tree, compat_only_commit(tree), tmp / 'baseline')
        before = timed_runs(baseline_tree, tmp, [['baseline', options('', 'b0')]])['baseline']
        patched = timed_runs(tree, tmp, [[name, options(extra, i)] for i, (name, extra) in enumerate(VARIANTS.items())])
        after = timed_runs(baseline_tree, tmp, [['baseline', options('', 'b1')]])['baseline']
        baseline = (iterations_per_second(before) + iterations_per_second(after)) / 2
        print(f'{"baseline (compat only)":32s} {baseline:8.3f} it/s  (before {iterations_per_second(before):.3f}, '
              f'after {iterations_per_second(after):.3f})', flush=True)
        for name, times in patched.items():
            speed = iterations_per_second(times)
            print(f'{name:32s} {speed:8.3f} it/s  x{speed / baseline:.3f} vs baseline ({len(times)} iterations)')
    print(f'load average at the end {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
    main()
