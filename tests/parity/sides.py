"""What the parity tests of every target share: a case, both sides' runners at once, and weight comparisons.

A side is 'authors' (the authors' tree with our CPU shims) or 'ganpatch' (ours). Each side runs all the cases of
a target in one runner process (one torch import), the two processes side by side; a runner prints one line
`JOB <json>` per case and saves the final weights of the case as OUT_DIR/<case>.pt, {network: state dict}.
"""
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

SIDES = ('authors', 'ganpatch')

# What a case expects of the two sides.
IDENTICAL = 'identical'                # every recorded loss and the final weights, bit for bit
NORM_ROUNDING = 'norm rounding'        # the same gradients until the first norm-clipped update, then rounding
SEG_SEQUENCES = 'SEG sequences'        # the documented optimizer call sequences
NOISE_STATISTICS = 'noise statistics'  # gradient-noise histograms: same counts, means within standard errors


@dataclass(frozen=True)
class Case:
    """One comparison: `flags` both sides get (after the target's common flags; `{name}` stands for the output
    folder of case `name` on the same side), what the test expects, and `ours`, flags only ganpatch has."""
    flags: str
    expect: str
    ours: str = ''


def side_argv(cases, case, side, work, common, ours_only, output):
    """The script's argv for `case` on `side`: `common` (both sides), --<output>=<work>/<side>/<case> (the case's
    output folder), the case's flags ({name}: the output folder of case `name` on the same side) and, on ganpatch's
    side, `ours_only` and the case's own ganpatch-only flags."""
    folders = {name: f'{work}/{side}/{name}' for name in cases}
    argv = [*common, f'--{output}={folders[case]}', *cases[case].flags.format(**folders).split()]
    if side == 'ganpatch':
        argv += [*ours_only, *cases[case].ours.split()]
    return argv


def names(cases, expect):
    return [name for name, case in cases.items() if case.expect == expect]


def run_sides(trees, runner, jobs, work):
    """side -> case -> the runner's record, plus 'weights' (the path of the case's final weights).

    `trees` and `jobs` map each side to its tree and to the runner's job list (JSON); the runner runs in the tree.
    Fails with the runner's output when one exits with an error or does not report every job."""
    processes = {}
    for side in SIDES:
        out = work / f'out-{side}'
        out.mkdir()
        (work / f'{side}.json').write_text(json.dumps(jobs[side]))
        processes[side] = subprocess.Popen(
            [sys.executable, str(runner), str(work / f'{side}.json'), str(out)], cwd=trees[side], text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    results = {}
    for side, process in processes.items():
        stdout, stderr = process.communicate()
        records = [json.loads(line[len('JOB '):]) for line in stdout.splitlines() if line.startswith('JOB ')]
        expected = [job[0] for job in jobs[side]]
        assert process.returncode == 0 and [r['name'] for r in records] == expected, \
            f'{side} runner failed ({process.returncode}):\n{stderr[-6000:]}'
        results[side] = {r['name']: dict(r, weights=work / f'out-{side}' / f'{r["name"]}.pt') for r in records}
        print(f'{side}: ' + ', '.join(f'{r["name"]} {r["cpu_s"]:.1f}' for r in records) + ' (CPU s)')
    return results


def both(runs, case):
    """(theirs, ours) records of `case`; fails when either side stopped with an error."""
    theirs, ours = runs['authors'][case], runs['ganpatch'][case]
    assert theirs['error'] is None and ours['error'] is None, (theirs['error'], ours['error'])
    return theirs, ours


def max_difference(theirs, ours):
    """network -> the largest absolute difference of its final weights (parameters and buffers) on the two sides."""
    a, b = [torch.load(record['weights'], weights_only=True) for record in (theirs, ours)]
    assert a.keys() == b.keys() and all(a[net].keys() == b[net].keys() for net in a)
    return {net: max((a[net][k].double() - b[net][k].double()).abs().max().item() for k in a[net]) for net in a}


def image_dataset(tree, root):
    """root/data.zip: 32 generated 32x32 images (python -m ganpatch.fake_data images), packed by the tree's
    dataset_tool.py (the StyleGAN targets' training data)."""
    root = Path(root)
    for command in [['-m', 'ganpatch.fake_data', 'images', str(root / 'png'), '--images', '32', '--resolution', '32'],
                    ['dataset_tool.py', f'--source={root / "png"}', f'--dest={root / "data.zip"}']]:
        subprocess.run([sys.executable, *command], cwd=tree, check=True, capture_output=True)
    return root
