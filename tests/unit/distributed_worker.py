"""One rank of the multi-process tests of ganpatch.distributed (test_ganpatch_distributed.py starts it).

    python distributed_worker.py OUT_DIR [cpu|cuda]

Detects its launch (torchrun or a simulated srun), joins the process group (gloo on the CPU, the default; nccl on
CUDA), lets global rank 0 decide a run
directory name (one only rank 0 can know: it holds rank 0's process id) and a decision that fails on rank 0,
all-reduces rank + 1, and writes what it saw to OUT_DIR/rank<global rank>.json.
"""

import dataclasses
import json
import os
import sys

import torch

from ganpatch import distributed


def failing_decision():
    raise OSError('outdir is not writable')


def main(out_dir, device_type='cpu'):
    launch = distributed.detect_launch()
    device = distributed.select_device(launch, device_type)
    distributed.init_process_group(launch, device)
    run_dir = distributed.decide_on_rank0(lambda: f'{os.getpid():d}-run')
    try:
        distributed.decide_on_rank0(failing_decision)
        failure = None
    except Exception as error:  # The failure as each rank sees it.
        failure = f'{type(error).__name__}: {error}'
    total = torch.tensor([float(launch.rank + 1)], device=device)
    torch.distributed.all_reduce(total)
    record = dict(launch=dataclasses.asdict(launch), pid=os.getpid(), run_dir=run_dir, failure=failure, all_reduce=total.item(),
                  group_rank=torch.distributed.get_rank(), group_size=torch.distributed.get_world_size(),
                  backend=torch.distributed.get_backend(), device=str(device))
    torch.distributed.destroy_process_group()
    with open(os.path.join(out_dir, f'rank{launch.rank}.json'), 'w') as f:
        json.dump(record, f)


if __name__ == '__main__':
    main(*sys.argv[1:])
