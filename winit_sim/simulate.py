"""Public simulation API: validate, convert, call the kernel, build a DataFrame."""
import math
import os

import numba
from threadpoolctl import ThreadpoolController
import numpy as np
import pandas as pd

from . import _conditional, _network
from .activations import HOMOGENEOUS, activation_code, resolve_activation, sup_dphi
from .inits import KIND_NORMAL, layer_sampler
from ._validate import (check_dtype, check_method, check_nonneg_float, check_positive_int,
                        check_seed)

SATURATION_FRACTION = 0.01   # |phi'| below this fraction of sup|phi'| counts as saturated
SEGMENT_BYTES = 128 * 2**20  # memory kept for the backward pass before checkpointing kicks in
# auto takes the conditional engine when batch * this <= the narrowest layer: its
# O(batch^2 width) per layer then beats the O(batch width^2) of a weight matrix
# (measured, float32, depth 50, forward+backward, conditional / matrix time: width /
# batch = 8: 0.41 at 256 / 32, 0.33 at 1024 / 128; 16: 0.23 at 256 / 16, 0.20 at
# 1024 / 64, 0.22 at 4096 / 256; but 1.11 at 256 / 64)
CONDITIONAL_MAX_BATCH_FRACTION = 8
CONDITIONAL_KEEP_BYTES = 32 * 2**20   # the conditional engine keeps pre-activations up to this
FORWARD_COLUMNS = _network.STAT_COLUMNS[:7]
BACKWARD_COLUMNS = _network.STAT_COLUMNS[7:]


def resolve_widths(width=None, depth=None, widths=None):
    """Return the layer sizes [n_0, ..., n_L] from either width+depth or widths."""
    if widths is not None:
        if width is not None or depth is not None:
            raise ValueError("give either width and depth, or widths, not both")
        if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__"):
            raise TypeError(f"widths must be a list of layer sizes [n_0, ..., n_L], got {widths!r}")
        if len(widths) < 2:
            raise ValueError(f"widths must list at least 2 sizes (input and one layer), "
                             f"got {len(widths)}")
        return np.array([check_positive_int(w, f"widths[{i}]") for i, w in enumerate(widths)],
                        dtype=np.int64)
    if width is None or depth is None:
        raise ValueError("give width and depth, or widths=[n_0, ..., n_L]")
    width = check_positive_int(width, "width")
    depth = check_positive_int(depth, "depth")
    return np.full(depth + 1, width, dtype=np.int64)


def _segment_layers(segment_layers, rows, widths, itemsize):
    if segment_layers is not None:
        return check_positive_int(segment_layers, "segment_layers")
    per_layer = 2 * rows * int(widths.max()) * itemsize
    return max(1, SEGMENT_BYTES // per_layer)


def _check_memory(widths, rows, kind, given, seg_len, itemsize):
    """Refuse, before any allocation, a run that cannot fit in this machine's memory."""
    depth, maxn = widths.size - 1, int(widths.max())
    seg_len = min(seg_len, depth)
    n_seg = -(-depth // seg_len)
    entries = (int(_network.weight_buffer_size(widths, rows, kind, given))
               + (2 * seg_len + n_seg + 5) * rows * maxn)
    _check_bytes(entries * itemsize + 8 * rows * maxn,
                 f"reduce width or batch (batches up to {_network.FUSED_MAX_BATCH} never form a "
                 f"weight matrix), or set segment_layers")


def _check_bytes(need, advice):
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.8 * total:
        raise ValueError(
            f"this run needs about {need / 2**30:.1f} GiB of buffers, more than 80% of this "
            f"machine's {total / 2**30:.1f} GiB: {advice}")


def choose_method(method, init, kind, wscale, rows, widths):
    """The engine that runs: 'matrix' or 'conditional' (see :func:`simulate`)."""
    gaussian = kind == KIND_NORMAL and bool(np.all(wscale > 0.0))
    if method == "conditional" and not gaussian:
        why = ("samples non-Gaussian weights" if kind != KIND_NORMAL
               else "has a weight std of 0")
        raise ValueError(
            f"method='conditional' needs Gaussian weights (normal, small, large, xavier_normal, "
            f"he_normal, lecun_normal with std > 0); init {init!r} {why}, so its units are "
            f"not Gaussian given the layer input: use method='matrix' (or 'auto')")
    if method == "auto":
        fits = rows * CONDITIONAL_MAX_BATCH_FRACTION <= int(widths.min())
        return "conditional" if gaussian and fits else "matrix"
    return method


def _conditional_keeps(widths, rows, itemsize):
    """Whether the conditional engine keeps pre-activations instead of regenerating them."""
    return (widths.size - 1) * rows * int(widths.max()) * itemsize <= CONDITIONAL_KEEP_BYTES


def _conditional_bytes(widths, rows, itemsize):
    """Buffers of the conditional engine: 7 of batch x width, per-block sums, per layer
    two batch x batch matrices, and the kept pre-activations of small nets."""
    depth, maxn = widths.size - 1, int(widths.max())
    kept = depth * rows * maxn * itemsize if _conditional_keeps(widths, rows, itemsize) else 0
    blocks = -(-maxn // _conditional.BLOCK)
    return (7 * rows * maxn * itemsize + blocks * rows * (rows + 6) * 8
            + (depth + 1) * (2 * rows * rows + 6) * 8 + kept)


def plan(widths, activation, init, rows, dt, method="matrix", segment_layers=None):
    """Pick the engine of a run and refuse it, before any allocation, if it cannot fit.

    Returns ``(engine, kind, wscale, seg_len)``; ``init`` None means given weights.
    """
    depth = widths.size - 1
    if init is None:
        kind, wscale = 0, np.zeros(depth)
    else:
        shapes = {}   # one call per distinct (fan_in, fan_out): deep uniform nets have one
        for l in range(depth):
            shape = (int(widths[l]), int(widths[l + 1]))
            if shape not in shapes:
                shapes[shape] = layer_sampler(init, shape[0], shape[1], activation)
        kind = next(iter(shapes.values()))[0]
        wscale = np.array([shapes[int(widths[l]), int(widths[l + 1])][1] for l in range(depth)],
                          dtype=np.float64)
    seg_len = _segment_layers(segment_layers, rows, widths, dt.itemsize)
    if init is not None and choose_method(method, init, kind, wscale, rows, widths) == \
            "conditional":
        _check_bytes(_conditional_bytes(widths, rows, dt.itemsize), "reduce width or batch")
        return "conditional", kind, wscale, seg_len
    _check_memory(widths, rows, kind, init is None, seg_len, dt.itemsize)
    return "matrix", kind, wscale, seg_len


def _run(widths, activation, init, rows, trials, seed, bias_std, input_std, dt, tops,
         segment_layers, w_given=None, w_off=None, b_given=None, b_off=None, x0=None, g=None,
         method="matrix"):
    """Call a kernel; returns its (forward, backward) statistic arrays."""
    act = resolve_activation(activation)
    code, param = activation_code(act)
    engine, kind, wscale, seg_len = plan(widths, activation, None if w_given is not None
                                         else init, rows, dt, method, segment_layers)
    tops = np.asarray(tops, dtype=np.int64)
    sat_thr = SATURATION_FRACTION * sup_dphi(act)
    if engine == "conditional":
        return _conditional.run_conditional(
            widths, code, param, code in HOMOGENEOUS, sat_thr, wscale, bias_std, input_std,
            np.uint64(seed), trials, rows, tops, _conditional_keeps(widths, rows, dt.itemsize),
            np.empty(0, dt))
    if w_given is None:
        w_given, w_off = np.empty(0, dt), np.zeros(1, np.int64)
    empty2 = np.empty((0, 0), dt)
    return _network.run_network(
        widths, code, param, code in HOMOGENEOUS, sat_thr, kind, wscale, bias_std, input_std,
        np.uint64(seed), trials, rows, tops, seg_len,
        w_given, w_off, np.empty(0) if b_given is None else b_given,
        np.zeros(1, np.int64) if b_off is None else b_off,
        empty2 if x0 is None else x0, empty2 if g is None else g, np.empty(0, dt))


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


def simulate(width=None, depth=None, *, widths=None, activation="relu", init="he_normal",
             batch=64, trials=1, seed=0, bias_std=0.0, input_var=1.0, dtype="float64",
             backward=True, segment_layers=None, threads=None, theory=False, method="auto"):
    """Propagate random inputs and gradients through freshly initialised deep MLPs.

    Layers ``l = 1..L``: ``h_l = x_{l-1} @ W_l.T + b_l``, ``x_l = phi(h_l)``;
    ``x_0 ~ N(0, input_var)`` of shape (batch, n_0); loss ``sum(x_L * g)`` with
    ``g ~ N(0, 1)``. Every random number comes from a stream keyed by
    (seed, trial, layer, ...), so results are bit-identical for any thread
    count and the depth-D net is the first D layers of any deeper one.

    Parameters
    ----------
    width, depth : int, optional
        Uniform width and number of layers. Give these or ``widths``.
    widths : sequence of int, optional
        Layer sizes ``[n_0, ..., n_L]``.
    activation : str or tuple
        Activation spec, e.g. ``"tanh"`` or ``"leaky_relu:slope=0.2"``.
    init : str or tuple
        Init spec, e.g. ``"he_normal:mode=fan_out"`` or ``("normal", {"std": 0.05})``.
    batch, trials : int
        Samples per network and independent networks (trial indices 0..trials-1).
    seed : int
        Seed in [0, 2**64).
    bias_std : float
        Biases are i.i.d. N(0, bias_std^2); 0 means no bias.
    input_var : float
        Variance of the input entries.
    dtype : {"float64", "float32"}
        Compute dtype; statistics always accumulate in float64.
    backward : bool
        Also run the backward pass (adds ``log10_grad_q`` and ``log10_wgrad_q``).
    segment_layers : int, optional
        Layers whose inputs and phi' are kept for the backward pass; deeper nets
        are checkpointed and recomputed per segment. Default: as many as fit in
        128 MiB. Results do not depend on it.
    threads : int, optional
        Numba threads for this call (restored afterwards). Results do not depend on it.
    theory : bool
        Add the mean-field prediction (:func:`winit_sim.theory.predict`) as
        ``theory_*`` columns and the deviations ``dev_log10_pre_q`` (and, with
        ``backward``, ``dev_log10_grad_q``) = simulated - predicted.
    method : {"auto", "matrix", "conditional"}
        The exact engine. ``"matrix"`` samples every weight matrix (any init).
        ``"conditional"`` (Gaussian inits only: normal, small, large,
        xavier_normal, he_normal, lecun_normal) never forms one: given a layer's
        input X, its units are independent N(0, sw^2 X X^T + sb^2), sampled in
        O(batch^2 width), and the backward pass uses the weights conditioned on
        the forward (see :mod:`winit_sim._conditional`). Both give the same
        joint distribution of every column, from different random numbers;
        each is bit-identical across thread counts. ``"auto"`` (default) picks
        ``"conditional"`` for Gaussian inits when 8 x batch <= the narrowest
        layer (the measured crossover), else ``"matrix"``. ``segment_layers``
        applies to ``"matrix"`` only: the conditional engine keeps
        O(batch x width + depth x batch^2) memory at any depth.

    Returns
    -------
    pandas.DataFrame
        One row per (trial, layer): ``trial``, ``layer`` (1..L), ``fan_in``,
        ``fan_out``, ``pre_mean``, ``pre_var`` (mean and centered variance of
        h_l over batch and units), ``log10_pre_q`` (log10 mean(h_l^2)),
        ``log10_post_q`` (log10 mean(x_l^2)), ``frac_zero`` (x_l entries exactly
        0), ``frac_saturated`` (entries with |phi'(h_l)| < 1% of sup|phi'|),
        ``unit_var_ratio`` (mean over samples of the variance across units of
        h_l over mean(h_l^2): 0 when all units are identical, or when h_l is
        all zero), and with ``backward``: ``log10_grad_q`` (log10
        mean(delta_l^2), delta_l = dloss/dh_l) and ``log10_wgrad_q`` (log10
        mean((dloss/dW_l)^2), summed over the batch).

    Notes
    -----
    The log10 columns are computed from log-scales and stay finite at any
    depth; exact zero gives -inf. ``pre_mean`` and ``pre_var`` are in linear
    units and become +-inf only when the true value is beyond float64
    (|x| > 1.8e308). For tanh/sigmoid whose pre-activations exceed exp(200),
    phi' is its limit 0 and gradients below that layer are exactly 0.
    """
    widths = resolve_widths(width, depth, widths)
    rows = check_positive_int(batch, "batch")
    trials = check_positive_int(trials, "trials")
    seed = check_seed(seed)
    bias_std = check_nonneg_float(bias_std, "bias_std")
    input_var = check_nonneg_float(input_var, "input_var")
    dt = check_dtype(dtype)
    method = check_method(method)
    resolve_activation(activation)
    layer_sampler(init, 1, 1, activation)  # validate the init spec before any work
    depth = widths.size - 1
    with _threads(threads):
        fwd, bwd = _run(widths, activation, init, rows, trials, seed, bias_std,
                        math.sqrt(input_var), dt, [depth] if backward else [], segment_layers,
                        method=method)
    df = frame(fwd, bwd if backward else None, widths)
    if theory:
        df = with_theory(df, widths, activation, init, bias_std, input_var, rows)
    return df


def with_theory(df, widths, activation, init, bias_std, input_var, batch):
    """Join the mean-field prediction to simulated rows, with ``dev_*`` deviations."""
    from .theory import predict
    pred = predict(widths=list(widths), activation=activation, init=init, bias_std=bias_std,
                   input_var=input_var, batch=batch)
    df = df.merge(pred, on="layer", how="left")
    with np.errstate(invalid="ignore"):
        df["dev_log10_pre_q"] = df["log10_pre_q"] - df["theory_log10_pre_q"]
        if "log10_grad_q" in df.columns:
            df["dev_log10_grad_q"] = df["log10_grad_q"] - df["theory_log10_grad_q"]
    return df


def propagate(weights, x, activation, grad_output=None, biases=None, *, segment_layers=None):
    """Statistics of a forward and backward pass through given weights.

    Parameters
    ----------
    weights : sequence of 2-D arrays
        ``W_l`` of shape ``(fan_out, fan_in)``, chained: ``W_{l+1}.shape[1] == W_l.shape[0]``.
    x : array, shape (batch, n_0)
        Input. Its dtype (float32 or float64) is the compute dtype.
    activation : str or tuple
        Activation spec.
    grad_output : array, shape (batch, n_L), optional
        dloss/dx_L; without it only forward columns are returned.
    biases : sequence of 1-D arrays, optional
        ``b_l`` of shape ``(fan_out,)``.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`simulate`, trial 0.
    """
    if isinstance(weights, np.ndarray) or not hasattr(weights, "__len__") or len(weights) == 0:
        raise TypeError("weights must be a non-empty list of (fan_out, fan_in) arrays")
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must have shape (batch, n_0), got {x.shape}")
    dt = check_dtype(x.dtype if x.dtype.kind == "f" else "float64")
    mats = []
    for i, w in enumerate(weights):
        w = np.asarray(w)
        if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
            raise ValueError(f"weights[{i}] must be a 2-D (fan_out, fan_in) array, got shape {w.shape}")
        mats.append(w)
    widths = [mats[0].shape[1]] + [w.shape[0] for w in mats]
    if x.shape[1] != widths[0]:
        raise ValueError(f"x has {x.shape[1]} columns but weights[0] has fan_in {widths[0]}")
    for i in range(1, len(mats)):
        if mats[i].shape[1] != widths[i]:
            raise ValueError(f"weights[{i}] has fan_in {mats[i].shape[1]} but weights[{i - 1}] "
                             f"has fan_out {widths[i]}")
    widths = np.array(widths, dtype=np.int64)
    w_flat = np.concatenate([w.astype(dt).ravel() for w in mats])
    w_off = np.concatenate([[0], np.cumsum(widths[:-1] * widths[1:])]).astype(np.int64)
    b_flat = b_off = None
    if biases is not None:
        if len(biases) != len(mats):
            raise ValueError(f"got {len(biases)} biases for {len(mats)} layers")
        for i, b in enumerate(biases):
            if np.shape(b) != (widths[i + 1],):
                raise ValueError(f"biases[{i}] must have shape ({widths[i + 1]},), "
                                 f"got {np.shape(b)}")
        b_flat = np.concatenate([np.asarray(b, np.float64) for b in biases])
        b_off = np.concatenate([[0], np.cumsum(widths[1:])]).astype(np.int64)
    g = None
    if grad_output is not None:
        g = np.ascontiguousarray(grad_output, dtype=dt)
        if g.shape != (x.shape[0], widths[-1]):
            raise ValueError(f"grad_output must have shape {(x.shape[0], int(widths[-1]))}, "
                             f"got {g.shape}")
    for name, arr in (("x", x), ("weights", w_flat), ("biases", b_flat), ("grad_output", g)):
        if arr is not None and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains inf or NaN")
    tops = [len(mats)] if g is not None else []
    with _threads(None):
        fwd, bwd = _run(widths, activation, None, x.shape[0], 1, 0, 0.0, 1.0, dt, tops,
                        segment_layers, w_flat, w_off, b_flat, b_off,
                        np.ascontiguousarray(x, dtype=dt), g)
    return frame(fwd, bwd if g is not None else None, widths)


_BLAS = None


def _blas_controller():
    global _BLAS
    if _BLAS is None:
        import scipy.linalg.cython_blas  # noqa: F401  (numba's BLAS: load it before the snapshot)
        _BLAS = ThreadpoolController()
    return _BLAS


class _threads:
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
