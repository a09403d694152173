"""The gradient-noise measurement behind each StyleGAN tree's gradnoise_train.py (no parameter updates).

This is the histogram experiment of Gorbunov et al., "Clipped Stochastic Methods for Variational
Inequalities with Heavy-Tailed Noise" (NeurIPS 2022, arXiv 2206.01095): at the resumed checkpoint, pass 1
averages the minibatch gradient of every training phase over --kimg thousand images into g_bar, and pass 2
records ||g_b - g_bar||_2 for fresh minibatches b. The outputs (histograms, norms, full gradients,
noise_stats.json) are written by ganpatch.gradnoise into a numbered run directory under --outdir.

- The networks come from the --resume pickle itself, so architecture flags cannot silently load
  mismatched weights; given flags that disagree with the pickle are reported as warnings. The pickle is
  loaded (and checked) before anything is written, --dry-run included.
- The augmentation pipe (--aug), by default as the clipped-methods authors' measurement ran it: a fresh
  pipe at p = 0 (their gradnoise_eval.py built a new pipe from train.py's --aug=ada settings, whose p starts
  at 0 and never moves without training steps). On a checkpoint trained with ADA up to p = 0.8, the pickle's
  own pipe gives a D noise mean of 0.472 against 0.318 with theirs, so paper-style histograms need this
  default; --aug=resume measures with the pickle's pipe and p, --aug=fixed with a fresh pipe at --p,
  --aug=noaug without augmentation.
- The phases are those the training loop runs (Gmain, Greg when the pickle's config has path-length
  regularization, Dmain, Dreg when --gamma > 0), each measured on its own, never pooled. Regularization
  phases are measured without the lazy-regularization gain.
- Every minibatch gradient is the mean over the whole --batch, whatever --batch-gpu, averaged across
  --gpus processes, and is counted once per completed minibatch.
- Launched by torchrun or srun (several nodes), it works as train.py does (ganpatch.stylegan.launch):
  --gpus is the world size, every process measures on its local rank's device, and global rank 0 writes.
- Outputs: ganpatch.gradnoise's files per phase (<phase>_full_grad.pth, <phase>_stoch_noise.npy, the
  histograms, noise_stats.json), and the authors' names and formats for the phases theirs measured (their
  Greg/Dreg gradients never reached their files): generator_full_grad.pth / generator_stoch_noise.npy for
  Gmain, discriminator_... for Dmain, a bare flat tensor and a float64 array.
- Nothing is updated: no optimizer step, no G_ema, no ADA; the networks' running statistics (w_avg, the
  StyleGAN3 magnitude EMAs) and the loss's pl_mean stay as they are (pl_mean, which pickles do not store,
  is first estimated as the mean path length over a few minibatches).

What differs between the trees (the loss class, how it calls the networks, the names of the configs) comes
from the `tree` object each gradnoise_train.py passes to `command`:

    tree.configs                        the --cfg choices of the tree's train.py
    tree.configs_of(G, D)               the configs that build networks like the pickle's
    tree.loss_kwargs(G, D)              loss options train.py sets for such networks (with pl_weight, without r1_gamma)
    tree.make_loss(device, G, D, augment_pipe, **loss_kwargs)
                                        a loss object with pl_mean / pl_decay / pl_weight / r1_gamma
    tree.accumulate(loss, phase, real_img, real_c, gen_z, gen_c, gain)
                                        one accumulation round, leaving the networks' statistics as they were
"""

import copy
import json
import math
import os
import tempfile
import warnings

import click
import numpy as np
import torch

import ganpatch.gradnoise
from ganpatch.stylegan import launch
from ganpatch.stylegan.options import KIMG, NONNEGATIVE_FLOAT, FiniteFloatRange, device_option, given_options, load_network_pickle, resolve_device

PHASE_MODULES = {'Gmain': 'G', 'Greg': 'G', 'Dmain': 'D', 'Dreg': 'D'} # The training loop's phases, kept apart.
AUTHORS_FILES = {'Gmain': ('generator_full_grad.pth', 'generator_stoch_noise.npy'), # The clipped-methods authors'
                 'Dmain': ('discriminator_full_grad.pth', 'discriminator_stoch_noise.npy')} # file names (StyleGAN).
AUGMENTATION_MODES = ('ada', 'fixed', 'noaug', 'resume')
# The augmentation pipe both trees' train.py build by default (stylegan2-ada: --augpipe=bgc; stylegan3: its only one).
DEFAULT_AUGMENT_KWARGS = dict(class_name='training.augment.AugmentPipe', xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1,
    xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)


def architecture_mismatches(tree, opts, given, G, D):
    """One message per architecture flag given on the command line that disagrees with the pickled networks."""
    found = {
        'cbase':       D.init_kwargs.channel_base,
        'cmax':        D.init_kwargs.channel_max,
        'map_depth':   G.init_kwargs.mapping_kwargs.num_layers,
        'mbstd_group': D.init_kwargs.epilogue_kwargs.mbstd_group_size,
    }
    messages = [f'--{name.replace("_", "-")}={opts[name]} disagrees with the pickle ({value}); using the pickle'
                for name, value in found.items() if name in given and opts[name] != value]
    configs = tree.configs_of(G, D)
    if 'cfg' in given and opts['cfg'] not in configs:
        messages.insert(0, f'--cfg={opts["cfg"]} disagrees with the pickle ({"|".join(configs)}); using the pickle')
    return messages


def phases_of(loss_kwargs, r1_gamma):
    """The phases measured for networks with these loss options."""
    return [phase for phase in PHASE_MODULES
            if not (phase == 'Greg' and loss_kwargs['pl_weight'] == 0) and not (phase == 'Dreg' and r1_gamma == 0)]


def augment_pipe_for(aug, p, pickled_pipe, default_kwargs=DEFAULT_AUGMENT_KWARGS):
    """The augmentation pipe of the measurement, on the CPU (None for none).

    aug 'resume': `pickled_pipe` (a copy) with its own p; 'ada' / 'fixed': a fresh pipe at p (0 for ada, as the
    clipped-methods authors' measurement ran it), built like the pickled one when there is one (same class and
    constructor arguments, so the same transformations), else from `default_kwargs` (train.py's default
    pipe); 'noaug': None.
    """
    if aug == 'noaug':
        return None
    if aug == 'resume':
        return None if pickled_pipe is None else copy.deepcopy(pickled_pipe)
    if pickled_pipe is not None:
        pipe = type(pickled_pipe)(*pickled_pipe.init_args, **pickled_pipe.init_kwargs)
    else:
        import dnnlib # The tree's.
        pipe = dnnlib.util.construct_class_by_name(**default_kwargs)
    pipe.p.copy_(torch.as_tensor(p))
    return pipe


def describe_augmentation(aug, p):
    return {'ada': 'a fresh pipe at p=0 (--aug=ada)', 'fixed': f'a fresh pipe at p={p} (--aug=fixed)', 'noaug': 'none (--aug=noaug)',
            'resume': 'the pipe and p of the --resume pickle (--aug=resume)'}[aug]


class FrozenPathLengthMean:
    """Wraps the tree's accumulation so that the loss's pl_mean stays fixed, and estimates it first."""

    def __init__(self, tree, loss):
        self.tree = tree
        self.loss = loss

    def accumulate(self, **kwargs):
        pl_mean = self.loss.pl_mean.clone()
        self.tree.accumulate(self.loss, **kwargs)
        self.loss.pl_mean.copy_(pl_mean)

    def estimate_pl_mean(self, G, minibatches):
        """Set pl_mean to the mean path length over the given minibatches (a running mean, no gradient kept)."""
        pl_decay = self.loss.pl_decay
        G.requires_grad_(True)
        for k, (real_img, real_c, gen_z, gen_c) in enumerate(minibatches):
            self.loss.pl_decay = 1 / (k + 1)
            self.tree.accumulate(self.loss, phase='Greg', real_img=real_img[0], real_c=real_c[0], gen_z=gen_z[0], gen_c=gen_c[0], gain=0)
        G.requires_grad_(False).zero_grad(set_to_none=True)
        self.loss.pl_decay = pl_decay


def measure(rank, tree, c, temp_dir):
    """Run both passes in one process (one per GPU); rank 0 writes the results."""
    import dnnlib
    from torch_utils import misc
    from torch_utils import training_stats
    from torch_utils.ops import conv2d_gradfix
    from torch_utils.ops import grid_sample_gradfix

    sync_device = launch.init_distributed(rank, c.num_gpus, c.device_type, temp_dir)
    device = launch.process_device(rank, c.device_type)
    training_stats.init_multiprocessing(rank=rank, sync_device=sync_device)
    np.random.seed(c.random_seed * c.num_gpus + rank)
    torch.manual_seed(c.random_seed * c.num_gpus + rank)
    conv2d_gradfix.enabled = True
    grid_sample_gradfix.enabled = True
    log = print if rank == 0 else (lambda *args, **kwargs: None)

    # Networks, straight from the pickle.
    resume_data = load_network_pickle(c.resume_pkl)
    G = copy.deepcopy(resume_data['G']).train().requires_grad_(False).to(device)
    D = copy.deepcopy(resume_data['D']).train().requires_grad_(False).to(device)
    augment_pipe = augment_pipe_for(c.aug, c.augment_p, resume_data.get('augment_pipe'))
    if augment_pipe is not None:
        augment_pipe = augment_pipe.train().requires_grad_(False).to(device)
    modules = dict(G=G, D=D)

    # Data.
    training_set = dnnlib.util.construct_class_by_name(**c.training_set_kwargs)
    sampler = misc.InfiniteSampler(dataset=training_set, rank=rank, num_replicas=c.num_gpus, seed=c.random_seed)
    iterator = iter(torch.utils.data.DataLoader(dataset=training_set, sampler=sampler, batch_size=c.batch_size // c.num_gpus, **c.data_loader_kwargs))

    def next_minibatch():
        real_img, real_c = next(iterator)
        real_img = (real_img.to(device).to(torch.float32) / 127.5 - 1).split(c.batch_gpu)
        real_c = real_c.to(device).split(c.batch_gpu)
        gen_z = torch.randn([c.batch_size // c.num_gpus, G.z_dim], device=device).split(c.batch_gpu)
        gen_c = [training_set.get_label(np.random.randint(len(training_set))) for _ in range(c.batch_size // c.num_gpus)]
        gen_c = torch.from_numpy(np.stack(gen_c)).to(device).split(c.batch_gpu)
        return real_img, real_c, gen_z, gen_c

    def all_reduce(flat):
        torch.distributed.all_reduce(flat)
        flat /= c.num_gpus

    loss = FrozenPathLengthMean(tree, tree.make_loss(device=device, G=G, D=D, augment_pipe=augment_pipe, **c.loss_kwargs))
    if 'Greg' in c.phases:
        log(f'Estimating pl_mean over {c.pl_mean_batches} minibatches...')
        loss.estimate_pl_mean(G, (next_minibatch() for _ in range(c.pl_mean_batches)))
        if c.num_gpus > 1:
            all_reduce(loss.loss.pl_mean) # Same penalty on every rank.

    def compute_gradient(phase):
        module = modules[PHASE_MODULES[phase]]
        module.requires_grad_(True)
        real_img, real_c, gen_z, gen_c = next_minibatch()
        for chunk_img, chunk_c, chunk_z, chunk_gen_c in zip(real_img, real_c, gen_z, gen_c):
            loss.accumulate(phase=phase, real_img=chunk_img, real_c=chunk_c, gen_z=chunk_z, gen_c=chunk_gen_c,
                gain=1 / len(real_img)) # Mean over the whole minibatch, whatever --batch-gpu.
        module.requires_grad_(False)

    meter = ganpatch.gradnoise.GradientNoiseMeter({phase: list(modules[PHASE_MODULES[phase]].parameters()) for phase in c.phases},
        all_reduce=all_reduce if c.num_gpus > 1 else None)
    if c.mode == 'stochastic':
        meter.load_full(c.full_grad_dir)
    ganpatch.gradnoise.measure_gradient_noise(meter, compute_gradient, c.num_batches, mode=c.mode, log=log)
    if rank == 0:
        stats = meter.save(c.run_dir)
        meter.save_authors_files(c.run_dir, AUTHORS_FILES)
        if stats:
            print(json.dumps(stats, indent=2))
        print(f'Results in {c.run_dir}')


def command(tree):
    """The click command of gradnoise_train.py for `tree` (see the module docstring)."""

    @click.command()
    @click.pass_context

    # As for train.py.
    @click.option('--outdir',       help='Where to save the results', metavar='DIR',                required=True)
    @click.option('--cfg',          help='Base configuration (checked against the pickle)',         type=click.Choice(list(tree.configs)))
    @click.option('--data',         help='Training data', metavar='[ZIP|DIR]',                      type=str, required=True)
    @click.option('--gpus',         help='Number of GPUs (or CPU processes) to use  [required unless torchrun or srun]', metavar='INT', type=click.IntRange(min=1))
    @click.option('--batch',        help='Total batch size', metavar='INT',                         type=click.IntRange(min=1), required=True)
    @click.option('--gamma',        help='R1 regularization weight', metavar='FLOAT',               type=NONNEGATIVE_FLOAT, required=True)
    @click.option('--resume',       help='Network pickle to measure (loading runs code from it: trusted files only)', metavar='[PATH|URL]', type=str, required=True)
    @click.option('--aug',          help='Augmentation: a fresh pipe at p=0 (ada), at --p (fixed), none, or the pickle\'s pipe and p (resume)',
                                                                                                    type=click.Choice(list(AUGMENTATION_MODES)), default='ada', show_default=True)
    @click.option('--p',            help='Probability for --aug=fixed', metavar='FLOAT',            type=FiniteFloatRange(min=0, max=1), default=0.2, show_default=True)

    # Measurement.
    @click.option('--mode',         help='Pass 1 (full), pass 2 (stochastic) or both',              type=click.Choice(list(ganpatch.gradnoise.MODES)), default='both', show_default=True)
    @click.option('--full-grad',    help='Run dir of a --mode=full run, for --mode=stochastic', metavar='DIR', type=str)
    @click.option('--kimg',         help='Images per pass, in thousands', metavar='KIMG',           type=KIMG, default=1000, show_default=True)
    @click.option('--batch-gpu',    help='Limit batch size per GPU', metavar='INT',                 type=click.IntRange(min=1))
    @click.option('--pl-mean-batches', help='Minibatches to estimate pl_mean from', metavar='INT',   type=click.IntRange(min=1), default=16, show_default=True)

    # Architecture flags of train.py: only compared with the pickle.
    @click.option('--cbase',        help='Capacity multiplier (checked)', metavar='INT',            type=click.IntRange(min=1))
    @click.option('--cmax',         help='Max. feature maps (checked)', metavar='INT',              type=click.IntRange(min=1))
    @click.option('--map-depth',    help='Mapping network depth (checked)', metavar='INT',          type=click.IntRange(min=1))
    @click.option('--mbstd-group',  help='Minibatch std group size (checked)', metavar='INT',       type=click.IntRange(min=1))

    # Misc.
    @click.option('--cond',         help='Use dataset labels', metavar='BOOL',                      type=bool, default=False, show_default=True)
    @click.option('--mirror',       help='Enable dataset x-flips', metavar='BOOL',                  type=bool, default=False, show_default=True)
    @click.option('--metrics',      help='Accepted for train.py compatibility; must be none',       type=str, default='none', show_default=True)
    @click.option('--desc',         help='String to include in result dir name', metavar='STR',     type=str)
    @click.option('--seed',         help='Random seed', metavar='INT',                              type=click.IntRange(min=0), default=0, show_default=True)
    @click.option('--workers',      help='DataLoader worker processes', metavar='INT',              type=click.IntRange(min=1), default=3, show_default=True)
    @device_option
    @click.option('-n','--dry-run', help='Check the options and the pickle, print them and exit',   is_flag=True)
    def main(ctx, **kwargs):
        """Measure the gradient noise of a StyleGAN checkpoint (no parameter updates).

        Examples:

        \b
        # Both passes over 1000 kimg each, at a snapshot of a clipped-SGD run.
        python gradnoise_train.py --outdir=./eval_runs --cfg=stylegan2 --data=~/datasets/ffhq-128x128.zip \\
            --gpus=1 --batch=32 --gamma=0.1024 --cbase=16384 --kimg=1000 --mode=both --metrics=none \\
            --desc=eval --resume=./logs/<RUN DIR>/network-snapshot-006000.pkl
        """
        run(tree, kwargs, given=given_options(ctx))

    return main


def run(tree, opts, given):
    """Check everything, print the plan, then measure (unless --dry-run)."""
    import dnnlib
    opts = dnnlib.EasyDict(opts)
    job, num_gpus = launch.resolve(opts.gpus, opts.device) # A torchrun or srun launch, with --gpus checked against it.
    c = dnnlib.EasyDict(num_gpus=num_gpus, batch_size=opts.batch, batch_gpu=opts.batch_gpu or opts.batch // num_gpus,
        mode=opts.mode, full_grad_dir=opts.full_grad, resume_pkl=opts.resume, random_seed=opts.seed, pl_mean_batches=opts.pl_mean_batches,
        aug=opts.aug, augment_p={'ada': 0.0, 'fixed': opts.p}.get(opts.aug))
    c.device_type = resolve_device(opts.device)
    c.num_batches = math.ceil(opts.kimg * 1000 / opts.batch)
    c.data_loader_kwargs = dnnlib.EasyDict(pin_memory=(c.device_type == 'cuda'), prefetch_factor=2, num_workers=opts.workers)

    # Sanity checks, before any work.
    if c.batch_size % c.num_gpus != 0:
        raise click.ClickException('--batch must be a multiple of --gpus')
    if c.batch_size % (c.num_gpus * c.batch_gpu) != 0:
        raise click.ClickException('--batch must be a multiple of --gpus times --batch-gpu')
    if opts.metrics.lower() not in ['none', '']:
        raise click.ClickException('--metrics must be none: gradnoise_train.py computes no quality metrics')
    if (opts.mode == 'stochastic') != (opts.full_grad is not None):
        raise click.ClickException('--full-grad DIR (a --mode=full run) is required with --mode=stochastic, and only then')
    if opts.full_grad is not None and not os.path.isdir(opts.full_grad):
        raise click.ClickException(f'--full-grad: no such directory: {opts.full_grad}')
    if 'p' in given and opts.aug != 'fixed':
        raise click.ClickException('--p requires --aug=fixed')

    # Networks: the pickle decides the architecture.
    print(f'Loading networks from "{opts.resume}"...')
    resume_data = load_network_pickle(opts.resume)
    G, D = resume_data['G'], resume_data['D']
    for message in architecture_mismatches(tree, opts, given, G, D):
        warnings.warn(message)
    if c.batch_gpu < D.init_kwargs.epilogue_kwargs.mbstd_group_size:
        raise click.ClickException(f'--batch-gpu ({c.batch_gpu}) cannot be smaller than the pickle\'s minibatch std group ({D.init_kwargs.epilogue_kwargs.mbstd_group_size})')

    # Dataset, checked against the networks.
    c.training_set_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=opts.data, use_labels=opts.cond, max_size=None, xflip=opts.mirror, random_seed=opts.seed)
    try:
        training_set = dnnlib.util.construct_class_by_name(**c.training_set_kwargs)
    except IOError as err:
        raise click.ClickException(f'--data: {err}')
    if (training_set.resolution, training_set.num_channels, training_set.label_dim if opts.cond else 0) != (G.img_resolution, G.img_channels, G.c_dim):
        raise click.ClickException(f'--data: {training_set.resolution}x{training_set.resolution}x{training_set.num_channels} images with '
            f'{training_set.label_dim if opts.cond else 0} labels do not fit the pickle\'s G ({G.img_resolution}x{G.img_resolution}x{G.img_channels}, c_dim {G.c_dim})')
    c.training_set_kwargs.max_size = len(training_set)
    c.training_set_kwargs.resolution = training_set.resolution

    # Loss, as train.py configures it for the pickle's networks when resuming (no blur ramp-up).
    c.loss_kwargs = dnnlib.EasyDict(r1_gamma=opts.gamma, **tree.loss_kwargs(G, D))
    c.phases = phases_of(c.loss_kwargs, opts.gamma)
    del training_set, resume_data, G, D

    # Global rank 0 of a launch picks the run directory for every rank, prints the plan and writes the results.
    if not opts.dry_run:
        launch.join(job, c.device_type)
    c.run_dir = launch.decide_run_dir(opts.outdir, 'gradnoise' + (f'-{opts.desc}' if opts.desc else ''))
    if launch.other_rank(job):
        if not opts.dry_run:
            launch.spawn(measure, (tree, c, None), c.num_gpus)
        return
    print()
    print('Measurement options:')
    print(json.dumps(c, indent=2))
    print()
    print(f'Output directory:    {c.run_dir}')
    print(f'Phases:              {", ".join(c.phases)}')
    print(f'Augmentation:        {describe_augmentation(c.aug, c.augment_p)}')
    print(f'Passes:              {c.mode}, {c.num_batches} minibatches of {c.batch_size} images each')
    print()
    if opts.dry_run:
        print('Dry run; exiting.')
        return
    os.makedirs(c.run_dir)
    with open(os.path.join(c.run_dir, 'options.json'), 'wt') as f:
        json.dump(c, f, indent=2)

    torch.multiprocessing.set_start_method('spawn')
    with tempfile.TemporaryDirectory() as temp_dir:
        launch.spawn(measure, (tree, c, temp_dir), c.num_gpus)
