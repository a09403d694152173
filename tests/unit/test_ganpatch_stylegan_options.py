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
@options.bmc_options
def cli(ctx, **kwargs):
    click.echo(repr(sorted(kwargs.items())))
    click.echo('GIVEN ' + repr(sorted(options.given_options(ctx))))


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize('option', ['--kimg', '--tick', '--glr', '--dlr', '--clip-gmax', '--clip-dmax', '--bmc-rho1',
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


def test_optimizer_choices_follow_ganpatch_optim():
    import ganpatch.optim
    assert set(ganpatch.optim.OPTIMIZERS) <= set(options.OPTIMIZER_CHOICES)
    for name in options.OPTIMIZER_CHOICES:
        assert invoke(f'--optimizer={name}').exit_code == 0
    assert "Invalid value for '--optimizer'" in invoke('--optimizer=rmsprop').output


def adam_kwargs(lr):
    return dict(class_name='torch.optim.Adam', lr=lr, betas=[0.0, 0.99], eps=1e-8)


def optimizer_opts(**overrides):
    return {**dict(optimizer='adam', clip_mode='none', clip_gmax=None, clip_dmax=None), **overrides}


def test_default_adam_without_clipping_is_upstreams_entry_unchanged():
    G, D = adam_kwargs(0.002), adam_kwargs(0.0025)
    options.configure_optimizers(G, D, optimizer_opts())
    assert G == adam_kwargs(0.002) and D == adam_kwargs(0.0025)


def test_sgd_with_value_clipping():
    G, D = adam_kwargs(0.35), adam_kwargs(0.35)
    options.configure_optimizers(G, D, optimizer_opts(optimizer='sgd', clip_mode='value', clip_gmax=0.0025, clip_dmax=0.005))
    assert G == dict(class_name='ganpatch.optim.build_optimizer', lr=0.35, name='sgd', clip_mode='value', clip_threshold=0.0025)
    assert D['clip_threshold'] == 0.005


def test_adam_family_keeps_upstreams_betas():
    G, D = adam_kwargs(0.002), adam_kwargs(0.002)
    options.configure_optimizers(G, D, optimizer_opts(optimizer='extraadam', clip_mode='norm', clip_gmax=1, clip_dmax=2))
    assert G == dict(class_name='ganpatch.optim.build_optimizer', lr=0.002, betas=[0.0, 0.99], eps=1e-8, name='extraadam',
                     clip_mode='norm', clip_threshold=1)


def test_the_configured_optimizer_builds():
    import torch
    import ganpatch.optim
    G, D = adam_kwargs(0.1), adam_kwargs(0.1)
    options.configure_optimizers(G, D, optimizer_opts(optimizer='extrasgd', clip_mode='norm', clip_gmax=1, clip_dmax=1))
    kwargs = {key: value for key, value in G.items() if key != 'class_name'}
    opt = ganpatch.optim.build_optimizer(params=[torch.nn.Parameter(torch.ones(3))], **kwargs)
    assert ganpatch.optim.is_extragradient(opt)


@pytest.mark.parametrize('overrides, message', [
    (dict(clip_mode='norm'), '--clip-mode=norm requires --clip-gmax and --clip-dmax'),
    (dict(clip_mode='value', clip_gmax=1.0), '--clip-mode=value requires --clip-gmax and --clip-dmax'),
    (dict(clip_dmax=1.0), '--clip-gmax and --clip-dmax require --clip-mode=norm or --clip-mode=value'),
])
def test_clip_thresholds_and_mode_go_together(overrides, message):
    with pytest.raises(click.ClickException, match=message.replace('-', r'\-')):
        options.configure_optimizers(adam_kwargs(1), adam_kwargs(1), optimizer_opts(**overrides))


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


def test_uses_adam_betas():
    assert options.uses_adam_betas('adam') and options.uses_adam_betas('extraadam')
    assert not options.uses_adam_betas('sgd') and not options.uses_adam_betas('extrasgd')
