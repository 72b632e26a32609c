"""asv benchmarks for the matrix engine of simulate (JIT compiled in setup, not timed).

The conditional engine has its own suite (bench_conditional.py); method="matrix" keeps
these numbers comparable with the history from before it existed.
"""
import numpy as np

import winit_sim as ws

from .common import load_torch, numpy_loop, torch_loop

try:
    torch = load_torch()   # 2 threads
except ImportError:  # the torch baseline is skipped without torch
    torch = None


def _warm(dtype):
    ws.simulate(8, 2, activation="relu", init="he_normal", batch=2, dtype=dtype, method="matrix")


class Simulate:
    """simulate across width, batch and dtype at depth 100, forward + backward."""
    params = ([256, 1024], [16, 256], ["float32", "float64"])
    param_names = ["width", "batch", "dtype"]
    timeout = 300

    def setup(self, width, batch, dtype):
        _warm(dtype)

    def time_simulate(self, width, batch, dtype):
        ws.simulate(width, 100, activation="relu", init="he_normal", batch=batch, dtype=dtype,
                    method="matrix")

    def peakmem_simulate(self, width, batch, dtype):
        ws.simulate(width, 100, activation="relu", init="he_normal", batch=batch, dtype=dtype,
                    method="matrix")


class Depth:
    """Depth scaling at width 1024, batch 16; depth 10,000 must stay under 1 GiB."""
    params = [[100, 1000, 10000]]
    param_names = ["depth"]
    timeout = 900
    number = 1
    repeat = 1

    def setup(self, depth):
        _warm("float64")

    def time_depth(self, depth):
        ws.simulate(1024, depth, activation="relu", init="he_normal", batch=16, method="matrix")

    def peakmem_depth(self, depth):
        ws.simulate(1024, depth, activation="relu", init="he_normal", batch=16, method="matrix")


class Baselines:
    """The same work as a NumPy loop and a PyTorch CPU loop (2 threads), float32, depth 100."""
    params = ([16, 256], ["winit_sim", "numpy", "torch"])
    param_names = ["batch", "impl"]
    timeout = 300

    def setup(self, batch, impl):
        if impl == "torch" and torch is None:
            raise NotImplementedError("torch not installed")
        _warm("float32")
        # warm each implementation once (allocators, thread pools) outside the timing
        self.time_forward_backward(batch, impl)

    def time_forward_backward(self, batch, impl):
        if impl == "winit_sim":
            ws.simulate(1024, 100, activation="relu", init="he_normal", batch=batch,
                        method="matrix", dtype="float32")
        elif impl == "numpy":
            numpy_loop(1024, 100, batch, np.float32)
        else:
            torch_loop(1024, 100, batch, np.float32)
