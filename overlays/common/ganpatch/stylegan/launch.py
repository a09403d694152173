"""One process per GPU (or per CPU process with --device=cpu) for the StyleGAN trees' scripts.

train.py of both trees, calc_metrics.py and gradnoise_train.py start their processes through these functions, so a
new way of launching (another rendezvous, another backend) is added here once. There are two ways:

- **By hand** (the default, upstream's single-node path): `python train.py --gpus=N` spawns N processes on this
  node (`spawn`), which join through a file in a temporary folder (`init_distributed`); process `rank` trains
  on cuda:<rank>.
- **By torchrun or SLURM srun** (multi-node): the launcher started one process per GPU on every node
  (`ganpatch.distributed.detect_launch`). `resolve` checks `--gpus` against the launch's world size (or takes
  it from there); each process joins with env:// (`join`) and trains on the GPU of its local rank; global rank 0
  alone picks the run directory (`decide_run_dir`, the name reaching every rank), prints the options and writes
  the run directory (logs, snapshots, metrics), and `spawn` runs the work in the launched process itself.

A script's global rank is the `rank` its training function receives, either way: data sharding, seeds and the
metrics' sample split see the same ranks and world size on one node or on many, so a two-node run of two
processes equals a single-node `--gpus=2` run.
"""

import dataclasses
import os
import re

import click
import torch

from ganpatch import distributed
from ganpatch.stylegan.options import resolve_device


@dataclasses.dataclass(frozen=True)
class _Joined:
    launch: distributed.Launch
    device: torch.device


_joined = None # This process's launch and device once it joined a torchrun or srun launch (join); None otherwise.


def resolve(gpus, device, default=None):
    """(launch, num_gpus): the torchrun or srun `Launch` of this process (None when started by hand) and the
    number of training processes, `--gpus` checked against the launch's world size or taken from it.

    Without a launch this is `gpus` (`default` when not given). `device` is the --device option (None: cuda
    when available); under a launch the local rank must have a GPU of its own on CUDA. A partial or inconsistent
    launch environment, a `--gpus` that does not match, or a local rank without a GPU is a click error, raised
    before any work starts.
    """
    try:
        launch = distributed.detect_launch()
        num_gpus = distributed.resolve_num_gpus(gpus, launch, default)
        if launch is not None:
            distributed.select_device(launch, resolve_device(device))
    except distributed.LaunchError as err:
        raise click.ClickException(str(err)) from None
    return launch, num_gpus


def join(launch, device_type):
    """Join the process group of a torchrun or srun `launch` (env://; nccl on CUDA, gloo on the CPU) on the device
    of its local rank; from then on `spawn` runs the work in this process and `process_device` is that device.
    Nothing without a launch (None)."""
    global _joined
    if launch is None:
        return
    device = distributed.select_device(launch, device_type)
    distributed.init_process_group(launch, device)
    _joined = _Joined(launch, device)
    print(f'Joined {launch.describe()}; {torch.distributed.get_backend()} on {device}')


def leave():
    """Leave the process group `join` joined (so that nccl finishes cleanly); nothing when none was joined."""
    global _joined
    if _joined is not None:
        torch.distributed.destroy_process_group()
        _joined = None


def other_rank(launch):
    """Whether this process is a rank other than 0 of a torchrun or srun `launch`: it trains, but neither prints
    the options nor writes the run directory, which global rank 0 creates on its node."""
    return launch is not None and launch.rank != 0


def next_run_dir(outdir, desc):
    """outdir/<NNNNN>-<desc>, numbered one above the highest numbered folder in `outdir` (upstream's rule)."""
    prev_run_dirs = [x for x in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, x))] if os.path.isdir(outdir) else []
    prev_run_ids = [re.match(r'^\d+', x) for x in prev_run_dirs]
    cur_run_id = max([int(x.group()) for x in prev_run_ids if x is not None], default=-1) + 1
    run_dir = os.path.join(outdir, f'{cur_run_id:05d}-{desc}')
    assert not os.path.exists(run_dir)
    return run_dir


def decide_run_dir(outdir, desc):
    """`next_run_dir`, decided by global rank 0 and handed to every rank of a launch this process joined (only rank 0
    sees node 0's `outdir`); a plain `next_run_dir` otherwise."""
    return distributed.decide_on_rank0(lambda: next_run_dir(outdir, desc))


def logs_to_run_dir(rank):
    """Whether process `rank` appends its output to the run directory's log.txt: every process of a single-node
    run (as upstream), only global rank 0 of a launch (the run directory may exist on node 0 only)."""
    return _joined is None or rank == 0


def process_device(rank, device_type):
    """The device of process `rank`: the CPU; on CUDA, that of the local rank under a launch this process joined,
    otherwise cuda:<rank> (one node)."""
    if device_type != 'cuda':
        return torch.device('cpu')
    return _joined.device if _joined is not None else torch.device('cuda', rank)


def init_distributed(rank, num_processes, device_type, temp_dir):
    """Join the process group of `num_processes` processes (nothing for one) and return the device that
    torch_utils.training_stats synchronizes on (None for one process).

    Backend: nccl on CUDA, gloo on the CPU (NCCL only moves CUDA tensors) and on Windows, as upstream.
    Rendezvous: a file in `temp_dir`, shared by the processes `spawn` starts. A process that joined a torchrun or
    srun launch (`join`) is in the group already: only its device is returned.
    """
    if num_processes <= 1:
        return None
    if _joined is not None:
        return _joined.device
    init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
    if os.name == 'nt':
        init_method, backend = 'file:///' + init_file.replace('\\', '/'), 'gloo'
    else:
        init_method, backend = f'file://{init_file}', ('nccl' if device_type == 'cuda' else 'gloo')
    torch.distributed.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=num_processes)
    return process_device(rank, device_type)


def spawn(fn, args, num_processes):
    """Run `fn(rank, *args)`: in this process as its global rank when it joined a torchrun or srun launch (then
    leave the group), in this process as rank 0 for one process, or in `num_processes` spawned ones."""
    if _joined is not None:
        fn(_joined.launch.rank, *args)
        leave()
    elif num_processes == 1:
        fn(0, *args)
    else:
        torch.multiprocessing.spawn(fn=fn, args=args, nprocs=num_processes)
