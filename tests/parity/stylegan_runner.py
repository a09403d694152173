"""Runs the jobs of one StyleGAN tree in one process and records what the parity tests compare.

    python stylegan_runner.py JOBS.json OUT_DIR        (cwd: the tree -- the authors' (shimmed) tree or ganpatch's)

Works for both StyleGAN targets (stylegan3 and stylegan2-ada), whose train.py share upstream's structure. JOBS.json
is a list of [name, argv, iterations, options] (the job loop and its JOB lines: parity_jobs.py): the click command
`options['command']` ('train:main' by default; 'gradnoise_eval:main' or 'gradnoise_train:main' for the
gradient-noise measurements) runs with argv in this process, and every training loop stops after `iterations`
minibatches: the runner sets the loop's total_kimg and kimg_per_tick to that many images (upstream's --kimg takes
whole kimg): the loop ends a tick after the first minibatch and at the end, and saves its network snapshot there.
It relies on upstream's structure only: the click commands, `training.training_loop.training_loop(**kwargs)` (and
the authors' `training.gradnoise_training_loop.dry_training_loop`), `StyleGAN2Loss.accumulate_gradients`,
`training_stats.report` and the snapshot pickle. For several runs in one process it resets training_stats'
counters and lets the scripts set the multiprocessing start method again. It changes no arithmetic. It records:

- `reports`: every training_stats.report(name, value) call, in order, as [name, [values...]] (the losses per
  sample, the penalties, the scores of each phase and accumulation round);
- the final G, D and G_ema, from the last network snapshot of a training run, saved as OUT_DIR/<name>.pt;
- with options['trace'] = 'optimizer': `calls`, every extrapolation ('E') and update ('U') of an extragradient
  optimizer as [network, 'E' or 'U', the gradient in .grad at that moment: '<phase>:<minibatch>' or '-' for none];
- with options['trace'] = 'minibatches': `minibatches`, every gradient evaluation as [phase, minibatch], and
  ['pass', 'full' or 'stochastic'] where a gradient-noise pass starts;
- `error`: the message of a click error or SystemExit with a code, else None.

An argument --option=PATTERN with a '*' is replaced by the last file that matches the glob pattern when the job
starts (the snapshot of an earlier job of the same side, whose run directory names differ between the sides).

Minibatches are named by their latents: 'z<k>' for the k-th distinct gen_z chunk of the job (counted from 0).
With options['bmc_draws_seed'] = s, the authors' GAN-BMC loss gets the increments that ganpatch's --bmc=G draws
with --seed=s (`ganpatch.bmc.BrownianSampler(seed=s)`): their loss drew b1 ~ N(0, 0.01^2) and b2 ~ N(1, 0.05^2)
with torch.normal from torch's global generator, which the runner answers from that sampler instead (so their
other random numbers are not shifted either).

With --gpus=2 the script spawns its processes, which import this file as `__mp_main__`: they install the same
hooks, take the iteration count from $PARITY_ITERATIONS, and rank 0 writes its reports to $PARITY_REPORTS.
Torch runs on one thread on both sides (bit-identity needs the same thread count).
"""
import glob
import hashlib
import importlib
import json
import os
import pickle
import sys

import parity_jobs  # beside this script (sys.path[0])

sys.path.insert(0, os.getcwd())

import click  # noqa: E402
import torch  # noqa: E402

from torch_utils import training_stats  # noqa: E402

torch.set_num_threads(1)
record = {}
state = {}  # per job: minibatch names, optimizer names, the last gradient of each network


def trace_reports():
    report = training_stats.report

    def traced(name, value):
        values = torch.as_tensor(value).detach().double().flatten().tolist()
        record.setdefault('reports', []).append([name, values])
        return report(name, value)
    training_stats.report = traced


def minibatch_name(gen_z):
    key = hashlib.sha1(gen_z.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    names = state.setdefault('minibatches', {})
    return names.setdefault(key, f'z{len(names)}')


def trace_gradients(loss_class):
    """Every accumulate_gradients call: the phase's minibatch becomes the network's last gradient."""
    accumulate = loss_class.accumulate_gradients

    def traced(self, *args, **kwargs):
        phase, gen_z = kwargs['phase'], kwargs['gen_z']
        name = minibatch_name(gen_z)
        state.setdefault('last_gradient', {})[phase[0]] = f'{phase}:{name}'
        if 'minibatches' in record:
            record['minibatches'].append([phase, name])
        return accumulate(self, *args, **kwargs)
    loss_class.accumulate_gradients = traced


def trace_extragradient(base, extrapolate_name):
    """Each extrapolation and update of the extragradient optimizers derived from `base`; the optimizers are named
    G and D in the order the training loop builds them (G first in both trees)."""
    init, extrapolate, step = base.__init__, getattr(base, extrapolate_name), base.step

    def traced_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        names = state.setdefault('optimizers', {})
        names[id(self)] = 'GD'[len(names)]

    def traced(kind, method):
        def call(self, *args, **kwargs):
            if 'calls' in record:
                network = state['optimizers'][id(self)]
                has_grad = any(p.grad is not None for group in self.param_groups for p in group['params'])
                record['calls'].append([network, kind, state.get('last_gradient', {}).get(network, '-') if has_grad else '-'])
            return method(self, *args, **kwargs)
        return call
    base.__init__ = traced_init
    setattr(base, extrapolate_name, traced('E', extrapolate))
    base.step = traced('U', step)


def stop_after_iterations(module, name):
    loop = getattr(module, name)

    def limited(**kwargs):
        images = int(os.environ['PARITY_ITERATIONS']) * kwargs['batch_size']
        # The loop is done when cur_nimg >= total_kimg * 1000: half an image below the count, against rounding.
        kwargs.update(total_kimg=(images - 0.5) / 1000, kimg_per_tick=(images - 0.5) / 1000)
        if 'mode' in kwargs and 'minibatches' in record:  # the authors' gradient-noise passes
            record['minibatches'].append(['pass', kwargs['mode']])
        result = loop(**kwargs)
        if __name__ == '__mp_main__' and kwargs.get('rank', 0) == 0:  # a spawned process: rank 0 hands its reports over
            with open(os.environ['PARITY_REPORTS'], 'w') as f:
                json.dump(record.get('reports', []), f)
        return result
    setattr(module, name, limited)


def mark_gradnoise_passes():
    """ganpatch's measurement runs both passes in one call: mark where each starts."""
    import ganpatch.gradnoise
    measure, finish = ganpatch.gradnoise.measure_gradient_noise, ganpatch.gradnoise.GradientNoiseMeter.finish_full

    def measured(meter, compute_gradient, num_batches, mode='both', log=print):
        if 'minibatches' in record and mode in ('full', 'both'):
            record['minibatches'].append(['pass', 'full'])
        return measure(meter, compute_gradient, num_batches, mode=mode, log=log)

    def finished(self):
        result = finish(self)
        if 'minibatches' in record:
            record['minibatches'].append(['pass', 'stochastic'])
        return result
    ganpatch.gradnoise.measure_gradient_noise = measured
    ganpatch.gradnoise.GradientNoiseMeter.finish_full = finished


def inject_bmc_draws(seed):
    """torch.normal(mean, std) of the GAN-BMC loss answered by ganpatch's BrownianSampler(seed=seed): b1 at mean 0,
    then b2 at mean 1, one pair per accumulation round (the order of their expression)."""
    import ganpatch.bmc
    sampler = ganpatch.bmc.BrownianSampler(seed=seed)
    pending = []

    def normal(mean, std, *args, **kwargs):  # their calls: normal(tensor(0.0), tensor(0.01)), normal(tensor(1.0), tensor(0.05))
        if float(mean) == 0.0:
            assert not pending, 'b1 drawn twice in a row'
            pending.extend(sampler.sample(1, torch.device('cpu')))
            return pending.pop(0)
        assert float(mean) == 1.0 and len(pending) == 1, 'b2 without its b1'
        return pending.pop(0)
    torch.normal = normal


def install_hooks():
    parity_jobs.install_seaborn_stand_in()  # their gradnoise_eval.py imports seaborn
    trace_reports()
    from training import loss, training_loop
    trace_gradients(loss.StyleGAN2Loss)
    stop_after_iterations(training_loop, 'training_loop')
    if os.path.isfile('training/gradnoise_training_loop.py'):  # the authors' stylegan3 tree
        from training import gradnoise_loss, gradnoise_training_loop
        trace_gradients(gradnoise_loss.StyleGAN2Loss)
        stop_after_iterations(gradnoise_training_loop, 'dry_training_loop')
    if os.path.isfile('training/optim.py'):  # the authors' optimizers
        from training import optim
        trace_extragradient(optim.Extragradient, 'extrapolation')
    if os.path.isdir('ganpatch'):  # ganpatch's tree (and the compat-only tree the stylegan2-ada parity runs theirs in)
        import ganpatch.optim
        trace_extragradient(ganpatch.optim.Extragradient, 'extrapolate')
        mark_gradnoise_passes()


def allow_another_start_method():
    """The scripts set the multiprocessing start method on every launch, which fails the second time in a process
    ("context has already been set"): every job after the first sets it with force=True."""
    set_start_method = torch.multiprocessing.set_start_method

    def again(method, force=False):
        set_start_method(method, force=True)
    torch.multiprocessing.set_start_method = again


def save_final_networks(outdir, path):
    """The G, D and G_ema of the last snapshot in the run directory under `outdir` (written by this process or,
    with several processes, by rank 0)."""
    snapshots = sorted(glob.glob(os.path.join(outdir, '*', 'network-snapshot-*.pkl')), key=os.path.getmtime)
    with open(snapshots[-1], 'rb') as f:
        snapshot = pickle.load(f)
    torch.save({name: snapshot[name].state_dict() for name in ('G', 'D', 'G_ema')}, path)


def reset_training_stats():
    """Empties training_stats' per-process counters, which allow one training run per process."""
    training_stats._sync_called = False
    training_stats._counters.clear()
    training_stats._cumulative.clear()


def expand(arg):
    """--option=PATTERN with a glob pattern: the last match (e.g. the snapshot an earlier job of this side wrote)."""
    if '*' not in arg:
        return arg
    option, pattern = arg.split('=', 1)
    matches = sorted(glob.glob(pattern))
    assert matches, f'nothing matches {pattern}'
    return f'{option}={matches[-1]}'


def run_job(name, argv, iterations, options, out_dir):
    argv = [expand(arg) for arg in argv]
    reset_training_stats()
    state.clear()
    record['reports'] = []
    for trace in options.get('trace', []):
        record[trace] = []
    os.environ['PARITY_ITERATIONS'] = str(iterations)
    os.environ['PARITY_REPORTS'] = reports_file = os.path.join(out_dir, f'{name}.reports.json')
    normal = torch.normal
    if 'bmc_draws_seed' in options:
        inject_bmc_draws(options['bmc_draws_seed'])
    module, command = options.get('command', 'train:main').split(':')
    stdout, stderr = sys.stdout, sys.stderr  # dnnlib.util.Logger replaces them for every run
    try:
        getattr(importlib.import_module(module), command).main(args=argv, standalone_mode=False)
    except SystemExit as exc:  # the authors' gradnoise_eval.py ends --mode=both with exit()
        if exc.code not in (None, 0):
            raise
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        torch.normal = normal
    if os.path.isfile(reports_file):  # reports of rank 0 of spawned processes
        with open(reports_file) as f:
            record['reports'] = json.load(f)
    if module == 'train':
        outdir = next(arg.split('=', 1)[1] for arg in argv if arg.startswith('--outdir='))
        save_final_networks(outdir, os.path.join(out_dir, f'{name}.pt'))


if __name__ == '__mp_main__':  # a process that a job spawned
    install_hooks()

if __name__ == '__main__':
    install_hooks()
    allow_another_start_method()
    parity_jobs.run_jobs(record, run_job, (click.ClickException, SystemExit))
