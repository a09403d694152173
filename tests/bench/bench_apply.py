"""Wall time of `apply.py --target all` (warm cache, fresh destinations) and of `--check` for all.

Goal (issue 2): both together in at most 10 s on a 2-core machine. Run from the repository root:

    python tests/bench/bench_apply.py [--repeat 3]

The cache must hold the four upstreams (run `apply.py --target all --mirror DIR` once). The
baseline is `apply.py --list` (interpreter start-up, lock parsing, git lookup), measured in the
same run, so the ratios say how much of the time is the actual work.
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GOAL_SECONDS = 10.0


def timed(*args: str) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(REPO_ROOT / 'apply.py'), *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f'apply.py {" ".join(args)} failed ({result.returncode}):\n{result.stderr}')
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeat', type=int, default=3, help='runs per measurement; the best is reported')
    repeat = parser.parse_args().repeat
    timed('--target', 'all', '--check', '--offline')  # fails early when the cache is cold
    baseline = min(timed('--list') for _ in range(repeat))
    builds = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix='ganpatch-bench-') as scratch:
            builds.append(timed('--target', 'all', '--offline', '--dest', scratch))
    build = min(builds)
    check = min(timed('--target', 'all', '--check', '--offline') for _ in range(repeat))
    total = build + check
    print(f'baseline  apply.py --list                    {baseline:6.2f} s')
    print(f'build     apply.py --target all (warm cache)  {build:6.2f} s  ({build / baseline:5.1f}x baseline)')
    print(f'check     apply.py --target all --check       {check:6.2f} s  ({check / baseline:5.1f}x baseline)')
    print(f'total                                         {total:6.2f} s  ({total / GOAL_SECONDS:.0%} of the '
          f'{GOAL_SECONDS:.0f} s goal; best of {repeat})')


if __name__ == '__main__':
    main()
