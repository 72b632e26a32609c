"""asv benchmarks for residual nets (JIT compiled in setup, not timed): the cost per block
against the plain MLP, and against a PyTorch loop on the same architecture.

Width 1024, depth 100, batch 16, float32, ReLU, He-normal, forward + backward. The
PyTorch loop (:func:`.common.torch_residual_loop`, 2 threads) stores its weights
and uses autograd; winit_sim's matrix engine regenerates every matrix from its key,
and its conditional engine draws each matrix's output given its input.
"""
import numpy as np

import winit_sim as ws

from .common import load_torch, torch_residual_loop

try:
    torch = load_torch()   # 2 threads
except ImportError:  # the torch baseline is skipped without torch
    torch = None

ARCHS = {"mlp": "mlp", "branch1": "residual:norm=layernorm",
         "branch2": "residual:branch=2,norm=layernorm"}


class Residual:
    """winit_sim on the MLP and on pre-LN residual nets of 1 and 2 matrices per block, on
    both engines, beside the PyTorch loop on the residual ones."""
    params = (list(ARCHS), ["matrix", "conditional", "torch"])
    param_names = ["arch", "impl"]
    timeout = 300

    def setup(self, arch, impl):
        if impl == "torch" and (torch is None or arch == "mlp"):
            raise NotImplementedError("no torch baseline here")
        if impl != "torch":
            ws.simulate(8, 2, batch=2, dtype="float32", arch=ARCHS[arch], method=impl)
        self.time_forward_backward(arch, impl)   # warm allocators and thread pools

    def time_forward_backward(self, arch, impl):
        if impl == "torch":
            torch_residual_loop(1024, 100, 16, np.float32, branch=2 if arch == "branch2" else 1)
        else:
            ws.simulate(1024, 100, activation="relu", init="he_normal", batch=16,
                        dtype="float32", arch=ARCHS[arch], method=impl)
