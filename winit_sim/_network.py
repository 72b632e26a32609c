"""Numba kernels: forward and backward passes through a deep MLP, with statistics.

Arithmetic only; :mod:`winit_sim.simulate` validates and builds DataFrames.

Design
------
* Weights are never stored: layer ``l`` is sampled from its stream key in the
  forward pass and sampled again in the backward pass (same key, same matrix).
* Log-scales: the kernel keeps ``x_true = exp(s) * x`` with ``x`` renormalised
  to unit RMS after every layer (and the same for gradients), so signals that
  grow or shrink like exp(depth) never overflow or underflow. For relu,
  leaky_relu and linear this is exact (positive homogeneity); the others are
  evaluated on the true pre-activation while ``|log scale| <= T_SAFE`` and by
  their exact large/small-signal limits beyond.
* Memory: the backward pass needs each layer's input and phi'(h). They are kept
  for a segment of ``seg_len`` layers; the forward keeps one checkpoint per
  segment and the backward recomputes each earlier segment from it (same keys,
  same arithmetic, so bit-identical). Memory is O(seg_len * batch * width).
* Determinism: every parallel loop writes per-row partial sums that are added
  in a fixed order, never a thread-count-dependent reduction.
* Threads: one pool. Small batches use :mod:`winit_sim._fused` (no BLAS). Larger
  ones call BLAS on fixed blocks of rows from numba's threads, with BLAS pinned
  to one thread for the whole call (see ``simulate._threads``): no
  oversubscription, and no second pool of spinning BLAS threads fighting
  numba's between every product and elementwise loop.
"""
import math

import numpy as np
from numba import njit, prange

from . import _fused, _rng
from .activations import RELU, SIGMOID, _phi_dphi, _phi_large, _phi_small
from .inits import KIND_NORMAL, KIND_UNIFORM, fill_weights

T_SAFE = 200.0  # |natural log-scale| up to which phi is evaluated on the true value
LN10 = math.log(10.0)
FUSED_MAX_BATCH = 64  # batches up to this sample W on the fly (no BLAS); measured crossover
# reassociation lets LLVM vectorise the per-row sums; the order is still fixed by
# the code (never by the thread count), so results stay deterministic
_FAST = {"reassoc", "contract", "nsz"}

STAT_COLUMNS = ("pre_mean", "pre_var", "log10_pre_q", "log10_post_q", "frac_zero",
                "frac_saturated", "unit_var_ratio", "log10_grad_q", "log10_wgrad_q")
(PRE_MEAN, PRE_VAR, LOG10_PRE_Q, LOG10_POST_Q, FRAC_ZERO, FRAC_SAT, UNIT_VAR_RATIO,
 LOG10_GRAD_Q, LOG10_WGRAD_Q) = range(len(STAT_COLUMNS))
N_STATS = len(STAT_COLUMNS)

# how phi is evaluated for a layer (see _activate_rows)
_DIRECT, _HOMOG, _LARGE_GROWING, _LARGE_BOUNDED, _SMALL = range(5)
# per-row partial sums written by _activate_rows
_RS_SUM, _RS_SQ, _RS_M2, _RS_YSQ, _RS_ZERO, _RS_SAT = range(6)


@njit(parallel=True, cache=True)
def _affine_rows(h, alpha, bias, beta):
    """h = alpha * h + beta * bias, bias broadcast over rows."""
    rows, n = h.shape
    for r in prange(rows):
        for j in range(n):
            h[r, j] = alpha * h[r, j] + beta * bias[j]


@njit(cache=True, fastmath=_FAST)
def activate_block(a, p, hr, t, regime, yr, dr):
    """yr = phi(h_true) relative to the layer's output scale, dr = phi'(h_true), for one
    block of a row (``h_true = exp(t) * hr``; yr is float64).

    Regimes: _DIRECT evaluates phi(exp(t) h); _HOMOG uses phi(h) (exact for
    homogeneous phi); _LARGE_GROWING / _LARGE_BOUNDED take the growing / bounded
    part of phi's t -> +inf limit; _SMALL takes the t -> -inf limit (sigmoid
    keeps its offset phi(0) = 1/2). Shared by both engines.
    """
    n = hr.size
    # the regime (and for relu the activation) is fixed per layer: test it
    # outside the element loops so they stay branch-light
    if regime == _HOMOG and a == RELU:
        for j in range(n):
            v = np.float64(hr[j])
            yr[j] = v if v > 0.0 else 0.0
            dr[j] = 1.0 if v > 0.0 else 0.0
    elif regime == _HOMOG or regime == _DIRECT:
        c = math.exp(t) if regime == _DIRECT else 1.0
        for j in range(n):
            yr[j], dr[j] = _phi_dphi(a, p, c * np.float64(hr[j]))
    elif regime == _SMALL:
        for j in range(n):
            yr[j], dr[j] = _phi_small(a, p, np.float64(hr[j]))
            if a == SIGMOID:
                yr[j] = 0.5
    else:
        for j in range(n):
            grow, bounded, dr[j] = _phi_large(a, p, np.float64(hr[j]))
            yr[j] = grow if regime == _LARGE_GROWING else bounded


@njit(cache=True, fastmath=_FAST)
def block_sums(hr, yr, dr, sat_thr, rs):
    """Sums over one block of a row into rs: sum h, sum h^2, sum of (h - block mean)^2,
    sum y^2, zeros of y, saturated phi' (float64)."""
    n = hr.size
    s = 0.0
    for j in range(n):
        s += hr[j]
    mean = s / n
    sq = 0.0
    m2 = 0.0
    ysq = 0.0
    zeros = 0
    sat = 0
    for j in range(n):
        v = np.float64(hr[j])
        sq += v * v
        m2 += (v - mean) * (v - mean)
        ysq += yr[j] * yr[j]
        zeros += yr[j] == 0.0
        sat += abs(dr[j]) < sat_thr
    rs[_RS_SUM] = s
    rs[_RS_SQ] = sq
    rs[_RS_M2] = m2
    rs[_RS_YSQ] = ysq
    rs[_RS_ZERO] = zeros
    rs[_RS_SAT] = sat


@njit(parallel=True, cache=True, fastmath=_FAST)
def _activate_rows(a, p, h, t, regime, sat_thr, y, d, rs):
    """activate_block and block_sums on every row: y, d and the per-row sums rs."""
    for r in prange(h.shape[0]):
        activate_block(a, p, h[r], t, regime, y[r], d[r])
        block_sums(h[r], y[r], d[r], sat_thr, rs[r])


@njit(parallel=True, cache=True)
def _scale_into(src, c, dst):
    """dst = c * src (dst may have another dtype)."""
    rows, n = src.shape
    for r in prange(rows):
        for j in range(n):
            dst[r, j] = c * src[r, j]


@njit(parallel=True, cache=True, fastmath=_FAST)
def _product_rows(p, d, out, rowsq):
    """out = p * d elementwise; rowsq[r] = sum of out[r]^2 in float64."""
    rows, n = p.shape
    for r in prange(rows):
        acc = 0.0
        for j in range(n):
            v = p[r, j] * d[r, j]
            out[r, j] = v
            acc += np.float64(v) * np.float64(v)
        rowsq[r] = acc


@njit(parallel=True, cache=True, fastmath=_FAST)
def _row_sumsq(m, rowsq):
    rows, n = m.shape
    for r in prange(rows):
        acc = 0.0
        for j in range(n):
            acc += np.float64(m[r, j]) * np.float64(m[r, j])
        rowsq[r] = acc


_DOT_BLOCKS = 4  # fixed (not the thread count), so the split never changes a result


@njit(parallel=True, cache=True)
def _rows_dot(a, b, out):
    """out = a @ b, as single-threaded BLAS calls on fixed blocks of rows of a."""
    n = a.shape[0]
    step = (n + _DOT_BLOCKS - 1) // _DOT_BLOCKS
    for k in prange(_DOT_BLOCKS):
        i0 = k * step
        i1 = min(n, i0 + step)
        if i0 < i1:
            np.dot(a[i0:i1], b, out[i0:i1])


@njit(cache=True)
def _ordered_sum(v):
    acc = 0.0
    for i in range(v.size):
        acc += v[i]
    return acc


@njit(cache=True)
def _log10_mean_sq(sumsq, count, log_scale):
    """log10(mean(x_true^2)) for x_true = exp(log_scale) * x; -inf for exact zero."""
    if sumsq == 0.0:
        return -np.inf
    return math.log10(sumsq / count) + 2.0 * log_scale / LN10


@njit(cache=True)
def _scaled(value, log_scale):
    """value * exp(log_scale) without 0 * inf."""
    if value == 0.0:
        return 0.0
    return math.copysign(math.exp(math.log(abs(value)) + log_scale), value)


@njit(cache=True)
def _use_fused(rows, kind, given):
    """Sample W on the fly for small batches of the elementwise kinds (a shape test only)."""
    return rows <= FUSED_MAX_BATCH and not given and \
        (kind == KIND_NORMAL or kind == KIND_UNIFORM)


@njit(cache=True)
def _weight_key(seed, trial, l):
    return _rng.stream_key(seed, trial, l + 1, _rng.STREAM_WEIGHT)


@njit(cache=True)
def weight_buffer_size(widths, rows, kind, given):
    """Entries of the one (fan_out, fan_in) buffer a run needs: 0 when no layer forms W.

    W is formed when it is not sampled inside the products (large batch, given
    weights, constant or orthogonal kinds), and delta^T x when that is the
    cheaper weight-gradient route (batch comparable to the width).
    """
    need = 0
    for l in range(widths.size - 1):
        n_in, n_out = widths[l], widths[l + 1]
        if not _use_fused(rows, kind, given) or rows * (n_in + n_out) > n_in * n_out:
            need = max(need, n_in * n_out)
    return need


@njit(cache=True)
def _layer_weights(l, n_in, n_out, kind, wscale, seed, trial, w_given, w_off, wbuf):
    if w_given.size > 0:
        return w_given[w_off[l]:w_off[l + 1]].reshape((n_out, n_in))
    w = wbuf[:n_out * n_in].reshape((n_out, n_in))
    fill_weights(kind, wscale[l], _weight_key(seed, trial, l), w)
    return w


@njit(cache=True)
def _layer_bias(l, n_out, bias_std, seed, trial, b_given, b_off, bbuf):
    """Bias of layer l (float64) and its RMS (0 when the net has no biases)."""
    b = bbuf[:n_out].reshape((1, n_out))
    if b_given.size > 0:
        b[0, :] = b_given[b_off[l]:b_off[l + 1]]
    elif bias_std > 0.0:
        _rng.fill_normal(_rng.stream_key(seed, trial, l + 1, _rng.STREAM_BIAS), b, bias_std)
    else:
        return b[0], 0.0
    acc = 0.0
    for j in range(n_out):
        acc += b[0, j] * b[0, j]
    return b[0], math.sqrt(acc / n_out)


@njit(cache=True)
def _forward_layer(l, x, s, widths, a, p, homog, sat_thr, kind, wscale, bias_std, seed, trial,
                   w_given, w_off, b_given, b_off, wbuf, bbuf, hbuf, ybuf, xnext, d, rs, out):
    """One layer: x (input, x_true = e^s x) -> xnext (unit RMS), d = phi'(h); stats into out.

    Returns the log-scale of xnext.
    """
    n_in, n_out = widths[l], widths[l + 1]
    rows = x.shape[0]
    h = hbuf[:rows * n_out].reshape((rows, n_out))
    if _use_fused(rows, kind, w_given.size > 0):
        _fused.times_weights_t(kind, wscale[l], _weight_key(seed, trial, l), x, h)
    else:
        w = _layer_weights(l, n_in, n_out, kind, wscale, seed, trial, w_given, w_off, wbuf)
        _rows_dot(x, w.T, h)
    bias, brms = _layer_bias(l, n_out, bias_std, seed, trial, b_given, b_off, bbuf)
    t = s
    if brms > 0.0:
        # h_true = e^s (x W^T) + b: pick t so both terms are <= their natural size
        lb = math.log(brms)
        t = max(s, lb) + math.log1p(math.exp(-abs(s - lb)))
        _affine_rows(h, math.exp(s - t), bias, math.exp(-t))
    return activate_layer(h, t, a, p, homog, sat_thr, ybuf, xnext, d, rs, out)


@njit(cache=True)
def activation_regime(homog, t):
    """How phi is evaluated for pre-activations of log-scale t (see activate_block)."""
    if homog:
        return _HOMOG
    if t > T_SAFE:
        return _LARGE_GROWING
    if t < -T_SAFE:
        return _SMALL
    return _DIRECT


@njit(cache=True)
def bounded_fallback(regime, rs):
    """_LARGE_BOUNDED when a _LARGE_GROWING layer has no growing part anywhere (output O(1))."""
    if regime == _LARGE_GROWING and _ordered_sum(rs[:, _RS_YSQ]) == 0.0:
        return _LARGE_BOUNDED
    return regime


@njit(cache=True)
def output_log_scale(t, regime, a):
    """Log-scale of y as activate_block returns it."""
    if regime == _HOMOG or regime == _LARGE_GROWING or (regime == _SMALL and a != SIGMOID):
        return t
    return 0.0


@njit(cache=True)
def layer_statistics(rs, n_out, t, v, out):
    """A layer's forward statistics from its per-row sums rs; returns the RMS of y.

    ``t``, ``v``: log-scales of h and y.
    """
    rows = rs.shape[0]
    count = rows * n_out
    tot = 0.0
    sq = 0.0
    m2 = 0.0
    m2_rows = 0.0
    ysq = 0.0
    zeros = 0.0
    sat = 0.0
    for r in range(rows):
        tot += rs[r, _RS_SUM]
        sq += rs[r, _RS_SQ]
        m2_rows += rs[r, _RS_M2]
        ysq += rs[r, _RS_YSQ]
        zeros += rs[r, _RS_ZERO]
        sat += rs[r, _RS_SAT]
    mean = tot / count
    for r in range(rows):  # Chan et al.: combine per-row (mean, M2) exactly
        dm = rs[r, _RS_SUM] / n_out - mean
        m2 += rs[r, _RS_M2] + n_out * dm * dm
    out[PRE_MEAN] = _scaled(mean, t)
    out[PRE_VAR] = _scaled(m2 / count, 2.0 * t)
    out[LOG10_PRE_Q] = _log10_mean_sq(sq, count, t)
    out[LOG10_POST_Q] = _log10_mean_sq(ysq, count, v)
    out[FRAC_ZERO] = zeros / count
    out[FRAC_SAT] = sat / count
    out[UNIT_VAR_RATIO] = (m2_rows / count) / (sq / count) if sq > 0.0 else 0.0
    return math.sqrt(ysq / count)


@njit(cache=True)
def activate_layer(h, t, a, p, homog, sat_thr, ybuf, xnext, d, rs, out):
    """Pre-activations h_true = e^t h -> xnext = phi(h_true) at unit RMS, d = phi'(h_true).

    Writes the layer's forward statistics into ``out`` and returns the log-scale
    of xnext.
    """
    rows, n_out = h.shape
    regime = activation_regime(homog, t)
    y = ybuf[:rows * n_out].reshape((rows, n_out))
    _activate_rows(a, p, h, t, regime, sat_thr, y, d, rs)
    fallback = bounded_fallback(regime, rs)
    if fallback != regime:
        regime = fallback
        _activate_rows(a, p, h, t, regime, sat_thr, y, d, rs)
    v = output_log_scale(t, regime, a)
    rms = layer_statistics(rs, n_out, t, v, out)
    if rms > 0.0:
        _scale_into(y, 1.0 / rms, xnext)
        return v + math.log(rms)
    _scale_into(y, 0.0, xnext)
    return 0.0


@njit(cache=True)
def _wgrad_sumsq(delta, x, wbuf):
    """sum over (i, j) of (delta^T x)_ij^2, by the cheaper of two exact routes.

    ||delta^T x||_F^2 = sum((delta delta^T) * (x x^T)) costs O(B^2 (n_in + n_out));
    forming delta^T x costs O(B n_in n_out). Picked from the shapes only.
    """
    rows, n_out = delta.shape
    n_in = x.shape[1]
    if rows * (n_in + n_out) <= n_in * n_out:
        gd = np.empty((rows, rows), delta.dtype)
        gx = np.empty((rows, rows), x.dtype)
        _rows_dot(delta, delta.T, gd)
        _rows_dot(x, x.T, gx)
        acc = 0.0
        for i in range(rows):
            for j in range(rows):
                acc += np.float64(gd[i, j]) * np.float64(gx[i, j])
        return max(acc, 0.0)
    m = wbuf[:n_out * n_in].reshape((n_out, n_in))
    np.dot(delta.T, x, m)
    rowsq = np.empty(n_out)
    _row_sumsq(m, rowsq)
    return _ordered_sum(rowsq)


@njit(cache=True)
def _recompute_segment(seg, seg_len, depth, rows, widths, a, p, homog, sat_thr, kind, wscale,
                       bias_std, seed, trial, w_given, w_off, b_given, b_off, wbuf, bbuf, hbuf,
                       ybuf, xcur, seg_x, seg_d, ckpt, log_s, rs, scratch):
    """Re-run the forward of one segment from its checkpoint, refilling seg_x and seg_d."""
    first = seg * seg_len
    xcur[:rows * widths[first]] = ckpt[seg, :rows * widths[first]]
    for l in range(first, min(depth, first + seg_len)):
        n_in, n_out = widths[l], widths[l + 1]
        k = l - first
        seg_x[k, :rows * n_in] = xcur[:rows * n_in]
        _forward_layer(
            l, seg_x[k, :rows * n_in].reshape((rows, n_in)), log_s[l], widths, a, p, homog,
            sat_thr, kind, wscale, bias_std, seed, trial, w_given, w_off, b_given, b_off, wbuf,
            bbuf, hbuf, ybuf, xcur[:rows * n_out].reshape((rows, n_out)),
            seg_d[k, :rows * n_out].reshape((rows, n_out)), rs, scratch)


@njit(cache=True)
def run_network(widths, a, p, homog, sat_thr, kind, wscale, bias_std, input_std, seed, trials,
                rows, tops, seg_len, w_given, w_off, b_given, b_off, x0_given, g_given, proto):
    """Simulate ``trials`` networks: one forward pass, a backward pass from each top.

    Returns ``(forward, backward)``: forward statistics of shape
    (trials, depth, 7) for every layer of the full net, and backward statistics
    of shape (trials, len(tops), depth, 2) where ``backward[:, i]`` is the net of
    depth ``tops[i]`` (gradient injected at its top; layers above it NaN). The
    depth-D net is the first D layers of the full one, so its forward is shared.
    ``tops`` empty: no backward pass. ``proto`` is an empty array whose dtype is
    the compute dtype. Given arrays (weights, biases, input, top gradient) are
    used when non-empty; otherwise each is drawn from its keyed stream.
    """
    depth = widths.size - 1
    maxn = 0
    for w in widths:
        maxn = max(maxn, w)
    dt = proto.dtype
    wbuf = np.empty(weight_buffer_size(widths, rows, kind, w_given.size > 0), dt)
    bbuf = np.empty(maxn, np.float64)
    hbuf = np.empty(rows * maxn, dt)
    ybuf = np.empty(rows * maxn, np.float64)
    xcur = np.empty(rows * maxn, dt)
    rs = np.zeros((rows, 6))
    seg_len = min(seg_len, depth)
    n_seg = (depth + seg_len - 1) // seg_len
    seg_x = np.empty((seg_len, rows * maxn), dt)   # input of each layer of the segment
    seg_d = np.empty((seg_len, rows * maxn), dt)   # phi'(h) of each layer of the segment
    ckpt = np.empty((n_seg, rows * maxn), dt)
    log_s = np.zeros(depth + 1)                    # log-scale of x_l
    stats = np.full((trials, depth, LOG10_GRAD_Q), np.nan)
    grads = np.full((trials, tops.size, depth, N_STATS - LOG10_GRAD_Q), np.nan)
    scratch = np.empty(N_STATS)
    rowsq = np.empty(rows)
    grad = np.empty(rows * maxn, dt)   # dloss/dx_l (scaled), then delta_l
    delta = np.empty(rows * maxn, dt)
    for trial in range(trials):
        n0 = widths[0]
        x0 = xcur[:rows * n0].reshape((rows, n0))
        if x0_given.size > 0:
            x0[:, :] = x0_given
        else:
            _rng.fill_normal(_rng.stream_key(seed, trial, 0, _rng.STREAM_INPUT), x0, input_std)
        log_s[0] = 0.0
        for seg in range(n_seg):
            first = seg * seg_len
            ckpt[seg, :rows * widths[first]] = xcur[:rows * widths[first]]
            for l in range(first, min(depth, first + seg_len)):
                n_in, n_out = widths[l], widths[l + 1]
                k = l - first
                seg_x[k, :rows * n_in] = xcur[:rows * n_in]
                x = seg_x[k, :rows * n_in].reshape((rows, n_in))
                d = seg_d[k, :rows * n_out].reshape((rows, n_out))
                xn = xcur[:rows * n_out].reshape((rows, n_out))
                log_s[l + 1] = _forward_layer(
                    l, x, log_s[l], widths, a, p, homog, sat_thr, kind, wscale, bias_std, seed,
                    trial, w_given, w_off, b_given, b_off, wbuf, bbuf, hbuf, ybuf, xn, d, rs,
                    scratch)
                stats[trial, l, :] = scratch[:LOG10_GRAD_Q]
        loaded = n_seg - 1  # the segment whose seg_x / seg_d are in memory
        for ti in range(tops.size - 1, -1, -1):
            top = tops[ti]
            n_top = widths[top]
            g = grad[:rows * n_top].reshape((rows, n_top))
            if g_given.size > 0:
                g[:, :] = g_given
            else:
                _rng.fill_normal(_rng.stream_key(seed, trial, 0, _rng.STREAM_GRAD), g, 1.0)
            log_g = 0.0
            for seg in range((top - 1) // seg_len, -1, -1):
                if seg != loaded:
                    _recompute_segment(seg, seg_len, depth, rows, widths, a, p, homog, sat_thr,
                                       kind, wscale, bias_std, seed, trial, w_given, w_off,
                                       b_given, b_off, wbuf, bbuf, hbuf, ybuf, xcur, seg_x,
                                       seg_d, ckpt, log_s, rs, scratch)
                    loaded = seg
                first = seg * seg_len
                for l in range(min(top, first + seg_len) - 1, first - 1, -1):
                    log_g = _backward_layer(l, first, rows, widths, kind, wscale, seed, trial,
                                            w_given, w_off, wbuf, grad, delta, seg_x, seg_d,
                                            log_s, log_g, rowsq, grads[trial, ti, l])
    return stats, grads


@njit(cache=True)
def _backward_layer(l, first, rows, widths, kind, wscale, seed, trial, w_given, w_off, wbuf,
                    grad, delta, seg_x, seg_d, log_s, log_g, rowsq, out):
    """delta_l = grad * phi'(h_l); its stats into out; grad <- delta_l @ W_l. Returns log-scale."""
    n_in, n_out = widths[l], widths[l + 1]
    k = l - first
    gl = grad[:rows * n_out].reshape((rows, n_out))
    dl = delta[:rows * n_out].reshape((rows, n_out))
    _product_rows(gl, seg_d[k, :rows * n_out].reshape((rows, n_out)), dl, rowsq)
    sq = _ordered_sum(rowsq)
    out[0] = _log10_mean_sq(sq, rows * n_out, log_g)
    if sq > 0.0:
        rms = math.sqrt(sq / (rows * n_out))
        _scale_into(dl, 1.0 / rms, dl)
        log_g += math.log(rms)
    x = seg_x[k, :rows * n_in].reshape((rows, n_in))
    out[1] = _log10_mean_sq(_wgrad_sumsq(dl, x, wbuf), n_in * n_out, log_g + log_s[l])
    if l > 0:
        gin = grad[:rows * n_in].reshape((rows, n_in))
        if _use_fused(rows, kind, w_given.size > 0):
            _fused.times_weights(kind, wscale[l], _weight_key(seed, trial, l), dl, gin)
        else:
            w = _layer_weights(l, n_in, n_out, kind, wscale, seed, trial, w_given, w_off, wbuf)
            _rows_dot(dl, w, gin)
    return log_g
