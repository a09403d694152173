"""ganpatch.distributed: launch detection (torchrun, SLURM srun, none), SLURM's hostlist and task-count notations,
the --gpus check, device choice, and real two-process gloo runs launched as two torchrun "nodes" and as a
simulated two-task srun step on localhost."""

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from ganpatch.distributed import (SLURM_PORT_BASE, SLURM_PORT_SPAN, Launch, LaunchError, broadcast_object,
                                  cuda_device_index, decide_on_rank0, detect_launch, expand_hostlist,
                                  expand_tasks_per_node, export_environ, first_host, resolve_num_gpus,
                                  select_device, slurm_default_port)
from localhost_launch import free_port, launch_free_environ, run_together, srun_environments, torchrun_commands

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name('distributed_worker.py')

#----------------------------------------------------------------------------
# SLURM hostlists.

@pytest.mark.parametrize('hostlist, hosts', [
    ('gpu01', ['gpu01']),
    ('localhost', ['localhost']),
    ('a,b', ['a', 'b']),
    ('a b\tc\nd', ['a', 'b', 'c', 'd']),                            # every separator SLURM accepts
    ('a,,b, c', ['a', 'b', 'c']),                                   # repeated separators
    ('gpu[01-03,07],login5', ['gpu01', 'gpu02', 'gpu03', 'gpu07', 'login5']),
    ('gpu[1-3]', ['gpu1', 'gpu2', 'gpu3']),
    ('n[8-10]', ['n8', 'n9', 'n10']),                               # the width of lo sets the padding
    ('n[08-10]', ['n08', 'n09', 'n10']),
    ('n[098-101]', ['n098', 'n099', 'n100', 'n101']),
    ('n[5]', ['n5']),
    ('n[007]', ['n007']),
    ('rack[1-2]-ib', ['rack1-ib', 'rack2-ib']),                     # text after the bracket
    ('[1-2]node', ['1node', '2node']),                              # nothing before it
    ('a[1-2]b[3-4]', ['a1b3', 'a1b4', 'a2b3', 'a2b4']),             # two groups: the last one fastest
    ('a[1-2]b[3-4]c[5-6]', ['a1b3c5', 'a1b3c6', 'a2b3c5', 'a2b3c6',  # three: SLURM's _push_range_list order
                            'a1b4c5', 'a1b4c6', 'a2b4c5', 'a2b4c6']),
    ('x[1,3]y[2]', ['x1y2', 'x3y2']),
    ('gpu[01-02],cpu[1-2,4],big-mem01', ['gpu01', 'gpu02', 'cpu1', 'cpu2', 'cpu4', 'big-mem01']),
    ('node-[0-1].cluster.org', ['node-0.cluster.org', 'node-1.cluster.org']),
    ('127.0.0.[1-2]', ['127.0.0.1', '127.0.0.2']),
    ('', []),
])
def test_expand_hostlist(hostlist, hosts):
    assert list(expand_hostlist(hostlist)) == hosts


@pytest.mark.parametrize('hostlist, first', [
    ('gpu[03-04],login1', 'gpu03'),
    ('login1,gpu[03-04]', 'login1'),
    ('a[0-999999999]b[0-999999999]', 'a0b0'),  # lazy: 10^18 names are never built
    ('n[10,2]', 'n10'),                        # SLURM keeps the order given, it does not sort
])
def test_first_host(hostlist, first):
    assert first_host(hostlist) == first


@pytest.mark.parametrize('hostlist', ['gpu[01-02', 'gpu01-02]', 'a[[1]]', 'a[1]]', 'a]1[', 'a[]', 'a[1,]', 'a[,1]',
                                      'a[2-1]', 'a[x]', 'a[1-b]', 'a[-1]', 'a[1--2]', 'a[1-2-3]', 'a[ 1]'])
def test_malformed_hostlists_are_errors(hostlist):
    with pytest.raises(LaunchError, match='Malformed SLURM hostlist'):
        list(expand_hostlist(hostlist))


def test_first_host_of_an_empty_list_is_an_error():
    with pytest.raises(LaunchError, match='names no host'):
        first_host(' , ')


@pytest.mark.parametrize('text, counts', [
    ('8', [8]), ('8(x2)', [8, 8]), ('2(x3),1', [2, 2, 2, 1]), ('4,8(x2),4', [4, 8, 8, 4]), ('1(x1)', [1]),
])
def test_expand_tasks_per_node(text, counts):
    assert expand_tasks_per_node(text) == counts


@pytest.mark.parametrize('text', ['', '8x2', '8(2)', '8(x)', '0', '2(x0)', 'a', '2,,1', '-1'])
def test_malformed_tasks_per_node_are_errors(text):
    with pytest.raises(LaunchError, match='Malformed SLURM tasks per node'):
        expand_tasks_per_node(text)


def test_slurm_default_port_is_in_its_documented_range():
    assert slurm_default_port(123456) == SLURM_PORT_BASE + 3456
    assert {slurm_default_port(job) for job in range(0, 3 * SLURM_PORT_SPAN, 997)} <= set(range(20000, 30000))

#----------------------------------------------------------------------------
# Launch detection.

def torchrun_env(rank=9, world_size=16, local_rank=1, local_world_size=8, **extra):
    env = dict(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(local_rank),
               LOCAL_WORLD_SIZE=str(local_world_size), MASTER_ADDR='gpu01', MASTER_PORT='29500',
               TORCHELASTIC_RUN_ID='none', GROUP_RANK='1')
    env.update(extra)
    return {name: value for name, value in env.items() if value is not None}


# The variables of task 9 of `srun --nodes=2 --ntasks-per-node=8` in a job on gpu[07-08],login3: SLURM sets both the
# step's (SLURM_STEP_*) and older names; the job's list may be wider than the step's.
def srun_env(**changes):
    env = dict(SLURM_JOB_ID='4242137', SLURM_JOBID='4242137', SLURM_STEP_ID='0', SLURM_STEPID='0',
               SLURM_PROCID='9', SLURM_LOCALID='1', SLURM_NODEID='1', SLURM_STEP_NUM_TASKS='16', SLURM_NTASKS='16',
               SLURM_NPROCS='16', SLURM_STEP_NUM_NODES='2', SLURM_NNODES='2', SLURM_STEP_TASKS_PER_NODE='8(x2)',
               SLURM_TASKS_PER_NODE='8(x2)', SLURM_NTASKS_PER_NODE='8', SLURM_STEP_NODELIST='gpu[07-08]',
               SLURM_JOB_NODELIST='gpu[07-08],login3', SLURM_NODELIST='gpu[07-08],login3')
    env.update(changes)
    return {name: value for name, value in env.items() if value is not None}


def test_no_launcher_variables_means_no_launch():
    assert detect_launch({}) is None
    assert detect_launch({'PATH': '/usr/bin', 'MASTER_ADDR': 'x', 'MASTER_PORT': '1'}) is None


def test_torchrun():
    assert detect_launch(torchrun_env()) == Launch(launcher='torchrun', rank=9, world_size=16, local_rank=1,
                                                   local_world_size=8, master_addr='gpu01', master_port=29500)


def test_other_env_launchers_are_named_env():
    launch = detect_launch(torchrun_env(rank=0, local_rank=0, TORCHELASTIC_RUN_ID=None))
    assert (launch.launcher, launch.rank, launch.local_rank) == ('env', 0, 0)


def test_torchrun_single_process_is_a_launch():
    launch = detect_launch(torchrun_env(rank=0, world_size=1, local_rank=0, local_world_size=1))
    assert (launch.world_size, launch.local_world_size) == (1, 1)


def test_torchrun_inside_a_slurm_job_is_torchrun():
    env = {**srun_env(SLURM_PROCID='1', SLURM_LOCALID='0', SLURM_STEP_NUM_TASKS='2', SLURM_NTASKS='2',
                      SLURM_STEP_TASKS_PER_NODE='1(x2)'), **torchrun_env()}
    assert detect_launch(env).launcher == 'torchrun' and detect_launch(env).world_size == 16


@pytest.mark.parametrize('missing', ['WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'])
def test_partial_torchrun_environment_names_what_is_missing(missing):
    with pytest.raises(LaunchError, match=f'is set but {missing} is not.*torchrun'):
        detect_launch(torchrun_env(**{missing: None}))


def test_a_stray_rank_variable_is_an_error_not_a_silent_single_node_run():
    with pytest.raises(LaunchError, match='RANK=3 is set but WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, '
                                          'MASTER_PORT are not'):
        detect_launch({'RANK': '3'})


@pytest.mark.parametrize('changes, message', [
    (dict(RANK='x'), "RANK='x' is not an integer"),
    (dict(MASTER_PORT='29500a'), "MASTER_PORT='29500a' is not an integer"),
    (dict(RANK='16'), r'global rank 16 is outside \[0, 16\)'),
    (dict(RANK='-1'), r'global rank -1 is outside'),
    (dict(LOCAL_RANK='8'), r'local rank 8 is outside \[0, 8\)'),
    (dict(LOCAL_WORLD_SIZE='32'), '32 processes on this node but 16 in the whole job'),
    (dict(MASTER_PORT='70000'), r'port 70000 is outside \[1, 65535\]'),
    (dict(WORLD_SIZE='0'), r'outside \[0, 0\)'),
])
def test_inconsistent_torchrun_environment(changes, message):
    with pytest.raises(LaunchError, match=message):
        detect_launch(torchrun_env(**changes))


def test_srun():
    launch = detect_launch(srun_env())
    assert launch == Launch(launcher='slurm', rank=9, world_size=16, local_rank=1, local_world_size=8,
                            master_addr='gpu07', master_port=SLURM_PORT_BASE + 4242137 % SLURM_PORT_SPAN)
    assert launch.describe() == 'slurm: global rank 9 of 16, local rank 1 of 8, rendezvous gpu07:22137'


def test_srun_prefers_the_step_variables_to_the_job_variables():
    # A step on the job's second and third nodes, 2 tasks each, in a job of 3 nodes x 4 tasks.
    env = srun_env(SLURM_STEP_NODELIST='gpu[08],login3', SLURM_STEP_NUM_TASKS='4', SLURM_STEP_TASKS_PER_NODE='2(x2)',
                   SLURM_PROCID='3', SLURM_NTASKS='12', SLURM_TASKS_PER_NODE='4(x3)', SLURM_NTASKS_PER_NODE='4')
    launch = detect_launch(env)
    assert (launch.master_addr, launch.world_size, launch.local_world_size) == ('gpu08', 4, 2)


def test_srun_falls_back_to_the_older_names():
    env = srun_env(SLURM_STEP_NODELIST=None, SLURM_STEP_NUM_TASKS=None, SLURM_STEP_TASKS_PER_NODE=None,
                   SLURM_STEP_ID=None, SLURM_NTASKS=None, SLURM_TASKS_PER_NODE=None)
    launch = detect_launch(env)
    assert (launch.master_addr, launch.world_size, launch.local_world_size) == ('gpu07', 16, 8)


def test_srun_with_uneven_tasks_per_node_reads_this_nodes_count():
    # srun -n 7 on 3 nodes: 3, 2, 2 tasks. Task 4 is the second task of the second node.
    env = srun_env(SLURM_STEP_NUM_TASKS='7', SLURM_NTASKS='7', SLURM_STEP_TASKS_PER_NODE='3,2(x2)',
                   SLURM_PROCID='4', SLURM_LOCALID='1', SLURM_NODEID='1', SLURM_NTASKS_PER_NODE=None)
    assert detect_launch(env).local_world_size == 2
    assert detect_launch({**env, 'SLURM_NODEID': '0', 'SLURM_PROCID': '1'}).local_world_size == 3


def test_exported_master_addr_and_port_win():
    launch = detect_launch(srun_env(MASTER_ADDR='10.0.0.7', MASTER_PORT='31000'))
    assert (launch.master_addr, launch.master_port) == ('10.0.0.7', 31000)


@pytest.mark.parametrize('changes', [
    dict(SLURM_STEP_ID=None, SLURM_STEPID=None),                             # the batch script itself
    dict(SLURM_STEP_ID=str(0xfffffffb), SLURM_STEPID=str(0xfffffffb)),       # ... when a step id is set for it
    dict(SLURM_STEP_ID=str(0xfffffffa), SLURM_STEPID=str(0xfffffffa)),       # the interactive step (salloc)
    dict(SLURM_STEP_ID='-6', SLURM_STEPID='-6'),                             # the same, printed signed
    dict(SLURM_STEP_ID='interactive', SLURM_STEPID=None),
    dict(SLURM_STEP_NUM_TASKS='1', SLURM_NTASKS='16'),                       # srun -n1 (or srun --pty bash)
    dict(SLURM_STEP_NUM_TASKS=None, SLURM_NTASKS='1', SLURM_NPROCS='1'),
    dict(SLURM_STEP_NUM_TASKS=None, SLURM_NTASKS=None, SLURM_NPROCS=None),
])
def test_slurm_environments_that_are_not_multi_task_steps_are_no_launch(changes):
    # `python train.py --gpus=8` there keeps spawning its own processes.
    assert detect_launch(srun_env(**changes)) is None


@pytest.mark.parametrize('changes, message', [
    (dict(SLURM_PROCID=None), 'a job step of 16 tasks without SLURM_PROCID'),
    (dict(SLURM_LOCALID=None), 'without SLURM_LOCALID'),
    (dict(SLURM_PROCID='16'), r'global rank 16 is outside \[0, 16\)'),
    (dict(SLURM_LOCALID='8'), r'local rank 8 is outside \[0, 8\)'),
    (dict(SLURM_STEP_NUM_TASKS='x'), "SLURM_STEP_NUM_TASKS='x' is not an integer"),
    (dict(SLURM_STEP_TASKS_PER_NODE='8(x3)'), r'SLURM_STEP_TASKS_PER_NODE=8\(x3\) adds up to 24 tasks, but the step has 16'),
    (dict(SLURM_STEP_TASKS_PER_NODE='8,4,4', SLURM_NODEID='3'), 'SLURM_NODEID=3 but .* lists 3 nodes'),
    (dict(SLURM_STEP_TASKS_PER_NODE='8,4,4', SLURM_NODEID=None), 'slurm: SLURM_NODEID is not set'),
    (dict(SLURM_STEP_TASKS_PER_NODE='8x2'), 'Malformed SLURM tasks per node'),
    (dict(SLURM_STEP_TASKS_PER_NODE=None, SLURM_TASKS_PER_NODE=None, SLURM_NTASKS_PER_NODE=None),
     'the number of tasks on this node is unknown'),
    (dict(SLURM_STEP_NODELIST=None, SLURM_JOB_NODELIST=None, SLURM_NODELIST=None), 'no node list'),
    (dict(SLURM_STEP_NODELIST='gpu[07-08'), 'Malformed SLURM hostlist'),
    (dict(SLURM_JOB_ID=None), 'neither MASTER_PORT nor SLURM_JOB_ID'),
])
def test_inconsistent_slurm_environment(changes, message):
    with pytest.raises(LaunchError, match=message):
        detect_launch(srun_env(**changes))


def test_detect_launch_reads_os_environ_by_default(monkeypatch):
    for name in list(os.environ):
        if name.startswith('SLURM_') or name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
            monkeypatch.delenv(name)
    assert detect_launch() is None
    for name, value in torchrun_env().items():
        monkeypatch.setenv(name, value)
    assert detect_launch().rank == 9


def test_launch_is_immutable():
    launch = detect_launch(torchrun_env())
    with pytest.raises(dataclasses.FrozenInstanceError):
        launch.rank = 0


def test_unknown_launcher_is_rejected():
    with pytest.raises(LaunchError, match="Unknown launcher 'mpi'"):
        Launch('mpi', 0, 1, 0, 1, 'h', 1)

#----------------------------------------------------------------------------
# --gpus against the launch.

TWO_NODES = Launch('torchrun', rank=9, world_size=16, local_rank=1, local_world_size=8, master_addr='gpu01', master_port=29500)


def test_gpus_without_a_launch():
    assert resolve_num_gpus(4, None) == 4
    assert resolve_num_gpus(None, None, default=1) == 1
    assert resolve_num_gpus(2, None, default=1) == 2
    with pytest.raises(LaunchError, match='--gpus is required unless the script is started by torchrun or srun'):
        resolve_num_gpus(None, None)


def test_gpus_under_a_launch_is_inferred_or_must_match():
    assert resolve_num_gpus(None, TWO_NODES) == 16
    assert resolve_num_gpus(None, TWO_NODES, default=1) == 16
    assert resolve_num_gpus(16, TWO_NODES) == 16


def test_gpus_mismatch_says_what_to_pass():
    with pytest.raises(LaunchError) as info:
        resolve_num_gpus(8, TWO_NODES)
    assert str(info.value) == (
        '--gpus=8 does not match the torchrun launch of 16 processes (8 on this node) (--gpus looks like a per-node '
        'count). Under torchrun or srun, --gpus counts the processes of the whole job, over all nodes, one GPU each: '
        'pass --gpus=16 or leave --gpus out.')
    with pytest.raises(LaunchError, match=r'^--gpus=2 does not match the torchrun launch of 16 processes \(8 on this node\)\. '):
        resolve_num_gpus(2, TWO_NODES)

#----------------------------------------------------------------------------
# Devices, the environment for env://, collectives without a group.

@pytest.mark.parametrize('local_rank, visible, index', [
    (0, 1, 0), (5, 1, 0),   # one GPU per task (srun --gpus-per-task=1, torchrun --virtual-local-rank)
    (0, 8, 0), (5, 8, 5), (7, 8, 7),
])
def test_cuda_device_index(local_rank, visible, index):
    assert cuda_device_index(local_rank, visible) == index


def test_cuda_device_index_errors():
    with pytest.raises(LaunchError, match='Local rank 2 sees no CUDA device'):
        cuda_device_index(2, 0)
    with pytest.raises(LaunchError, match='Local rank 4 but only 4 GPUs are visible on this node'):
        cuda_device_index(4, 4)


def test_select_device():
    assert select_device(TWO_NODES, 'cpu') == torch.device('cpu')
    with pytest.raises(ValueError, match="device_type must be 'cuda' or 'cpu'"):
        select_device(TWO_NODES, 'mps')


@pytest.mark.gpu
def test_select_device_cuda():
    if not torch.cuda.is_available():
        pytest.skip('needs CUDA (no GPU visible)')
    launch = dataclasses.replace(TWO_NODES, local_rank=0)
    assert select_device(launch, 'cuda') == torch.device('cuda', 0)


def test_export_environ_writes_the_env_init_variables():
    environ = {'OTHER': 'kept', 'RANK': 'stale'}
    export_environ(detect_launch(srun_env()), environ)
    assert environ == dict(OTHER='kept', RANK='9', WORLD_SIZE='16', LOCAL_RANK='1', LOCAL_WORLD_SIZE='8',
                           MASTER_ADDR='gpu07', MASTER_PORT='22137')
    assert detect_launch(environ) == dataclasses.replace(detect_launch(srun_env()), launcher='env')


def test_collectives_without_a_process_group_are_local():
    assert not torch.distributed.is_initialized()
    assert broadcast_object({'a': 1}) == {'a': 1}
    assert decide_on_rank0(lambda: 'run-00000') == 'run-00000'
    with pytest.raises(OSError, match='disk full'):
        decide_on_rank0(lambda: (_ for _ in ()).throw(OSError('disk full')))

#----------------------------------------------------------------------------
# Two real processes on localhost (gloo).

def clean_env(**extra):
    """os.environ without launcher variables, with ganpatch importable and one thread per process."""
    return launch_free_environ(REPO_ROOT / 'overlays' / 'common', **extra)


def check_two_ranks(out_dir, launcher):
    records = [json.loads((out_dir / f'rank{rank}.json').read_text()) for rank in (0, 1)]
    for rank, record in enumerate(records):
        assert record['launch']['launcher'] == launcher
        assert (record['launch']['rank'], record['group_rank']) == (rank, rank)
        assert (record['launch']['world_size'], record['group_size']) == (2, 2)
        assert (record['launch']['local_rank'], record['launch']['local_world_size']) == (0, 1)
        assert record['backend'] == 'gloo'
        assert record['all_reduce'] == 3.0                                  # (0 + 1) + (1 + 1)
        assert record['run_dir'] == f'{records[0]["pid"]}-run'              # rank 0's decision, on both ranks
    assert records[0]['pid'] != records[1]['pid']
    assert records[0]['failure'] == 'OSError: outdir is not writable'
    assert records[1]['failure'] == 'RuntimeError: Global rank 0 failed: OSError: outdir is not writable'
    return records


@pytest.mark.slow
def test_two_torchrun_nodes_on_localhost(tmp_path):
    """`torchrun --nnodes=2 --node_rank={0,1} --nproc_per_node=1`, two agents as two nodes would start them."""
    port = free_port()
    run_together([(argv, clean_env()) for argv in torchrun_commands(str(WORKER), [[str(tmp_path)]] * 2, port)])
    records = check_two_ranks(tmp_path, 'torchrun')
    assert {(r['launch']['master_addr'], r['launch']['master_port']) for r in records} == {('127.0.0.1', port)}


@pytest.mark.slow
def test_two_srun_tasks_on_localhost(tmp_path):
    """The environment srun gives the two tasks of `srun --nodes=2 --ntasks-per-node=1`, nodes 127.0.0.[1-2],
    with the rendezvous port derived from the job id."""
    environments = srun_environments(2)
    run_together([([sys.executable, str(WORKER), str(tmp_path)], clean_env(**env)) for env in environments])
    records = check_two_ranks(tmp_path, 'slurm')
    port = slurm_default_port(int(environments[0]['SLURM_JOB_ID']))
    assert {(r['launch']['master_addr'], r['launch']['master_port']) for r in records} == {('127.0.0.1', port)}


@pytest.mark.gpu
@pytest.mark.slow
def test_one_torchrun_process_on_cuda_joins_nccl(tmp_path):
    """The CUDA smoke test: `torchrun --nproc_per_node=1` on one node, nccl on cuda:0."""
    if not torch.cuda.is_available():
        pytest.skip('needs CUDA (no GPU visible)')
    [command] = torchrun_commands(str(WORKER), [[str(tmp_path), 'cuda']], free_port())
    run_together([(command, clean_env())])
    record = json.loads((tmp_path / 'rank0.json').read_text())
    assert (record['launch']['launcher'], record['launch']['world_size'], record['group_size']) == ('torchrun', 1, 1)
    assert (record['backend'], record['device']) == ('nccl', 'cuda:0')
    assert record['all_reduce'] == 1.0 and record['run_dir'] == f'{record["pid"]}-run'
    assert record['failure'] == 'OSError: outdir is not writable'
