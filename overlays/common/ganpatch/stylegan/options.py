"""The click options ganpatch adds to (or changes in) the StyleGAN trees' train.py, and what they configure.

Defined once for NVlabs/stylegan3 and NVlabs/stylegan2-ada-pytorch, so the same flag means the same thing in
both trees. Each tree's patches put the decorators on its `main` and call the `configure_*` functions on its
own config dicts; every bad value or combination is a click error before any run directory exists.

Every float option defined here uses `FiniteFloatRange`: click's `FloatRange` accepts `nan` and `inf` (nan
compares False with every bound), and a `--kimg=nan` run would train forever.
"""

import math
import re

import click

import ganpatch.bmc
import ganpatch.clip
import ganpatch.optim


class FiniteFloatRange(click.FloatRange):
    """`click.FloatRange` that also rejects nan and +-inf, with the same bounds and error style."""

    name = 'float'

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f'{value!r} is not a finite number.', param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self):
        if self.min is None and self.max is None:
            return '' # Unbounded: nothing to show in --help.
        return super()._describe_range()


FINITE_FLOAT = FiniteFloatRange()
NONNEGATIVE_FLOAT = FiniteFloatRange(min=0)
POSITIVE_FLOAT = FiniteFloatRange(min=0, min_open=True)
KIMG = POSITIVE_FLOAT # Durations in thousands of images; fractions allowed (smoke runs).
NORM_CLIP_DEFAULTS = dict(clip_norm_type=2.0, clip_norm_eps=0.0)


class ClipNormType(click.ParamType):
    """The p of the clipped norm: a number >= 1 or inf (`ganpatch.clip.parse_norm_type`) -> float."""

    name = 'P'

    def convert(self, value, param, ctx):
        try:
            return ganpatch.clip.parse_norm_type(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)


class GridSize(click.ParamType):
    """A snapshot image grid given as WxH, in images -> (W, H)."""

    name = 'WxH'

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        match = re.fullmatch(r'([1-9]\d*)x([1-9]\d*)', str(value))
        if match is None:
            self.fail(f'expected WxH with positive integers, got {value!r}', param, ctx)
        return (int(match.group(1)), int(match.group(2)))


def kimg_value(kimg):
    """Whole kimg counts as ints, so that training_options.json reads as before fractions were allowed."""
    return int(kimg) if float(kimg).is_integer() else kimg


#----------------------------------------------------------------------------
# Option decorators. `@option_group(f)` adds the group's options to the click command `f`.

def _options(*decorators):
    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f
    return apply


device_option = click.option('--device', help='Run on GPUs or on the CPU  [default: cuda if available]', type=click.Choice(['cuda', 'cpu']))
tick_option = click.option('--tick', help='How often to print progress  [default: 4]', metavar='KIMG', type=KIMG) # stylegan3 has its own.
grid_option = click.option('--grid', help='Snapshot image grid  [default: fills 7680x4320 pixels]', metavar='WxH', type=GridSize())

width_options = _options( # Network width and depth; stylegan3's train.py has its own.
    click.option('--cbase',     help='Capacity multiplier  [default: varies]', metavar='INT',   type=click.IntRange(min=1)),
    click.option('--cmax',      help='Max. feature maps  [default: 512]', metavar='INT',        type=click.IntRange(min=1)),
    click.option('--map-depth', help='Mapping network depth  [default: varies]', metavar='INT', type=click.IntRange(min=1)),
)

learning_rate_options = _options( # Per-network learning rates; stylegan3's train.py has its own.
    click.option('--glr',       help='G learning rate  [default: varies]', metavar='FLOAT',     type=NONNEGATIVE_FLOAT),
    click.option('--dlr',       help='D learning rate  [default: varies]', metavar='FLOAT',     type=NONNEGATIVE_FLOAT),
)

optimizer_options = _options(
    click.option('--optimizer', help=f'Optimizer for G and D: {ganpatch.optim.describe_choices()}', metavar='NAME',
                                                                                                type=click.Choice(list(ganpatch.optim.OPTIMIZER_CHOICES)), default='adam', show_default=True),
    click.option('--clip-mode', help='Gradient clipping, per network',                          type=click.Choice(list(ganpatch.clip.CLIP_MODES)), default='none', show_default=True),
    click.option('--clip-gmax', help='G clipping threshold (norm or value)', metavar='FLOAT',   type=POSITIVE_FLOAT),
    click.option('--clip-dmax', help='D clipping threshold (norm or value)', metavar='FLOAT',   type=POSITIVE_FLOAT),
    click.option('--clip-norm-type', help='p of the clipped norm (a number >= 1 or inf), for --clip-mode=norm', type=ClipNormType(), default=2.0, show_default=True),
    click.option('--clip-norm-eps', help='c/(||g||+eps) as torch\'s clip_grad_norm_ (1e-6: its arithmetic), for --clip-mode=norm', metavar='FLOAT',
                                                                                                type=NONNEGATIVE_FLOAT, default=0.0, show_default=True),
)

regularization_options = _options( # Lazy regularization intervals (StyleGAN2, appendix B).
    click.option('--gregint',   help='G regularization interval in minibatches (0: no lazy regularization)  [default: the config\'s]', metavar='INT', type=click.IntRange(min=0)),
    click.option('--dregint',   help='D regularization interval in minibatches (0: no lazy regularization)  [default: the config\'s]', metavar='INT', type=click.IntRange(min=0)),
)

logging_options = _options(
    click.option('--log-grad',  help='TensorBoard histograms (150 bins) of G\'s and D\'s raw gradients, once per tick', is_flag=True),
    click.option('--log-update-norm', help='Report the norm of every update, per phase (Update/<phase>_norm)', is_flag=True),
)

BMC_PARAMETERS = ('bmc_rho1', 'bmc_rho2', 'bmc_b1_mean', 'bmc_b1_std', 'bmc_b2_mean', 'bmc_b2_std')

bmc_options = _options(
    click.option('--bmc',         help='Brownian Motion Controller on G or D',                  type=click.Choice(list(ganpatch.bmc.BMC_TARGETS)), default='none', show_default=True),
    click.option('--bmc-rho1',    help='BMC weight of the B1 term', metavar='FLOAT',            type=NONNEGATIVE_FLOAT, default=0.1, show_default=True),
    click.option('--bmc-rho2',    help='BMC weight of the B2 term', metavar='FLOAT',            type=NONNEGATIVE_FLOAT, default=0.01, show_default=True),
    click.option('--bmc-b1-mean', help='Mean of the B1 increment', metavar='FLOAT',             type=FINITE_FLOAT, default=0.0, show_default=True),
    click.option('--bmc-b1-std',  help='Std of the B1 increment', metavar='FLOAT',              type=NONNEGATIVE_FLOAT, default=0.01, show_default=True),
    click.option('--bmc-b2-mean', help='Mean of the B2 increment', metavar='FLOAT',             type=FINITE_FLOAT, default=1.0, show_default=True),
    click.option('--bmc-b2-std',  help='Std of the B2 increment', metavar='FLOAT',              type=NONNEGATIVE_FLOAT, default=0.05, show_default=True),
)


#----------------------------------------------------------------------------
# Validation and configuration. `opts` is the mapping of parsed options (click's kwargs).

def given_options(ctx):
    """Names of the options given on the command line (or through the environment), not defaulted."""
    defaulted = (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP, None)
    return {name for name in ctx.params if ctx.get_parameter_source(name) not in defaulted}


def resolve_device(device):
    """'cuda' or 'cpu' for --device (None: cuda when a GPU is visible); --device=cuda without one is an error."""
    import torch
    if device is None:
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device=cuda requires a CUDA-capable GPU; use --device=cpu')
    return device


def optimizer_hyperparameters(name, adam_hyperparameters):
    """The keywords besides lr that StyleGAN's train.py passes to optimizer `name` (or an alias): every
    hyperparameter of `ganpatch.optim.default_hyperparameters(name)` at its default, except that the Adam family
    (`ganpatch.optim.takes_adam_hyperparameters`: adam, extraadam, optimistic_adam) takes `adam_hyperparameters`
    (upstream's Adam betas and eps); the ACClip variants keep the betas their names fix and the SGD family takes
    none. Recorded in full in training_options.json."""
    hyperparameters = {key: list(value) if isinstance(value, tuple) else value
                       for key, value in ganpatch.optim.default_hyperparameters(name).items()}
    if ganpatch.optim.takes_adam_hyperparameters(name):
        hyperparameters.update(adam_hyperparameters)
    return hyperparameters


def configure_optimizers(G_opt_kwargs, D_opt_kwargs, opts):
    """--optimizer and --clip-*: turn upstream's Adam kwargs (lr already set) into ganpatch.optim's, in place.

    The default (adam without clipping) leaves upstream's `torch.optim.Adam` entry untouched, byte for byte.
    Otherwise the class is `ganpatch.optim.build_optimizer` with the optimizer's name as given (an alias such as
    extra_sgd is resolved there), the clip mode, one threshold per network and `optimizer_hyperparameters`
    (plain SGD has no momentum; the Adam family keeps upstream's betas and eps). A clip mode needs both
    thresholds, thresholds need a clip mode, and --clip-norm-type / --clip-norm-eps away from their defaults
    need --clip-mode=norm.
    """
    if opts['clip_mode'] != 'none' and (opts['clip_gmax'] is None or opts['clip_dmax'] is None):
        raise click.ClickException(f'--clip-mode={opts["clip_mode"]} requires --clip-gmax and --clip-dmax')
    if opts['clip_mode'] == 'none' and (opts['clip_gmax'] is not None or opts['clip_dmax'] is not None):
        raise click.ClickException('--clip-gmax and --clip-dmax require --clip-mode=norm or --clip-mode=value')
    stray = [f'--{name.replace("_", "-")}' for name, default in NORM_CLIP_DEFAULTS.items() if opts[name] != default]
    if stray and opts['clip_mode'] != 'norm':
        raise click.ClickException(f'{" and ".join(stray)} require{"s" if len(stray) == 1 else ""} --clip-mode=norm')
    if opts['optimizer'] == 'adam' and opts['clip_mode'] == 'none':
        return
    for opt_kwargs, clip_max in [(G_opt_kwargs, opts['clip_gmax']), (D_opt_kwargs, opts['clip_dmax'])]:
        adam_hyperparameters = {key: opt_kwargs.pop(key) for key in ['betas', 'eps'] if key in opt_kwargs}
        opt_kwargs.update(class_name='ganpatch.optim.build_optimizer', name=opts['optimizer'], clip_mode=opts['clip_mode'], clip_threshold=clip_max)
        if opts['clip_mode'] == 'norm': # JSON has no infinity: an infinite norm type is recorded as 'inf'.
            opt_kwargs.update(clip_norm_type='inf' if math.isinf(opts['clip_norm_type']) else opts['clip_norm_type'], clip_norm_eps=opts['clip_norm_eps'])
        opt_kwargs.update(optimizer_hyperparameters(opts['optimizer'], adam_hyperparameters))


def configure_regularization(c, opts):
    """--gregint / --dregint: `c.G_reg_interval` / `c.D_reg_interval` in place, after the base config set its own.

    As in the clipped-methods authors' train.py: not given keeps the config's interval; 0 disables lazy
    regularization (None: one Gboth / Dboth phase per minibatch, the penalty in every step); N regularizes every
    N minibatches (phases Gmain + Greg, lr and betas scaled by mb_ratio = N / (N + 1)).
    """
    for name, key in [('gregint', 'G_reg_interval'), ('dregint', 'D_reg_interval')]:
        if opts[name] is not None:
            c[key] = opts[name] if opts[name] > 0 else None


def configure_logging(c, opts):
    """--log-grad and --log-update-norm: `c.log_grad` / `c.log_update_norm`, only when set (so that a default run
    records the same training_options.json as before). --log-grad needs TensorBoard, checked here."""
    if opts['log_grad']:
        try:
            import torch.utils.tensorboard # noqa: F401 (what the training loop writes its tfevents with)
        except Exception as err: # pylint: disable=broad-except
            raise click.ClickException(f'--log-grad writes TensorBoard histograms, but torch.utils.tensorboard cannot be imported '
                f'({type(err).__name__}: {err}); install it with: pip install tensorboard')
        c['log_grad'] = True
    if opts['log_update_norm']:
        c['log_update_norm'] = True


def configure_bmc(loss_kwargs, opts, seed, given=()):
    """--bmc and its parameters: `loss_kwargs.bmc_target` and `bmc_kwargs`, in place (nothing for --bmc=none).

    The increments are drawn from a generator seeded with `seed`, identical on every rank. BMC parameters
    given (`given`: names from `given_options`) without --bmc are an error, as clip thresholds without a mode.
    """
    if opts['bmc'] == 'none':
        stray = [f'--{name.replace("_", "-")}' for name in BMC_PARAMETERS if name in given]
        if stray:
            raise click.ClickException(f'{", ".join(stray)} require{"s" if len(stray) == 1 else ""} --bmc=G or --bmc=D')
        return
    loss_kwargs['bmc_target'] = opts['bmc']
    loss_kwargs['bmc_kwargs'] = dict(rho1=opts['bmc_rho1'], rho2=opts['bmc_rho2'], b1_mean=opts['bmc_b1_mean'],
        b1_std=opts['bmc_b1_std'], b2_mean=opts['bmc_b2_mean'], b2_std=opts['bmc_b2_std'], seed=seed)


def load_network_pickle(url, option='--resume'):
    """Load a network pickle with the tree's `legacy.load_network_pkl`, or raise a click error naming the file.

    Loading a pickle runs code from it (pickle's design, which upstream's network pickles rely on): load only
    files you trust. Called before the run directory is created, so a missing, truncated or foreign file
    fails at startup, --dry-run included.
    """
    import dnnlib
    import legacy
    try:
        with dnnlib.util.open_url(url) as f:
            data = legacy.load_network_pkl(f)
    except Exception as err: # pylint: disable=broad-except
        raise click.ClickException(f'{option}={url}: cannot load a network pickle: {type(err).__name__}: {err}')
    missing = [key for key in ('G', 'D', 'G_ema') if key not in data]
    if missing:
        raise click.ClickException(f'{option}={url}: not a training snapshot (no {", ".join(missing)} in it)')
    return data
