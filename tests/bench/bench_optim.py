"""Speed of ganpatch's clipped optimizers on a StyleGAN2-sized parameter list, as ratios to baselines timed in
the same run (medians over interleaved repeats; gradients are fixed, so only the optimizer work is timed).

    PYTHONPATH=overlays/common python tests/bench/bench_optim.py [--device cpu|cuda] [--repeats 25]

Ratios printed (goals from issue 3):
  clipped-SGD step (norm, value) / plain torch SGD(foreach=True) step        goal <= 1.35 for norm
  clipped-SGD step (norm) / clip_grad_norm_(foreach=True) + SGD(foreach=True).step()   goal <= 1.0
  SEG (ExtraSGD) half-steps and iteration / clipped-SGDA step                 reported
and, reported (issue 13):
  clipped-SGD with torch's norm-clip arithmetic (clip_norm_eps=1e-6) / clip_grad_norm_ + SGD
  inf-norm clipped-SGD / torch SGD, and / clip_grad_norm_(norm_type=inf) + SGD
  norm_sgd / torch SGD;  optimistic_adam, acclip, paper_acclip / torch Adam
Gradients that no variant writes to are shared between variants, to keep the memory to about 4.5 GB.
"""

import argparse
import math
import os

import torch

import ganpatch.optim
from timing import interleaved_medians

# ~30M parameters in 90 tensors, like StyleGAN2's G at 256x256 with 512 channels: 3x3 convolutions, style
# affines (512x512) and many bias / vector tensors.
SHAPES = [(512, 512, 3, 3)] * 11 + [(512, 512)] * 14 + [(512,)] * 65
THRESHOLD = 1e-3 # Far below the gradient norm, so the norm clip really scales and the value clip really clamps.
LR = 1e-6


def make_params(device, grads=None, seed=0):
    """Parameters with gradients: `grads` (shared, for variants that leave .grad alone) or fresh ones."""
    generator = torch.Generator(device='cpu').manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator).to(device)) for shape in SHAPES]
    for i, param in enumerate(params):
        param.grad = torch.randn(param.shape, generator=generator).to(device) if grads is None else grads[i]
    return params


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--repeats', type=int, default=25)
    args = parser.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device=cuda needs a CUDA GPU')
    device = torch.device(args.device)

    shared_grads = [param.grad for param in make_params(device)]

    def fresh(name, own_grads=False, **kwargs):
        return ganpatch.optim.build_optimizer(name, make_params(device, None if own_grads else shared_grads), lr=LR, **kwargs)

    norm_clip = dict(clip_mode='norm', clip_threshold=THRESHOLD)
    torch_sgd = torch.optim.SGD(make_params(device, shared_grads), lr=LR, foreach=True)
    pair_params = make_params(device) # clip_grad_norm_ rescales .grad: its own gradients.
    pair_sgd = torch.optim.SGD(pair_params, lr=LR, foreach=True)
    ours_none = fresh('sgd')
    ours_norm = fresh('sgd', **norm_clip)
    ours_value = fresh('sgd', own_grads=True, clip_mode='value', clip_threshold=THRESHOLD)
    ours_torch_arithmetic = fresh('sgd', own_grads=True, clip_norm_eps=1e-6, **norm_clip)
    ours_inf_norm = fresh('sgd', clip_norm_type=math.inf, clip_mode='norm', clip_threshold=THRESHOLD)
    seg = fresh('extrasgd', **norm_clip)
    norm_sgd = fresh('norm_sgd')
    torch_adam = torch.optim.Adam(make_params(device, shared_grads), lr=LR, foreach=True)
    ours_adam = fresh('adam', **norm_clip)
    optimistic_adam = fresh('optimistic_adam')
    acclip = fresh('acclip')
    paper_acclip = fresh('paper_acclip')

    inf_pair_params = make_params(device)
    inf_pair_sgd = torch.optim.SGD(inf_pair_params, lr=LR, foreach=True)

    def torch_pair():
        torch.nn.utils.clip_grad_norm_(pair_params, THRESHOLD, foreach=True)
        pair_sgd.step()

    def torch_inf_pair():
        torch.nn.utils.clip_grad_norm_(inf_pair_params, THRESHOLD, norm_type=math.inf, foreach=True)
        inf_pair_sgd.step()

    variants = {
        'torch SGD step': torch_sgd.step,
        'torch clip_grad_norm_ + SGD step': torch_pair,
        'ours SGD, no clip': ours_none.step,
        'ours SGD, norm clip': ours_norm.step,
        'ours SGD, value clip': ours_value.step,
        'ours SGD, norm clip, eps 1e-6': ours_torch_arithmetic.step,
        'torch clip_grad_norm_(inf) + SGD step': torch_inf_pair,
        'ours SGD, inf-norm clip': ours_inf_norm.step,
        'ours ExtraSGD extrapolate (norm)': seg.extrapolate,
        'ours ExtraSGD step (norm)': seg.step, # Must follow extrapolate: the dict keeps the order.
        'ours norm_sgd': norm_sgd.step,
        'torch Adam step': torch_adam.step,
        'ours Adam, norm clip': ours_adam.step,
        'ours optimistic_adam': optimistic_adam.step,
        'ours acclip': acclip.step,
        'ours paper_acclip': paper_acclip.step,
    }
    median = interleaved_medians(variants, device, args.repeats, warmup=3)

    numel = sum(torch.Size(shape).numel() for shape in SHAPES)
    print(f'{numel / 1e6:.1f}M parameters in {len(SHAPES)} tensors, {device}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats, '
          f'load average {os.getloadavg()[0]:.1f} (other processes make CPU ratios noisy)')
    for name, value in median.items():
        print(f'  {name:38s} {value * 1e3:8.2f} ms')
    seg_iteration = median['ours ExtraSGD extrapolate (norm)'] + median['ours ExtraSGD step (norm)']
    ratios = [
        ('clipped-SGD (norm) / torch SGD', median['ours SGD, norm clip'] / median['torch SGD step'], 'goal <= 1.35'),
        ('clipped-SGD (value) / torch SGD', median['ours SGD, value clip'] / median['torch SGD step'], ''),
        ('clipped-SGD (norm) / clip_grad_norm_ + SGD', median['ours SGD, norm clip'] / median['torch clip_grad_norm_ + SGD step'], 'goal <= 1.0'),
        ('SGD no clip (finite check) / torch SGD', median['ours SGD, no clip'] / median['torch SGD step'], ''),
        ('SEG step / clipped-SGDA step', median['ours ExtraSGD step (norm)'] / median['ours SGD, norm clip'], 'update half-step'),
        ('SEG extrapolate / clipped-SGDA step', median['ours ExtraSGD extrapolate (norm)'] / median['ours SGD, norm clip'], ''),
        ('SEG iteration / clipped-SGDA step', seg_iteration / median['ours SGD, norm clip'], 'both half-steps'),
        ('clipped Adam (norm) / torch Adam', median['ours Adam, norm clip'] / median['torch Adam step'], ''),
        ('clipped-SGD (norm, eps 1e-6) / clip_grad_norm_ + SGD', median['ours SGD, norm clip, eps 1e-6'] / median['torch clip_grad_norm_ + SGD step'], "torch's arithmetic"),
        ('clipped-SGD (inf norm) / torch SGD', median['ours SGD, inf-norm clip'] / median['torch SGD step'], ''),
        ('clipped-SGD (inf norm) / clip_grad_norm_(inf) + SGD', median['ours SGD, inf-norm clip'] / median['torch clip_grad_norm_(inf) + SGD step'], ''),
        ('norm_sgd / torch SGD', median['ours norm_sgd'] / median['torch SGD step'], ''),
        ('optimistic_adam / torch Adam', median['ours optimistic_adam'] / median['torch Adam step'], ''),
        ('acclip / torch Adam', median['ours acclip'] / median['torch Adam step'], 'alpha 2, second moment'),
        ('paper_acclip / torch Adam', median['ours paper_acclip'] / median['torch Adam step'], 'alpha 1'),
    ]
    print('Ratios:')
    for name, ratio, note in ratios:
        print(f'  {name:52s} {ratio:6.3f}  {note}')


if __name__ == '__main__':
    main()
