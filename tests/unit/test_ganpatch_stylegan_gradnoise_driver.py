"""ganpatch.stylegan.gradnoise_driver: the tree-independent checks of gradnoise_train.py."""

from types import SimpleNamespace as NS

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
