"""Timing shared by the PyTorch peer benchmarks (run as scripts from
spec/bench/, so this module is importable beside them)."""
import time

import torch


def seconds_per_step(step, steps, warmup, cuda):
    """Mean wall seconds of step() over `steps` calls after `warmup` calls,
    synchronizing the GPU around the timed region when cuda is true."""
    def sync():
        if cuda:
            torch.cuda.synchronize()
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t0) / steps
