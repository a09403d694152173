"""Interleaved timing for the benchmarks in this folder: every variant runs once per round, so that a drift of
the machine (other jobs, clock changes) spreads over all variants alike instead of favouring one."""

import statistics
import time

import torch


def interleaved_medians(calls, device, repeats, warmup):
    """{name: median seconds} of each zero-argument callable in `calls`, over `repeats` timed rounds after
    `warmup` untimed ones; CUDA work is synchronized before and after each call."""
    sync = torch.cuda.synchronize if torch.device(device).type == 'cuda' else (lambda: None)
    times = {name: [] for name in calls}
    for repeat in range(warmup + repeats):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            call()
            sync()
            if repeat >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
