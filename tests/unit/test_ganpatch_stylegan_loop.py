"""ganpatch.stylegan.loop and .launch: the phase helpers both StyleGAN training loops use."""

import numpy as np
import pytest
import torch

import ganpatch.optim
from ganpatch.stylegan import launch, loop


def test_lazy_regularization_scales_lr_for_every_optimizer_and_betas_for_adam():
    adam = loop.lazy_regularization_kwargs(dict(class_name='torch.optim.Adam', lr=0.002, betas=[0.0, 0.99], eps=1e-8), 16 / 17)
    assert adam == dict(class_name='torch.optim.Adam', lr=0.002 * 16 / 17, betas=[0.0 ** (16 / 17), 0.99 ** (16 / 17)], eps=1e-8)
    sgd_kwargs = dict(class_name='ganpatch.optim.build_optimizer', name='sgd', lr=0.35, clip_mode='value', clip_threshold=0.01)
    sgd = loop.lazy_regularization_kwargs(sgd_kwargs, 4 / 5)
    assert sgd == {**sgd_kwargs, 'lr': 0.35 * 4 / 5} and sgd_kwargs['lr'] == 0.35 # The input is not changed.


def test_lazy_regularization_rescales_acclips_betas_as_the_authors_did():
    """Their training loop raised every optimizer's betas to mb_ratio; ACClip's momentum and threshold moment
    are running averages per step like Adam's, so they keep their decay per minibatch the same way."""
    acclip = dict(class_name='ganpatch.optim.build_optimizer', name='nomom_acclip', lr=1e-4, betas=[0.0, 0.99], eps=1e-5)
    assert loop.lazy_regularization_kwargs(acclip, 16 / 17)['betas'] == [0.0, 0.99 ** (16 / 17)]


class Recorder:
    """A quadratic 'phase': gradient x - target_k on the k-th minibatch; records what update_phase calls."""

    def __init__(self, param):
        self.param = param
        self.calls = []
        self.reports = []

    def compute_gradient(self, target):
        self.calls.append(('gradient', float(target), self.param.detach().clone()))
        self.param.grad = self.param.detach() - target

    def draw(self):
        self.calls.append(('draw',))
        return (torch.tensor(10.0),)

    def report(self, name, value):
        self.reports.append((name, float(value)))


def test_plain_optimizer_one_gradient_one_step_no_fresh_minibatch():
    param = torch.nn.Parameter(torch.tensor(1.0))
    rec = Recorder(param)
    opt = ganpatch.optim.build_optimizer('sgd', [param], lr=0.5, clip_mode='value', clip_threshold=100)
    loop.update_phase('Dmain', opt, rec.compute_gradient, (torch.tensor(3.0),), rec.draw, rec.report)
    assert [call[0] for call in rec.calls] == ['gradient']
    assert float(param.detach()) == pytest.approx(1.0 - 0.5 * (1.0 - 3.0))
    assert rec.reports == [('Grad/Dmain_norm', 2.0)]


def test_seg_extrapolates_on_a_fresh_minibatch_and_updates_from_the_real_iterate():
    """x~ = x - lr g(x; xi1) with xi1 drawn fresh; x <- x - lr g(x~; xi2) with xi2 the phase's minibatch."""
    param = torch.nn.Parameter(torch.tensor(1.0))
    rec = Recorder(param)
    opt = ganpatch.optim.build_optimizer('extrasgd', [param], lr=0.5)
    loop.update_phase('Gmain', opt, rec.compute_gradient, (torch.tensor(3.0),), rec.draw, rec.report)
    assert [call[0] for call in rec.calls] == ['draw', 'gradient', 'gradient']
    assert rec.calls[1][1:] == (10.0, torch.tensor(1.0))           # g(x; xi1) at the real iterate
    x_tilde = 1.0 - 0.5 * (1.0 - 10.0)
    assert rec.calls[2][1] == 3.0 and float(rec.calls[2][2]) == pytest.approx(x_tilde) # g(x~; xi2)
    assert float(param.detach()) == pytest.approx(1.0 - 0.5 * (x_tilde - 3.0))
    assert not opt.is_extrapolated
    loop.check_real_iterates([opt])


def test_torch_adam_is_stepped_without_a_norm_report():
    param = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    rec = Recorder(param)
    opt = torch.optim.Adam([param], lr=0.1)
    loop.update_phase('Gmain', opt, rec.compute_gradient, (torch.tensor(0.0),), rec.draw, rec.report)
    assert rec.reports == [] and not torch.equal(param.detach(), torch.tensor([1.0, 2.0]))


def test_update_norm_is_reported_from_the_real_iterate_for_seg():
    param = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    rec = Recorder(param)
    opt = ganpatch.optim.build_optimizer('extrasgd', [param], lr=0.5)
    loop.update_phase('Dmain', opt, rec.compute_gradient, (torch.tensor(3.0),), rec.draw, rec.report, report_update_norm=True)
    moved = float(torch.linalg.vector_norm(param.detach() - torch.tensor([1.0, 1.0])))
    assert rec.reports[-1] == ('Update/Dmain_norm', pytest.approx(moved)) and moved > 0
    rec.reports.clear()
    loop.update_phase('Dmain', opt, rec.compute_gradient, (torch.tensor(3.0),), rec.draw, rec.report)
    assert [name for name, _ in rec.reports] == ['Grad/Dmain_norm'] # Off: nothing more.


def test_update_norm_is_one_norm_over_all_tensors():
    before = [torch.zeros(2), torch.zeros(1)]
    assert float(loop.update_norm(before, [torch.tensor([3.0, 0.0]), torch.tensor([4.0])])) == 5.0


def test_captured_gradient_is_the_raw_gradient_before_value_clipping():
    param = torch.nn.Parameter(torch.tensor([0.0, 0.0]))
    captured = []

    def gradient(target):
        param.grad = torch.tensor([5.0, -0.5])
    opt = ganpatch.optim.build_optimizer('sgd', [param], lr=1.0, clip_mode='value', clip_threshold=1.0)
    loop.update_phase('Gmain', opt, gradient, (None,), None, lambda *args: None, capture_gradient=captured.append)
    assert torch.equal(captured[0], torch.tensor([5.0, -0.5])) # The value clip changed .grad in place afterwards.
    assert torch.equal(param.detach(), torch.tensor([-1.0, 0.5]))


@pytest.mark.parametrize('cur_nimg, cur_tick, expected', [
    (0, 0, True),       # the first iteration ends tick 0
    (100, 1, False),    # 104 < 96 + 16
    (108, 1, True),     # 112 >= 96 + 16: the tick's last minibatch
    (196, 1, True),     # 200 >= total: the run's last
])
def test_ends_tick_predicts_the_loops_tick_condition(cur_nimg, cur_tick, expected):
    assert loop.ends_tick(cur_nimg, 4, cur_tick, tick_start_nimg=96, kimg_per_tick=0.016, total_kimg=0.2) == expected


class Writer:
    def __init__(self):
        self.calls = []

    def add_histogram(self, tag, values, bins, global_step, walltime):
        self.calls.append((tag, values.tolist(), bins, global_step, walltime))


def test_gradient_histograms_keep_the_main_phases_and_write_their_tags():
    histograms = loop.GradientHistograms()
    assert histograms.capture('Greg') is None and histograms.capture('Dreg') is None
    histograms.capture('Gmain')(torch.tensor([1.0, 2.0]))
    histograms.capture('Dboth')(torch.tensor([3.0]))
    writer = Writer()
    histograms.write(writer, global_step=7, walltime=1.5)
    assert writer.calls == [('Histogram/D_grads', [3.0], 150, 7, 1.5), ('Histogram/G_grads', [1.0, 2.0], 150, 7, 1.5)]
    histograms.write(writer, global_step=8, walltime=2.0)
    assert len(writer.calls) == 2 # Written once, then forgotten.


def test_check_real_iterates_fails_inside_an_extrapolation():
    param = torch.nn.Parameter(torch.tensor(1.0))
    opt = ganpatch.optim.build_optimizer('extrasgd', [param], lr=0.5)
    param.grad = torch.tensor(1.0)
    opt.extrapolate()
    with pytest.raises(AssertionError, match='extrapolated weights'):
        loop.check_real_iterates([opt])


class ToyDataset:
    def __len__(self):
        return 5

    def get_label(self, idx):
        return np.array([idx], dtype=np.float32)


def test_draw_phase_minibatch_splits_into_rounds():
    np.random.seed(0)
    images = torch.full([4, 3, 2, 2], 255, dtype=torch.uint8)
    iterator = iter([(images, torch.zeros([4, 1]))])
    real_img, real_c, gen_z, gen_c = loop.draw_phase_minibatch(iterator, ToyDataset(), batch_size=4, batch_gpu=2, z_dim=8, device='cpu')
    assert [t.shape for t in real_img] == [torch.Size([2, 3, 2, 2])] * 2 and float(real_img[0].max()) == 1.0
    assert len(real_c) == 2 and [t.shape for t in gen_z] == [torch.Size([2, 8])] * 2 and len(gen_c) == 2


def test_launch_single_process_needs_no_process_group(tmp_path):
    assert launch.init_distributed(0, 1, 'cpu', str(tmp_path)) is None
    assert launch.process_device(3, 'cpu') == torch.device('cpu')
    assert launch.process_device(1, 'cuda') == torch.device('cuda', 1)
    seen = []
    launch.spawn(lambda rank, a, b: seen.append((rank, a, b)), ('x', 'y'), 1)
    assert seen == [(0, 'x', 'y')]
