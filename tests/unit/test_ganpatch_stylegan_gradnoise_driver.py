"""ganpatch.stylegan.gradnoise_driver: the tree-independent checks of gradnoise_train.py."""

from types import SimpleNamespace as NS

import pytest

from ganpatch.stylegan import gradnoise_driver


class Tree:
    configs = ('a', 'b', 'c')

    @staticmethod
    def configs_of(G, D):
        return ['b', 'c']


def networks(cbase=256, cmax=32, map_depth=2, mbstd=2):
    G = NS(init_kwargs=NS(mapping_kwargs=NS(num_layers=map_depth)))
    D = NS(init_kwargs=NS(channel_base=cbase, channel_max=cmax, epilogue_kwargs=NS(mbstd_group_size=mbstd)))
    return G, D


def test_only_given_flags_that_disagree_are_reported():
    G, D = networks()
    opts = dict(cfg='a', cbase=16384, cmax=32, map_depth=None, mbstd_group=4)
    messages = gradnoise_driver.architecture_mismatches(Tree, opts, {'cfg', 'cbase', 'cmax'}, G, D)
    assert messages == ['--cfg=a disagrees with the pickle (b|c); using the pickle',
                        '--cbase=16384 disagrees with the pickle (256); using the pickle']
    assert gradnoise_driver.architecture_mismatches(Tree, {**opts, 'cfg': 'c', 'cbase': 256}, {'cfg', 'cbase'}, G, D) == []
    assert gradnoise_driver.architecture_mismatches(Tree, opts, set(), G, D) == [] # Defaults are never compared.


def test_phases_follow_the_loss_options():
    assert gradnoise_driver.phases_of(dict(pl_weight=2), r1_gamma=1) == ['Gmain', 'Greg', 'Dmain', 'Dreg']
    assert gradnoise_driver.phases_of(dict(pl_weight=0), r1_gamma=1) == ['Gmain', 'Dmain', 'Dreg']
    assert gradnoise_driver.phases_of(dict(pl_weight=2), r1_gamma=0) == ['Gmain', 'Greg', 'Dmain']


class Pipe:
    """A stand-in augmentation pipe: constructor arguments kept as persistence does, and a p buffer."""

    def __init__(self, *args, **kwargs):
        import torch
        self.init_args, self.init_kwargs = args, kwargs
        self.p = torch.tensor(0.8)


def test_augmentation_defaults_to_a_fresh_pipe_at_p_zero_like_the_authors():
    pickled = Pipe(xflip=1, hue=1)
    fresh = gradnoise_driver.augment_pipe_for('ada', 0.0, pickled)
    assert fresh is not pickled and type(fresh) is Pipe and fresh.init_kwargs == dict(xflip=1, hue=1)
    assert float(fresh.p) == 0.0 and float(pickled.p) == pytest.approx(0.8) # The pickle's pipe is left alone.
    assert float(gradnoise_driver.augment_pipe_for('fixed', 0.3, pickled).p) == pytest.approx(0.3)


def test_augmentation_from_the_pickle_or_none():
    pickled = Pipe()
    resumed = gradnoise_driver.augment_pipe_for('resume', None, pickled)
    assert resumed is not pickled and float(resumed.p) == pytest.approx(0.8)
    assert gradnoise_driver.augment_pipe_for('resume', None, None) is None
    assert gradnoise_driver.augment_pipe_for('noaug', None, pickled) is None


def test_authors_file_names_are_those_of_their_stylegan_measurement():
    assert gradnoise_driver.AUTHORS_FILES == {'Gmain': ('generator_full_grad.pth', 'generator_stoch_noise.npy'),
                                              'Dmain': ('discriminator_full_grad.pth', 'discriminator_stoch_noise.npy')}
