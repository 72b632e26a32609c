"""The engine room: plan a run, choose its engine, check its memory, run it, frame it.

Everything here is public to the package (the API, sweeps, the cluster path and
training use it); users call :func:`winit_sim.simulate` and friends instead.

* :func:`describe` -- the network as the kernels' data (:data:`Net`).
* :func:`plan` -- the engine (``method``), the segment length or whether to keep
  pre-activations, and a refusal before any allocation if it cannot fit.
* :func:`execute` -- one call of the driver skeleton (:mod:`.kernels.driver`).
* :func:`frame` -- the DataFrame of one net from the kernel's arrays.
* :class:`threads` -- Numba's thread count for a block, BLAS pinned to one thread.
"""
from collections import namedtuple
import os

import numba
import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from .activations import kernel_data
from .checks import check_positive_int
from .inits import GAUSSIAN_INITS, SAMPLINGS, is_gaussian, layer_sampler
from .kernels import conditional, driver, matrix
from .kernels.layer import BACKWARD_COLUMNS, DENSE, FORWARD_COLUMNS, Draws, Net
from .layers import AUTO, ENGINES
from .theory.moments import auto_gain

SEGMENT_BYTES = 128 * 2**20  # memory kept for the backward pass before checkpointing kicks in
# auto takes the conditional engine when batch * this <= the narrowest layer: its
# O(batch^2 width) per layer then beats the O(batch width^2) of a weight matrix
# (measured, float32, depth 50, forward+backward, conditional / matrix time: width /
# batch = 8: 0.41 at 256 / 32, 0.33 at 1024 / 128; 16: 0.23 at 256 / 16, 0.20 at
# 1024 / 64, 0.22 at 4096 / 256; but 1.11 at 256 / 64)
CONDITIONAL_MAX_BATCH_FRACTION = 8
CONDITIONAL_KEEP_BYTES = 32 * 2**20   # the conditional engine keeps pre-activations up to this

# a planned run: the engine's name, the kernels' Net, the compute dtype, the batch
# rows, and the engine's memory choice (matrix: layers per segment; conditional:
# whether pre-activations are kept)
Plan = namedtuple("Plan", ["engine", "net", "dtype", "rows", "seg_len", "keep"])


def describe(widths, activation, init, bias_std=0.0, input_std=1.0):
    """The network as the kernels see it (:data:`winit_sim.kernels.layer.Net`).

    ``init`` None means weights given by the caller (samplers unused). Each
    distinct (fan_in, fan_out) is sampled once: deep uniform nets have one.
    """
    depth = widths.size - 1
    sampler = np.zeros(depth, np.int64)
    scale = np.zeros(depth)
    if init is not None:
        gain = auto_gain(init, activation)
        shapes = {}
        for l in range(depth):
            shape = (int(widths[l]), int(widths[l + 1]))
            if shape not in shapes:
                shapes[shape] = layer_sampler(init, shape[0], shape[1], gain)
            sampler[l], scale[l] = shapes[shape]
    return Net(widths, np.full(depth, DENSE, np.int64), sampler, scale, float(bias_std),
               float(input_std))


def choose_method(method, init, net, rows):
    """The engine that runs: 'matrix' or 'conditional' (see :func:`winit_sim.simulate`)."""
    kinds = [int(k) for k in np.unique(net.sampler)]
    gaussian_kinds = all(is_gaussian(k) for k in kinds)
    gaussian = gaussian_kinds and bool(np.all(net.scale > 0.0))
    if method != AUTO and ENGINES[method].gaussian_only and not gaussian:
        why = ("has a weight std of 0" if gaussian_kinds else
               "samples non-Gaussian weights (" + ", ".join(SAMPLINGS.names()[k] for k in kinds)
               + ")")
        raise ValueError(
            f"method={method!r} needs Gaussian weights ({', '.join(GAUSSIAN_INITS)} with "
            f"std > 0); init {init!r} {why}, so its units are not Gaussian given the "
            f"layer input: use method='matrix' (or 'auto')")
    if method == AUTO:
        fits = rows * CONDITIONAL_MAX_BATCH_FRACTION <= int(net.widths.min())
        return "conditional" if gaussian and fits else "matrix"
    return method


def segment_layers(requested, rows, widths, itemsize):
    """Layers per checkpoint segment of the matrix engine (default: 128 MiB of them)."""
    if requested is not None:
        return check_positive_int(requested, "segment_layers")
    per_layer = 2 * rows * int(widths.max()) * itemsize
    return max(1, SEGMENT_BYTES // per_layer)


def matrix_bytes(net, rows, given, seg_len, itemsize):
    """Buffers of the matrix engine (see :func:`winit_sim.kernels.matrix.new_state`)."""
    widths = net.widths
    depth, maxn = widths.size - 1, int(widths.max())
    seg_len = min(seg_len, depth)
    n_seg = -(-depth // seg_len)
    entries = (int(matrix.weight_buffer_size(net, rows, given))
               + (2 * seg_len + n_seg + 5) * rows * maxn)
    return entries * itemsize + 8 * rows * maxn


def conditional_keeps(widths, rows, itemsize):
    """Whether the conditional engine keeps pre-activations instead of regenerating them."""
    return (widths.size - 1) * rows * int(widths.max()) * itemsize <= CONDITIONAL_KEEP_BYTES


def conditional_bytes(widths, rows, itemsize):
    """Buffers of the conditional engine: 7 of batch x width, per-block sums, per layer
    two batch x batch matrices, and the kept pre-activations of small nets."""
    depth, maxn = widths.size - 1, int(widths.max())
    kept = depth * rows * maxn * itemsize if conditional_keeps(widths, rows, itemsize) else 0
    blocks = -(-maxn // conditional.BLOCK)
    return (7 * rows * maxn * itemsize + blocks * rows * (rows + 6) * 8
            + (depth + 1) * (2 * rows * rows + 6) * 8 + kept)


def check_bytes(need, advice):
    """Refuse a run needing more than 80% of this machine's memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.8 * total:
        raise ValueError(
            f"this run needs about {need / 2**30:.1f} GiB of buffers, more than 80% of this "
            f"machine's {total / 2**30:.1f} GiB: {advice}")


def plan(net, init, rows, dtype, method="matrix", segment=None, given=None):
    """Pick the engine of a run and refuse it, before any allocation, if it cannot fit.

    ``init`` None (with ``given``) means weights given by the caller: matrix engine.
    """
    dt = np.dtype(dtype)
    seg_len = segment_layers(segment, rows, net.widths, dt.itemsize)
    if init is not None and choose_method(method, init, net, rows) == "conditional":
        check_bytes(conditional_bytes(net.widths, rows, dt.itemsize), "reduce width or batch")
        return Plan("conditional", net, dt, rows, seg_len,
                    conditional_keeps(net.widths, rows, dt.itemsize))
    check_bytes(matrix_bytes(net, rows, given, seg_len, dt.itemsize),
                f"reduce width or batch (batches up to {matrix.FUSED_MAX_BATCH} never form a "
                f"weight matrix), or set segment_layers")
    return Plan("matrix", net, dt, rows, seg_len, False)


def execute(run_plan, activation, seed, trials, tops, given=None):
    """Run a plan through the driver; returns the kernel's (forward, backward) arrays."""
    net, rows, proto = run_plan.net, run_plan.rows, np.empty(0, run_plan.dtype)
    matrix_state = conditional_state = None
    if run_plan.engine == "conditional":
        conditional_state = conditional.new_state(net, rows, run_plan.keep, proto)
    else:
        matrix_state = matrix.new_state(net, rows, run_plan.seg_len, given, proto)
    return driver.run(matrix_state, conditional_state, net, kernel_data(activation),
                      Draws(np.uint64(seed), trials, rows), np.asarray(tops, dtype=np.int64),
                      given)


def simulate_arrays(widths, activation, init, *, rows, trials, seed, bias_std, input_std,
                    dtype, tops, segment=None, method="matrix"):
    """Plan and run sampled networks: the kernel's (forward, backward) arrays."""
    net = describe(widths, activation, init, bias_std, input_std)
    return execute(plan(net, init, rows, dtype, method, segment), activation, seed, trials,
                   tops)


def frame(forward, backward, widths, depth=None, top_index=0):
    """DataFrame of one net (the first ``depth`` layers) from the kernel's arrays.

    ``backward`` is None (no backward columns) or the kernel's backward array,
    of which ``backward[:, top_index]`` belongs to the depth-``depth`` net.
    """
    trials = forward.shape[0]
    depth = forward.shape[1] if depth is None else depth
    cols = {
        "trial": np.repeat(np.arange(trials), depth),
        "layer": np.tile(np.arange(1, depth + 1), trials),
        "fan_in": np.tile(widths[:depth], trials),
        "fan_out": np.tile(widths[1:depth + 1], trials),
    }
    fwd = forward[:, :depth].reshape(trials * depth, -1)
    for i, name in enumerate(FORWARD_COLUMNS):
        cols[name] = fwd[:, i]
    if backward is not None:
        bwd = backward[:, top_index, :depth].reshape(trials * depth, -1)
        for i, name in enumerate(BACKWARD_COLUMNS):
            cols[name] = bwd[:, i]
    return pd.DataFrame(cols)


_BLAS = None


def _blas_controller():
    global _BLAS
    if _BLAS is None:
        import scipy.linalg.cython_blas  # noqa: F401  (numba's BLAS: load it before the snapshot)
        _BLAS = ThreadpoolController()
    return _BLAS


class threads:
    """Set numba's thread count for a block and restore it (and BLAS's) on exit.

    BLAS runs single-threaded inside the kernel: its spinning worker threads
    and numba's would otherwise fight over the cores between every
    weight-sampling loop and matrix product (measured: 13 ms instead of
    0.2 ms per layer at width 256 on 2 cores).
    """

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = numba.get_num_threads()
        if self.n is not None:
            n = check_positive_int(self.n, "threads")
            if n > numba.config.NUMBA_NUM_THREADS:
                raise ValueError(f"threads must be <= {numba.config.NUMBA_NUM_THREADS} "
                                 f"(NUMBA_NUM_THREADS), got {n}")
            numba.set_num_threads(n)
        self.blas = _blas_controller().limit(limits=1, user_api="blas")

    def __exit__(self, *exc):
        try:
            self.blas.restore_original_limits()
        finally:
            numba.set_num_threads(self.old)
        return False
