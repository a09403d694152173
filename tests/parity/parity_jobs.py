"""The job loop of the parity runners (wgangp_runner.py, stylegan_runner.py), and the seaborn stand-in both need.

    python <runner>.py JOBS.json OUT_DIR

For each job of JOBS.json (a list whose entries start with the job's name), `run_jobs` empties the runner's
`record`, sets its 'name' and 'error' (None), calls `run_job(*job, out_dir)`, which runs the script and adds what
the runner traces, and prints one line `JOB <json of record>` to stdout, with 'cpu_s', the CPU seconds the job
took. `errors` (the script's flag errors, SystemExit) end a job with their message in 'error'; any other
exception ends the runner.
"""
import json
import sys
import time
import types


def install_seaborn_stand_in():
    """The authors' scripts import seaborn (for their histogram plots) at module level: where it is not installed,
    an import-only stand-in whose plots draw nothing (the parity tests compare saved numbers, not figures)."""
    try:
        import seaborn  # noqa: F401
    except ImportError:
        seaborn = types.ModuleType('seaborn')
        seaborn.set = lambda *args, **kwargs: None
        seaborn.histplot = lambda *args, **kwargs: None
        sys.modules['seaborn'] = seaborn


def run_jobs(record, run_job, errors):
    jobs_path, out_dir = sys.argv[1:]
    with open(jobs_path) as f:
        jobs = json.load(f)
    for name, *job in jobs:
        record.clear()
        record.update(name=name, error=None)
        start = time.process_time()
        try:
            run_job(name, *job, out_dir)
        except errors as exc:
            record['error'] = ' '.join(str(exc).split())
        record['cpu_s'] = time.process_time() - start
        print('JOB ' + json.dumps(record), flush=True)
