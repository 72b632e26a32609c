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

from .activations import kernel_data, resolve_activation
from .checks import check_positive_int
from .inits import (CONDITIONAL_INITS, GAUSSIAN_INITS, SAMPLINGS, is_gaussian, layer_sampler,
                    on_conditional, resolve_init)
from .kernels import (conditional, driver, householder, matrix, residual, residual_conditional,
                      residual_spectrum, spectrum)
from .kernels.blocks import BLOCK
from .kernels.layer import BACKWARD_COLUMNS, DENSE, FORWARD_COLUMNS, Draws, Net, results
from .kernels.residual import (BLOCK_BACKWARD_COLUMNS, BLOCK_FORWARD_EXTRA, ResNet)
from .layers import AUTO, ENGINES, NO_NORM, NORMS
from .theory.moments import auto_gain

SEGMENT_BYTES = 128 * 2**20  # memory kept for the backward pass before checkpointing kicks in
# auto takes the conditional engine when batch * this <= the narrowest layer: its
# O(batch^2 width) per layer then beats the O(batch width^2) of a weight matrix
# (measured, float32, depth 50, forward+backward, conditional / matrix time: width /
# batch = 8: 0.41 at 256 / 32, 0.33 at 1024 / 128; 16: 0.23 at 256 / 16, 0.20 at
# 1024 / 64, 0.22 at 4096 / 256; but 1.11 at 256 / 64)
CONDITIONAL_MAX_BATCH_FRACTION = 8
# ... and, for Gaussian MLPs, batches of at least CONDITIONAL_LARGE_BATCH where batch *
# CONDITIONAL_LARGE_BATCH_FRACTION <= the narrowest layer: there its B x B work runs at
# block speed (measured at width / batch = 4, float32, depth 30: 0.85 at 512 / 128, 0.88
# at 1024 / 256, 0.97 at 2048 / 512; but 0.86 at 256 / 64, too small a gain to change
# the engine, and 1.7 to 2.1 at width / batch = 2)
CONDITIONAL_LARGE_BATCH = 128
CONDITIONAL_LARGE_BATCH_FRACTION = 4
CONDITIONAL_KEEP_BYTES = 32 * 2**20   # the conditional engine keeps pre-activations up to this
# the matrix engine keeps a trial's formed weights up to this (width 1024, depth 100,
# float32: 400 MiB), saving one sampling per layer in the backward and one per layer
# of every recomputed segment
WEIGHT_STORE_BYTES = 512 * 2**20
ORTHOGONAL_CODE = SAMPLINGS.code("orthogonal")
UNIFORM_CODE = SAMPLINGS.code("uniform")

# a planned run: the engine's name, the kernels' Net, the compute dtype, the batch
# rows, and the engine's memory choice (matrix: layers per segment; conditional:
# whether pre-activations are kept)
Plan = namedtuple("Plan", ["engine", "net", "dtype", "rows", "seg_len", "keep"])


def orthogonal_layers(samplers):
    """The kernels' ``orthogonal_layers`` for layers sampled by ``samplers`` (codes): True
    if any is orthogonal, else None, so that a run compiles no orthogonal code (Numba
    resolves ``is None`` when it compiles; a first run's JIT compile is then shorter)."""
    return _any_sampled(samplers, ORTHOGONAL_CODE)


def uniform_layers(samplers):
    """The kernels' ``uniform_layers``: as :func:`orthogonal_layers`, for uniform layers."""
    return _any_sampled(samplers, UNIFORM_CODE)


def _any_sampled(samplers, code):
    return True if np.any(np.asarray(samplers) == code) else None


# what a run compiles beyond its own net's needs: ``smooth`` the scale-dependent
# activations' formulas, ``uniform`` uniform sampling. A sweep compiles its kernels once
# for all of its cells (one variant per engine, not one per kind of cell); the general
# variant gives the same bits as a pruned one (tests: test_activations, test_reference)
CompileScope = namedtuple("CompileScope", ["smooth", "uniform"])


def compile_scope(activations, inits):
    """The :data:`CompileScope` covering every (activation, init) of a grid's axes."""
    return CompileScope(
        any(not resolve_activation(a).entry.homogeneous for a in activations),
        any(resolve_init(i).entry.sampling == "uniform" for i in inits))


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
               float(input_std), orthogonal_layers(sampler), uniform_layers(sampler))


def block_shapes(branch, width, hidden):
    """(fan_out, fan_in) of each matrix of a block, in forward order (as
    :func:`winit_sim.kernels.residual.shape`)."""
    return [(width, width)] if branch == 1 else [(hidden, width), (width, hidden)]


def describe_blocks(blocks, width, depth, activation, init, bias_std=0.0, input_std=1.0):
    """A residual network as the kernels see it (:data:`winit_sim.kernels.residual.ResNet`).

    ``blocks``: a resolved arch (:func:`winit_sim.layers.resolve_arch`). Each
    matrix is sampled by ``init`` with its own fan-in and fan-out, its scale
    multiplied by the arch's ``in_scale`` (a branch's first of two) or
    ``out_scale`` (its last); a multiplier 0 gives a zero matrix. ``init``
    None: weights given by the caller.
    """
    sampler = np.zeros((depth, blocks.branch), np.int64)
    scale = np.zeros((depth, blocks.branch))
    if init is not None:
        gain = auto_gain(init, activation)
        for j, (n_out, n_in) in enumerate(block_shapes(blocks.branch, width, blocks.hidden)):
            kind, sc = layer_sampler(init, n_in, n_out, gain)
            mult = blocks.out_scale if j == blocks.branch - 1 else blocks.in_scale
            if mult == 0.0:
                kind, sc = SAMPLINGS.code("constant"), 0.0
            sampler[:, j], scale[:, j] = kind, sc * mult
    log_alpha = -np.inf if blocks.alpha == 0.0 else float(np.log(blocks.alpha))
    return ResNet(int(width), int(blocks.hidden), int(blocks.branch), int(blocks.norm),
                  bool(list(NORMS)[blocks.norm].centered), bool(blocks.post), log_alpha,
                  float(np.log(blocks.beta)), float(blocks.eps), sampler, scale,
                  float(bias_std), float(input_std), orthogonal_layers(sampler),
                  uniform_layers(sampler))


def choose_method(method, init, net, rows):
    """The engine that runs: 'matrix' or 'conditional' (see :func:`winit_sim.simulate`).

    The conditional engine draws Gaussian layers, and Haar orthogonal ones in an MLP
    when 2 x batch <= the narrowest layer (its backward needs a frame of that many
    directions). A residual net's zero matrices (fixup's) are exact on either engine, so
    only its other matrices must be Gaussian.
    """
    blocks = isinstance(net, ResNet)
    live = net.scale > 0.0 if blocks else np.ones(net.scale.shape, bool)
    kinds = [int(k) for k in np.unique(net.sampler[live])]
    drawn = is_gaussian if blocks else on_conditional
    valid = GAUSSIAN_INITS if blocks else CONDITIONAL_INITS
    exact_kinds = all(drawn(k) for k in kinds)
    exact = exact_kinds and bool(np.all(net.scale[live] > 0.0))
    narrowest = min(net.width, net.hidden) if blocks else int(net.widths.min())
    if method != AUTO and ENGINES[method].conditional_only:
        if not exact:
            why = ("has a weight scale of 0" if exact_kinds else
                   "samples " + ", ".join(SAMPLINGS.names()[k] for k in kinds) + " weights")
            raise ValueError(
                f"method={method!r} needs {'Gaussian' if blocks else 'Gaussian or orthogonal'} "
                f"weights ({', '.join(valid)} with scale > 0); init {init!r} {why}, so its "
                f"units cannot be drawn given the layer input: use method='matrix' (or 'auto')")
        if ORTHOGONAL_CODE in kinds and 2 * rows > narrowest:
            raise ValueError(
                f"method={method!r} with orthogonal weights needs 2 x batch <= the narrowest "
                f"layer; got batch {rows} and a layer of width {narrowest}: use a smaller "
                f"batch or method='matrix'")
    if method == AUTO:
        fits = rows * CONDITIONAL_MAX_BATCH_FRACTION <= narrowest
        if not blocks and all(is_gaussian(k) for k in kinds):
            fits = fits or (rows >= CONDITIONAL_LARGE_BATCH
                            and rows * CONDITIONAL_LARGE_BATCH_FRACTION <= narrowest)
        return "conditional" if exact and fits else "matrix"
    return method


def segment_layers(requested, rows, widths, itemsize):
    """Layers per checkpoint segment of the matrix engine (default: 128 MiB of them)."""
    if requested is not None:
        return check_positive_int(requested, "segment_layers")
    per_layer = 2 * rows * int(widths.max()) * itemsize
    return max(1, SEGMENT_BYTES // per_layer)


def weight_store_entries(net, rows, given, itemsize):
    """(depth, entries) of the matrix engine's weight store, or None: a run that forms W
    keeps every layer's W from the forward (instead of sampling it again for the
    recomputed segments and the backward) when they fit in WEIGHT_STORE_BYTES."""
    if given is not None or matrix.weight_buffer_size(net, rows, given) == 0:
        return None
    widths = net.widths
    per_layer = int(np.max(widths[:-1] * widths[1:]))
    depth = widths.size - 1
    return (depth, per_layer) if depth * per_layer * itemsize <= WEIGHT_STORE_BYTES else None


def matrix_bytes(net, rows, given, seg_len, itemsize):
    """Buffers of the matrix engine (see :func:`winit_sim.kernels.matrix.new_state`)."""
    widths = net.widths
    depth, maxn = widths.size - 1, int(widths.max())
    seg_len = min(seg_len, depth)
    n_seg = -(-depth // seg_len)
    store = weight_store_entries(net, rows, given, itemsize)
    entries = (int(matrix.weight_buffer_size(net, rows, given))
               + (2 * seg_len + n_seg + 5) * rows * maxn + (store[0] * store[1] if store else 0))
    return entries * itemsize + 8 * rows * maxn + orthogonal_bytes(net.sampler, widths, rows,
                                                                   given)


def orthogonal_bytes(samplers, widths, rows, given):
    """The largest workspace of an orthogonal layer applied as Householder reflectors
    (:func:`winit_sim.kernels.householder.workspace_bytes`); 0 without one."""
    if given is not None:
        return 0
    return max((householder.workspace_bytes(int(widths[l + 1]), int(widths[l]), rows)
                for l in range(len(samplers)) if samplers[l] == ORTHOGONAL_CODE), default=0)


def conditional_keeps(widths, rows, itemsize):
    """Whether the conditional engine keeps pre-activations instead of regenerating them."""
    return (widths.size - 1) * rows * int(widths.max()) * itemsize <= CONDITIONAL_KEEP_BYTES


def conditional_bytes(widths, rows, itemsize):
    """Buffers of the conditional engine: 7 of batch x width, per-block sums, per layer
    two batch x batch matrices, and the kept pre-activations of small nets."""
    depth, maxn = widths.size - 1, int(widths.max())
    kept = depth * rows * maxn * itemsize if conditional_keeps(widths, rows, itemsize) else 0
    blocks = -(-maxn // BLOCK)
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


def block_bytes(net, rows, given, seg_len, itemsize, cond=False):
    """Buffers of a residual run (see :func:`winit_sim.kernels.residual.new_state`; with
    ``cond``, also :func:`winit_sim.kernels.residual_conditional.new_state`)."""
    depth, n, m = net.sampler.shape[0], net.width, net.hidden
    seg_len = min(seg_len, depth)
    n_seg = -(-depth // seg_len)
    entries = (int(residual.weight_buffer_size(net, rows, given, cond))
               + seg_len * rows * (2 * n + 2 * m + n * net.post)
               + rows * (5 * n + 3 * m) + n_seg * rows * n)
    need = entries * itemsize + 8 * rows * (2 * m + seg_len + 8)
    if not cond and given is None and np.any(net.sampler == ORTHOGONAL_CODE):
        need += householder.workspace_bytes(max(n, m), min(n, m), rows)
    if cond:
        blocks = -(-max(n, m) // BLOCK)
        need += (rows * max(n, m) * itemsize
                 + 8 * (seg_len * net.branch * (2 * rows * rows + 4) + (2 * blocks + 6) * rows * rows))
    return need


def block_segment(requested, net, rows, itemsize):
    """Blocks per checkpoint segment of a residual run (default: 128 MiB of records)."""
    if requested is not None:
        return check_positive_int(requested, "segment_layers")
    per_block = rows * (2 * net.width + 2 * net.hidden + net.width * net.post) * itemsize
    return max(1, SEGMENT_BYTES // per_block)


def plan(net, init, rows, dtype, method="matrix", segment=None, given=None):
    """Pick the engine of a run and refuse it, before any allocation, if it cannot fit.

    ``init`` None (with ``given``) means weights given by the caller: matrix engine.
    A residual net (:data:`ResNet`) checkpoints its stream in segments on either engine.
    """
    dt = np.dtype(dtype)
    if isinstance(net, ResNet):
        name = "matrix" if init is None else choose_method(method, init, net, rows)
        seg_len = block_segment(segment, net, rows, dt.itemsize)
        check_bytes(block_bytes(net, rows, given, seg_len, dt.itemsize,
                                name == "conditional"),
                    "reduce width, hidden or batch, or set segment_layers")
        return Plan(name, net, dt, rows, seg_len, False)
    seg_len = segment_layers(segment, rows, net.widths, dt.itemsize)
    if init is not None and choose_method(method, init, net, rows) == "conditional":
        check_bytes(conditional_bytes(net.widths, rows, dt.itemsize), "reduce width or batch")
        return Plan("conditional", net, dt, rows, seg_len,
                    conditional_keeps(net.widths, rows, dt.itemsize))
    check_bytes(matrix_bytes(net, rows, given, seg_len, dt.itemsize),
                f"reduce width or batch (batches up to {matrix.FUSED_MAX_BATCH} never form a "
                f"weight matrix), or set segment_layers")
    return Plan("matrix", net, dt, rows, seg_len, False)


def execute(run_plan, activation, seed, trials, tops, given=None, scope=None):
    """Run a plan through the driver; returns the kernel's (forward, backward) arrays.

    ``scope``: a :data:`CompileScope` to compile for (None: only what this net needs).
    """
    net, rows, proto = run_plan.net, run_plan.rows, np.empty(0, run_plan.dtype)
    act = kernel_data(activation)
    if scope is not None:
        if scope.smooth:
            act = act._replace(scale_dependent=True)
        if scope.uniform:
            net = net._replace(uniform_layers=True)
    draws = Draws(np.uint64(seed), trials, rows)
    tops = np.asarray(tops, dtype=np.int64)
    if isinstance(net, ResNet):
        cond_state = None
        if run_plan.engine == "conditional":
            cond_state = residual_conditional.new_state(
                min(run_plan.seg_len, net.sampler.shape[0]), net.branch, rows,
                max(net.width, net.hidden), proto)
        residual_state = residual.new_state(net, rows, run_plan.seg_len, given, proto,
                                            cond_state is not None)
        return driver.run_blocks(residual_state, cond_state, net, act, draws, tops, given)
    matrix_state = conditional_state = None
    if run_plan.engine == "conditional":
        conditional_state = conditional.new_state(net, rows, run_plan.keep, proto)
    else:
        matrix_state = matrix.new_state(net, rows, run_plan.seg_len, given, proto)
        if matrix_state.wbuf.size == 0:   # no layer forms W: that path is not compiled
            matrix_state = matrix_state._replace(wbuf=None)
        store = weight_store_entries(net, rows, given, run_plan.dtype.itemsize)
        matrix_state = matrix_state._replace(
            wstore=np.empty(store, run_plan.dtype) if store else None)
    return driver.run(matrix_state, conditional_state, net, act, draws, tops, given,
                      *results(trials, net.widths.size - 1, tops))


def simulate_arrays(widths, activation, init, *, rows, trials, seed, bias_std, input_std,
                    dtype, tops, segment=None, method="matrix", blocks=None, scope=None):
    """Plan and run sampled networks: the kernel's (forward, backward) arrays.

    ``blocks``: a resolved residual arch (then ``widths`` is the stream's, uniform),
    or None for the plain net. ``scope``: as in :func:`execute`.
    """
    if blocks is None:
        net = describe(widths, activation, init, bias_std, input_std)
    else:
        net = describe_blocks(blocks, int(widths[0]), widths.size - 1, activation, init,
                              bias_std, input_std)
    return execute(plan(net, init, rows, dtype, method, segment), activation, seed, trials,
                   tops, scope=scope)


def jacobian_bytes(widths, samplers=None):
    """Buffers of one Jacobian spectrum: a weight matrix and about eight (width x n_0)
    float64 matrices (U, T, their products and the QR's factors), and forming an
    orthogonal layer's W from its reflectors (its workspace, the identity, W^T)."""
    n0 = int(widths[0])
    maxn = int(widths.max())
    form = 0
    for l in range(0 if samplers is None else len(samplers)):
        if samplers[l] == ORTHOGONAL_CODE:
            fo, fi = int(widths[l + 1]), int(widths[l])
            k = min(fo, fi)
            form = max(form, householder.workspace_bytes(fo, fi, k) + 8 * k * (k + fo + fi))
    return 8 * (int(np.max(widths[:-1] * widths[1:])) + 8 * maxn * n0) + form


def jacobian_rank_caps(net, given):
    """The rank each layer's matrix can have at most, so that exact rank loss stays exact:
    0 for zero matrices, 1 for constant ones, min(fan_in, fan_out) for random ones, and
    numpy's matrix_rank of given weights."""
    widths = net.widths
    caps = np.minimum(widths[:-1], widths[1:]).astype(np.int64)
    constant = SAMPLINGS.code("constant")
    for l in range(caps.size):
        if given is not None:
            w = given.weights[given.w_off[l]:given.w_off[l + 1]].reshape(widths[l + 1], widths[l])
            caps[l] = np.linalg.matrix_rank(w)
        elif net.sampler[l] == constant:
            caps[l] = 0 if net.scale[l] == 0.0 else 1
    return caps


def jacobian_arrays(net, activation, seed, trials, tops, given=None):
    """Log singular values of the input-output Jacobian of ``trials`` nets at each depth
    of ``tops`` (see :mod:`winit_sim.kernels.spectrum`).

    Returns ``(log_sv, sweeps)``: natural logs of shape (trials, len(tops), min(n_0,
    max width)), descending, -inf for exact zeros and NaN past min(n_0, n_D), and the
    Jacobi sweeps per (trial, top).
    """
    check_bytes(jacobian_bytes(net.widths, None if given is not None else net.sampler),
                "reduce the width")
    tops = np.asarray(tops, dtype=np.int64)
    caps = jacobian_rank_caps(net, given)
    count = int(min(net.widths[0], net.widths.max()))
    log_sv = np.full((trials, tops.size, count), np.nan)
    sweeps = np.zeros((trials, tops.size), np.int64)
    act = kernel_data(activation)
    fwd = matrix.new_state(net, 1, 1, given, np.empty(0))
    isometric = jacobian_isometric(net, given)
    for trial in range(trials):
        spectrum.jacobian_trial(fwd, net, act, np.uint64(seed), trial, given, caps, isometric,
                                tops, log_sv[trial], sweeps[trial])
    return log_sv, sweeps


def jacobian_isometric(net, given):
    """Per layer: True where W is sampled orthogonal with fan_out >= fan_in, a multiple of
    an isometry (the spectrum's products through such layers may wait, see
    :func:`winit_sim.kernels.spectrum.jacobian_trial`)."""
    if given is not None:
        return np.zeros(net.sampler.size, np.bool_)
    return (net.sampler == ORTHOGONAL_CODE) & (net.widths[1:] >= net.widths[:-1])


def jacobian_block_arrays(net, activation, seed, trials, tops, given=None):
    """:func:`jacobian_arrays` for a residual net (a ResNet, see :func:`describe_blocks`;
    :mod:`winit_sim.kernels.residual_spectrum`)."""
    n, m = net.width, net.hidden
    need = 8 * (12 * n * n + 4 * n * m)
    if given is None and np.any(net.sampler == ORTHOGONAL_CODE):
        need += householder.workspace_bytes(max(n, m), min(n, m), n)
    check_bytes(need, "reduce the width")
    tops = np.asarray(tops, dtype=np.int64)
    # a post-LayerNorm's Jacobian removes the direction 1 exactly (with eps > 0 the
    # direction N(z) keeps a small singular value, eps / (var + eps) / sigma)
    cap = n - 1 if net.post and net.norm != NO_NORM and net.centered else n
    log_sv = np.full((trials, tops.size, n), np.nan)
    sweeps = np.zeros((trials, tops.size), np.int64)
    act = kernel_data(activation)
    state = residual.new_state(net, 1, 1, given, np.empty(0), False)
    # the tangent products run on n rows: W formed where rows of 1 would sample it
    state = state._replace(wbuf=np.empty(residual.weight_buffer_size(net, n, given, False)))
    for trial in range(trials):
        residual_spectrum.jacobian_blocks_trial(state, net, act, np.uint64(seed), trial, given,
                                                cap, tops, log_sv[trial], sweeps[trial])
    return log_sv, sweeps


def frame(forward, backward, widths, depth=None, top_index=0):
    """DataFrame of one net (the first ``depth`` layers) from the kernel's arrays.

    ``backward`` is None (no backward columns) or the kernel's backward array,
    of which ``backward[:, top_index]`` belongs to the depth-``depth`` net.
    """
    depth = forward.shape[1] if depth is None else depth
    return _frame(forward, backward, widths[:depth], widths[1:depth + 1], depth, top_index,
                  FORWARD_COLUMNS, BACKWARD_COLUMNS)


def block_frame(forward, backward, blocks, width, depth=None, top_index=0):
    """:func:`frame` of a residual net: one row per block; ``fan_in`` / ``fan_out`` are
    the branch's first matrix's, the forward columns describe its pre-activation a,
    and the stream columns follow (``log10_wgrad2_q``, the second matrix's, for
    branch=2 only)."""
    depth = forward.shape[1] if depth is None else depth
    n_out, n_in = block_shapes(blocks.branch, width, blocks.hidden)[0]
    backward_columns = tuple(c for c in BLOCK_BACKWARD_COLUMNS
                             if blocks.branch == 2 or c != "log10_wgrad2_q")
    keep = [BLOCK_BACKWARD_COLUMNS.index(c) for c in backward_columns]
    return _frame(forward, None if backward is None else backward[..., keep],
                  np.full(depth, n_in), np.full(depth, n_out), depth, top_index,
                  FORWARD_COLUMNS + BLOCK_FORWARD_EXTRA, backward_columns)


def _frame(forward, backward, fan_in, fan_out, depth, top_index, forward_columns,
           backward_columns):
    trials = forward.shape[0]
    cols = {
        "trial": np.repeat(np.arange(trials), depth),
        "layer": np.tile(np.arange(1, depth + 1), trials),
        "fan_in": np.tile(fan_in, trials),
        "fan_out": np.tile(fan_out, trials),
    }
    fwd = forward[:, :depth].reshape(trials * depth, -1)
    for i, name in enumerate(forward_columns):
        cols[name] = fwd[:, i]
    if backward is not None:
        bwd = backward[:, top_index, :depth].reshape(trials * depth, -1)
        for i, name in enumerate(backward_columns):
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
