# Part of ganpatch (not NVIDIA code): gradient-noise diagnostics for a trained StyleGAN2-ADA.

"""Measure the stochastic gradient noise of a network pickle of this tree, with no parameter updates.

The measurement, its command line and its outputs are ganpatch.stylegan.gradnoise_driver's (shared with
the stylegan3 tree); this file says how this tree's loss and networks are driven without touching their
running statistics. `python gradnoise_train.py --help` lists the options.
"""

from ganpatch.stylegan import gradnoise_driver
from training.loss import StyleGAN2Loss

#----------------------------------------------------------------------------

class StyleGAN2ADATree:
    """What gradnoise_driver needs to know about this tree."""

    configs = ('auto', 'stylegan2', 'paper256', 'paper512', 'paper1024', 'cifar')

    @classmethod
    def configs_of(cls, G, D):
        # Only --cfg=cifar builds a different architecture ('orig' discriminator); the others differ in width,
        # depth and hyperparameters, which the pickle holds and the other flags are checked against.
        if D.init_kwargs.get('architecture', 'resnet') == 'orig':
            return ['cifar']
        return [cfg for cfg in cls.configs if cfg != 'cifar']

    @classmethod
    def loss_kwargs(cls, G, D):
        if cls.configs_of(G, D) == ['cifar']: # As train.py --cfg=cifar: no path length, no style mixing.
            return dict(pl_weight=0, style_mixing_prob=0)
        return dict(pl_weight=2, style_mixing_prob=0.9) # StyleGAN2Loss's defaults, as train.py leaves them.

    @staticmethod
    def make_loss(device, G, D, augment_pipe, **loss_kwargs):
        return StyleGAN2Loss(device=device, G_mapping=G.mapping, G_synthesis=G.synthesis, D=D, augment_pipe=augment_pipe, **loss_kwargs)

    @staticmethod
    def accumulate(loss, phase, real_img, real_c, gen_z, gen_c, gain):
        # The mapping network updates w_avg in every training-mode forward; w_avg only enters truncation,
        # which training does not use, so restoring it afterwards leaves the gradients as they were.
        w_avg = loss.G_mapping.w_avg.clone()
        loss.accumulate_gradients(phase=phase, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c, sync=True, gain=gain)
        loss.G_mapping.w_avg.copy_(w_avg)

#----------------------------------------------------------------------------

main = gradnoise_driver.command(StyleGAN2ADATree())

if __name__ == "__main__":
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
