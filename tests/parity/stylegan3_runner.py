"""Runs train.py jobs of one stylegan3 tree in one process and records what the parity tests compare.

    python stylegan3_runner.py JOBS.json OUT_DIR        (cwd: the tree -- the authors' shimmed tree or ganpatch's)

JOBS.json is a list of [name, argv, iterations] (the job loop and its JOB lines: parity_jobs.py). train.py's click
command runs with argv (in this process, as `--gpus=1` does) and stops after `iterations` minibatches: the runner sets the training loop's total_kimg and
kimg_per_tick to that many images (upstream's --kimg and --tick take whole kimg): the loop ends a tick after the
first minibatch and at the end, and saves its network snapshot there. It relies on upstream's structure only:
train.py's `main` and `subprocess_fn` -> `training.training_loop.training_loop(**kwargs)`, `training_stats.report`
and the snapshot pickle. For several runs in one process it resets training_stats' counters and lets train.py
set the multiprocessing start method again. It changes no arithmetic:

- `reports`: every training_stats.report(name, value) call, in order, as [name, [values...]] (the losses per
  sample, the penalties, the scores of each phase and accumulation round);
- the final G, D and G_ema, from the last network snapshot, saved as OUT_DIR/<name>.pt ({'G': state dict, ...});
- `error`: the message of a click error or SystemExit, else None.

Torch runs on one thread on both sides (bit-identity needs the same thread count).
"""
import glob
import os
import pickle
import sys

import parity_jobs  # beside this script (sys.path[0])

sys.path.insert(0, os.getcwd())

import click  # noqa: E402
import torch  # noqa: E402

import train  # noqa: E402
from torch_utils import training_stats  # noqa: E402
from training import training_loop  # noqa: E402

torch.set_num_threads(1)
record = {}
stop = {}


def trace_reports():
    report = training_stats.report

    def traced(name, value):
        values = torch.as_tensor(value).detach().double().flatten().tolist()
        record['reports'].append([name, values])
        return report(name, value)
    training_stats.report = traced


def stop_after_iterations():
    loop = training_loop.training_loop

    def limited(**kwargs):
        images = stop['iterations'] * kwargs['batch_size']
        # The loop is done when cur_nimg >= total_kimg * 1000: half an image below the count, against rounding.
        kwargs.update(total_kimg=(images - 0.5) / 1000, kimg_per_tick=(images - 0.5) / 1000)
        stop['run_dir'] = kwargs['run_dir']
        return loop(**kwargs)
    training_loop.training_loop = limited


def allow_another_start_method():
    """train.py sets the multiprocessing start method on every launch, which fails the second time in a process
    ("context has already been set"): every job after the first sets it with force=True."""
    set_start_method = torch.multiprocessing.set_start_method

    def again(method, force=False):
        set_start_method(method, force=True)
    torch.multiprocessing.set_start_method = again


def save_final_networks(path):
    snapshots = sorted(glob.glob(os.path.join(stop['run_dir'], 'network-snapshot-*.pkl')), key=os.path.getmtime)
    with open(snapshots[-1], 'rb') as f:
        snapshot = pickle.load(f)
    torch.save({name: snapshot[name].state_dict() for name in ('G', 'D', 'G_ema')}, path)


def reset_training_stats():
    """Empties training_stats' per-process counters, which allow one training run per process."""
    training_stats._sync_called = False
    training_stats._counters.clear()
    training_stats._cumulative.clear()


def run_job(name, argv, iterations, out_dir):
    reset_training_stats()
    record['reports'] = []
    stop.clear()
    stop['iterations'] = iterations
    stdout, stderr = sys.stdout, sys.stderr  # dnnlib.util.Logger replaces them for every run
    try:
        train.main.main(args=argv, standalone_mode=False)
    finally:
        sys.stdout, sys.stderr = stdout, stderr
    save_final_networks(os.path.join(out_dir, f'{name}.pt'))


def main():
    trace_reports()
    stop_after_iterations()
    allow_another_start_method()
    parity_jobs.run_jobs(record, run_job, (click.ClickException, SystemExit))


if __name__ == '__main__':
    main()
