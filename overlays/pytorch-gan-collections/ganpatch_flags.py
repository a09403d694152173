"""What wgangp.py, sngan.py and dcgan.py share on top of upstream (ganpatch overlay).

Upstream's three training scripts are near-copies of each other. The flags that our patches add to
all three, and the objects those flags configure, live here once: the device, the dataset copy, the
optimizers from `ganpatch.optim`, the stochastic extragradient step, the run directory, the stop on
a non-finite loss and two helpers of wgangp.py's --evaluate. Importing this module defines the flags
(absl's convention for shared flags).
"""

import contextlib
import os
import re
import urllib.error

import torch
from absl import flags
from torchvision import datasets

import ganpatch.clip
import ganpatch.optim

FLAGS = flags.FLAGS

# Devices and data.
flags.DEFINE_string('device', 'cuda' if torch.cuda.is_available() else 'cpu',
                    "torch device, e.g. cuda, cuda:1 or cpu (default: cuda when available, else cpu)")
flags.DEFINE_integer('num_workers', 4, "data-loading worker processes (0: load in the main process)",
                     lower_bound=0)
flags.DEFINE_string('data_dir', './data', "dataset folder (CIFAR-10: the one holding cifar-10-batches-py)")
flags.DEFINE_bool('download', True, "download the dataset into --data_dir when it is missing there")
# Optimizers and gradient clipping.
flags.DEFINE_enum('opt', 'adam', ganpatch.optim.OPTIMIZERS,
                  "optimizer of G and D; adam without clipping is upstream's torch.optim.Adam")
flags.DEFINE_enum('clip_mode', 'none', ganpatch.clip.CLIP_MODES,
                  "gradient clipping per network: norm (one L2 norm over the network) or value (each entry)")
flags.DEFINE_float('clip_G', None, "G clipping threshold, > 0 (required when --clip_mode is not none)")
flags.DEFINE_float('clip_D', None, "D clipping threshold, > 0 (required when --clip_mode is not none)")
# Run directory.
flags.DEFINE_string('desc', None, "tag of the run directory --logdir/NNNNN-<desc> (default: --opt and --clip_mode)")


@flags.validator('device', message='--device: not a torch device, or CUDA is not available (use --device=cpu)')
def _device_is_available(value):
    try:
        device = torch.device(value)
    except RuntimeError:
        return False
    return device.type != 'cuda' or torch.cuda.is_available()


@flags.multi_flags_validator(['clip_mode', 'clip_G', 'clip_D'])
def _clip_thresholds_match_mode(values):
    thresholds = {'--clip_G': values['clip_G'], '--clip_D': values['clip_D']}
    if values['clip_mode'] == 'none':
        if any(value is not None for value in thresholds.values()):
            raise flags.ValidationError('--clip_G/--clip_D need --clip_mode=norm or --clip_mode=value')
        return True
    for name, value in thresholds.items():
        if value is None or not value > 0:
            raise flags.ValidationError(f'--clip_mode={values["clip_mode"]} needs {name} > 0 (got {value})')
    return True


# Dataset.

class LocalCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader for an extracted `cifar-10-batches-py` that is already on disk.

    It requires the same files as `datasets.CIFAR10` but not their MD5 sums: a download is verified
    against the archive's MD5 by torchvision, and an offline copy made otherwise (re-packed, or a
    small synthetic one in tests) is the user's to vouch for.
    """
    train_list = [[filename, None] for filename, _ in datasets.CIFAR10.train_list]
    test_list = [[filename, None] for filename, _ in datasets.CIFAR10.test_list]
    meta = dict(datasets.CIFAR10.meta, md5=None)


def _download(name, download):
    try:
        download()
    except (urllib.error.URLError, OSError) as error:
        raise SystemExit(f'{name} is not in --data_dir={FLAGS.data_dir} and downloading it failed ({error}).\n'
                         f'Without network, put an extracted copy there (see the README).') from error


def load_dataset(name, transform):
    """The training split of `name` ('cifar10' or 'stl10') from --data_dir, downloaded first when missing.

    Without the dataset and without --download (or network) this exits with a clear message before
    any training work starts.
    """
    if name == 'cifar10':
        folder = os.path.join(FLAGS.data_dir, LocalCIFAR10.base_folder)
        required = [filename for filename, _ in LocalCIFAR10.train_list + LocalCIFAR10.test_list]
        required.append(LocalCIFAR10.meta['filename'])
        if not os.path.isdir(folder) and FLAGS.download:
            _download('CIFAR-10', lambda: datasets.CIFAR10(FLAGS.data_dir, train=True, download=True))
        missing = [filename for filename in required if not os.path.isfile(os.path.join(folder, filename))]
        if missing:
            raise SystemExit(f'CIFAR-10 not found: {folder} lacks {", ".join(missing)}.\n'
                             f'Extract cifar-10-python.tar.gz into --data_dir; with network and --download (the '
                             f'default), a missing {LocalCIFAR10.base_folder} folder is downloaded.')
        return LocalCIFAR10(FLAGS.data_dir, train=True, transform=transform)
    if FLAGS.download:
        _download('STL-10', lambda: datasets.STL10(FLAGS.data_dir, split='unlabeled', download=True))
    try:
        return datasets.STL10(FLAGS.data_dir, split='unlabeled', transform=transform)
    except RuntimeError as error:
        raise SystemExit(f'STL-10 not found in --data_dir={FLAGS.data_dir}: {error}') from error


# Inception Score and FID (only with --record).

def check_record_requirements():
    """Fails fast, before training, when --record cannot compute IS/FID."""
    if not os.path.isfile(FLAGS.fid_cache):
        raise SystemExit(f'--record needs the FID statistics --fid_cache={FLAGS.fid_cache}, which does not exist.\n'
                         f'Download cifar10.train.npz (see the README) or pass --norecord.')
    try:
        import pytorch_gan_metrics  # noqa: F401 (imported here so that --norecord runs do not need it)
    except ImportError as error:
        raise SystemExit(f'--record needs pytorch_gan_metrics==0.5.3 ({error}); '
                         f'pip install --no-deps pytorch_gan_metrics==0.5.3, or pass --norecord.') from error


def inception_score_and_fid(images, device):
    """((IS mean, IS std), FID) of `images` against --fid_cache, computed on `device`."""
    from pytorch_gan_metrics import get_inception_score_and_fid
    return get_inception_score_and_fid(images, FLAGS.fid_cache, device=device, verbose=True)


# Optimizers.

def build_optimizer(params, lr, clip_threshold):
    """The optimizer that --opt and --clip_mode select, with upstream's --betas for the Adam variants.

    --opt=adam without clipping is upstream's torch.optim.Adam, so default runs train as upstream does.
    Everything else comes from ganpatch.optim: SGD has no momentum (as in Gorbunov et al., NeurIPS 2022),
    and every step() clips the network's gradient as one player before updating.
    """
    if FLAGS.opt == 'adam' and FLAGS.clip_mode == 'none':
        return torch.optim.Adam(params, lr=lr, betas=FLAGS.betas)
    return ganpatch.optim.build_optimizer(FLAGS.opt, params, lr=lr, clip_mode=FLAGS.clip_mode,
                                          clip_threshold=clip_threshold, betas=tuple(FLAGS.betas))


def build_optimizers(net_G, net_D):
    """(optim_G, optim_D): one optimizer per network, with --lr_G/--clip_G and --lr_D/--clip_D."""
    return (build_optimizer(net_G.parameters(), FLAGS.lr_G, FLAGS.clip_G),
            build_optimizer(net_D.parameters(), FLAGS.lr_D, FLAGS.clip_D))


def optimizer_step(optimizer, compute_losses):
    """One update of the network that `optimizer` trains; returns the losses of the update.

    `compute_losses()` draws a FRESH minibatch on every call and returns a tuple whose first entry is
    the loss to minimize (the others are for logging).

    For an extragradient optimizer this is one complete clipped-SEG step (Gorbunov et al., NeurIPS 2022,
    arXiv 2206.01095, clipped-SEG): extrapolate x~ = x - lr*clip(g(x; xi1)) on one minibatch, then update
    x <- x - lr*clip(g(x~; xi2)) on another. The step completes before the caller moves the other
    network, so that network is never trained against an extrapolated point, and checkpoints and
    samples always see real iterates. Every other optimizer takes one step on one minibatch.
    """
    if ganpatch.optim.is_extragradient(optimizer):
        optimizer.zero_grad()
        compute_losses()[0].backward()
        optimizer.extrapolate()
    optimizer.zero_grad()
    losses = compute_losses()
    losses[0].backward()
    optimizer.step()
    return losses


# Run directory, checkpoints and the NaN stop.

def create_run_dir():
    """Creates and returns --logdir/NNNNN-<desc>, numbered one above the highest run there. Without --desc,
    <desc> names the optimizer and clip mode of a training run, or `evaluate` for wgangp.py --evaluate."""
    if FLAGS.desc:
        desc = FLAGS.desc
    elif 'evaluate' in FLAGS and FLAGS.evaluate:
        desc = 'evaluate'
    else:
        desc = FLAGS.opt if FLAGS.clip_mode == 'none' else f'{FLAGS.opt}-clip{FLAGS.clip_mode}'
    os.makedirs(FLAGS.logdir, exist_ok=True)
    run_ids = [int(match.group()) for match in map(re.compile(r'^\d+').match, os.listdir(FLAGS.logdir)) if match]
    run_dir = os.path.join(FLAGS.logdir, f'{max(run_ids, default=-1) + 1:05d}-{desc}')
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, 'flagfile.txt'), 'w') as f:
        f.write(FLAGS.flags_into_string())
    return run_dir


def checkpoint_path(run_dir, step):
    """`run_dir/model_<step>.pt`, the step zero-padded to 8 digits (model_00100000.pt)."""
    return os.path.join(run_dir, f'model_{step:08d}.pt')


def stop_unless_finite(step, **losses):
    """Ends the run with a message naming the losses that are NaN or infinite at `step`."""
    bad = {name: float(loss) for name, loss in losses.items() if not torch.isfinite(loss).all()}
    if bad:
        values = ', '.join(f'{name}={value}' for name, value in bad.items())
        raise SystemExit(f'Stopping at step {step}: {values}. Lower --lr_G/--lr_D or clip the gradients '
                         f'(--clip_mode); the checkpoints written so far are in the run directory.')


# Gradient-noise measurement (--evaluate).

@contextlib.contextmanager
def requires_grad(module, flag):
    """Sets requires_grad of all parameters of `module` to `flag` inside the block, then back to True."""
    for param in module.parameters():
        param.requires_grad_(flag)
    try:
        yield
    finally:
        for param in module.parameters():
            param.requires_grad_(True)


@contextlib.contextmanager
def frozen_batchnorm_stats(*modules):
    """BatchNorm layers keep normalizing with batch statistics (train mode) but stop updating their running
    statistics and counters inside the block, so measurements leave the checkpoint's buffers untouched."""
    layers = [layer for module in modules for layer in module.modules()
              if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and layer.track_running_stats]
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer in layers:
            layer.track_running_stats = True
