"""Speed of ganpatch's clipped optimizers on a StyleGAN2-sized parameter list, as ratios to baselines timed in
the same run (medians over interleaved repeats; gradients are fixed, so only the optimizer work is timed).

    PYTHONPATH=overlays/common python tests/bench/bench_optim.py [--device cpu|cuda] [--repeats 25]

Ratios printed (goals from issue 3):
  clipped-SGD step (norm, value) / plain torch SGD(foreach=True) step        goal <= 1.35 for norm
  clipped-SGD step (norm) / clip_grad_norm_(foreach=True) + SGD(foreach=True).step()   goal <= 1.0
  SEG (ExtraSGD) half-steps and iteration / clipped-SGDA step                 reported
"""

import argparse
import os
import statistics
import time

import torch

import ganpatch.optim

# ~30M parameters in 90 tensors, like StyleGAN2's G at 256x256 with 512 channels: 3x3 convolutions, style
# affines (512x512) and many bias / vector tensors.
SHAPES = [(512, 512, 3, 3)] * 11 + [(512, 512)] * 14 + [(512,)] * 65
THRESHOLD = 1e-3 # Far below the gradient norm, so the norm clip really scales and the value clip really clamps.
LR = 1e-6


def make_params(device, seed=0):
    generator = torch.Generator(device='cpu').manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator).to(device)) for shape in SHAPES]
    for param in params:
        param.grad = torch.randn(param.shape, generator=generator).to(device)
    return params


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--repeats', type=int, default=25)
    args = parser.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device=cuda needs a CUDA GPU')
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)

    def fresh(name, **kwargs):
        return ganpatch.optim.build_optimizer(name, make_params(device), lr=LR, **kwargs)

    torch_sgd = torch.optim.SGD(make_params(device), lr=LR, foreach=True)
    pair_params = make_params(device)
    pair_sgd = torch.optim.SGD(pair_params, lr=LR, foreach=True)
    ours_none = fresh('sgd')
    ours_norm = fresh('sgd', clip_mode='norm', clip_threshold=THRESHOLD)
    ours_value = fresh('sgd', clip_mode='value', clip_threshold=THRESHOLD)
    seg = fresh('extrasgd', clip_mode='norm', clip_threshold=THRESHOLD)
    torch_adam = torch.optim.Adam(make_params(device), lr=LR, foreach=True)
    ours_adam = fresh('adam', clip_mode='norm', clip_threshold=THRESHOLD)

    def torch_pair():
        torch.nn.utils.clip_grad_norm_(pair_params, THRESHOLD, foreach=True)
        pair_sgd.step()

    variants = {
        'torch SGD step': torch_sgd.step,
        'torch clip_grad_norm_ + SGD step': torch_pair,
        'ours SGD, no clip': ours_none.step,
        'ours SGD, norm clip': ours_norm.step,
        'ours SGD, value clip': ours_value.step,
        'ours ExtraSGD extrapolate (norm)': seg.extrapolate,
        'ours ExtraSGD step (norm)': seg.step, # Must follow extrapolate: the dict keeps the order.
        'torch Adam step': torch_adam.step,
        'ours Adam, norm clip': ours_adam.step,
    }
    times = {name: [] for name in variants}
    for repeat in range(args.repeats + 3): # 3 warm-up rounds.
        for name, call in variants.items():
            sync()
            start = time.perf_counter()
            call()
            sync()
            if repeat >= 3:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}

    numel = sum(torch.Size(shape).numel() for shape in SHAPES)
    print(f'{numel / 1e6:.1f}M parameters in {len(SHAPES)} tensors, {device}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats, '
          f'load average {os.getloadavg()[0]:.1f} (other processes make CPU ratios noisy)')
    for name, value in median.items():
        print(f'  {name:36s} {value * 1e3:8.2f} ms')
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
    ]
    print('Ratios:')
    for name, ratio, note in ratios:
        print(f'  {name:44s} {ratio:6.3f}  {note}')


if __name__ == '__main__':
    main()
