"""What wgangp.py, sngan.py and dcgan.py share on top of upstream (ganpatch overlay).

Upstream's three training scripts are near-copies of each other. The flags that our patches add to
all three, and the objects those flags configure, live here once: the device, the dataset copy, the
optimizers from `ganpatch.optim`, the stochastic extragradient step, the run directory, the stop on
a non-finite loss and two helpers of wgangp.py's --evaluate. Importing this module defines the flags
(absl's convention for shared flags). Every script then, after defining its own flags, calls

    flags.adopt_module_key_flags(ganpatch_flags)  # --help, --helpshort and flagfile.txt list these flags
    ganpatch_flags.register_validators()          # bad values are flag-parsing errors, before any work

`register_validators` is the one place where flag values are checked; it checks the flags that the
calling script defines (upstream's and its own) and skips those it does not.
"""

import contextlib
import math
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


# Flag validation (absl validators: a bad value is a flag-parsing error, before any run directory exists).

# Upstream integer flags that fail late, or silently, when not positive: --total_steps=0 divides by zero in
# the lr schedule and a negative one trains nothing into an empty run directory; --n_dis=0 ends at the
# first step with an UnboundLocalError; --eval_step=0 and --sample_step=0 divide by zero at step 2
# (`step % 0`); --batch_size=0 is a DataLoader error; --sample_size=0 divides by zero in make_grid after
# the run directory exists; --num_images=0 fails in torch.cat at the first --record evaluation; a
# negative --z_dim fails building the networks and --z_dim=0 trains a generator without input.
POSITIVE_INTEGERS = ('total_steps', 'batch_size', 'n_dis', 'z_dim', 'eval_step', 'sample_step', 'sample_size',
                     'num_images')
LEARNING_RATES = ('lr_G', 'lr_D')  # torch.optim rejects a negative lr only when it builds the optimizer.
SEED_RANGE = (0, 2 ** 32 - 1)      # np.random.seed's range; set_seed calls it.


def register_validators():
    """Registers every check of flag values, for the flags the calling script has defined.

    Call it once per script, after the script's own flags are defined (absl validators need their flags
    to exist). It checks:
    - --device: a torch device that is available;
    - --clip_G/--clip_D: both > 0 with a --clip_mode, neither without one;
    - the upstream integers of POSITIVE_INTEGERS: at least 1;
    - every float flag (lr, alpha, betas, thresholds, BMC parameters, ...): finite, and lr >= 0;
    - --betas: two values in [0, 1), as Adam needs; --seed in [0, 2**32 - 1];
    - BMC parameters (--bmc_*) set away from their defaults without --bmc: they would be ignored;
    - --pretrain: an existing file, read only by --generate and --evaluate, which both need it;
      --generate and --evaluate exclude each other, and --evaluate needs --total_steps >= 2.
    A script that gains one of these flags (--evaluate, --bmc, ...) gets its checks with it.
    """
    defined = set(FLAGS)

    flags.register_validator('device', _device_is_available,
                             message='not a torch device, or CUDA is not available (use --device=cpu)')
    flags.register_multi_flags_validator(['clip_mode', 'clip_G', 'clip_D'], _clip_thresholds_match_mode)
    for name in POSITIVE_INTEGERS:
        if name in defined:
            flags.register_validator(name, lambda value: value >= 1, message='must be a positive integer')
    for name in sorted(defined):
        if isinstance(FLAGS[name].parser, flags.FloatParser):
            flags.register_validator(name, _all_finite, message='must be a finite number')
    for name in LEARNING_RATES:
        if name in defined:
            flags.register_validator(name, lambda value: value >= 0, message='must be >= 0')
    if 'betas' in defined:
        flags.register_validator('betas', lambda value: len(value) == 2 and all(0 <= beta < 1 for beta in value),
                                 message='needs two values in [0, 1): --betas=<beta1> --betas=<beta2>')
    if 'seed' in defined:
        flags.register_validator('seed', lambda value: SEED_RANGE[0] <= value <= SEED_RANGE[1],
                                 message=f'must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}]')
    if 'bmc' in defined:
        for name in sorted(name for name in defined if name.startswith('bmc_')):
            flags.register_multi_flags_validator(['bmc', name], _bmc_parameter_needs_bmc)
    if 'pretrain' in defined:
        flags.register_validator('pretrain', lambda path: path is None or os.path.isfile(path),
                                 message='not a file (pass a model_<step>.pt of a training run directory)')
        modes = [name for name in ('generate', 'evaluate') if name in defined]
        flags.register_multi_flags_validator(['pretrain', *modes], _pretrain_matches_mode)
    if 'evaluate' in defined:
        flags.register_multi_flags_validator(['evaluate', 'total_steps'], _evaluate_has_two_minibatches)


def _device_is_available(value):
    try:
        device = torch.device(value)
    except RuntimeError:
        return False
    return device.type != 'cuda' or torch.cuda.is_available()


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


def _all_finite(value):
    """A float flag's value (a list for multi-value flags, None when unset) holds no NaN or infinity."""
    values = value if isinstance(value, list) else [value]
    return all(v is None or math.isfinite(v) for v in values)


def _bmc_parameter_needs_bmc(values):
    """A BMC parameter away from its default needs --bmc=D or G (a flagfile with the defaults still loads)."""
    (name,) = [name for name in values if name != 'bmc']
    if values['bmc'] == 'none' and values[name] != FLAGS[name].default:
        raise flags.ValidationError(f'--{name} needs --bmc=D or --bmc=G (with --bmc=none it would be ignored)')
    return True


def _pretrain_matches_mode(values):
    modes = [f'--{name}' for name in ('generate', 'evaluate') if values.get(name)]
    if len(modes) > 1:
        raise flags.ValidationError('--generate and --evaluate exclude each other: pass one of them')
    if modes and values['pretrain'] is None:
        raise flags.ValidationError(f'{modes[0]} needs a checkpoint: --pretrain=<run directory>/model_<step>.pt')
    if values['pretrain'] is not None and not modes:
        raise flags.ValidationError('--pretrain is read only by --generate or --evaluate: pass one of them')
    return True


def _evaluate_has_two_minibatches(values):
    if values['evaluate'] and values['total_steps'] < 2:
        raise flags.ValidationError('--evaluate needs --total_steps >= 2 minibatches per network for the noise '
                                    'statistics')
    return True


# The script's flags.

def flags_into_string():
    """`--name=value` lines of the script's own flags and the ones it adopted from this module (what --helpshort
    lists), as FLAGS.flags_into_string() writes them but without absl's internal flags (--nohelp, --nopdb, ...).
    Loading it with --flagfile repeats the run."""
    script = FLAGS.find_module_defining_flag('logdir')  # Every training script defines --logdir.
    key_flags = sorted(FLAGS.get_key_flags_for_module(script), key=lambda flag: flag.name)
    return ''.join(flag.serialize() + '\n' for flag in key_flags if flag.value is not None)


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
                         f'Without network, extract cifar-10-python.tar.gz there; for a smoke run, write a tiny '
                         f'synthetic copy: python -m ganpatch.fake_data cifar10 {FLAGS.data_dir}') from error


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
                             f'default), a missing {LocalCIFAR10.base_folder} folder is downloaded. For a smoke run, '
                             f'write a tiny synthetic copy: python -m ganpatch.fake_data cifar10 {FLAGS.data_dir}')
        return _holding_a_minibatch(LocalCIFAR10(FLAGS.data_dir, train=True, transform=transform))
    if FLAGS.download:
        _download('STL-10', lambda: datasets.STL10(FLAGS.data_dir, split='unlabeled', download=True))
    try:
        return _holding_a_minibatch(datasets.STL10(FLAGS.data_dir, split='unlabeled', transform=transform))
    except RuntimeError as error:
        raise SystemExit(f'STL-10 not found in --data_dir={FLAGS.data_dir}: {error}') from error


def _holding_a_minibatch(dataset):
    """`dataset`, if it holds at least one --batch_size minibatch. The scripts drop the last partial batch,
    so a smaller dataset yields no batch at all: training would stop with a StopIteration after creating the
    run directory, and --evaluate would wait forever for a first minibatch."""
    if len(dataset) < FLAGS.batch_size:
        raise SystemExit(f'--batch_size={FLAGS.batch_size} is larger than the dataset in --data_dir={FLAGS.data_dir} '
                         f'({len(dataset)} images): lower --batch_size.')
    return dataset


# Inception Score and FID (only with --record).

def check_record_requirements():
    """Fails fast, before training, when --record cannot compute IS/FID."""
    if not os.path.isfile(FLAGS.fid_cache):
        raise SystemExit(f'--record needs the FID statistics --fid_cache={FLAGS.fid_cache}, which does not exist.\n'
                         f'Download cifar10.train.npz there (Readme.md links it), or pass --norecord.')
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
    """One update of the network that `optimizer` trains; returns the losses of the update, detached (they
    are for logging: formatting a tensor that requires grad warns on torch 2.x).

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
    return tuple(loss.detach() for loss in losses)


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
        f.write(flags_into_string())
    return run_dir


def checkpoint_path(run_dir, step):
    """`run_dir/model_<step>.pt`, the step zero-padded to 8 digits (model_00100000.pt)."""
    return os.path.join(run_dir, f'model_{step:08d}.pt')


def load_checkpoint(networks):
    """Loads the checkpoint --pretrain into `networks` ({'net_G': net_G, ...}) and returns it.

    Exits with a message naming the file when it is not a checkpoint of this script: not readable by
    torch.load (truncated, random bytes, another format), without one of the networks, or written for
    networks of another shape (another --arch or --z_dim). torch.load runs with weights_only=True (torch's
    default since 2.6; the checkpoints hold only state dicts), so loading executes no code from the file.
    """
    path = FLAGS.pretrain
    try:
        checkpoint = torch.load(path, map_location=torch.device(FLAGS.device), weights_only=True)
    except Exception as error:  # torch.load raises many types here: RuntimeError, UnpicklingError, OSError, ...
        raise SystemExit(f'--pretrain={path} is not a checkpoint: torch.load cannot read it ({type(error).__name__}; '
                         f'a truncated copy, or another kind of file?). Pass a model_<step>.pt of a training run '
                         f'directory.') from None
    missing = [key for key in networks if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise SystemExit(f'--pretrain={path} is not a checkpoint of this script: it holds no {" or ".join(missing)}.')
    for key, network in networks.items():
        try:
            network.load_state_dict(checkpoint[key])
        except RuntimeError:
            raise SystemExit(f'--pretrain={path}: its {key} does not fit the {type(network).__name__} of '
                             f'--arch={FLAGS.arch} --z_dim={FLAGS.z_dim} (was it trained with other values?).') from None
    return checkpoint


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
