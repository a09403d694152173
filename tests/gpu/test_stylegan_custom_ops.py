"""The custom CUDA ops of both StyleGAN trees build and import unchanged with torch 2.13, C++20 and nvcc 13.

Builds upfirdn2d, bias_act and (stylegan3) filtered_lrelu through upstream's own `_init()` and
`custom_ops.get_plugin` (same sources, headers and nvcc flags as training uses), for sm_90, and
imports the resulting extension modules. No GPU is needed: only nvcc and the CUDA build of torch.

Two things in stylegan3's `get_plugin` need a visible GPU, so the build subprocess bridges them:
- the build directory is named after `torch.cuda.get_device_name()`: `_get_mangled_gpu_name` is
  replaced by a fixed name;
- it blanks TORCH_CUDA_ARCH_LIST so that torch detects the visible GPUs' arch: the arch list is set
  back to 9.0 (H100/H200) just before `torch.utils.cpp_extension.load` runs (stylegan2-ada's
  `get_plugin` needs neither, and gets the same arch list).
stylegan2-ada's `_init()` catches a failed build and falls back to the reference code with a warning;
the test then fails on the missing plugin and shows the warning.
The toolkit is the one `nvcc` belongs to (CUDA_HOME, else nvcc's own TOP). Headers a runtime-only
toolkit lacks (cuBLAS, cuSPARSE, cuSOLVER, which ATen's CUDA headers include) come from the
`nvidia-*` wheels that the CUDA build of torch installs, searched after the toolkit's own.
Build times are printed (run pytest with -s to see them) and written to the build log.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

OPS = {  # target -> {module under torch_utils/ops -> a function its compiled plugin must export}
    'stylegan3': {'upfirdn2d': 'upfirdn2d', 'bias_act': 'bias_act', 'filtered_lrelu': 'filtered_lrelu'},
    'stylegan2-ada': {'upfirdn2d': 'upfirdn2d', 'bias_act': 'bias_act'},
}

BUILD_SCRIPT = r'''
import importlib, json, os, sys, time
import torch.utils.cpp_extension as cpp_extension
from torch_utils import custom_ops

custom_ops.verbosity = 'full'
custom_ops._get_mangled_gpu_name = lambda: 'sm_90-build-test'
_load = cpp_extension.load
_late_includes = [f'-idirafter{d}' for d in os.environ['WHEEL_CUDA_INCLUDES'].split(os.pathsep) if d]
def load_for_sm90(*args, **kwargs):
    os.environ['TORCH_CUDA_ARCH_LIST'] = '9.0'  # get_plugin() blanks it to detect the (absent) GPU
    kwargs['extra_cflags'] = kwargs.get('extra_cflags', []) + _late_includes
    kwargs['extra_cuda_cflags'] = kwargs.get('extra_cuda_cflags', []) + [f'-Xcompiler={f}' for f in _late_includes]
    return _load(*args, **kwargs)
cpp_extension.load = load_for_sm90

results = {}
for name in sys.argv[1:]:
    op = importlib.import_module(f'torch_utils.ops.{name}')
    start = time.time()
    op._init()
    results[name] = dict(seconds=round(time.time() - start, 1), module=op._plugin.__name__,
                         file=op._plugin.__file__, exports=sorted(n for n in dir(op._plugin) if not n.startswith('_')))
    print(f'built and imported {name} in {results[name]["seconds"]} s', flush=True)
print('RESULTS ' + json.dumps(results))
'''


def cuda_home(nvcc):
    """The toolkit root: $CUDA_HOME, else the TOP that nvcc reports (nvcc may be a wrapper script)."""
    if os.environ.get('CUDA_HOME'):
        return os.environ['CUDA_HOME']
    dryrun = subprocess.run([nvcc, '--dryrun', '-c', '-x', 'cu', os.devnull, '-o', os.devnull], capture_output=True, text=True).stderr
    for line in dryrun.splitlines():
        if line.startswith('#$ TOP='):
            return os.path.realpath(line.split('=', 1)[1].strip())
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def wheel_cuda_includes():
    """Include directories of the nvidia-* wheels that the CUDA build of torch depends on."""
    try:
        import nvidia
    except ImportError:
        return []
    return sorted({os.path.dirname(h) for root in nvidia.__path__
                   for h in glob.glob(os.path.join(root, '*', 'include', 'cublas_v2.h'))})


@pytest.fixture(scope='module')
def build_env(tmp_path_factory):
    nvcc = shutil.which('nvcc')
    if nvcc is None:
        pytest.skip('nvcc not found on PATH: the custom-op build test needs the CUDA toolkit compiler')
    if torch.version.cuda is None:
        pytest.skip(f'torch {torch.__version__} is a CPU-only build; the custom ops need its CUDA build')
    return dict(os.environ, CUDA_HOME=cuda_home(nvcc), WHEEL_CUDA_INCLUDES=os.pathsep.join(wheel_cuda_includes()),
                TORCH_EXTENSIONS_DIR=str(tmp_path_factory.mktemp('torch_extensions')), MAX_JOBS=str(os.cpu_count() or 2))


@pytest.mark.parametrize('target', list(OPS))
def test_custom_ops_build_and_import_for_sm90(target, build_env, patched_tree, tmp_path):
    tree = patched_tree(target)
    proc = subprocess.run([sys.executable, '-c', BUILD_SCRIPT, *OPS[target]], cwd=tree, env=build_env,
                          capture_output=True, text=True, timeout=1800)
    log = proc.stdout + proc.stderr
    (tmp_path / 'build.log').write_text(log)
    assert proc.returncode == 0, log[-8000:]
    results = json.loads(log.split('RESULTS ', 1)[1].splitlines()[0])
    print('custom-op build+import seconds:', {name: result['seconds'] for name, result in results.items()})
    for name, export in OPS[target].items():
        assert export in results[name]['exports'], (name, results[name])
        assert results[name]['file'].endswith('.so'), results[name]
    assert 'Falling back' not in log
