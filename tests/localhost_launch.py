"""Start several processes on localhost the way torchrun or SLURM's srun starts them on several nodes.

Used by tests/unit/test_ganpatch_distributed.py and tests/integration/test_stylegan_multinode.py (tests/ is on
sys.path through tests/conftest.py).
"""

import os
import random
import socket
import subprocess
import sys

from ganpatch.distributed import SLURM_PORT_BASE, SLURM_PORT_SPAN


LAUNCH_VARIABLES = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'GROUP_RANK')
LAUNCH_PREFIXES = ('SLURM_', 'TORCHELASTIC_')


def launch_free_environ(first_on_path, **extra):
    """os.environ without the variables of torchrun and SLURM launches (as if the tests ran outside any job), with
    the folder `first_on_path` first on PYTHONPATH, one thread per process (they share the CPUs), and `extra`."""
    environ = {name: value for name, value in os.environ.items() if not name.startswith(LAUNCH_PREFIXES) and name not in LAUNCH_VARIABLES}
    pythonpath = os.pathsep.join([str(first_on_path), *filter(None, [os.environ.get('PYTHONPATH')])])
    return {**environ, 'PYTHONPATH': pythonpath, 'OMP_NUM_THREADS': '1', **extra}


def free_port(lo=SLURM_PORT_BASE, hi=SLURM_PORT_BASE + SLURM_PORT_SPAN):
    """A TCP port in [lo, hi) that is free on 127.0.0.1 right now (by default one SLURM's job ids can derive)."""
    for _ in range(200):
        port = random.randrange(lo, hi)
        with socket.socket() as s:
            try:
                s.bind(('127.0.0.1', port))
            except OSError:
                continue
            return port
    raise RuntimeError(f'No free port in [{lo}, {hi})')


def torchrun_commands(script, node_args, port, nproc_per_node=1):
    """One torchrun agent per node, as each node would start it: the argv of `torchrun --nnodes=<len(node_args)>
    --node_rank=<node> --nproc_per_node=... --master_addr=127.0.0.1 --master_port=<port> script <node_args[node]>`."""
    return [[sys.executable, '-m', 'torch.distributed.run', f'--nnodes={len(node_args)}', f'--node_rank={node}',
             f'--nproc_per_node={nproc_per_node}', '--master_addr=127.0.0.1', f'--master_port={port}', script, *args]
            for node, args in enumerate(node_args)]


def srun_environments(num_tasks):
    """The SLURM variables of the tasks of `srun --nodes=N --ntasks-per-node=1` (job step 0) on the nodes
    127.0.0.[1-N], one dict per task; the job id is chosen so that the rendezvous port it derives is free."""
    port = free_port()
    job_id = str(7 * SLURM_PORT_SPAN + port - SLURM_PORT_BASE)  # ganpatch.distributed.slurm_default_port(job_id) == port
    return [dict(SLURM_JOB_ID=job_id, SLURM_STEP_ID='0', SLURM_STEPID='0', SLURM_PROCID=str(rank), SLURM_LOCALID='0',
                 SLURM_NODEID=str(rank), SLURM_STEP_NUM_TASKS=str(num_tasks), SLURM_NTASKS=str(num_tasks),
                 SLURM_STEP_TASKS_PER_NODE=f'1(x{num_tasks})', SLURM_TASKS_PER_NODE=f'1(x{num_tasks})',
                 SLURM_STEP_NODELIST=f'127.0.0.[1-{num_tasks}]', SLURM_JOB_NODELIST=f'127.0.0.[1-{num_tasks}]')
            for rank in range(num_tasks)]


def run_together(commands, cwd=None, timeout=60):
    """Start every (argv, env) at once and wait for all, killing the others when one fails or `timeout` seconds
    pass; returns their outputs, or fails with the output of each unless all succeed."""
    procs = [subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for argv, env in commands]
    outputs = [''] * len(procs)
    try:
        for index, proc in enumerate(procs):
            try:
                outputs[index] = proc.communicate(timeout=timeout)[0]
            except subprocess.TimeoutExpired:
                outputs[index] = f'(killed after {timeout} s)\n'
                break
            if proc.returncode != 0:
                break
    finally:
        for index, proc in enumerate(procs):
            if proc.poll() is None:
                proc.kill()
                outputs[index] += proc.communicate()[0]
    failed = [index for index, proc in enumerate(procs) if proc.returncode != 0]
    assert not failed, '\n'.join(f'--- process {index} (exit {procs[index].returncode}):\n{outputs[index][-4000:]}' for index in failed)
    return outputs
