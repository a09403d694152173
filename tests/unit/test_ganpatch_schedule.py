"""ganpatch.schedule: the linear decay to 0 over a run, recorded initial lr, resumption, bad input."""

import pytest
import torch

from ganpatch.schedule import lr_factor, set_lr


def test_linear_factors():
    assert [lr_factor('linear', itr, 4) for itr in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert lr_factor('linear', 7, 4) == 0.0 # Past the end: never negative.
    assert lr_factor('none', 3, 4) == 1.0


def test_set_lr_decays_from_the_recorded_initial_lr():
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([param], lr=0.2)
    lrs = []
    for itr in range(4):
        set_lr(opt, 'linear', itr, 4)
        lrs.append(opt.param_groups[0]['lr'])
    assert lrs == pytest.approx([0.2, 0.15, 0.1, 0.05])
    assert opt.param_groups[0]['initial_lr'] == 0.2


def test_a_resumed_optimizer_continues_the_schedule():
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([param], lr=0.2)
    set_lr(opt, 'linear', 2, 4) # lr is now 0.1; a resumed run builds a fresh optimizer ...
    resumed = torch.optim.Adam([param], lr=0.2)
    resumed.load_state_dict(opt.state_dict()) # ... and loads the saved state with its initial_lr.
    set_lr(resumed, 'linear', 3, 4)
    assert resumed.param_groups[0]['lr'] == pytest.approx(0.05)


def test_none_leaves_the_optimizer_untouched():
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([param], lr=0.2)
    set_lr(opt, 'none', 3, 4)
    assert opt.param_groups[0]['lr'] == 0.2 and 'initial_lr' not in opt.param_groups[0]


def test_bad_input():
    with pytest.raises(ValueError, match='Unknown lr schedule'):
        lr_factor('cosine', 0, 4)
    with pytest.raises(ValueError, match='total_itrs >= 1'):
        lr_factor('linear', 0, 0)
