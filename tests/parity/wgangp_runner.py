"""Runs wgangp.py jobs of one pytorch-gan-collections tree in one process and records what the parity tests compare.

    python wgangp_runner.py JOBS.json OUT_DIR        (cwd: the tree -- the authors' shimmed tree or ganpatch's)

JOBS.json is a list of [name, argv] (the job loop and its JOB lines: parity_jobs.py). For each job absl parses
argv (after resetting every flag), then wgangp.main runs, as app.run would. An argument holding `*` is expanded
by glob.glob to its one match (a job can name the checkpoint of an earlier job, in the run directory the script
named). Torch runs on one thread: bit-identity needs the same thread count on both sides, and on a loaded machine
more threads are slower. The tracing wraps callables of the unmodified script from outside, the same way in both
trees, and changes no arithmetic:

- `losses`: every value the loss function returns, in call order: ['D', loss] for D's loss (two arguments),
  ['G', loss] for G's (one argument), and ['GP', penalty] for each gradient penalty;
- `calls`: every optimizer call, in order: {'net': 'D' | 'G', 'call': 'update' | 'extrapolate', 'batch': the
  minibatch its gradient came from, 'lr': the learning rate it used}. D's minibatch is the index (from 1) of the
  last real minibatch drawn; G's is the index (from 1) of its last loss evaluation (each draws fresh latents);
- after training, the final state dicts of both networks, saved as OUT_DIR/<name>.pt ({'net_G': ..., 'net_D': ...});
- `error`: the message of a flag error or SystemExit, else None.

The authors' code imports seaborn (for its histogram plots) and pytorch_gan_metrics (for --record) at module
level; where they are not installed, the runner puts import-only stand-ins in their place: these runs never pass
--record, and the stand-in plots draw nothing (the parity tests compare the saved statistics, not the figures).
"""
import glob
import os
import sys
import types

import parity_jobs  # beside this script (sys.path[0])

sys.path.insert(0, os.getcwd())


def install_import_stand_ins():
    """Empty modules for the authors' top-level imports that these runs never use (see the module docstring)."""
    parity_jobs.install_seaborn_stand_in()
    try:
        import pytorch_gan_metrics  # noqa: F401
    except ImportError:
        metrics = types.ModuleType('pytorch_gan_metrics')

        def unavailable(*args, **kwargs):
            raise SystemExit('pytorch_gan_metrics is not installed (the parity runs pass --norecord)')
        metrics.get_inception_score_and_fid = unavailable
        sys.modules['pytorch_gan_metrics'] = metrics


install_import_stand_ins()

import torch  # noqa: E402
from absl import flags  # noqa: E402

import wgangp  # noqa: E402

torch.set_num_threads(1)
FLAGS = flags.FLAGS
record = {}
nets = {}
counters = {'real': 0, 'G': 0}


def trace_networks():
    """Keeps the networks the script builds, to find which one an optimizer trains and to save them."""
    for label, models in [('G', wgangp.net_G_models), ('D', wgangp.net_D_models)]:
        for arch, cls in list(models.items()):
            def build(*args, cls=cls, label=label):
                nets[label] = cls(*args)
                return nets[label]
            models[arch] = build


def trace_losses():
    for name, cls in list(wgangp.loss_fns.items()):
        def build(cls=cls):
            loss_fn = cls()

            def traced(*outputs):
                loss = loss_fn(*outputs)
                network = 'D' if len(outputs) == 2 else 'G'
                if network == 'G':
                    counters['G'] += 1
                record['losses'].append([network, loss.item()])
                return loss
            return traced
        wgangp.loss_fns[name] = build

    penalty = wgangp.cacl_gradient_penalty

    def traced_penalty(*args):
        loss_gp = penalty(*args)
        record['losses'].append(['GP', loss_gp.item()])
        return loss_gp
    wgangp.cacl_gradient_penalty = traced_penalty

    infiniteloop = wgangp.infiniteloop

    def traced_loop(dataloader):
        for images in infiniteloop(dataloader):
            counters['real'] += 1
            yield images
    wgangp.infiniteloop = traced_loop


def trace_optimizers():
    """Wraps step() and the extrapolation method (theirs: extrapolation(), ganpatch's: extrapolate()) of every
    optimizer as it is built, as bound methods (LambdaLR re-wraps step() through its __func__)."""
    init = torch.optim.Optimizer.__init__

    def traced_init(optimizer, *args, **kwargs):
        init(optimizer, *args, **kwargs)
        for method, call in [('step', 'update'), ('extrapolation', 'extrapolate'), ('extrapolate', 'extrapolate')]:
            if hasattr(optimizer, method):
                wrap(optimizer, method, call)
    torch.optim.Optimizer.__init__ = traced_init


def wrap(optimizer, method, call):
    original = getattr(optimizer, method)

    def traced(self, *args, **kwargs):
        first = self.param_groups[0]['params'][0]
        network = next(label for label, net in nets.items() if any(first is p for p in net.parameters()))
        batch = counters['real'] if network == 'D' else counters['G']
        record['calls'].append({'net': network, 'call': call, 'batch': batch, 'lr': self.param_groups[0]['lr']})
        return original(*args, **kwargs)
    setattr(optimizer, method, types.MethodType(traced, optimizer))


def expand(argument):
    """`argument`, or the one path its glob pattern matches."""
    if '*' not in argument:
        return argument
    option, _, pattern = argument.rpartition('=')
    matches = glob.glob(pattern)
    if len(matches) != 1:
        raise SystemExit(f'{pattern} matches {len(matches)} paths, not one')
    return f'{option}={matches[0]}' if option else matches[0]


def run_job(name, argv, out_dir):
    record.update(losses=[], calls=[])
    nets.clear()
    counters.update(real=0, G=0)
    FLAGS.unparse_flags()
    FLAGS(['wgangp.py', *map(expand, argv)])
    wgangp.main(['wgangp.py'])
    if not FLAGS.evaluate:
        torch.save({f'net_{label}': net.state_dict() for label, net in nets.items()},
                   os.path.join(out_dir, f'{name}.pt'))


def main():
    trace_networks()
    trace_losses()
    trace_optimizers()
    parity_jobs.run_jobs(record, run_job, (flags.Error, SystemExit))


if __name__ == '__main__':
    main()
