''' ganpatch options
    Checks of the options that ganpatch adds to utils.prepare_parser
    (optimizers and clipping, the lr schedule, the Brownian Motion Controller,
    the gradient-noise train function), and the objects they configure
    that train.py and train_fns.py share. '''
import ganpatch.bmc


# Refuse inconsistent options before any work, with argparse's usage message
# (exit status 2)
def check_config(parser, config):
  thresholds = {'--G_clip': config['G_clip'], '--D_clip': config['D_clip']}
  if config['clip_mode'] == 'none':
    if any(value is not None for value in thresholds.values()):
      parser.error('--G_clip/--D_clip need --clip_mode norm or --clip_mode value')
  else:
    for name, value in thresholds.items():
      if value is None or not value > 0:
        parser.error('--clip_mode %s needs %s > 0 (got %s)' % (config['clip_mode'], name, value))
  for net in ['G', 'D']:
    if config['%s_mixed_precision' % net] and (config['optimizer'] != 'adam' or config['clip_mode'] != 'none'):
      parser.error('--%s_mixed_precision trains with utils.Adam16, which is --optimizer adam '
                   'without clipping' % net)
  for name in ['bmc_rho1', 'bmc_rho2', 'bmc_b1_std', 'bmc_b2_std']:
    if not config[name] >= 0:
      parser.error('--%s must be >= 0 (got %s)' % (name, config[name]))
  if config['which_train_fn'] == 'gradnoise':
    if not config['resume']:
      parser.error('--which_train_fn gradnoise measures the weights of a trained run: add --resume '
                   '(and --load_weights to pick a copy), with the options the run was trained with')
    if config['gradnoise_itrs'] < 2:
      parser.error('--gradnoise_itrs must be >= 2 (noise statistics need two minibatches per '
                   'network; got %d)' % config['gradnoise_itrs'])


# The Brownian Motion Controller of --bmc (zero terms for --bmc none), its
# increments drawn from a generator seeded with --seed
def brownian_motion_controller(config):
  sampler = ganpatch.bmc.BrownianSampler(
    rho1=config['bmc_rho1'], rho2=config['bmc_rho2'],
    b1_mean=config['bmc_b1_mean'], b1_std=config['bmc_b1_std'],
    b2_mean=config['bmc_b2_mean'], b2_std=config['bmc_b2_std'],
    per_sample=config['bmc_per_sample'], seed=config['seed'])
  return ganpatch.bmc.BrownianMotionController(config['bmc'], sampler)
