"""What wgangp.py, sngan.py and dcgan.py share on top of upstream (ganpatch overlay).

Upstream's three training scripts are near-copies of each other. The flags that our patches add to
all three, and the objects those flags configure, live here once: the device, the dataset copy, the
optimizers from `ganpatch.optim`, the stochastic extragradient step, the run directory, the stop on
a non-finite loss and the gradient-noise measurement of --evaluate. sngan.py's discretization-drift
training (its own flags --update, --dd, --integrator, ...) runs through `DriftLoop`. Importing this
module defines the shared flags (absl's convention for shared flags). Every script then, after
defining its own flags, calls

    flags.adopt_module_key_flags(ganpatch_flags)  # --help, --helpshort and flagfile.txt list these flags
    ganpatch_flags.register_validators()          # bad values are flag-parsing errors, before any work

`register_validators` is the one place where flag values are checked; it checks the flags that the
calling script defines (upstream's and its own) and skips those it does not.
"""

import math
import os
import re
import urllib.error

import torch
import torch.nn.functional as F
from absl import flags
from torchvision import datasets

import ganpatch.buffers
import ganpatch.clip
import ganpatch.drift
import ganpatch.gradnoise_networks
import ganpatch.optim
import ganpatch.runge_kutta
import ganpatch.seg

FLAGS = flags.FLAGS

# Devices and data.
flags.DEFINE_string('device', 'cuda' if torch.cuda.is_available() else 'cpu',
                    "torch device, e.g. cuda, cuda:1 or cpu (default: cuda when available, else cpu)")
flags.DEFINE_integer('num_workers', 4, "data-loading worker processes (0: load in the main process)",
                     lower_bound=0)
flags.DEFINE_string('data_dir', './data', "dataset folder (CIFAR-10: the one holding cifar-10-batches-py)")
flags.DEFINE_bool('download', True, "download the dataset into --data_dir when it is missing there")
# Optimizers and gradient clipping.
flags.DEFINE_enum('opt', 'adam', ganpatch.optim.OPTIMIZER_CHOICES,
                  f"optimizer of G and D: {ganpatch.optim.describe_choices()}. adam without clipping is upstream's "
                  f"torch.optim.Adam; --betas reaches the Adam family only, the other hyperparameters keep "
                  f"ganpatch.optim's defaults")
flags.DEFINE_enum('clip_mode', 'none', ganpatch.clip.CLIP_MODES,
                  "gradient clipping per network: norm (one norm over the network) or value (each entry)")
flags.DEFINE_float('clip_G', None, "G clipping threshold, > 0 (required when --clip_mode is not none)")
flags.DEFINE_float('clip_D', None, "D clipping threshold, > 0 (required when --clip_mode is not none)")
flags.DEFINE_float('clip_norm_type', 2.0, "p of the norm that --clip_mode=norm clips: a number >= 1, or inf")
flags.DEFINE_float('clip_norm_eps', 0.0,
                   "with --clip_mode=norm: 0 scales by min(1, c/||g||); eps > 0 by min(1, c/(||g|| + eps)), "
                   "torch.nn.utils.clip_grad_norm_'s arithmetic (1e-6: the clipped-methods authors' code, bit for bit)")
# Gradient-noise measurement.
flags.DEFINE_bool('evaluate', False,
                  'measure the gradient noise of G and D at --pretrain on the minibatches of --total_steps steps '
                  '(--n_dis per step for D) per pass, without parameter updates')
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
UNBOUNDED_FLOATS = {'clip_norm_type'}  # Float flags for which inf is a valid value (the max norm).
# sngan.py's discretization-drift flags, and the flags their checks read.
DRIFT_FLAGS = ['dd', 'dd_lambda', 'dd_estimator', 'dd_convention', 'update', 'integrator', 'n_dis', 'opt', 'lr_D',
               'lr_G', 'evaluate']


def register_validators():
    """Registers every check of flag values, for the flags the calling script has defined.

    Call it once per script, after the script's own flags are defined (absl validators need their flags
    to exist). It checks:
    - --device: a torch device that is available;
    - --clip_G/--clip_D: both > 0 with a --clip_mode, neither without one; --clip_norm_type (>= 1 or inf) and
      --clip_norm_eps (>= 0) away from their defaults only with --clip_mode=norm;
    - the upstream integers of POSITIVE_INTEGERS: at least 1;
    - every float flag (lr, alpha, betas, thresholds, BMC parameters, ...): finite, and lr >= 0;
    - --betas: two values in [0, 1), as Adam needs, and away from the script's default only with an
      optimizer that it reaches (`ganpatch.optim.takes_adam_hyperparameters`); --seed in [0, 2**32 - 1];
    - BMC parameters (--bmc_*) set away from their defaults without --bmc: they would be ignored;
    - --pretrain: an existing file, read only by --generate and --evaluate, which both need it;
      --generate and --evaluate exclude each other, and --evaluate needs --total_steps >= 2;
    - the discretization-drift flags (--dd, --update, --integrator, ...; sngan.py): `_drift_setup_is_valid`.
    A script that gains one of these flags (--bmc, --dd, ...) gets its checks with it.
    """
    defined = set(FLAGS)

    flags.register_validator('device', _device_is_available,
                             message='not a torch device, or CUDA is not available (use --device=cpu)')
    flags.register_multi_flags_validator(['clip_mode', 'clip_G', 'clip_D'], _clip_thresholds_match_mode)
    flags.register_validator('clip_norm_type', lambda value: value >= 1, message='must be a number >= 1, or inf')
    flags.register_validator('clip_norm_eps', lambda value: value >= 0, message='must be >= 0')
    flags.register_multi_flags_validator(['clip_mode', 'clip_norm_type', 'clip_norm_eps'], _norm_options_need_norm)
    for name in POSITIVE_INTEGERS:
        if name in defined:
            flags.register_validator(name, lambda value: value >= 1, message='must be a positive integer')
    for name in sorted(defined - UNBOUNDED_FLOATS):
        if isinstance(FLAGS[name].parser, flags.FloatParser):
            flags.register_validator(name, _all_finite, message='must be a finite number')
    for name in LEARNING_RATES:
        if name in defined:
            flags.register_validator(name, lambda value: value >= 0, message='must be >= 0')
    if 'betas' in defined:
        flags.register_validator('betas', lambda value: len(value) == 2 and all(0 <= beta < 1 for beta in value),
                                 message='needs two values in [0, 1): --betas=<beta1> --betas=<beta2>')
        flags.register_multi_flags_validator(['opt', 'betas'], _betas_reach_the_optimizer)
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
    if 'dd' in defined:
        flags.register_multi_flags_validator(DRIFT_FLAGS, _drift_setup_is_valid)


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


def _norm_options_need_norm(values):
    """--clip_norm_type and --clip_norm_eps shape norm clipping only (a flagfile with their defaults still loads)."""
    for name in ('clip_norm_type', 'clip_norm_eps'):
        if values['clip_mode'] != 'norm' and values[name] != FLAGS[name].default:
            raise flags.ValidationError(f'--{name} needs --clip_mode=norm (got --clip_mode={values["clip_mode"]}, '
                                        f'where it would be ignored)')
    return True


def _betas_reach_the_optimizer(values):
    """--betas away from the script's default needs an optimizer that uses it (a flagfile with the default loads)."""
    if values['betas'] != FLAGS['betas'].default and not ganpatch.optim.takes_adam_hyperparameters(values['opt']):
        users = [name for name in ganpatch.optim.OPTIMIZERS if ganpatch.optim.takes_adam_hyperparameters(name)]
        raise flags.ValidationError(f'--betas is for {", ".join(users)}; --opt={values["opt"]} would ignore it')
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


def uses_drift_loop():
    """Whether sngan.py trains through `DriftLoop`: any drift option away from upstream's alternating updates."""
    return 'dd' in FLAGS and (FLAGS.dd != 'none' or FLAGS.update != 'alternating' or FLAGS.integrator != 'euler')


def _drift_setup_is_valid(values):
    """sngan.py's drift flags: a setting that ganpatch.drift and ganpatch.runge_kutta can run as meant, and no
    flag that would be ignored (a flagfile with the defaults still loads)."""
    dd, update, integrator = values['dd'], values['update'], values['integrator']
    training_only = [f'--{name}={values[name]}' for name in ('dd', 'integrator') if values[name] != FLAGS[name].default]
    if values['evaluate'] and training_only:
        raise flags.ValidationError(f'--evaluate measures the noise of the loss gradients at the checkpoint; '
                                    f'{" ".join(training_only)} does not apply to it')
    if update == 'simultaneous' and values['n_dis'] != 1:
        raise flags.ValidationError(f'--update=simultaneous moves both networks once per step: pass --n_dis=1 '
                                    f'(got --n_dis={values["n_dis"]})')
    if dd == 'none' and values['dd_estimator'] != FLAGS['dd_estimator'].default:
        raise flags.ValidationError(f'--dd_estimator={values["dd_estimator"]} needs a --dd regularizer')
    if dd not in ganpatch.drift.DRIFT_PRESETS and values['dd_convention'] != FLAGS['dd_convention'].default:
        raise flags.ValidationError(f'--dd_convention applies to the drift-scaled presets '
                                    f'{", ".join(ganpatch.drift.DRIFT_PRESETS)}, not --dd={dd}')
    setting = f'--dd={dd}' + (f' --dd_lambda={values["dd_lambda"]}' if values['dd_lambda'] is not None else '')
    try:
        ganpatch.drift.check_setup(preset=dd, lam=values['dd_lambda'], estimator=values['dd_estimator'], update=update,
                                   disc_steps=values['n_dis'], convention=values['dd_convention'])
        if dd in ganpatch.drift.DRIFT_PRESETS:
            setting += f' (it scales with --lr_D={values["lr_D"]} and --lr_G={values["lr_G"]})'
            _drift_coefficients(dd, None, values['lr_D'], values['lr_G'], update, values['n_dis'],
                                values['dd_convention'])
        if integrator != 'euler':
            setting = f'--integrator={integrator} --update={update} --dd={dd} --opt={values["opt"]}'
            ganpatch.runge_kutta.check_setup(RUNGE_KUTTA_ORDERS[integrator], update=update, preset=dd,
                                             optimizers=[ganpatch.optim.canonical_name(values['opt'])])
    except ValueError as error:
        raise flags.ValidationError(f'{setting}: {error}') from None
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
    """The optimizer that --opt and the clip flags select.

    --opt=adam without clipping is upstream's torch.optim.Adam with --betas, so default runs train as upstream
    does. Everything else comes from ganpatch.optim.build_optimizer (an alias such as extra_sgd is resolved there):
    SGD has no momentum (as in Gorbunov et al., NeurIPS 2022), every step() clips the network's gradient as one
    player before updating (--clip_mode, --clip_norm_type, --clip_norm_eps), --betas reaches the Adam family
    only (`ganpatch.optim.takes_adam_hyperparameters`), and every other hyperparameter keeps its default (ganpatch.optim.default_hyperparameters).
    """
    if FLAGS.opt == 'adam' and FLAGS.clip_mode == 'none':
        return torch.optim.Adam(params, lr=lr, betas=FLAGS.betas)
    return ganpatch.optim.build_optimizer(FLAGS.opt, params, lr=lr, clip_mode=FLAGS.clip_mode,
                                          clip_threshold=clip_threshold, clip_norm_type=FLAGS.clip_norm_type,
                                          clip_norm_eps=FLAGS.clip_norm_eps, upstream_adam=dict(betas=tuple(FLAGS.betas)))


def build_optimizers(net_G, net_D):
    """(optim_G, optim_D): one optimizer per network, with --lr_G/--clip_G and --lr_D/--clip_D."""
    return (build_optimizer(net_G.parameters(), FLAGS.lr_G, FLAGS.clip_G),
            build_optimizer(net_D.parameters(), FLAGS.lr_D, FLAGS.clip_D))


def optimizer_step(optimizer, compute_losses):
    """One update of the network that `optimizer` trains (ganpatch.seg.optimizer_step: one step, or a complete
    clipped-SEG step for extragradient optimizers); returns the losses of the update, detached (they are for
    logging: formatting a tensor that requires grad warns on torch 2.x).

    `compute_losses()` draws a FRESH minibatch on every call and returns a tuple whose first entry is the loss
    to minimize (the others are for logging): upstream's losses, which this adapts to ganpatch.seg.

    SEG's pass at the extrapolated point keeps its buffer updates (no `modules` to restore, unlike BigGAN-PyTorch,
    whose G_ema copies G's buffers and whose logs report the spectral-norm singular values). Here they are G's
    BatchNorm running statistics, which upstream's train-mode sample sheets update as well and only eval-mode
    generation (--generate, IS/FID) reads, and the power-iteration vectors of sngan.py's D, a running estimate
    that every forward refines. Restoring them would fix nothing and change the numbers of every SEG run.
    """
    def backward():
        losses = compute_losses()
        losses[0].backward()
        return losses
    return tuple(loss.detach() for loss in ganpatch.seg.optimizer_step(optimizer, backward))


# Discretization drift (sngan.py: --update, --loss=zero-sum, --dd, --integrator).

INTEGRATORS = ('euler', 'rk2', 'rk4')
RUNGE_KUTTA_ORDERS = {'rk2': 2, 'rk4': 4}


class ZeroSum(torch.nn.Module):
    """The zero-sum GAN loss L_G = -L_D (the minimax game of Goodfellow et al., NeurIPS 2014, with the saturating
    generator; the loss of the CIFAR-10 runs of Rosca et al., "Discretization Drift in Two-Player Games", ICML
    2021), in upstream's loss interface (loss(pred_real, pred_fake) for D, loss(pred_fake) for G):

        L_D = E_x softplus(-D(x)) + E_z softplus(D(G(z)))      (binary cross-entropy with logits)
        L_G = -E_z softplus(D(G(z)))

    L_G leaves out -E_x softplus(-D(x)), which depends on neither G nor D(G(z)): G's gradient is that of -L_D,
    and so is every drift term (a term differentiates L_G with respect to G, or pairs its D-gradient with a
    G-gradient, where the real-data part contributes zero).
    """

    def forward(self, pred_real, pred_fake=None):
        if pred_fake is None:  # G's loss: upstream passes the logits of the fakes alone.
            return -F.softplus(pred_real).mean()
        return F.softplus(-pred_real).mean() + F.softplus(pred_fake).mean()


def _drift_coefficients(dd, lam, lr_D, lr_G, update, n_dis, convention):
    """{'disc': Terms, 'gen': Terms} of the preset `dd` (ganpatch.drift) for this schedule: D first, n_dis D steps
    per G step. Only the drift-scaled presets depend on the learning rates (and need them > 0)."""
    if dd not in ganpatch.drift.DRIFT_PRESETS:
        _, explicit = ganpatch.drift.preset_terms(dd, lam)
        return {player: explicit for player in ganpatch.drift.PLAYERS}
    return ganpatch.drift.preset_coefficients(dd, lam, lr_disc=lr_D, lr_gen=lr_G, update=update, first='disc',
                                              disc_steps=n_dis, gen_steps=1, convention=convention)


class DriftLoop:
    """sngan.py's training step with discretization-drift regularizers, simultaneous updates or a Runge-Kutta
    integrator (Rosca, Wu, Dherin, Barrett, ICML 2021; ganpatch.drift, ganpatch.runge_kutta), as the flags
    --update, --dd, --dd_lambda, --dd_estimator, --dd_convention and --integrator set it.

    Args: the networks and their optimizers; loss_D(batch) and loss_G(batch), each player's loss on a minibatch,
    and sample_D(), sample_G(), which draw fresh minibatches. loss_D must stay differentiable with respect to G
    (no detached G(z)): the interaction terms differentiate D's loss through G.

    `step()` runs one training step:
    - alternating: --n_dis D updates, then one G update against the new D;
    - simultaneous: both players' gradients at the same point, then both networks update;
    - rk2/rk4: ganpatch.runge_kutta's combined stage gradient of both players, then both optimizers step with
      their learning rates as the step sizes.
    Each player's gradient is its loss gradient plus its regularizer terms (ganpatch.drift.DriftRegularizer), and
    its optimizer clips that total inside step(). Extragradient optimizers take complete SEG steps (`ganpatch.seg.joint_step`).
    The drift-scaled presets' coefficients follow the current learning rates (upstream's linear decay): they are
    recomputed before every step.

    Spectral normalization: the regularizer evaluates each loss several times per step, and every train-mode
    forward of torch.nn.utils.spectral_norm would advance D's power iteration. Inside a step it is held, and it
    advances once per D update, before D's gradients (ganpatch.buffers.held_power_iteration and
    advance_power_iteration): one iteration per update, as Miyato et al. (ICLR 2018) prescribe and as the drift
    authors' code did (there, only D's own loss advanced it).
    """

    def __init__(self, net_D, net_G, optim_D, optim_G, loss_D, sample_D, loss_G, sample_G):
        self.net_D = net_D
        self.optimizers = {'disc': optim_D, 'gen': optim_G}
        self.regularizer = ganpatch.drift.DriftRegularizer(
            ganpatch.drift.Player(net_D, loss_D, sample_D), ganpatch.drift.Player(net_G, loss_G, sample_G),
            estimator=FLAGS.dd_estimator)
        order = RUNGE_KUTTA_ORDERS.get(FLAGS.integrator)
        self.runge_kutta = None if order is None else ganpatch.runge_kutta.RungeKutta(self.regularizer, order)

    def step(self):
        """One training step; returns (D's loss, G's loss), detached."""
        lrs = {name: optimizer.param_groups[0]['lr'] for name, optimizer in self.optimizers.items()}
        self.regularizer.coefficients = _drift_coefficients(FLAGS.dd, FLAGS.dd_lambda, lrs['disc'], lrs['gen'],
                                                            FLAGS.update, FLAGS.n_dis, FLAGS.dd_convention)
        with ganpatch.buffers.held_power_iteration(self.net_D):
            if FLAGS.update == 'simultaneous':
                ganpatch.buffers.advance_power_iteration(self.net_D)
                losses = ganpatch.seg.joint_step(list(self.optimizers.values()),
                                                 lambda: self._simultaneous_backward(lrs))
                return losses['disc'], losses['gen']
            for _ in range(FLAGS.n_dis):
                ganpatch.buffers.advance_power_iteration(self.net_D)
                loss_D = ganpatch.seg.optimizer_step(self.optimizers['disc'], lambda: self.regularizer.backward('disc'))
            loss_G = ganpatch.seg.optimizer_step(self.optimizers['gen'], lambda: self.regularizer.backward('gen'))
            return loss_D, loss_G

    def _simultaneous_backward(self, lrs):
        if self.runge_kutta is not None:
            return self.runge_kutta.backward(lrs)
        return self.regularizer.backward_simultaneous()


# Run directory, checkpoints and the NaN stop.

def create_run_dir():
    """Creates and returns --logdir/NNNNN-<desc>, numbered one above the highest run there. Without --desc,
    <desc> names the optimizer and clip mode of a training run, or `evaluate` for --evaluate."""
    if FLAGS.desc:
        desc = FLAGS.desc
    elif FLAGS.evaluate:
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

# The file names of the clipped-methods authors' WGAN-GP measurement (their clipped_pytorch-gan-collections.patch):
# phase -> (full gradient, noise norms).
AUTHORS_NOISE_FILES = {'G': ('full_grad_G.pth', 'stoch_noise_G.npy'), 'D': ('full_grad_D.pth', 'stoch_noise_D.npy')}


def measure_gradient_noise(net_G, net_D, backward_D, backward_G):
    """--evaluate: gradient-noise histograms and statistics of G and D at the loaded checkpoint, written into a
    new run directory.

    The measurement of Gorbunov et al. (NeurIPS 2022, arXiv 2206.01095), by ganpatch.gradnoise_networks: pass 1
    averages each network's minibatch gradients into its full gradient, pass 2 records the norm of every fresh
    minibatch gradient minus it. Each pass takes one minibatch per D and G step of --total_steps training steps:
    --total_steps * --n_dis for D and --total_steps for G, as the authors did. `backward_D()` and `backward_G()`
    draw fresh minibatches and back-propagate the network's training loss; each runs with the other network's
    parameters frozen, as in training.

    Nothing is updated: no optimizer exists, BatchNorm layers normalize with batch statistics as in training and
    get their running statistics back after every minibatch, and spectral norm's power iteration is held
    (ganpatch.buffers.held_power_iteration), so every buffer stays as in the checkpoint and every forward, D's
    on real images and on fakes alike, normalizes with the checkpoint's vectors: every minibatch gradient is
    taken of the same function.

    Writes ganpatch.gradnoise's files (results_norm.png, results_lognorm.png, <G|D>_full_grad.pth,
    <G|D>_stoch_noise.npy, noise_stats.json) and, so that scripts written for the authors' outputs read ours,
    the same measurement under their names and formats (AUTHORS_NOISE_FILES).
    """
    run_dir = create_run_dir()
    backward = {'D': backward_D, 'G': backward_G}
    with ganpatch.buffers.held_power_iteration(net_D):
        meter = ganpatch.gradnoise_networks.measure_networks(
            {'D': net_D, 'G': net_G}, lambda phase: backward[phase](),
            {'D': FLAGS.total_steps * FLAGS.n_dis, 'G': FLAGS.total_steps})
    meter.save(run_dir)
    meter.save_authors_files(run_dir, AUTHORS_NOISE_FILES)
    print(f'Gradient-noise histograms and statistics written to {run_dir}')
