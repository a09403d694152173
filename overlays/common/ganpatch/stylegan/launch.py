"""One process per GPU (or per CPU process with --device=cpu) for the StyleGAN trees' scripts.

train.py of both trees and gradnoise_train.py start their processes through these functions, so a new way
of launching (another rendezvous, another backend) is added here once.
"""

import os

import torch


def process_device(rank, device_type):
    """The device of process `rank`: cuda:<rank>, or the CPU."""
    return torch.device('cuda', rank) if device_type == 'cuda' else torch.device('cpu')


def init_distributed(rank, num_processes, device_type, temp_dir):
    """Join the process group of `num_processes` processes (nothing for one) and return the device that
    torch_utils.training_stats synchronizes on (None for one process).

    Backend: nccl on CUDA, gloo on the CPU (NCCL only moves CUDA tensors) and on Windows, as upstream.
    Rendezvous: a file in `temp_dir`, shared by the processes `spawn` starts.
    """
    if num_processes <= 1:
        return None
    init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
    if os.name == 'nt':
        init_method, backend = 'file:///' + init_file.replace('\\', '/'), 'gloo'
    else:
        init_method, backend = f'file://{init_file}', ('nccl' if device_type == 'cuda' else 'gloo')
    torch.distributed.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=num_processes)
    return process_device(rank, device_type)


def spawn(fn, args, num_processes):
    """Run `fn(rank, *args)` in this process (one process) or in `num_processes` spawned ones."""
    if num_processes == 1:
        fn(0, *args)
    else:
        torch.multiprocessing.spawn(fn=fn, args=args, nprocs=num_processes)
