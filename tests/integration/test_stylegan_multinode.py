"""Multi-node launches of both StyleGAN trees' train.py (and gradnoise_train.py), on one CPU machine.

Two "nodes" on localhost, one process each, gloo:
- torchrun: two agents, `torchrun --nnodes=2 --node_rank={0,1} --nproc_per_node=1`, rendezvous on 127.0.0.1;
- srun: two processes with the environment srun gives the tasks of `srun --nodes=2 --ntasks-per-node=1` (node
  list 127.0.0.[1-2], rendezvous port derived from the job id); no Slurm installation involved.
Each node gets its own --outdir, standing for a node-local disk: only node 0's may get a run directory. A small
runner records, on every rank, a digest of each parameter and buffer that upstream's check_ddp_consistency
compares at every snapshot, so the tests see that both ranks hold the same parameters; rank 0's last snapshot
must equal that of the single-node `--gpus=2` run with the same seed, bit for bit.

Tiny configs (32 generated 32x32 images, cbase 256, cmax 32, two minibatches of 8), one thread per process.
"""

import json
import sys

import pytest

from localhost_launch import free_port, launch_free_environ, run_together, srun_environments, torchrun_commands
from stylegan_support import (SNAPSHOTS_EQUAL, check_finite_losses_and_snapshot, last_snapshot, needs_cuda, run, run_click_commands)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = {  # without --gpus, --outdir and --data
    'stylegan3': ('--cfg=stylegan2 --batch=8 --gamma=1 --cbase=256 --cmax=32 --map-depth=2 --mbstd-group=2 --kimg=0.016 '
                  '--tick=0.008 --snap=1 --grid=4x2 --metrics=none --workers=1 --device=cpu').split(),
    'stylegan2-ada': ('--batch=8 --cbase=256 --cmax=32 --map-depth=2 --kimg=0.016 --tick=0.008 --snap=1 --grid=4x2 '
                      '--metrics=none --workers=1 --device=cpu').split(),
}
SGD_NORM = '--optimizer=sgd --glr=0.01 --dlr=0.01 --clip-mode=norm --clip-gmax=0.5 --clip-dmax=0.5'.split()
SEG_NORM = '--optimizer=extrasgd --glr=0.01 --dlr=0.01 --clip-mode=norm --clip-gmax=0.5 --clip-dmax=0.5'.split()

# (target, variant name, train.py options, launchers): clipped SGD in both trees (with BMC on D in stylegan2-ada),
# and SEG with its two fresh minibatches per update, whose draws must follow the ranks across nodes as well.
VARIANTS = [
    ('stylegan3', 'sgd-norm', SGD_NORM, ['torchrun', 'srun']),
    ('stylegan3', 'extrasgd-norm', SEG_NORM, ['torchrun']),
    ('stylegan2-ada', 'sgd-norm-bmc-D', [*SGD_NORM, '--bmc=D'], ['torchrun', 'srun']),
]
LAUNCHES = [(target, name, launcher) for target, name, _, launchers in VARIANTS for launcher in launchers]

# Runs a tree's script as __main__ on one rank of a launch, recording (in $RECORD_DIR/rank<global rank>.jsonl)
# a digest of every parameter and buffer each check_ddp_consistency call compares.
RUNNER = r'''
import hashlib, json, os, re, runpy, sys
import torch
from torch_utils import misc

def recording_check(module, ignore_regex=None):
    upstream_check(module, ignore_regex=ignore_regex)
    digests = {}
    for name, tensor in misc.named_params_and_buffers(module):
        fullname = type(module).__name__ + '.' + name
        if ignore_regex is None or not re.fullmatch(ignore_regex, fullname):
            digests[fullname] = hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    with open(os.path.join(os.environ['RECORD_DIR'], f'rank{torch.distributed.get_rank()}.jsonl'), 'a') as f:
        f.write(json.dumps(digests) + '\n')

if __name__ == '__main__': # DataLoader workers started with 'spawn' import this file again: they must not train.
    upstream_check, misc.check_ddp_consistency = misc.check_ddp_consistency, recording_check
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name='__main__')
'''


def rank_records(record_dir, world_size):
    """Per global rank, the digests recorded at each check_ddp_consistency call."""
    return [[json.loads(line) for line in (record_dir / f'rank{rank}.jsonl').read_text().splitlines()] for rank in range(world_size)]


def only_run_dir(outdir):
    run_dirs = list(outdir.iterdir())
    assert len(run_dirs) == 1, run_dirs
    return run_dirs[0]


def check_snapshots_equal(tree, a, b):
    assert a.name == b.name
    output = run(tree, ['-c', SNAPSHOTS_EQUAL, str(a), str(b)])
    assert 'DIFFER [] COUNT' in output and 'COUNT 0' not in output, output[-3000:]

#----------------------------------------------------------------------------
# Fixtures: per target its tree and dataset, per variant the single-node --gpus=2 run; the launches.

@pytest.fixture(scope='module')
def trees(patched_tree, tmp_path_factory):
    """target -> (tree, dataset zip: 32 generated 32x32 images packed by the tree's dataset_tool.py)."""
    built = {}

    def get(target):
        if target not in built:
            tree = patched_tree(target)
            root = tmp_path_factory.mktemp(f'{target}-data')
            run(tree, ['-m', 'ganpatch.fake_data', 'images', str(root / 'png'), '--images', '32', '--resolution', '32'])
            run(tree, ['dataset_tool.py', f'--source={root / "png"}', f'--dest={root / "data.zip"}'])
            built[target] = tree, root / 'data.zip'
        return built[target]
    return get


def variant_args(target, name):
    [options] = [options for t, n, options, _ in VARIANTS if (t, n) == (target, name)]
    return [*TINY[target], *options]


@pytest.fixture(scope='module')
def single_node_runs(trees, tmp_path_factory):
    """(target, variant) -> run directory of `train.py --gpus=2` (two spawned processes, upstream's path)."""
    runs = {}

    def get(target, name):
        if (target, name) not in runs:
            tree, data = trees(target)
            outdir = tmp_path_factory.mktemp(f'{target}-{name}-single-node')
            run(tree, [str(tree / 'train.py'), f'--outdir={outdir}', f'--data={data}', '--gpus=2', *variant_args(target, name)],
                cwd=outdir, env=launch_free_environ(tree))
            runs[target, name] = only_run_dir(outdir)
        return runs[target, name]
    return get


def train_on_two_nodes(tree, train_args, launcher, root):
    """`train.py <train_args>` without --gpus on two nodes of one process each, started by `launcher` (torchrun or
    srun); node <n> writes to root/node<n>/runs, the ranks' records go to root/records. Returns the outputs."""
    (root / 'runner.py').write_text(RUNNER)
    (root / 'records').mkdir()
    env = launch_free_environ(tree, RECORD_DIR=str(root / 'records'))
    node_args = [[str(tree / 'train.py'), f'--outdir={root / f"node{node}" / "runs"}', *train_args]
                 for node in range(2)]  # each node its own --outdir: node 1 must write nothing
    if launcher == 'torchrun':
        commands = [(argv, env) for argv in torchrun_commands(str(root / 'runner.py'), node_args, free_port())]
    else:
        commands = [([sys.executable, str(root / 'runner.py'), *args], {**env, **slurm})
                    for args, slurm in zip(node_args, srun_environments(2))]
    return run_together(commands, cwd=root, timeout=600)

#----------------------------------------------------------------------------
# Two nodes, one process each, equal a single-node --gpus=2 run.

@pytest.mark.parametrize('target, name, launcher', LAUNCHES)
def test_two_nodes_train_like_two_local_processes(target, name, launcher, trees, single_node_runs, tmp_path):
    tree, data = trees(target)
    outputs = train_on_two_nodes(tree, [f'--data={data}', *variant_args(target, name)], launcher, tmp_path)
    slurm_or_torchrun = 'slurm' if launcher == 'srun' else 'torchrun'
    for rank, output in enumerate(outputs):
        assert f'Joined {slurm_or_torchrun}: global rank {rank} of 2, local rank 0 of 1, rendezvous 127.0.0.1:' in output, output[-3000:]

    # Global rank 0 alone wrote a run directory, named as on one node, with what a --gpus=2 run writes.
    assert not (tmp_path / 'node1' / 'runs').exists()
    run_dir = only_run_dir(tmp_path / 'node0' / 'runs')
    reference = single_node_runs(target, name)
    assert run_dir.name == reference.name  # ...-gpus2-... (stylegan3) / ...-auto2-... (stylegan2-ada): --gpus inferred
    options, expected = (json.loads((d / 'training_options.json').read_text()) for d in (run_dir, reference))
    assert {**options, 'run_dir': None} == {**expected, 'run_dir': None} and options['num_gpus'] == 2
    assert {p.name for p in run_dir.iterdir() if not p.name.startswith('events.')} == \
        {p.name for p in reference.iterdir() if not p.name.startswith('events.')}
    assert 'Training for 0.016 kimg' in (run_dir / 'log.txt').read_text()

    # The same parameters on both ranks at every snapshot, and rank 0's equal the single-node run's, bit for bit.
    records = rank_records(tmp_path / 'records', 2)
    assert len(records[0]) >= 2 * 3 and records[0] == records[1]  # >= 2 snapshots of G, D and G_ema
    check_snapshots_equal(tree, last_snapshot(run_dir), last_snapshot(reference))  # (NaN would differ: torch.equal)

#----------------------------------------------------------------------------
# gradnoise_train.py (the shared driver) under torchrun: the noise measured on two nodes equals --gpus=2's.

def test_gradnoise_on_two_torchrun_nodes_equals_two_local_processes(trees, single_node_runs, tmp_path):
    tree, data = trees('stylegan3')
    snapshot = last_snapshot(single_node_runs('stylegan3', 'sgd-norm'))
    args = ['--cfg=stylegan2', f'--data={data}', '--batch=8', '--batch-gpu=4', '--gamma=1', '--kimg=0.024', '--mode=both',
            '--metrics=none', '--desc=eval', f'--resume={snapshot}', '--workers=1', '--device=cpu', '--pl-mean-batches=2']
    env = launch_free_environ(tree)
    run(tree, [str(tree / 'gradnoise_train.py'), f'--outdir={tmp_path / "single"}', '--gpus=2', *args], cwd=tmp_path, env=env)
    node_args = [[f'--outdir={tmp_path / f"node{node}"}', *args] for node in range(2)]
    outputs = run_together([(argv, env) for argv in torchrun_commands(str(tree / 'gradnoise_train.py'), node_args, free_port())], cwd=tmp_path, timeout=600)
    assert 'Joined torchrun: global rank 1 of 2' in outputs[1]
    assert not (tmp_path / 'node1').exists()
    single, launched = only_run_dir(tmp_path / 'single'), only_run_dir(tmp_path / 'node0')
    assert launched.name == single.name == '00000-gradnoise-eval'
    files = sorted(p.name for p in single.iterdir() if p.suffix in ('.npy', '.pth', '.json'))
    assert 'noise_stats.json' in files and 'Dreg_stoch_noise.npy' in files and 'Gmain_full_grad.pth' in files
    assert sorted(p.name for p in launched.iterdir() if p.suffix in ('.npy', '.pth', '.json')) == files
    for file in files:
        if file != 'options.json':
            assert (launched / file).read_bytes() == (single / file).read_bytes(), file
    options = [json.loads((d / 'options.json').read_text()) for d in (launched, single)]
    assert {**options[0], 'run_dir': None} == {**options[1], 'run_dir': None} and options[0]['num_gpus'] == 2

#----------------------------------------------------------------------------
# Bad launches fail at startup, before any run directory exists.

def torchrun_environment(rank=0, world_size=2, local_world_size=1):
    return dict(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank % local_world_size),
                LOCAL_WORLD_SIZE=str(local_world_size), MASTER_ADDR='127.0.0.1', MASTER_PORT='29500', TORCHELASTIC_RUN_ID='none')


# (target, environment, options besides --outdir, --data and TINY's other ones, accepted, a part of the message)
STARTUP_CASES = [
    ('stylegan3', torchrun_environment(world_size=2), ['--batch=8', '--gpus=4'],
        False, '--gpus=4 does not match the torchrun launch of 2 processes (1 on this node). Under torchrun or srun, --gpus counts'),
    ('stylegan3', torchrun_environment(world_size=16, local_world_size=8), ['--batch=8', '--gpus=8'],
        False, '(--gpus looks like a per-node count)'),
    ('stylegan3', dict(RANK='0', WORLD_SIZE='2'), ['--batch=8'],
        False, 'RANK=0, WORLD_SIZE=2 is set but LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT are not. Launch with torchrun'),
    ('stylegan3', dict(SLURM_JOB_ID='7', SLURM_STEP_ID='0', SLURM_STEP_NUM_TASKS='2', SLURM_STEP_NODELIST='n[1-2]'), ['--batch=8'],
        False, 'slurm: a job step of 2 tasks without SLURM_PROCID, SLURM_LOCALID'),
    ('stylegan3', {}, ['--batch=8'],
        False, '--gpus is required unless the script is started by torchrun or srun'),
    ('stylegan3', torchrun_environment(world_size=16, local_world_size=8), ['--batch=8'],
        False, '--batch must be a multiple of --gpus'),  # 8 images on 16 processes
    ('stylegan3', torchrun_environment(rank=1, world_size=2), ['--batch=8', '--dry-run'],
        True, None),  # the other ranks of a dry run write nothing
    ('stylegan2-ada', torchrun_environment(world_size=2), ['--batch=8', '--gpus=1'],
        False, '--gpus=1 does not match the torchrun launch of 2 processes'),
    ('stylegan2-ada', dict(LOCAL_RANK='0'), ['--batch=8'],
        False, 'LOCAL_RANK=0 is set but RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT are not'),
    ('stylegan2-ada', torchrun_environment(world_size=16, local_world_size=8), ['--cfg=stylegan2'],
        False, '--cfg=stylegan2 sets a batch of 32 images, 4 per GPU and round, which 16 GPUs cannot split (it must be a '
               'multiple of 64); pass --batch, a multiple of --gpus'),
    ('stylegan2-ada', torchrun_environment(world_size=2), ['--batch=8', '--dry-run'],
        True, None),
]


@pytest.mark.parametrize('target', ['stylegan3', 'stylegan2-ada'])
def test_bad_launches_fail_before_any_run_directory(target, trees, tmp_path):
    tree, data = trees(target)
    cases = [case[1:] for case in STARTUP_CASES if case[0] == target]
    base = [f'--outdir={tmp_path / "runs"}', f'--data={data}', *[a for a in TINY[target] if not a.startswith('--batch=')]]
    results = run_click_commands(tree, 'train', 'main', [[*base, *options] for _, options, _, _ in cases], tmp_path,
                                 envs=[env for env, _, _, _ in cases])
    for (env, options, accepted, message), (was_accepted, text) in zip(cases, results):
        assert was_accepted == accepted and (message is None or message in text), (env, options, text)
    assert not (tmp_path / 'runs').exists()

#----------------------------------------------------------------------------
# On a CUDA GPU (skipped elsewhere): one node, `torchrun --nproc_per_node=1`, nccl.

CUDA_RUN = {
    'stylegan3': '--cfg=stylegan2 --batch=8 --gamma=1 --cbase=512 --cmax=32 --map-depth=2 --kimg=0.2 --tick=0.1 --snap=1 --grid=4x2 --metrics=none --workers=1 --device=cuda'.split(),
    'stylegan2-ada': '--batch=8 --cbase=512 --cmax=32 --map-depth=2 --kimg=0.2 --tick=0.1 --snap=1 --grid=4x2 --metrics=none --workers=1 --device=cuda'.split(),
}


@pytest.mark.gpu
@pytest.mark.parametrize('target', ['stylegan3', 'stylegan2-ada'])
def test_one_cuda_node_under_torchrun_trains_with_nccl(target, trees, tmp_path):
    needs_cuda()
    tree, data = trees(target)
    args = [f'--outdir={tmp_path / "runs"}', f'--data={data}', *CUDA_RUN[target], *SGD_NORM]
    [output] = run_together([(argv, launch_free_environ(tree)) for argv in torchrun_commands(str(tree / 'train.py'), [args], free_port())], cwd=tmp_path, timeout=900)
    assert 'Joined torchrun: global rank 0 of 1, local rank 0 of 1, rendezvous 127.0.0.1:' in output and '; nccl on cuda:0' in output, output[-3000:]
    run_dir = only_run_dir(tmp_path / 'runs')
    assert json.loads((run_dir / 'training_options.json').read_text())['num_gpus'] == 1
    check_finite_losses_and_snapshot(tree, run_dir)
