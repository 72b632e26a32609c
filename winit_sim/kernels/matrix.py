"""The matrix engine: forward and backward passes through weight matrices.

Arithmetic only; :mod:`winit_sim.engine` plans the run. The driver skeleton is
:func:`winit_sim.kernels.driver.run`; this module gives it :data:`State`,
:func:`forward_trial` and :func:`backward_from`.

Design
------
* Weights are never stored: layer ``l`` is sampled from its stream key in the
  forward pass and sampled again in the backward pass (same key, same matrix).
* Log-scales (see :mod:`.layer`): x is renormalised to unit RMS after every
  layer, and the same for gradients.
* Memory: the backward pass needs each layer's input and phi'(h). They are kept
  for a segment of ``seg_len`` layers; the forward keeps one checkpoint per
  segment and the backward recomputes each earlier segment from it (same keys,
  same arithmetic, so bit-identical). Memory is O(seg_len * batch * width).
* Determinism: every parallel loop writes per-row partial sums that are added
  in a fixed order, never a thread-count-dependent reduction.
* Threads: one pool. Small batches sample W inside the products
  (:mod:`.weights`, no BLAS). Larger ones call BLAS on fixed blocks of rows from
  numba's threads, with BLAS pinned to one thread for the whole call (see
  ``engine.threads``): no oversubscription, and no second pool of spinning
  BLAS threads fighting numba's between every product and elementwise loop.
"""
from collections import namedtuple
import math

import numpy as np
from numba import prange

from . import FAST, copy_into, copy_rows, internal, njit, rng
from .blocks import rows_dot
from .layer import (N_FORWARD, N_RS, activate_block, activation_regime, block_sums,
                    bounded_fallback, check_layer_kind, draw_input,
                    draw_top_gradient, key, layer_statistics, log10_mean_sq,
                    ordered_sum, output_log_scale)
from .weights import (CONSTANT, ORTHOGONAL, elementwise_kind, fill_weights, times_weights,
                      times_weights_t)

FUSED_MAX_BATCH = 64  # batches up to this sample W on the fly (no BLAS); measured crossover

# buffers of a run: see new_state
State = namedtuple("State", ["seg_len", "wbuf", "wstore", "stored", "bbuf", "hbuf", "ybuf", "xcur",
                             "rs", "seg_x",
                             "seg_d", "ckpt", "log_s", "scratch", "rowsq", "grad", "delta",
                             "loaded"])


@internal()
def affine_rows(h, alpha, bias, beta):
    """h = alpha * h + beta * bias, bias broadcast over rows."""
    rows, n = h.shape
    for r in range(rows):
        for j in range(n):
            h[r, j] = alpha * h[r, j] + beta * bias[j]


@internal()
def _activate_rows(act, scale_dependent, h, t, regime, y, d, rs):
    """activate_block and block_sums on every row: y, d and the per-row sums rs.

    ``scale_dependent`` (act's, an argument so that Numba prunes): None for a
    homogeneous activation, a few operations an entry, whose rows run serially and
    compile no parallel loop (no gufunc and its wrappers in a first run). Either way
    each row calls the same compiled kernels, so the bits are the same.
    """
    if scale_dependent is None:
        for r in range(h.shape[0]):
            _activate_row(act, h, t, regime, y, d, rs, r)
    else:
        _activate_rows_parallel(act, h, t, regime, y, d, rs)


@internal(parallel=True, fastmath=FAST)
def _activate_rows_parallel(act, h, t, regime, y, d, rs):
    for r in prange(h.shape[0]):
        _activate_row(act, h, t, regime, y, d, rs, r)


@njit(inline="always")
def _activate_row(act, h, t, regime, y, d, rs, r):
    activate_block(act, h[r], t, regime, y[r], d[r])
    block_sums(h[r], y[r], d[r], act.sat_thr, rs[r])


@internal()
def scale_into(src, c, dst):
    """dst = c * src (dst may have another dtype)."""
    rows, n = src.shape
    for r in range(rows):
        for j in range(n):
            dst[r, j] = c * src[r, j]


@internal(parallel=True, fastmath=FAST)
def product_rows(p, d, out, rowsq):
    """out = p * d elementwise; rowsq[r] = sum of out[r]^2 in float64.

    Parallel for its bits, not its speed: Numba compiles a parallel loop's body with
    its arrays marked as not aliased, so LLVM vectorises the fastmath sum even where
    ``out`` is ``p`` (the residual engine). Made serial, it changed the residual
    engine's bits in the corpus."""
    rows, n = p.shape
    for r in prange(rows):
        acc = 0.0
        for j in range(n):
            v = p[r, j] * d[r, j]
            out[r, j] = v
            acc += np.float64(v) * np.float64(v)
        rowsq[r] = acc


@internal(parallel=True, fastmath=FAST)
def row_sumsq(m, rowsq):
    rows, n = m.shape
    for r in prange(rows):
        acc = 0.0
        for j in range(n):
            acc += np.float64(m[r, j]) * np.float64(m[r, j])
        rowsq[r] = acc


@internal()
def use_fused(rows, kind, given):
    """Use W without storing it: small batches of the elementwise kinds, orthogonal
    and constant layers at any batch (a test of kinds and shapes only)."""
    if given is not None:
        return False
    return (kind == ORTHOGONAL or kind == CONSTANT
            or (rows <= FUSED_MAX_BATCH and elementwise_kind(kind)))


@njit(cache=True)
def weight_buffer_size(net, rows, given):
    """Entries of the one (fan_out, fan_in) buffer a run needs: 0 when no layer forms W.

    W is formed when it is not sampled inside the products (large batch, given
    weights, constant or orthogonal kinds), and delta^T x when that is the
    cheaper weight-gradient route (batch comparable to the width).
    """
    need = 0
    widths = net.widths
    for l in range(widths.size - 1):
        n_in, n_out = widths[l], widths[l + 1]
        if not use_fused(rows, net.sampler[l], given) or rows * (n_in + n_out) > n_in * n_out:
            need = max(need, n_in * n_out)
    return need


def new_state(net, rows, seg_len, given, proto):
    """Buffers of a run in the compute dtype of ``proto`` (an empty array); plain Python
    (allocation only: nothing to compile)."""
    widths = net.widths
    depth = widths.size - 1
    maxn = int(np.max(widths))
    dt = proto.dtype
    seg_len = min(seg_len, depth)
    n_seg = (depth + seg_len - 1) // seg_len
    return State(
        seg_len=seg_len,
        wbuf=np.empty(weight_buffer_size(net, rows, given), dt),
        # every formed W of a trial, kept from the forward for the recomputed segments and
        # the backward (see formed_weights); the engine swaps in a buffer or None
        wstore=np.empty((0, 0), dt),
        stored=np.zeros(depth, np.int64),             # trial + 1 whose W_l wstore holds
        bbuf=np.empty(maxn, np.float64),
        hbuf=np.empty(rows * maxn, dt),
        ybuf=np.empty(rows * maxn, np.float64),
        xcur=np.empty(rows * maxn, dt),
        rs=np.zeros((rows, N_RS)),
        seg_x=np.empty((seg_len, rows * maxn), dt),   # input of each layer of the segment
        seg_d=np.empty((seg_len, rows * maxn), dt),   # phi'(h) of each layer of the segment
        ckpt=np.empty((n_seg, rows * maxn), dt),
        log_s=np.zeros(depth + 1),                    # log-scale of x_l
        scratch=np.empty(N_FORWARD),
        rowsq=np.empty(rows),
        grad=np.empty(rows * maxn, dt),               # dloss/dx_l (scaled), then delta_l
        delta=np.empty(rows * maxn, dt),
        loaded=np.zeros(1, np.int64))                 # the segment held in seg_x / seg_d


@internal()
def layer_weights(wbuf, net, seed, trial, given, l):
    """W_l (fan_out, fan_in): a view of the given weights, or sampled into ``wbuf``."""
    n_in, n_out = net.widths[l], net.widths[l + 1]
    if given is not None:
        return given.weights[given.w_off[l]:given.w_off[l + 1]].reshape((n_out, n_in))
    w = wbuf[:n_out * n_in].reshape((n_out, n_in))
    fill_weights(net.sampler[l], net.scale[l], key(seed, trial, l, rng.STREAM_WEIGHT), w,
                 net.orthogonal_layers, net.uniform_layers)
    return w


@internal()
def formed_weights(wbuf, wstore, stored, net, seed, trial, given, l):
    """W_l formed: sampled into ``wbuf`` at every use, or, with ``wstore`` (not None),
    sampled into ``wstore[l]`` at its first use in the trial (the forward) and read back
    by the recomputed segments and the backward. The same bits either way."""
    if wstore is None:
        return layer_weights(wbuf, net, seed, trial, given, l)
    n_in, n_out = net.widths[l], net.widths[l + 1]
    w = wstore[l, :n_out * n_in].reshape((n_out, n_in))
    if stored[l] != trial + 1:
        fill_weights(net.sampler[l], net.scale[l], key(seed, trial, l, rng.STREAM_WEIGHT), w,
                     net.orthogonal_layers, net.uniform_layers)
        stored[l] = trial + 1
    return w


@njit(inline="always")
def times_layer(state, wbuf, net, seed, trial, given, l, a, out, forward, orthogonal_layers,
                uniform_layers):
    """out = a @ W_l.T (``forward``: a is the layer's input) or a @ W_l (a is its delta),
    W_l sampled inside the product or formed (:func:`formed_weights`).

    Inlined, with ``forward`` a constant, so the forward step compiles only the forward
    product and the backward step only the backward one (and neither costs a level of
    calls, see :mod:`.driver`). ``wbuf`` (state.wbuf), ``orthogonal_layers`` and
    ``uniform_layers`` (the net's) must be the calling function's own arguments: Numba
    resolves ``is None`` on arguments, and then compiles no formed path when ``wbuf`` is
    None (no layer of the run forms W, the engine's choice from
    :func:`weight_buffer_size`), and no sampling of a kind the net lacks.
    """
    kind = net.sampler[l]
    if wbuf is not None:
        if not use_fused(a.shape[0], kind, given):
            w = formed_weights(wbuf, state.wstore, state.stored, net, seed, trial, given, l)
            if forward:
                rows_dot(a, w.T, out)
            else:
                rows_dot(a, w, out)
            return
    k = key(seed, trial, l, rng.STREAM_WEIGHT)
    if forward:
        times_weights_t(kind, net.scale[l], k, a, out, orthogonal_layers, uniform_layers)
    else:
        times_weights(kind, net.scale[l], k, a, out, orthogonal_layers, uniform_layers)


@internal()
def layer_bias(bbuf, net, seed, trial, given, l):
    """Bias of layer l (float64, in ``bbuf``) and its RMS (0 when the net has no biases)."""
    n_out = net.widths[l + 1]
    b = bbuf[:n_out].reshape((1, n_out))
    if given is not None:
        copy_into(b[0], given.biases[given.b_off[l]:given.b_off[l + 1]])
    elif net.bias_std > 0.0:
        rng.fill_normal_serial(key(seed, trial, l, rng.STREAM_BIAS), b, net.bias_std)
    else:
        return b[0], 0.0
    acc = 0.0
    for j in range(n_out):
        acc += b[0, j] * b[0, j]
    return b[0], math.sqrt(acc / n_out)


@internal()
def add_bias(h, s, bias, brms):
    """h_true = e^s h + bias in place, kept at a log-scale; returns it.

    ``brms``: the RMS of the bias (0: no bias, h untouched).
    """
    if brms == 0.0:
        return s
    # pick t so both terms are <= their natural size
    lb = math.log(brms)
    t = max(s, lb) + math.log1p(math.exp(-abs(s - lb)))
    affine_rows(h, math.exp(s - t), bias, math.exp(-t))
    return t


@njit(inline="always")
def activate_layer(state, act, h, t, xnext, d, out):
    """Pre-activations h_true = e^t h -> xnext = phi(h_true) at unit RMS, d = phi'(h_true).

    Writes the layer's forward statistics into ``out`` and returns the log-scale
    of xnext.
    """
    rows, n_out = h.shape
    regime = activation_regime(act.homogeneous, t)
    y = state.ybuf[:rows * n_out].reshape((rows, n_out))
    rs = state.rs
    _activate_rows(act, act.scale_dependent, h, t, regime, y, d, rs)
    fallback = bounded_fallback(regime, rs)
    if fallback != regime:
        regime = fallback
        _activate_rows(act, act.scale_dependent, h, t, regime, y, d, rs)
    v = output_log_scale(t, regime, act.phi0)
    rms = layer_statistics(rs, n_out, t, v, out)
    if rms > 0.0:
        scale_into(y, 1.0 / rms, xnext)
        return v + math.log(rms)
    scale_into(y, 0.0, xnext)
    return 0.0


@internal()
def _segment_layer(state, wbuf, net, act, seed, trial, given, l, first, out, orthogonal_layers,
                   uniform_layers):
    """Layer l of the segment starting at ``first``: its input x (x_true = e^s x) kept in
    seg_x, xcur <- the output at unit RMS (its log-scale in log_s), phi'(h) kept in seg_d;
    the statistics into out. ``wbuf`` and the flags: ``state.wbuf`` and the net's (see
    :func:`times_layer`)."""
    rows = state.rs.shape[0]
    n_in, n_out = net.widths[l], net.widths[l + 1]
    k = l - first
    copy_into(state.seg_x[k, :rows * n_in], state.xcur[:rows * n_in])
    check_layer_kind(net, l)
    h = state.hbuf[:rows * n_out].reshape((rows, n_out))
    times_layer(state, wbuf, net, seed, trial, given, l,
                state.seg_x[k, :rows * n_in].reshape((rows, n_in)), h, True, orthogonal_layers,
                uniform_layers)
    bias, brms = layer_bias(state.bbuf, net, seed, trial, given, l)
    state.log_s[l + 1] = activate_layer(
        state, act, h, add_bias(h, state.log_s[l], bias, brms),
        state.xcur[:rows * n_out].reshape((rows, n_out)),
        state.seg_d[k, :rows * n_out].reshape((rows, n_out)), out)


@internal()
def load_input(net, seed, trial, given, x0):
    """The net's input: given, or drawn from its key (a function of its own: Numba
    resolves ``given is None`` per function when it compiles, not once inlined)."""
    if given is not None:
        copy_rows(x0, given.x0)
    else:
        draw_input(seed, trial, net.input_std, x0)


@internal()
def load_top_gradient(seed, trial, given, g):
    """dloss/dx at the top: given, or drawn from its key (see load_input)."""
    if given is not None:
        copy_rows(g, given.grad)
    else:
        draw_top_gradient(seed, trial, g)


@njit(inline="always")
def forward_trial(state, net, act, draws, trial, given, stats):
    """The forward pass of one trial: every layer's statistics into ``stats`` (depth x 7),
    a checkpoint per segment, the last segment's inputs and phi' kept."""
    rows = draws.rows
    widths = net.widths
    depth = widths.size - 1
    seg_len = state.seg_len
    n0 = widths[0]
    load_input(net, draws.seed, trial, given, state.xcur[:rows * n0].reshape((rows, n0)))
    state.log_s[0] = 0.0
    n_seg = state.ckpt.shape[0]
    for seg in range(n_seg):
        first = seg * seg_len
        copy_into(state.ckpt[seg, :rows * widths[first]], state.xcur[:rows * widths[first]])
        for l in range(first, min(depth, first + seg_len)):
            _segment_layer(state, state.wbuf, net, act, draws.seed, trial, given, l, first,
                           stats[l], net.orthogonal_layers, net.uniform_layers)
    state.loaded[0] = n_seg - 1


@njit(inline="always")
def _recompute_segment(state, net, act, seed, trial, given, seg):
    """Re-run the forward of one segment from its checkpoint, refilling seg_x and seg_d."""
    rows = state.rs.shape[0]
    depth = net.widths.size - 1
    first = seg * state.seg_len
    n = rows * net.widths[first]
    copy_into(state.xcur[:n], state.ckpt[seg, :n])
    for l in range(first, min(depth, first + state.seg_len)):
        _segment_layer(state, state.wbuf, net, act, seed, trial, given, l, first, state.scratch,
                       net.orthogonal_layers, net.uniform_layers)
    state.loaded[0] = seg


@njit(inline="always")
def backward_from(state, net, act, draws, trial, given, top, grads):
    """The backward pass of the depth-``top`` net (gradient injected at layer ``top``):
    per layer (log10_grad_q, log10_wgrad_q) into ``grads`` (depth x 2)."""
    rows = draws.rows
    n_top = net.widths[top]
    load_top_gradient(draws.seed, trial, given, state.grad[:rows * n_top].reshape((rows, n_top)))
    log_g = 0.0
    seg_len = state.seg_len
    for seg in range((top - 1) // seg_len, -1, -1):
        if seg != state.loaded[0]:
            _recompute_segment(state, net, act, draws.seed, trial, given, seg)
        first = seg * seg_len
        for l in range(min(top, first + seg_len) - 1, first - 1, -1):
            log_g = _backward_layer(state, state.wbuf, net, draws.seed, trial, given, l,
                                    l - first, log_g, net.orthogonal_layers, net.uniform_layers,
                                    grads[l])


@internal()
def wgrad_sumsq(delta, x, wbuf):
    """sum over (i, j) of (delta^T x)_ij^2, by the cheaper of two exact routes.

    ||delta^T x||_F^2 = sum((delta delta^T) * (x x^T)) costs O(B^2 (n_in + n_out));
    forming delta^T x costs O(B n_in n_out). Picked from the shapes only; ``wbuf``
    None (no room to form it) takes the first.
    """
    rows, n_out = delta.shape
    n_in = x.shape[1]
    if wbuf is None:
        return _wgrad_by_grams(delta, x)
    if rows * (n_in + n_out) <= n_in * n_out:
        return _wgrad_by_grams(delta, x)
    m = wbuf[:n_out * n_in].reshape((n_out, n_in))
    np.dot(delta.T, x, m)
    rowsq = np.empty(n_out)
    row_sumsq(m, rowsq)
    return ordered_sum(rowsq)


@internal()
def _wgrad_by_grams(delta, x):
    """sum((delta delta^T) * (x x^T)) = ||delta^T x||_F^2."""
    rows = delta.shape[0]
    gd = np.empty((rows, rows), delta.dtype)
    gx = np.empty((rows, rows), x.dtype)
    rows_dot(delta, delta.T, gd)
    rows_dot(x, x.T, gx)
    acc = 0.0
    for i in range(rows):
        for j in range(rows):
            acc += np.float64(gd[i, j]) * np.float64(gx[i, j])
    return max(acc, 0.0)


@internal()
def _backward_layer(state, wbuf, net, seed, trial, given, l, k, log_g, orthogonal_layers,
                    uniform_layers, out):
    """delta_l = grad * phi'(h_l); its stats into out; grad <- delta_l @ W_l. Returns log-scale.

    ``k``: the layer's index in the segment held in seg_x / seg_d. ``wbuf`` and the
    flags: as in :func:`_segment_layer`.
    """
    rows = state.rs.shape[0]
    n_in, n_out = net.widths[l], net.widths[l + 1]
    gl = state.grad[:rows * n_out].reshape((rows, n_out))
    dl = state.delta[:rows * n_out].reshape((rows, n_out))
    product_rows(gl, state.seg_d[k, :rows * n_out].reshape((rows, n_out)), dl, state.rowsq)
    sq = ordered_sum(state.rowsq)
    out[0] = log10_mean_sq(sq, rows * n_out, log_g)
    if sq > 0.0:
        rms = math.sqrt(sq / (rows * n_out))
        scale_into(dl, 1.0 / rms, dl)
        log_g += math.log(rms)
    x = state.seg_x[k, :rows * n_in].reshape((rows, n_in))
    out[1] = log10_mean_sq(wgrad_sumsq(dl, x, wbuf), n_in * n_out, log_g + state.log_s[l])
    if l > 0:
        times_layer(state, wbuf, net, seed, trial, given, l, dl,
                    state.grad[:rows * n_in].reshape((rows, n_in)), False, orthogonal_layers,
                    uniform_layers)
    return log_g
