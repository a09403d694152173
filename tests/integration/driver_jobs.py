"""The JOB lines of the integration tests' driver processes.

A driver runs many jobs of a script in one process (one torch import instead of one per job) and prints one
line `JOB <json>` per job, a record holding at least the job's 'name' (and 'cpu_s', the CPU seconds it took,
where the driver measures them).
"""
import json


def read_jobs(result, names):
    """name -> the record of each JOB line in `result.stdout` (a CompletedProcess of the driver), each printed
    with its CPU seconds. Fails with the driver's stderr unless it exited with 0 and reported exactly `names`,
    in that order."""
    jobs = {}
    for line in result.stdout.splitlines():
        if line.startswith('JOB '):
            job = json.loads(line[len('JOB '):])
            jobs[job['name']] = job
            print(f"{job['name']}: {job.get('cpu_s', 0):.1f} CPU s")
    assert result.returncode == 0 and list(jobs) == list(names), result.stderr[-6000:]
    return jobs
