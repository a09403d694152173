"""ganpatch.stylegan.launch: the --gpus check of the StyleGAN scripts against a torchrun or srun launch, run
directory names, and what a process does before and after it joins a launch (a one-process gloo group here; two
processes, two "nodes", are in tests/integration/test_stylegan_multinode.py)."""

import socket

import click
import pytest
import torch

from ganpatch.stylegan import launch

LAUNCH_VARIABLES = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT',
                    'TORCHELASTIC_RUN_ID', 'SLURM_STEP_ID', 'SLURM_STEPID', 'SLURM_PROCID', 'SLURM_LOCALID',
                    'SLURM_NODEID', 'SLURM_STEP_NUM_TASKS', 'SLURM_NTASKS', 'SLURM_NPROCS', 'SLURM_STEP_TASKS_PER_NODE',
                    'SLURM_TASKS_PER_NODE', 'SLURM_NTASKS_PER_NODE', 'SLURM_STEP_NODELIST', 'SLURM_JOB_NODELIST',
                    'SLURM_NODELIST', 'SLURM_JOB_ID')


@pytest.fixture
def environ(monkeypatch):
    """os.environ without launcher variables; `environ(NAME=value, ...)` sets some (all restored afterwards)."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def set_variables(**variables):
        for name, value in variables.items():
            monkeypatch.setenv(name, str(value))
    return set_variables


def torchrun(rank=0, world_size=2, local_rank=0, local_world_size=1, port=29500):
    return dict(RANK=rank, WORLD_SIZE=world_size, LOCAL_RANK=local_rank, LOCAL_WORLD_SIZE=local_world_size,
                MASTER_ADDR='127.0.0.1', MASTER_PORT=port, TORCHELASTIC_RUN_ID='none')

#----------------------------------------------------------------------------
# resolve: --gpus against the launch, as click errors.

def test_without_a_launch_gpus_is_taken_as_given(environ):
    assert launch.resolve(4, 'cpu') == (None, 4)
    assert launch.resolve(None, 'cpu', default=1) == (None, 1)  # stylegan2-ada's default
    with pytest.raises(click.ClickException, match='--gpus is required unless the script is started by torchrun or srun'):
        launch.resolve(None, 'cpu')


def test_under_torchrun_gpus_is_the_world_size(environ):
    environ(**torchrun(rank=1, world_size=2))
    for gpus in (None, 2):
        job, num_gpus = launch.resolve(gpus, 'cpu')
        assert (job.launcher, job.rank, job.world_size, num_gpus) == ('torchrun', 1, 2, 2)


def test_under_srun_gpus_is_the_number_of_tasks(environ):
    environ(SLURM_JOB_ID=123, SLURM_STEP_ID=0, SLURM_PROCID=3, SLURM_LOCALID=1, SLURM_NODEID=1, SLURM_STEP_NUM_TASKS=4,
            SLURM_STEP_TASKS_PER_NODE='2(x2)', SLURM_STEP_NODELIST='gpu[07-08]')
    job, num_gpus = launch.resolve(None, 'cpu')
    assert (job.launcher, job.rank, job.local_rank, job.master_addr, num_gpus) == ('slurm', 3, 1, 'gpu07', 4)


def test_a_mismatching_gpus_is_a_click_error(environ):
    environ(**torchrun(world_size=16, local_world_size=8))
    with pytest.raises(click.ClickException, match=r'^--gpus=8 does not match the torchrun launch of 16 processes'):
        launch.resolve(8, 'cpu')


def test_a_partial_launch_environment_is_a_click_error(environ):
    environ(RANK=0, WORLD_SIZE=2)
    with pytest.raises(click.ClickException, match='is set but LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT are not'):
        launch.resolve(None, 'cpu')


def test_a_local_rank_without_a_gpu_is_a_click_error(environ, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    environ(**torchrun(rank=3, world_size=4, local_rank=3, local_world_size=4))
    with pytest.raises(click.ClickException, match='^Local rank 3 but only 2 GPUs are visible on this node'):
        launch.resolve(None, None)  # --device defaults to cuda when a GPU is visible
    assert launch.resolve(None, 'cpu')[1] == 4  # on the CPU the GPUs do not matter


#----------------------------------------------------------------------------
# Run directories.

def test_run_directories_are_numbered_like_upstreams(tmp_path):
    assert launch.next_run_dir(str(tmp_path / 'missing'), 'gradnoise') == str(tmp_path / 'missing' / '00000-gradnoise')
    (tmp_path / '00003-old').mkdir()
    (tmp_path / 'notes').mkdir()
    (tmp_path / '00009-a-file.txt').write_text('not a run')  # files do not count, as upstream
    assert launch.next_run_dir(str(tmp_path), 'gradnoise-eval') == str(tmp_path / '00004-gradnoise-eval')
    assert launch.decide_run_dir(str(tmp_path), 'x') == str(tmp_path / '00004-x')  # no process group: decided here

#----------------------------------------------------------------------------
# Before and after joining.

def test_a_process_that_joined_no_launch_keeps_upstreams_single_node_rules():
    assert launch.process_device(3, 'cuda') == torch.device('cuda', 3)
    assert launch.process_device(3, 'cpu') == torch.device('cpu')
    assert launch.init_distributed(0, 1, 'cpu', temp_dir=None) is None
    assert launch.logs_to_run_dir(0) and launch.logs_to_run_dir(1)  # every spawned process appends to log.txt
    assert not launch.other_rank(None)
    launch.join(None, 'cpu')  # nothing to join
    assert not torch.distributed.is_initialized()
    ranks = []
    launch.spawn(ranks.append, (), 1)
    assert ranks == [0]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_a_joined_process_runs_its_global_rank_in_place_then_leaves(environ):
    """A one-process torchrun launch (world size 1), joined for real with gloo."""
    environ(**torchrun(world_size=1, port=free_port()))
    job, num_gpus = launch.resolve(None, 'cpu')
    assert not launch.other_rank(job)
    launch.join(job, 'cpu')
    try:
        assert torch.distributed.is_initialized() and torch.distributed.get_backend() == 'gloo'
        assert launch.process_device(5, 'cpu') == torch.device('cpu')
        assert launch.init_distributed(0, num_gpus, 'cpu', temp_dir=None) is None  # one process: no statistics sync
        assert launch.logs_to_run_dir(0) and not launch.logs_to_run_dir(1)   # only global rank 0 writes log.txt
        seen = []
        launch.spawn(lambda rank, tag: seen.append((rank, tag, torch.distributed.get_world_size())), ('work',), num_gpus)
        assert seen == [(0, 'work', 1)]
        assert not torch.distributed.is_initialized()  # spawn left the group after the work
        assert launch.logs_to_run_dir(1)  # and the process is back to the single-node rules
    finally:
        launch.leave()


def test_other_ranks_of_a_launch_do_not_write():
    job = launch.distributed.Launch('slurm', rank=1, world_size=2, local_rank=0, local_world_size=1, master_addr='n1', master_port=20001)
    assert launch.other_rank(job)
    assert not launch.other_rank(launch.distributed.Launch('slurm', 0, 2, 0, 1, 'n1', 20001))
