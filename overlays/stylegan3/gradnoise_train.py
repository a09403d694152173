# Part of ganpatch (not NVIDIA code): gradient-noise diagnostics for a trained StyleGAN.

"""Measure the stochastic gradient noise of a network pickle of this tree, with no parameter updates.

The measurement, its command line and its outputs are ganpatch.stylegan.gradnoise_driver's (shared with
the stylegan2-ada tree); this file says how this tree's loss and networks are driven without touching
their running statistics. `python gradnoise_train.py --help` lists the options.
"""

from ganpatch.stylegan import gradnoise_driver
from training.loss import StyleGAN2Loss

#----------------------------------------------------------------------------

class FrozenStatisticsLoss(StyleGAN2Loss):
    """StyleGAN2Loss that never updates the networks' running statistics (w_avg, magnitude EMAs)."""

    def run_G(self, z, c, update_emas=False):
        return super().run_G(z, c, update_emas=False)

    def run_D(self, img, c, blur_sigma=0, update_emas=False):
        return super().run_D(img, c, blur_sigma=blur_sigma, update_emas=False)

class StyleGAN3Tree:
    """What gradnoise_driver needs to know about this tree."""

    configs = ('stylegan3-t', 'stylegan3-r', 'stylegan2')

    @staticmethod
    def configs_of(G, D):
        if not hasattr(G.synthesis, 'input'): # Only StyleGAN3's synthesis network starts from a SynthesisInput.
            return ['stylegan2']
        return ['stylegan3-r' if G.init_kwargs.get('conv_kernel') == 1 else 'stylegan3-t']

    @classmethod
    def loss_kwargs(cls, G, D):
        if cls.configs_of(G, D) == ['stylegan2']: # As train.py --cfg=stylegan2.
            return dict(style_mixing_prob=0.9, pl_weight=2, pl_no_weight_grad=True)
        return dict(pl_weight=0)

    @staticmethod
    def make_loss(device, G, D, augment_pipe, **loss_kwargs):
        return FrozenStatisticsLoss(device=device, G=G, D=D, augment_pipe=augment_pipe, **loss_kwargs)

    @staticmethod
    def accumulate(loss, phase, real_img, real_c, gen_z, gen_c, gain):
        loss.accumulate_gradients(phase=phase, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c, gain=gain, cur_nimg=0)

#----------------------------------------------------------------------------

main = gradnoise_driver.command(StyleGAN3Tree())

if __name__ == "__main__":
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
