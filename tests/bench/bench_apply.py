"""Wall time of apply.py: `--target all` (warm cache, fresh destinations), `--check` for all, and the
two runs a researcher repeats on built trees: a re-run on up-to-date trees and an in-place update.

Goal (issue 2): the build and the check together in at most 10 s on a 2-core machine. Run from the
repository root:

    python tests/bench/bench_apply.py [--repeat 3]

The cache must hold the four upstreams (`python apply.py --fetch --target all`). The baseline is
`apply.py --list` (interpreter start-up, lock parsing, git lookup), measured in the same run, so the
ratios say how much of the time is the actual work. The load average is printed with the figures:
other processes on the machine slow every line alike, the ratios less so.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GOAL_SECONDS = 10.0


def timed(*args: str, root: Path = REPO_ROOT) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(root / 'apply.py'), *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f'apply.py {" ".join(args)} failed ({result.returncode}):\n{result.stderr}')
    return elapsed


def project_copy(scratch: Path) -> Path:
    """A copy of the checkout's apply.py, lock, patches and overlays, whose overlays the update timing edits."""
    root = scratch / 'project'
    for name in ('apply.py', 'upstream.lock'):
        root.mkdir(exist_ok=True)
        shutil.copy(REPO_ROOT / name, root / name)
    for name in ('ganpatch_apply', 'patches', 'overlays'):
        shutil.copytree(REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns('__pycache__'))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeat', type=int, default=3, help='runs per measurement; the best is reported')
    repeat = parser.parse_args().repeat
    timed('--target', 'all', '--check', '--offline')  # fails early when the cache is cold
    load_before = os.getloadavg()
    baseline = min(timed('--list') for _ in range(repeat))
    builds, no_ops, updates = [], [], []
    with tempfile.TemporaryDirectory(prefix='ganpatch-bench-') as scratch:
        root = project_copy(Path(scratch))
        marker = root / 'overlays' / 'common' / 'ganpatch' / '__init__.py'
        original = marker.read_text()
        for number in range(repeat):
            dest = Path(scratch) / f'trees-{number}'
            builds.append(timed('--target', 'all', '--offline', '--dest', str(dest), root=root))
            no_ops.append(timed('--target', 'all', '--offline', '--dest', str(dest), root=root))
            marker.write_text(original + f'# bench {number}\n')  # every tree becomes outdated
            updates.append(timed('--target', 'all', '--offline', '--dest', str(dest), root=root))
            marker.write_text(original)
    check = min(timed('--target', 'all', '--check', '--offline') for _ in range(repeat))
    build, no_op, update = min(builds), min(no_ops), min(updates)
    total = build + check
    load_after = os.getloadavg()
    print(f'machine: {os.cpu_count()} CPUs; load average (1 min) {load_before[0]:.2f} before, '
          f'{load_after[0]:.2f} after')
    print(f'baseline  apply.py --list                         {baseline:6.2f} s')
    print(f'build     apply.py --target all (warm cache)       {build:6.2f} s  ({build / baseline:5.1f}x baseline)')
    print(f'check     apply.py --target all --check            {check:6.2f} s  ({check / baseline:5.1f}x baseline)')
    print(f'no-op     apply.py --target all (all up to date)   {no_op:6.2f} s  ({no_op / baseline:5.1f}x baseline)')
    print(f'update    apply.py --target all (overlay changed)  {update:6.2f} s  ({update / baseline:5.1f}x baseline, '
          f'{update / build:.2f}x build)')
    print(f'total     build + check                            {total:6.2f} s  ({total / GOAL_SECONDS:.0%} of the '
          f'{GOAL_SECONDS:.0f} s goal; best of {repeat})')


if __name__ == '__main__':
    main()
