"""Multi-node launches (torchrun, SLURM srun) for training scripts that spawn one process per GPU themselves.

The model is torch.distributed's: one process per GPU, numbered by a GLOBAL rank in [0, world_size) across all
nodes, and by a LOCAL rank in [0, local_world_size) on its own node. A launcher starts the processes and tells
each one who it is through environment variables; this module reads them:

- torchrun (`python -m torch.distributed.run`): RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
  MASTER_PORT (and TORCHELASTIC_RUN_ID, which names the launcher). Other launchers that follow the same env://
  convention are accepted as `env`.
- SLURM `srun`, one task per GPU: SLURM_PROCID, SLURM_STEP_NUM_TASKS (or SLURM_NTASKS), SLURM_LOCALID,
  SLURM_STEP_TASKS_PER_NODE (or SLURM_TASKS_PER_NODE, SLURM_NTASKS_PER_NODE) with SLURM_NODEID, and the first
  host of SLURM_STEP_NODELIST (or SLURM_JOB_NODELIST, SLURM_NODELIST) as the rendezvous host. MASTER_ADDR and
  MASTER_PORT, when exported, win; the port otherwise derives from SLURM_JOB_ID (`slurm_default_port`).
  Only a regular job step of more than one task counts: the batch script itself, an interactive step and a
  one-task `srun` are not launches, so `python train.py --gpus=N` inside them keeps spawning its own processes.

`detect_launch()` returns a frozen `Launch`, or None when the script was started by hand (the single-node path,
where the script spawns `--gpus` processes itself). `resolve_num_gpus` checks `--gpus` against the launch.
`select_device` and `init_process_group` join the default process group (env://; nccl on CUDA, gloo on the CPU).
`decide_on_rank0` runs a decision (the run directory's name) on global rank 0 and hands its result to every rank.

Bad environments raise `LaunchError` (a ValueError) naming the variables at fault, before any work starts;
training scripts turn it into their CLI's usage error.
"""

import dataclasses
import os
import re

import torch

LAUNCHERS = ('torchrun', 'env', 'slurm')

# MASTER_PORT for SLURM launches without one: SLURM_PORT_BASE + SLURM_JOB_ID % SLURM_PORT_SPAN, in [20000, 30000),
# below Linux's ephemeral range (32768-60999), so that jobs sharing a first node rarely collide.
SLURM_PORT_BASE = 20000
SLURM_PORT_SPAN = 10000

# Job step ids from SLURM_MAX_NORMAL_STEP_ID (0xfffffff0) up are special steps: batch script, interactive, extern.
_SLURM_MAX_NORMAL_STEP_ID = 0xfffffff0


class LaunchError(ValueError):
    """The launch environment is inconsistent, or does not fit the command line."""


@dataclasses.dataclass(frozen=True)
class Launch:
    """Who this process is in a multi-process launch (see the module docstring)."""
    launcher: str           # 'torchrun', 'env' (another env:// launcher) or 'slurm'.
    rank: int               # Global rank, in [0, world_size).
    world_size: int         # Processes in the whole job, over all nodes.
    local_rank: int         # Rank on this node, in [0, local_world_size).
    local_world_size: int   # Processes on this node.
    master_addr: str        # Host of global rank 0's rendezvous store.
    master_port: int

    def __post_init__(self):
        if self.launcher not in LAUNCHERS:
            raise LaunchError(f'Unknown launcher {self.launcher!r}; expected one of {", ".join(LAUNCHERS)}')
        if not 0 <= self.rank < self.world_size:
            raise LaunchError(f'{self.launcher}: global rank {self.rank} is outside [0, {self.world_size}), {self.world_size} being the world size')
        if not 0 <= self.local_rank < self.local_world_size:
            raise LaunchError(f'{self.launcher}: local rank {self.local_rank} is outside [0, {self.local_world_size}) (processes on this node)')
        if self.local_world_size > self.world_size:
            raise LaunchError(f'{self.launcher}: {self.local_world_size} processes on this node but {self.world_size} in the whole job')
        if not self.master_addr:
            raise LaunchError(f'{self.launcher}: empty rendezvous host (MASTER_ADDR)')
        if not 0 < self.master_port < 65536:
            raise LaunchError(f'{self.launcher}: rendezvous port {self.master_port} is outside [1, 65535] (MASTER_PORT)')

    def describe(self):
        """One line for logs: 'slurm: global rank 3 of 16, local rank 3 of 8, rendezvous gpu01:21234'."""
        return (f'{self.launcher}: global rank {self.rank} of {self.world_size}, local rank {self.local_rank} of '
                f'{self.local_world_size}, rendezvous {self.master_addr}:{self.master_port}')

#----------------------------------------------------------------------------
# SLURM's compressed notations.

def expand_hostlist(hostlist):
    """Yield the host names of a SLURM hostlist, in SLURM's order (that of `scontrol show hostnames`).

    Hosts are separated by commas, spaces, tabs or newlines outside brackets. A bracket holds comma-separated
    numbers and ranges `lo-hi` (lo <= hi); the width of `lo` sets the zero padding (`gpu[08-10]`: gpu08, gpu09,
    gpu10; `n[8-10]`: n8, n9, n10). Text may follow a bracket (`rack[1-2]-ib`), and a name may hold several
    bracket groups (`r[1-2]n[1-3]`: r1n1, r1n2, r1n3, r2n1, ...). With more than two groups SLURM loops over the
    last group innermost and over the others from the next-to-last (outermost) to the first, and so does this.
    Expansion is lazy. Raises LaunchError on a malformed list (unbalanced or nested brackets, an empty or
    reversed range, anything but digits in a range).
    """
    for token in _hostlist_tokens(hostlist):
        parts = re.split(r'\[([^\[\]]*)\]', token)  # [text, ranges, text, ranges, ..., text]
        texts, groups = parts[0::2], [_parse_ranges(ranges, hostlist) for ranges in parts[1::2]]
        if any('[' in text or ']' in text for text in texts):
            raise LaunchError(f'Malformed SLURM hostlist {hostlist!r}: unbalanced or nested brackets in {token!r}')
        loop_order = [*range(len(groups) - 2, -1, -1), len(groups) - 1] if groups else []
        for numbers in _nested_loops([groups[g] for g in loop_order]):
            chosen = dict(zip(loop_order, numbers))
            yield texts[0] + ''.join(chosen[g] + texts[g + 1] for g in range(len(groups)))


def _hostlist_tokens(hostlist):
    """Split a hostlist at the separators outside brackets."""
    token, depth = '', 0
    for char in hostlist:
        depth += (char == '[') - (char == ']')
        if depth == 0 and char in ', \t\n':
            if token:
                yield token
            token = ''
        else:
            token += char
    if depth != 0:
        raise LaunchError(f'Malformed SLURM hostlist {hostlist!r}: unbalanced brackets')
    if token:
        yield token


def _parse_ranges(ranges, hostlist):
    """'01-03,7' -> [(1, 3, 2), (7, 7, 1)]: (lo, hi, zero-padded width) per item."""
    parsed = []
    for item in ranges.split(','):
        match = re.fullmatch(r'(\d+)(?:-(\d+))?', item)
        lo = None if match is None else int(match.group(1))
        hi = lo if match is None or match.group(2) is None else int(match.group(2))
        if match is None or hi < lo:
            raise LaunchError(f'Malformed SLURM hostlist {hostlist!r}: bad range {item!r} in [{ranges}]')
        parsed.append((lo, hi, len(match.group(1))))
    return parsed


def _nested_loops(groups):
    """Tuples of one formatted number per group, the first group outermost (like itertools.product, but lazy)."""
    if not groups:
        yield ()
        return
    for lo, hi, width in groups[0]:
        for number in range(lo, hi + 1):
            for rest in _nested_loops(groups[1:]):
                yield (f'{number:0{width}d}', *rest)


def first_host(hostlist):
    """The first host of a SLURM hostlist (`gpu[03-04],login1` -> 'gpu03'); LaunchError when there is none."""
    for host in expand_hostlist(hostlist):
        return host
    raise LaunchError(f'SLURM hostlist {hostlist!r} names no host')


def expand_tasks_per_node(tasks_per_node):
    """SLURM's task counts per node, `2(x3),1` -> [2, 2, 2, 1]; LaunchError when malformed."""
    counts = []
    for item in tasks_per_node.split(','):
        match = re.fullmatch(r'\s*(\d+)(?:\(x(\d+)\))?\s*', item)
        if match is None or int(match.group(1)) == 0 or int(match.group(2) or 1) == 0:
            raise LaunchError(f'Malformed SLURM tasks per node {tasks_per_node!r} (expected e.g. 8(x2) or 2(x3),1)')
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def slurm_default_port(job_id):
    """MASTER_PORT for a SLURM job that exports none: SLURM_PORT_BASE + job_id % SLURM_PORT_SPAN."""
    return SLURM_PORT_BASE + int(job_id) % SLURM_PORT_SPAN

#----------------------------------------------------------------------------
# Launch detection.

_TORCH_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')


def detect_launch(environ=None):
    """The `Launch` described by `environ` (default: os.environ), or None for a plain single-node start.

    torch.distributed's variables win over SLURM's: torchrun run inside an sbatch job (one torchrun per node)
    is a torchrun launch. Raises LaunchError for a partial or inconsistent environment.
    """
    environ = os.environ if environ is None else environ
    if any(name in environ for name in _TORCH_VARS):
        return _torch_launch(environ)
    if _in_slurm_task_step(environ):
        return _slurm_launch(environ)
    return None


def _int_var(environ, name, launcher):
    value = environ.get(name)
    if not value:
        raise LaunchError(f'{launcher}: {name} is not set')
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f'{launcher}: {name}={value!r} is not an integer') from None


def _torch_launch(environ):
    launcher = 'torchrun' if 'TORCHELASTIC_RUN_ID' in environ else 'env'
    missing = [name for name in (*_TORCH_VARS, 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if not environ.get(name)]
    if missing:
        found = ', '.join(f'{name}={environ[name]}' for name in _TORCH_VARS if name in environ)
        raise LaunchError(f'{launcher}: {found} is set but {", ".join(missing)} {"is" if len(missing) == 1 else "are"} not. '
                          'Launch with torchrun (python -m torch.distributed.run), which sets all of RANK, WORLD_SIZE, '
                          'LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT, or unset them for a single-node run.')
    return Launch(launcher=launcher, rank=_int_var(environ, 'RANK', launcher),
                  world_size=_int_var(environ, 'WORLD_SIZE', launcher),
                  local_rank=_int_var(environ, 'LOCAL_RANK', launcher),
                  local_world_size=_int_var(environ, 'LOCAL_WORLD_SIZE', launcher),
                  master_addr=environ['MASTER_ADDR'], master_port=_int_var(environ, 'MASTER_PORT', launcher))


def _first_var(environ, names):
    """(name, value) of the first of `names` that is set and non-empty, or (None, None)."""
    for name in names:
        if environ.get(name):
            return name, environ[name]
    return None, None


def _slurm_num_tasks(environ):
    name, _ = _first_var(environ, ('SLURM_STEP_NUM_TASKS', 'SLURM_NTASKS', 'SLURM_NPROCS'))
    return None if name is None else _int_var(environ, name, 'slurm')


def _in_slurm_task_step(environ):
    """A regular srun job step (not the batch script, an interactive or extern step) with more than one task."""
    name, step_id = _first_var(environ, ('SLURM_STEP_ID', 'SLURM_STEPID'))
    if name is None:
        return False
    try:
        regular = 0 <= int(step_id) < _SLURM_MAX_NORMAL_STEP_ID
    except ValueError:
        regular = False
    if not regular:
        return False
    num_tasks = _slurm_num_tasks(environ)
    return num_tasks is not None and num_tasks > 1


def _slurm_launch(environ):
    world_size = _slurm_num_tasks(environ)
    missing = [name for name in ('SLURM_PROCID', 'SLURM_LOCALID') if not environ.get(name)]
    if missing:
        raise LaunchError(f'slurm: a job step of {world_size} tasks without {", ".join(missing)}; start the training '
                          'with srun (one task per GPU) or unset the SLURM_STEP_* variables')
    rank = _int_var(environ, 'SLURM_PROCID', 'slurm')
    local_rank = _int_var(environ, 'SLURM_LOCALID', 'slurm')

    tpn_name, tasks_per_node = _first_var(environ, ('SLURM_STEP_TASKS_PER_NODE', 'SLURM_TASKS_PER_NODE'))
    if tpn_name is not None:
        counts = expand_tasks_per_node(tasks_per_node)
        if sum(counts) != world_size:
            raise LaunchError(f'slurm: {tpn_name}={tasks_per_node} adds up to {sum(counts)} tasks, but the step has '
                              f'{world_size}')
        if len(set(counts)) == 1:
            local_world_size = counts[0]
        else:
            node_id = _int_var(environ, 'SLURM_NODEID', 'slurm')
            if not 0 <= node_id < len(counts):
                raise LaunchError(f'slurm: SLURM_NODEID={node_id} but {tpn_name}={tasks_per_node} lists {len(counts)} nodes')
            local_world_size = counts[node_id]
    elif environ.get('SLURM_NTASKS_PER_NODE'):
        local_world_size = _int_var(environ, 'SLURM_NTASKS_PER_NODE', 'slurm')
    else:
        raise LaunchError('slurm: neither SLURM_STEP_TASKS_PER_NODE, SLURM_TASKS_PER_NODE nor SLURM_NTASKS_PER_NODE is '
                          'set, so the number of tasks on this node is unknown')

    master_addr = environ.get('MASTER_ADDR')
    if not master_addr:
        list_name, hostlist = _first_var(environ, ('SLURM_STEP_NODELIST', 'SLURM_JOB_NODELIST', 'SLURM_NODELIST'))
        if list_name is None:
            raise LaunchError('slurm: no node list (SLURM_STEP_NODELIST, SLURM_JOB_NODELIST) to take the rendezvous '
                              'host from; export MASTER_ADDR')
        master_addr = first_host(hostlist)
    if environ.get('MASTER_PORT'):
        master_port = _int_var(environ, 'MASTER_PORT', 'slurm')
    elif environ.get('SLURM_JOB_ID'):
        master_port = slurm_default_port(_int_var(environ, 'SLURM_JOB_ID', 'slurm'))
    else:
        raise LaunchError('slurm: neither MASTER_PORT nor SLURM_JOB_ID is set; export MASTER_PORT')
    return Launch(launcher='slurm', rank=rank, world_size=world_size, local_rank=local_rank,
                  local_world_size=local_world_size, master_addr=master_addr, master_port=master_port)

#----------------------------------------------------------------------------
# The command line against the launch.

def resolve_num_gpus(gpus, launch, default=None):
    """The number of training processes: `--gpus` (None when not given) checked against `launch`.

    Without a launch this is `gpus`, or `default` when `gpus` is None (LaunchError when both are None). Under a
    launch, `--gpus` counts the processes of the whole job, over all nodes; it may be left out (the launch's world
    size is used) and must otherwise equal it.
    """
    if launch is None:
        if gpus is None and default is None:
            raise LaunchError('--gpus is required unless the script is started by torchrun or srun')
        return default if gpus is None else gpus
    if gpus is None or gpus == launch.world_size:
        return launch.world_size
    hint = ' (--gpus looks like a per-node count)' if gpus == launch.local_world_size else ''
    raise LaunchError(f'--gpus={gpus} does not match the {launch.launcher} launch of {launch.world_size} processes '
                      f'({launch.local_world_size} on this node){hint}. Under torchrun or srun, --gpus counts the '
                      f'processes of the whole job, over all nodes, one GPU each: pass --gpus={launch.world_size} or '
                      'leave --gpus out.')

#----------------------------------------------------------------------------
# Joining the process group.

def cuda_device_index(local_rank, visible_gpus):
    """The CUDA device index of the process with `local_rank` when it sees `visible_gpus` devices.

    One visible GPU means the launcher bound one GPU to each process (srun --gpus-per-task=1, torchrun
    --virtual-local-rank): index 0. Otherwise every process on the node sees all of them: index local_rank.
    """
    if visible_gpus < 1:
        raise LaunchError(f'Local rank {local_rank} sees no CUDA device. Check CUDA_VISIBLE_DEVICES and the GPUs '
                          'the launcher gives each task (srun --gpus-per-task=1), or train on the CPU')
    if visible_gpus == 1:
        return 0
    if local_rank >= visible_gpus:
        raise LaunchError(f'Local rank {local_rank} but only {visible_gpus} GPUs are visible on this node: start at '
                          'most one process per GPU (torchrun --nproc_per_node, srun --ntasks-per-node)')
    return local_rank


def select_device(launch, device_type):
    """The device of this process: the CPU, or the CUDA device of its local rank (`cuda_device_index`)."""
    if device_type == 'cpu':
        return torch.device('cpu')
    if device_type != 'cuda':
        raise ValueError(f"device_type must be 'cuda' or 'cpu', got {device_type!r}")
    return torch.device('cuda', cuda_device_index(launch.local_rank, torch.cuda.device_count()))


def export_environ(launch, environ=None):
    """Write `launch` into `environ` (default os.environ) as torch's env:// variables (RANK, WORLD_SIZE,
    LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). A no-op for torchrun, which set them already."""
    environ = os.environ if environ is None else environ
    environ.update(RANK=str(launch.rank), WORLD_SIZE=str(launch.world_size), LOCAL_RANK=str(launch.local_rank),
                   LOCAL_WORLD_SIZE=str(launch.local_world_size), MASTER_ADDR=launch.master_addr,
                   MASTER_PORT=str(launch.master_port))


def init_process_group(launch, device, timeout=None):
    """Join the default process group of `launch` through env://: nccl for a CUDA `device`, gloo for the CPU.

    A CUDA device becomes the current device first, so that NCCL, barriers and object collectives use it. Blocks
    until all `launch.world_size` processes have joined, or `timeout` (a datetime.timedelta; default torch's)
    has passed.
    """
    export_environ(launch)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    torch.distributed.init_process_group(backend=backend, init_method='env://', rank=launch.rank,
                                         world_size=launch.world_size, timeout=timeout)

#----------------------------------------------------------------------------
# Collective helpers over the default group.

def _is_distributed():
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def broadcast_object(obj, src=0):
    """`obj` of global rank `src` (any picklable object), returned on every rank; `obj` as it is without a
    process group of more than one process."""
    if not _is_distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def decide_on_rank0(decide):
    """Call `decide()` on global rank 0 only and return its result on every rank (e.g. the run directory's
    name, which depends on what rank 0 finds in --outdir). Without a process group of more than one process,
    just `decide()`.

    If `decide()` raises on rank 0, rank 0 re-raises it and every other rank raises RuntimeError with its
    message, so that no rank waits forever for a broadcast.
    """
    if not _is_distributed():
        return decide()
    if torch.distributed.get_rank() == 0:
        try:
            value = decide()
        except Exception as error:
            broadcast_object((False, f'{type(error).__name__}: {error}'))
            raise
        return broadcast_object((True, value))[1]
    ok, value = broadcast_object(None)
    if not ok:
        raise RuntimeError(f'Global rank 0 failed: {value}')
    return value
