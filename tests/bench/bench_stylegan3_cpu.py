"""CPU training speed of the patched stylegan3 tree: sec/kimg per optimizer, as ratios to Adam.

Usage: python tests/bench/bench_stylegan3_cpu.py [--tree build/stylegan3] [--kimg 0.08]

Trains the same tiny stylegan2 config (32x32, cbase 512, cmax 32, batch 8; the survey's config)
once per variant on a synthetic dataset, reads sec/kimg of the ticks after tick 0 (which includes
start-up) from stats.jsonl, and prints them with their ratio to the Adam run measured in the same
invocation. It also tries the unpatched upstream (tag `upstream` of the tree) and prints why it
cannot run, if it cannot. Prints numbers only: no thresholds.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import PIL.Image

CONFIG = ('--cfg=stylegan2 --gpus=1 --batch=8 --gamma=1 --cbase=512 --cmax=32 --map-depth=2 --mbstd-group=2 '
          '--snap=1000 --metrics=none --workers=1').split() # Options upstream's train.py knows too.
SMOKE = ['--grid=4x2', '--device=cpu']
VARIANTS = {
    'adam': [],
    'sgd+value clip': '--optimizer=sgd --glr=0.01 --dlr=0.01 --clip-mode=value --clip-gmax=0.01 --clip-dmax=0.01'.split(),
    'extrasgd+norm clip (SEG)': '--optimizer=extrasgd --glr=0.01 --dlr=0.01 --clip-mode=norm --clip-gmax=1 --clip-dmax=1'.split(),
    'adam + BMC on D': ['--bmc=D'],
}


def make_dataset(tree, root):
    rng = np.random.default_rng(0)
    (root / 'png').mkdir()
    for i in range(64):
        PIL.Image.fromarray(rng.integers(0, 256, [32, 32, 3], dtype=np.uint8)).save(root / 'png' / f'{i:03d}.png')
    subprocess.run([sys.executable, 'dataset_tool.py', f'--source={root / "png"}', f'--dest={root / "data.zip"}'],
                   cwd=tree, check=True, capture_output=True)
    return root / 'data.zip'


def sec_per_kimg(tree, data, outdir, options):
    """Mean sec/kimg over the ticks after tick 0, or None and the last line of the error."""
    proc = subprocess.run([sys.executable, 'train.py', f'--outdir={outdir}', f'--data={data}', *CONFIG, *options],
                          cwd=tree, capture_output=True, text=True)
    if proc.returncode != 0:
        return None, (proc.stdout + proc.stderr).strip().splitlines()[-1]
    [run_dir] = [p for p in outdir.iterdir() if p.is_dir()]
    ticks = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    values = [t['Timing/sec_per_kimg']['mean'] for t in ticks[1:]]
    return float(np.mean(values)), None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tree', type=pathlib.Path, default=pathlib.Path('build/stylegan3'))
    parser.add_argument('--kimg', type=float, default=0.08)
    args = parser.parse_args()
    tree = args.tree.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        data = make_dataset(tree, tmp)

        unpatched = tmp / 'unpatched'
        unpatched.mkdir()
        subprocess.run(f'git -C {tree} archive upstream | tar -x -C {unpatched}', shell=True, check=True)
        (tmp / 'out-unpatched').mkdir()
        base, error = sec_per_kimg(unpatched, data, tmp / 'out-unpatched', ['--kimg=1', '--tick=1'])
        print(f'{"unpatched upstream":28s} ' + (f'{base:8.1f} sec/kimg' if base else f'cannot run: {error}'), flush=True)

        results = {}
        for name, extra in VARIANTS.items():
            outdir = tmp / f'out-{len(results)}'
            outdir.mkdir()
            results[name], error = sec_per_kimg(tree, data, outdir, [f'--kimg={args.kimg}', f'--tick={args.kimg / 2}', *SMOKE, *extra])
            if results[name] is None:
                print(f'{name:28s} failed: {error}', flush=True)
                continue
            ratio = results[name] / results['adam'] if results.get('adam') else float('nan')
            print(f'{name:28s} {results[name]:8.1f} sec/kimg   x{ratio:.2f} vs adam', flush=True)


if __name__ == '__main__':
    main()
