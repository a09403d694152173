"""Training speed of a patched StyleGAN tree (stylegan3 or stylegan2-ada), as ratios to the same tree before
the method patches.

Usage: python tests/bench/bench_stylegan.py [--target stylegan3|stylegan2-ada] [--tree build/<target>]
                                            [--device cpu|cuda] [--kimg K] [--rounds N]

Trains one config per variant on a synthetic dataset, reads sec/kimg of the ticks after tick 0 (which
includes start-up and, on CUDA, the custom-op builds) from stats.jsonl, and prints each variant with
its ratio to the baseline measured in the same invocation. With --rounds N, the baseline and every variant are
timed once per round, interleaved, and the best and the median runs are compared (on a shared CPU one run's
sec/kimg varies by 10-25 %; the best run is the least disturbed). Prints numbers only: no thresholds.

- baseline: the tree at the commit before the "Optimizers and clipping" patch, i.e. upstream plus only
  the fixes it needs to run today (compat, CUDA-op loading, CPU/gloo, smoke-run options), with the
  ganpatch package those use. Its default run is bit-identical to the patched tree's
  (tests/integration/test_stylegan*_train.py), so "patched adam / baseline" is the cost of our patches
  on upstream's own path.
- the pristine upstream (tag `upstream`) is tried too; it cannot run on today's stack, and the line
  says why.
- configs: CPU, a stylegan2 generator at 32x32 (cbase 512, cmax 32, batch 8); CUDA, the clipped-methods
  seed commands' width (batch 32, map-depth 2, cbase 16384) at 128x128.
"""

import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import numpy as np
import PIL.Image

from trees import compat_only_commit, export_commit

TARGETS = {  # target -> device -> (resolution, default --kimg, train.py options both trees of the target know)
    'stylegan3': {
        'cpu': (32, 0.08, '--cfg=stylegan2 --gpus=1 --batch=8 --gamma=1 --cbase=512 --cmax=32 --map-depth=2 '
                          '--mbstd-group=2 --snap=1000 --metrics=none --workers=1 --device=cpu'),
        'cuda': (128, 4.0, '--cfg=stylegan2 --gpus=1 --batch=32 --gamma=0.1024 --cbase=16384 --map-depth=2 '
                           '--snap=1000 --metrics=none --workers=2 --device=cuda'),
    },
    'stylegan2-ada': {
        'cpu': (32, 0.08, '--gpus=1 --batch=8 --gamma=1 --cbase=512 --cmax=32 --map-depth=2 '
                          '--snap=1000 --metrics=none --workers=1 --device=cpu'),
        'cuda': (128, 4.0, '--gpus=1 --batch=32 --gamma=0.1024 --cbase=16384 --map-depth=2 '
                           '--snap=1000 --metrics=none --workers=2 --device=cuda'),
    },
}
UPSTREAM_OPTIONS = {  # the options pristine upstream knows (integer kimg, no width or device options)
    'stylegan3': '--cfg=stylegan2 --gpus=1 --batch=8 --gamma=1 --cbase=512 --cmax=32 --map-depth=2 --mbstd-group=2 --snap=1000 --metrics=none --workers=1',
    'stylegan2-ada': '--gpus=1 --batch=8 --gamma=1 --snap=1000 --metrics=none --workers=1',
}
SMALL_GRID = ['--grid=4x2'] # Keeps the tick-0 snapshot grid out of the way; not a timed tick.
VARIANTS = {
    'adam': [],
    'sgd+value clip': '--optimizer=sgd --glr=0.01 --dlr=0.01 --clip-mode=value --clip-gmax=0.01 --clip-dmax=0.01'.split(),
    'extrasgd+norm clip (SEG)': '--optimizer=extrasgd --glr=0.01 --dlr=0.01 --clip-mode=norm --clip-gmax=1 --clip-dmax=1'.split(),
    'adam + BMC on G': ['--bmc=G'],
    'adam + BMC on D': ['--bmc=D'],
}
BASELINE = 'baseline (compat only)'


def make_dataset(tree, root, resolution):
    rng = np.random.default_rng(0)
    (root / 'png').mkdir()
    for i in range(64):
        pixels = rng.integers(0, 256, [resolution, resolution, 3], dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(root / 'png' / f'{i:03d}.png')
    subprocess.run([sys.executable, 'dataset_tool.py', f'--source={root / "png"}', f'--dest={root / "data.zip"}'],
                   cwd=tree, check=True, capture_output=True)
    return root / 'data.zip'


def compat_only_tree(tree, dest):
    """The compat-only tree (see trees.py), with the ganpatch package its compat patches use."""
    export_commit(tree, compat_only_commit(tree), dest)
    subprocess.run(f'git -C {tree} archive HEAD ganpatch | tar -x -C {dest}', shell=True, check=True)
    return dest


def sec_per_kimg(tree, data, outdir, options):
    """Mean sec/kimg over the ticks after tick 0, or None and the last line of the error."""
    outdir.mkdir()
    proc = subprocess.run([sys.executable, 'train.py', f'--outdir={outdir}', f'--data={data}', *options],
                          cwd=tree, capture_output=True, text=True)
    if proc.returncode != 0: # The last line that is not one of torch's W/I log lines.
        return None, [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip() and not re.match(r'[WI]\d{4} ', line)][-1]
    [run_dir] = [p for p in outdir.iterdir() if p.is_dir()]
    ticks = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    values = [t['Timing/sec_per_kimg']['mean'] for t in ticks[1:]]
    if not values:
        return None, 'no tick after tick 0: raise --kimg'
    return float(np.mean(values)), None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--target', choices=sorted(TARGETS), default='stylegan3')
    parser.add_argument('--tree', type=pathlib.Path, help='the patched tree (default: build/<target>)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--kimg', type=float, help='length of each run (default: 0.08 on cpu, 4 on cuda)')
    parser.add_argument('--rounds', type=int, default=1, help='interleaved rounds; the best and median are reported (default: 1)')
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error('--rounds must be at least 1')
    tree = (args.tree or pathlib.Path('build') / args.target).resolve()
    resolution, default_kimg, config = TARGETS[args.target][args.device]
    kimg = args.kimg or default_kimg
    length = [f'--kimg={kimg}', f'--tick={kimg / 4}']
    print(f'{args.target}, {args.device}: {config} at {resolution}x{resolution}, {kimg} kimg per run, sec/kimg after tick 0', flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        data = make_dataset(tree, tmp, resolution)

        upstream = export_commit(tree, 'upstream', tmp / 'upstream')
        upstream_options = [*UPSTREAM_OPTIONS[args.target].split(), '--kimg=1'] # Integers only.
        speed, error = sec_per_kimg(upstream, data, tmp / 'out-upstream', upstream_options)
        print(f'{"pristine upstream":28s} ' + (f'{speed:8.2f} sec/kimg' if speed else f'cannot run: {error}'), flush=True)

        baseline_dir = compat_only_tree(tree, tmp / 'baseline')
        options = [*config.split(), *length, *SMALL_GRID]
        runs = {BASELINE: (baseline_dir, [])} | {name: (tree, extra) for name, extra in VARIANTS.items()}
        speeds = {name: [] for name in runs}
        for round_index in range(args.rounds): # Interleaved: each round times the baseline and every variant once.
            for index, (name, (run_tree, extra)) in enumerate(runs.items()):
                if name not in speeds:
                    continue # Failed in an earlier round.
                speed, error = sec_per_kimg(run_tree, data, tmp / f'out-{round_index}-{index}', [*options, *extra])
                if speed is None and name == BASELINE:
                    sys.exit(f'baseline (before the method patches) failed: {error}')
                if speed is None:
                    print(f'{name:28s} failed: {error}', flush=True)
                    del speeds[name]
                    continue
                speeds[name].append(speed)
                print(f'round {round_index + 1}: {name:28s} {speed:8.2f} sec/kimg', flush=True)

        # On a shared machine a run is only ever slowed down: the best of the rounds is the least disturbed one.
        baseline = speeds.pop(BASELINE)
        print(f'\nover {args.rounds} round(s), best and median:\n{BASELINE:28s} {min(baseline):8.2f} {np.median(baseline):8.2f} sec/kimg')
        for name, values in speeds.items():
            print(f'{name:28s} {min(values):8.2f} {np.median(values):8.2f} sec/kimg   '
                  f'x{min(values) / min(baseline):.3f} x{np.median(values) / np.median(baseline):.3f} vs baseline')


if __name__ == '__main__':
    main()
