"""ganpatch.stylegan.options: the click options both StyleGAN trees share, and what they configure."""

import click
import pytest
from click.testing import CliRunner

from ganpatch.stylegan import options


@click.command()
@click.pass_context
@click.option('--kimg', type=options.KIMG, default=25000)
@options.tick_option
@options.grid_option
@options.device_option
@options.width_options
@options.learning_rate_options
@options.optimizer_options
@options.regularization_options
@options.logging_options
@options.bmc_options
def cli(ctx, **kwargs):
    click.echo(repr(sorted(kwargs.items())))
    click.echo('GIVEN ' + repr(sorted(options.given_options(ctx))))


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize('option', ['--kimg', '--tick', '--glr', '--dlr', '--clip-gmax', '--clip-dmax', '--clip-norm-eps', '--bmc-rho1',
                                    '--bmc-rho2', '--bmc-b1-mean', '--bmc-b1-std', '--bmc-b2-mean', '--bmc-b2-std'])
@pytest.mark.parametrize('value', ['nan', 'inf', '-inf', 'NaN', '1e999'])
def test_every_float_option_rejects_non_finite_values(option, value):
    result = invoke(f'{option}={value}')
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output
    assert 'is not a finite number' in result.output


def test_ranges_still_apply_and_finite_values_pass():
    assert "Invalid value for '--kimg'" in invoke('--kimg=0').output
    assert "Invalid value for '--clip-gmax'" in invoke('--clip-gmax=-1').output
    assert "Invalid value for '--bmc-rho1'" in invoke('--bmc-rho1=-0.1').output
    result = invoke('--kimg=0.016', '--bmc-b1-mean=-2.5', '--glr=0')
    assert result.exit_code == 0, result.output
    assert "('kimg', 0.016)" in result.output and "('bmc_b1_mean', -2.5)" in result.output and "('glr', 0.0)" in result.output


def test_finite_float_range_help_shows_bounds_only_when_there_are_some():
    assert options.FINITE_FLOAT._describe_range() == ''
    assert options.POSITIVE_FLOAT._describe_range() == 'x>0'
    assert options.FiniteFloatRange(min=0, max=1)._describe_range() == '0<=x<=1'
    with pytest.raises(click.BadParameter, match='not a finite number'):
        options.FiniteFloatRange(min=0, max=1).convert('nan', None, None)


def test_grid_size():
    assert "('grid', (4, 2))" in invoke('--grid=4x2').output
    for bad in ['4by2', '0x2', '4x', 'x2', '-1x2']:
        result = invoke(f'--grid={bad}')
        assert result.exit_code == 2 and "Invalid value for '--grid'" in result.output, (bad, result.output)


def test_kimg_value_keeps_whole_numbers_ints():
    assert options.kimg_value(25000.0) == 25000 and isinstance(options.kimg_value(25000.0), int)
    assert options.kimg_value(0.016) == 0.016
    assert options.kimg_value(4) == 4


def test_given_options_are_those_on_the_command_line():
    result = invoke('--bmc-rho1=0.5', '--optimizer=sgd')
    assert "GIVEN ['bmc_rho1', 'optimizer']" in result.output, result.output


def test_optimizer_accepts_every_ganpatch_optimizer_and_the_authors_names():
    import ganpatch.optim
    assert set(ganpatch.optim.OPTIMIZERS) | {'extra_sgd', 'extra_adam'} <= set(ganpatch.optim.OPTIMIZER_CHOICES)
    for name in ganpatch.optim.OPTIMIZER_CHOICES:
        result = invoke(f'--optimizer={name}')
        assert result.exit_code == 0 and f"('optimizer', '{name}')" in result.output, result.output
    assert "Invalid value for '--optimizer'" in invoke('--optimizer=rmsprop').output


def test_optimizer_help_lists_each_optimizer_once_with_its_alias():
    import ganpatch.optim
    help_text = ' '.join(invoke('--help').output.split())
    assert ' '.join(f'Optimizer for G and D: {ganpatch.optim.describe_choices()}'.split()) in help_text
    assert 'extrasgd (alias extra_sgd)' in help_text and 'nomom_paper_acclip' in help_text


def test_clip_norm_type_takes_numbers_at_least_one_and_inf():
    assert "('clip_norm_type', 3.0)" in invoke('--clip-norm-type=3').output
    assert "('clip_norm_type', inf)" in invoke('--clip-norm-type=inf').output
    for bad in ['0.5', 'nan', 'two', '-inf']:
        result = invoke(f'--clip-norm-type={bad}')
        assert result.exit_code == 2 and "Invalid value for '--clip-norm-type'" in result.output, (bad, result.output)


def test_regularization_intervals_and_logging_flags_parse():
    result = invoke('--gregint=0', '--dregint=8', '--log-grad', '--log-update-norm')
    assert result.exit_code == 0, result.output
    for item in ["('gregint', 0)", "('dregint', 8)", "('log_grad', True)", "('log_update_norm', True)"]:
        assert item in result.output
    assert "Invalid value for '--gregint'" in invoke('--gregint=-1').output
    assert "('gregint', None)" in invoke().output and "('log_grad', False)" in invoke().output


def adam_kwargs(lr):
    return dict(class_name='torch.optim.Adam', lr=lr, betas=[0.0, 0.99], eps=1e-8)


def optimizer_opts(**overrides):
    return {**dict(optimizer='adam', clip_mode='none', clip_gmax=None, clip_dmax=None, clip_norm_type=2.0, clip_norm_eps=0.0), **overrides}


def configured(**overrides):
    G, D = adam_kwargs(0.002), adam_kwargs(0.0025)
    options.configure_optimizers(G, D, optimizer_opts(**overrides))
    return G, D


def test_default_adam_without_clipping_is_upstreams_entry_unchanged():
    assert configured() == (adam_kwargs(0.002), adam_kwargs(0.0025))


def test_sgd_with_value_clipping_records_every_hyperparameter():
    G, D = configured(optimizer='sgd', clip_mode='value', clip_gmax=0.0025, clip_dmax=0.005)
    assert G == dict(class_name='ganpatch.optim.build_optimizer', lr=0.002, name='sgd', clip_mode='value', clip_threshold=0.0025,
                     momentum=0.0, weight_decay=0.0)
    assert D['clip_threshold'] == 0.005 and D['lr'] == 0.0025


@pytest.mark.parametrize('name', ['adam', 'extraadam', 'extra_adam', 'optimistic_adam'])
def test_adam_family_keeps_upstreams_betas_and_eps(name):
    G, _ = configured(optimizer=name, clip_mode='norm', clip_gmax=1, clip_dmax=2)
    assert G == dict(class_name='ganpatch.optim.build_optimizer', lr=0.002, name=name, clip_mode='norm', clip_threshold=1,
                     clip_norm_type=2.0, clip_norm_eps=0.0, betas=[0.0, 0.99], eps=1e-8, weight_decay=0.0)


@pytest.mark.parametrize('name, betas', [('acclip', [0.9, 0.99]), ('nomom_paper_acclip', [0.0, 0.99])])
def test_acclip_keeps_the_betas_its_name_fixes(name, betas):
    G, _ = configured(optimizer=name)
    assert G == dict(class_name='ganpatch.optim.build_optimizer', lr=0.002, name=name, clip_mode='none', clip_threshold=None,
                     **{**ganpatch_defaults(name), 'betas': betas})


def ganpatch_defaults(name):
    import ganpatch.optim
    return {key: list(value) if isinstance(value, tuple) else value for key, value in ganpatch.optim.default_hyperparameters(name).items()}


def test_norm_sgd_takes_its_own_eps_and_no_betas():
    G, _ = configured(optimizer='norm_sgd')
    assert 'betas' not in G and G['eps'] == 1e-8 and G['momentum'] == 0.0


def test_norm_clip_options_are_recorded_with_norm_clipping():
    G, _ = configured(optimizer='sgd', clip_mode='norm', clip_gmax=1, clip_dmax=1, clip_norm_type=float('inf'), clip_norm_eps=1e-6)
    assert (G['clip_norm_type'], G['clip_norm_eps']) == ('inf', 1e-6) # JSON has no infinity.
    G, _ = configured(optimizer='sgd', clip_mode='value', clip_gmax=1, clip_dmax=1)
    assert 'clip_norm_type' not in G and 'clip_norm_eps' not in G


@pytest.mark.parametrize('name', ['adam', 'sgd', 'extra_sgd', 'extra_adam', 'norm_sgd', 'optimistic_adam', 'acclip', 'paper_acclip',
                                  'nomom_acclip', 'nomom_paper_acclip'])
@pytest.mark.parametrize('clip_mode', ['norm', 'value'])
def test_every_configured_optimizer_builds_and_steps_also_with_lazy_regularization(name, clip_mode):
    import torch
    import ganpatch.optim
    from ganpatch.stylegan import loop
    G, _ = configured(optimizer=name, clip_mode=clip_mode, clip_gmax=1, clip_dmax=1, clip_norm_type=float('inf') if clip_mode == 'norm' else 2.0)
    for kwargs in [G, loop.lazy_regularization_kwargs(G, 4 / 5)]:
        param = torch.nn.Parameter(torch.ones(3))
        opt = ganpatch.optim.build_optimizer(params=[param], **{key: value for key, value in kwargs.items() if key != 'class_name'})
        param.grad = torch.tensor([1.0, -2.0, 3.0])
        if ganpatch.optim.is_extragradient(opt):
            opt.extrapolate()
        opt.step()
        assert not torch.equal(param.detach(), torch.ones(3)), name
        assert ganpatch.optim.is_extragradient(opt) == (ganpatch.optim.canonical_name(name) in ('extrasgd', 'extraadam'))


@pytest.mark.parametrize('overrides, message', [
    (dict(clip_mode='norm'), '--clip-mode=norm requires --clip-gmax and --clip-dmax'),
    (dict(clip_mode='value', clip_gmax=1.0), '--clip-mode=value requires --clip-gmax and --clip-dmax'),
    (dict(clip_dmax=1.0), '--clip-gmax and --clip-dmax require --clip-mode=norm or --clip-mode=value'),
    (dict(clip_norm_eps=1e-6), '--clip-norm-eps requires --clip-mode=norm'),
    (dict(clip_mode='value', clip_gmax=1, clip_dmax=1, clip_norm_type=1.0, clip_norm_eps=1e-6),
     '--clip-norm-type and --clip-norm-eps require --clip-mode=norm'),
])
def test_clip_thresholds_and_mode_go_together(overrides, message):
    with pytest.raises(click.ClickException, match=message.replace('-', r'\-')):
        options.configure_optimizers(adam_kwargs(1), adam_kwargs(1), optimizer_opts(**overrides))


@pytest.mark.parametrize('gregint, dregint, expected', [
    (None, None, dict(G_reg_interval=4, D_reg_interval=16)),  # the config's
    (0, None, dict(G_reg_interval=None, D_reg_interval=16)),  # 0: no lazy regularization
    (2, 0, dict(G_reg_interval=2, D_reg_interval=None)),
])
def test_regularization_intervals(gregint, dregint, expected):
    c = dict(G_reg_interval=4, D_reg_interval=16)
    options.configure_regularization(c, dict(gregint=gregint, dregint=dregint))
    assert c == expected


def test_logging_flags_are_recorded_only_when_set():
    c = {}
    options.configure_logging(c, dict(log_grad=False, log_update_norm=False))
    assert c == {}
    options.configure_logging(c, dict(log_grad=True, log_update_norm=True))
    assert c == dict(log_grad=True, log_update_norm=True)


def test_log_grad_without_tensorboard_is_a_clear_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None) # import fails
    with pytest.raises(click.ClickException, match='--log-grad writes TensorBoard histograms.*pip install tensorboard'):
        options.configure_logging({}, dict(log_grad=True, log_update_norm=False))
    c = {}
    options.configure_logging(c, dict(log_grad=False, log_update_norm=True)) # Update norms need no TensorBoard.
    assert c == dict(log_update_norm=True)


BMC_DEFAULTS = dict(bmc='none', bmc_rho1=0.1, bmc_rho2=0.01, bmc_b1_mean=0.0, bmc_b1_std=0.01, bmc_b2_mean=1.0, bmc_b2_std=0.05)


def test_bmc_none_leaves_the_loss_options_alone():
    loss_kwargs = dict(r1_gamma=1)
    options.configure_bmc(loss_kwargs, BMC_DEFAULTS, seed=0)
    assert loss_kwargs == dict(r1_gamma=1)


def test_bmc_g_records_the_authors_defaults_and_the_seed():
    loss_kwargs = {}
    options.configure_bmc(loss_kwargs, {**BMC_DEFAULTS, 'bmc': 'G'}, seed=7, given={'bmc'})
    assert loss_kwargs == dict(bmc_target='G', bmc_kwargs=dict(rho1=0.1, rho2=0.01, b1_mean=0.0, b1_std=0.01, b2_mean=1.0, b2_std=0.05, seed=7))


def test_bmc_parameters_without_bmc_are_an_error():
    with pytest.raises(click.ClickException, match='--bmc-rho1, --bmc-b2-std require --bmc=G or --bmc=D'):
        options.configure_bmc({}, BMC_DEFAULTS, seed=0, given={'bmc_rho1', 'bmc_b2_std', 'optimizer'})


def test_resolve_device(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert options.resolve_device(None) == 'cpu' and options.resolve_device('cpu') == 'cpu'
    with pytest.raises(click.ClickException, match='--device=cuda requires a CUDA-capable GPU'):
        options.resolve_device('cuda')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert options.resolve_device(None) == 'cuda' and options.resolve_device('cpu') == 'cpu'
