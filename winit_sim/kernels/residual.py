"""Residual networks on the matrix engine: blocks around a stream.

Arithmetic only; :mod:`winit_sim.engine` builds the :data:`ResNet` and plans
the run, and :func:`winit_sim.kernels.driver.run_blocks` is the skeleton.

Block l maps the stream x (width n) to x' through a branch F:

* ``a`` = N(x) (branch 1) or ``W N(x) + b`` (branch 2, W of shape (hidden, n));
* ``F`` = M phi(a) + c, with M the branch's last matrix (W for branch 1, V for 2);
* pre (default): ``x' = beta x + alpha F``; post: N is the identity inside the
  branch and ``x' = N(beta x + alpha F)``.

N is none, LayerNorm or RMSNorm over the units of each sample (``net.norm``,
``net.centered``), with no learned gain or bias. Matrix j of block l is drawn
from key (seed, trial, l + 1, STREAM_WEIGHT or STREAM_WEIGHT2), so a block's
first matrix is the matrix of layer l + 1 of the plain net with that shape.

Log-scales as in :mod:`.layer`: the stream and every gradient are kept at unit
RMS with their log-scale, so alpha = 1 at depth 10,000 (growth 2^L) and tiny
alphas stay finite. N takes its true input ``e^s x``: its divisor
``sqrt(var_true + eps)`` is formed in logs per row.

On the conditional engine (``cond`` not None) a block's matrices are drawn
given their inputs by :mod:`.residual_conditional` instead of formed or
sampled; everything else is the same code. With ``cond`` None, Numba prunes
those branches when it compiles, so a matrix run never compiles them.

Memory and recomputation as in :mod:`.matrix`: each block of the segment being
differentiated keeps its stream input, branch input, phi' and phi, and (post)
its output; one stream checkpoint per segment; weights are regenerated.
Every parallel loop writes rows, added in a fixed order.
"""
from collections import namedtuple
import math

import numpy as np
from numba import prange

from . import copy_into, copy_rows, njit, residual_conditional, rng
from .blocks import plain
from .layer import N_FORWARD, N_RS, key, log10_mean_sq, ordered_sum
from .matrix import (activate_layer, add_bias, load_input, load_top_gradient, product_rows,
                     row_sumsq, rows_dot, scale_into, use_fused, wgrad_sumsq)
from .weights import fill_weights, times_weights, times_weights_t
from ..layers import NO_NORM

# the network: stream width, the branch's inner width (= width for branch 1),
# 1 or 2 matrices per block, the norm's code and whether it centres, pre/post,
# log(alpha) and log(beta) (-inf for alpha = 0), eps, per (block, matrix) the
# sampling code and scale, the biases' std and the input's std, and None when no
# matrix is orthogonal, and the same for uniform (as Net's orthogonal_layers, uniform_layers)
ResNet = namedtuple("ResNet", ["width", "hidden", "branch", "norm", "centered", "post",
                               "log_alpha", "log_beta", "eps", "sampler", "scale", "bias_std",
                               "input_std", "orthogonal_layers", "uniform_layers"])

# columns: the plain net's forward statistics of a, then these
LOG10_STREAM_Q, LOG10_BRANCH_Q = N_FORWARD, N_FORWARD + 1
N_BLOCK_FORWARD = N_FORWARD + 2
BLOCK_FORWARD_EXTRA = ("log10_stream_q", "log10_branch_q")
# backward: dloss/da, each matrix's weight gradient, dloss/dx_l
B_GRAD, B_WGRAD, B_WGRAD2, B_STREAM_GRAD = range(4)
BLOCK_BACKWARD_COLUMNS = ("log10_grad_q", "log10_wgrad_q", "log10_wgrad2_q",
                          "log10_stream_grad_q")
N_BLOCK_BACKWARD = len(BLOCK_BACKWARD_COLUMNS)
# per-block scalars kept for the backward: log-scales of x, of N(x), of phi(a), of x'
SC_X, SC_U, SC_Y, SC_OUT = range(4)

State = namedtuple("State", ["seg_len", "wbuf", "bbuf", "hbuf", "ybuf", "rs", "xcur", "fbuf",
                             "rec_x", "rec_u", "rec_d", "rec_y", "rec_o", "rec_ls", "rec_sc",
                             "ckpt", "log_s", "scratch", "rowsq", "rowtmp", "grad", "gy", "gu",
                             "loaded"])


@njit(cache=True)
def shape(net, j):
    """(fan_out, fan_in) of matrix j of a block."""
    n, m = net.width, net.hidden
    if net.branch == 1:
        return n, n
    if j == 0:
        return m, n
    return n, m


@njit(cache=True)
def weight_buffer_size(net, rows, given, conditional):
    """Entries of the one weight buffer a run needs (see matrix.weight_buffer_size); none
    on the conditional engine."""
    need = 0
    if conditional:
        return need
    for l in range(net.sampler.shape[0]):
        for j in range(net.branch):
            n_out, n_in = shape(net, j)
            if (not use_fused(rows, net.sampler[l, j], given)
                    or rows * (n_in + n_out) > n_in * n_out):
                need = max(need, n_in * n_out)
    return need


def new_state(net, rows, seg_len, given, proto, conditional):
    """Buffers of a run in the compute dtype of ``proto`` (an empty array); ``conditional``:
    the run's matrices are drawn by :mod:`.residual_conditional`. Plain Python
    (allocation only: nothing to compile)."""
    depth = net.sampler.shape[0]
    n, m = net.width, net.hidden
    dt = proto.dtype
    seg_len = min(seg_len, depth)
    n_seg = (depth + seg_len - 1) // seg_len
    big = max(n, m)
    n_post = rows * n if net.post else 0
    return State(
        seg_len=seg_len,
        wbuf=np.empty(weight_buffer_size(net, rows, given, conditional), dt),
        bbuf=np.empty(big, np.float64),
        hbuf=np.empty(rows * m, dt),
        ybuf=np.empty(rows * m, np.float64),
        rs=np.zeros((rows, N_RS)),
        xcur=np.empty(rows * n, dt),
        fbuf=np.empty(rows * n, dt),
        rec_x=np.empty((seg_len, rows * n), dt),       # the stream entering each block
        rec_u=np.empty((seg_len, rows * n), dt),       # the branch's input N(x)
        rec_d=np.empty((seg_len, rows * m), dt),       # phi'(a)
        rec_y=np.empty((seg_len, rows * m), dt),       # phi(a), unit RMS
        rec_o=np.empty((seg_len, n_post), dt),   # post: N's output
        rec_ls=np.zeros((seg_len, rows)),              # log of each row's norm divisor
        rec_sc=np.zeros((seg_len, 4)),
        ckpt=np.empty((n_seg, rows * n), dt),
        log_s=np.zeros(depth + 1),
        scratch=np.empty(N_BLOCK_FORWARD),
        rowsq=np.empty(rows),
        rowtmp=np.empty(rows),
        grad=np.empty(rows * n, dt),                   # dloss/dx_l
        gy=np.empty(rows * m, dt),                     # dloss/dphi(a), then dloss/da
        gu=np.empty(rows * n, dt),                     # dloss/dN(x)
        loaded=np.zeros(1, np.int64))


@njit(cache=True)
def log_add(a, b):
    """log(e^a + e^b), exact for -inf arguments."""
    if a == -np.inf:
        return b
    if b == -np.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


@njit(parallel=True, cache=True)
def _mix(a, ca, b, cb, out):
    rows, n = a.shape
    for r in prange(rows):
        for j in range(n):
            out[r, j] = ca * a[r, j] + cb * b[r, j]


@njit(cache=True)
def combine(a, sa, b, sb, out):
    """out = e^sa a + e^sb b at the returned log-scale (out may alias a or b)."""
    t = log_add(sa, sb)
    if t == -np.inf:
        scale_into(a, 0.0, out)
        return 0.0
    _mix(a, math.exp(sa - t), b, math.exp(sb - t), out)
    return t


@njit(cache=True)
def renormalise(m, s, rowsq):
    """Scale m to unit RMS in place; returns (its new log-scale, sum of squares before).

    Exact zero stays zero, at log-scale 0.
    """
    row_sumsq(m, rowsq)
    sq = ordered_sum(rowsq)
    if sq == 0.0:
        return 0.0, 0.0
    rms = math.sqrt(sq / m.size)
    scale_into(m, 1.0 / rms, m)
    return s + math.log(rms), sq


@njit(parallel=True, cache=True)
def _row_moments(centered, x, mean, var):
    """Per row: the mean over units (0 unless centred) and the mean square about it."""
    rows, n = x.shape
    for r in prange(rows):
        mu = 0.0
        if centered:
            for j in range(n):
                mu += x[r, j]
            mu /= n
        acc = 0.0
        for j in range(n):
            v = np.float64(x[r, j]) - mu
            acc += v * v
        mean[r] = mu
        var[r] = acc / n


@njit(parallel=True, cache=True)
def _norm_rows(x, mean, log_c, u):
    rows, n = x.shape
    for r in prange(rows):
        c = math.exp(log_c[r])
        mu = mean[r]
        for j in range(n):
            u[r, j] = c * (np.float64(x[r, j]) - mu)


@njit(cache=True)
def normalize(centered, eps, x, s, u, ls, mean):
    """u = N(e^s x) per row, at the returned log-scale; ls[r] = log(row r's divisor).

    The divisor is sqrt(var_true + eps) with var_true = e^(2s) var(x), formed in
    logs. u may alias x. ``mean``: a rows-sized scratch.
    """
    rows = x.shape[0]
    _row_moments(centered, x, mean, ls)
    log_eps = math.log(eps)
    ref = -np.inf
    for r in range(rows):
        lv = 2.0 * s + math.log(ls[r]) if ls[r] > 0.0 else -np.inf
        ls[r] = 0.5 * log_add(lv, log_eps)
        ref = max(ref, s - ls[r])
    factors = np.empty(rows)   # the row factors, relative to the largest
    for r in range(rows):
        factors[r] = s - ls[r] - ref
    _norm_rows(x, mean, factors, u)
    return ref


@njit(parallel=True, cache=True)
def _norm_back_rows(centered, u, cu, g, log_c, out):
    """out[r] = e^log_c[r] (g - mean(g) - cu u mean(g u)), mean(g) only when centred.

    Not fastmath: when Numba compiles this with its callers, ``centered`` is a
    known constant, and reassociated sums were then vectorised another way than
    in the function cached on its own (the last bits of a first, uncached run
    differed from every later one).
    """
    rows, n = u.shape
    for r in prange(rows):
        mg = 0.0
        mgu = 0.0
        for j in range(n):
            mg += g[r, j]
            mgu += np.float64(g[r, j]) * np.float64(u[r, j])
        mg = mg / n if centered else 0.0
        mgu = cu * mgu / n
        c = math.exp(log_c[r])
        for j in range(n):
            out[r, j] = c * (np.float64(g[r, j]) - mg - mgu * np.float64(u[r, j]))


@njit(cache=True)
def norm_backward(centered, u, s_u, ls, g, lg, out):
    """dloss/dz from g = dloss/dN(z) (log-scale lg), with N(z) = e^s_u u and ls its row
    divisors' logs; returns out's log-scale (out may alias g).

    LayerNorm: (g - mean(g) - u mean(g u)) / sigma; RMSNorm without the mean(g).
    """
    rows = u.shape[0]
    ref = -np.inf
    for r in range(rows):
        ref = max(ref, -ls[r])
    factors = np.empty(rows)
    for r in range(rows):
        factors[r] = -ls[r] - ref
    _norm_back_rows(centered, u, math.exp(2.0 * s_u), g, factors, out)
    return lg + ref


@njit(inline="always")
def _stream(j, first, second):
    return first if j == 0 else second


@njit(inline="always")
def _weight_key(seed, trial, l, j):
    """The key matrix j of block l is sampled from."""
    return key(seed, trial, l, _stream(j, rng.STREAM_WEIGHT, rng.STREAM_WEIGHT2))


@njit(cache=True)
def _weights(state, net, seed, trial, given, l, j):
    n_out, n_in = shape(net, j)
    if given is not None:
        i = l * net.branch + j
        return given.weights[given.w_off[i]:given.w_off[i + 1]].reshape((n_out, n_in))
    w = state.wbuf[:n_out * n_in].reshape((n_out, n_in))
    fill_weights(net.sampler[l, j], net.scale[l, j], _weight_key(seed, trial, l, j), w,
                 net.orthogonal_layers, net.uniform_layers)
    return w


@njit(cache=True)
def times_t(state, net, seed, trial, given, l, j, x, out, orthogonal_layers, uniform_layers):
    """out = x @ M^T for matrix j of block l (the flags: the net's, see
    :func:`.weights.times_weights_t`)."""
    if use_fused(x.shape[0], net.sampler[l, j], given):
        times_weights_t(net.sampler[l, j], net.scale[l, j], _weight_key(seed, trial, l, j), x,
                        out, orthogonal_layers, uniform_layers)
    else:
        rows_dot(x, _weights(state, net, seed, trial, given, l, j).T, out)


@njit(cache=True)
def _times(state, net, seed, trial, given, l, j, g, out, orthogonal_layers, uniform_layers):
    """out = g @ M for matrix j of block l (the flags: as in :func:`times_t`)."""
    if use_fused(g.shape[0], net.sampler[l, j], given):
        times_weights(net.sampler[l, j], net.scale[l, j], _weight_key(seed, trial, l, j), g,
                      out, orthogonal_layers, uniform_layers)
    else:
        rows_dot(g, _weights(state, net, seed, trial, given, l, j), out)


@njit(cache=True)
def _add_bias(state, net, seed, trial, given, l, j, h, s):
    """h_true = e^s h + bias of matrix j; returns the new log-scale (see matrix.add_bias)."""
    n_out = h.shape[1]
    b = state.bbuf[:n_out].reshape((1, n_out))
    if given is not None:
        i = l * net.branch + j
        copy_into(b[0], given.biases[given.b_off[i]:given.b_off[i + 1]])
    elif net.bias_std > 0.0:
        rng.fill_normal_serial(key(seed, trial, l, _stream(j, rng.STREAM_BIAS, rng.STREAM_BIAS2)),
                               b, net.bias_std)
    else:
        return s
    acc = 0.0
    for k in range(n_out):
        acc += b[0, k] * b[0, k]
    return add_bias(h, s, b[0], math.sqrt(acc / n_out))


@njit(cache=True)
def _affine(state, cond, net, seed, trial, given, l, j, k, x, s, out):
    """out at the returned log-scale t: e^t out = e^s x M^T + bias, for matrix j of block l
    (on the conditional engine, drawn given x and recorded in slot k)."""
    if cond is not None:
        if net.scale[l, j] > 0.0:
            return residual_conditional.affine(cond, net, seed, trial, l, j, k, x, s, out)
        residual_conditional.keep_gram(cond, k, j, x)   # a zero matrix: out is its bias
        out[:, :] = 0.0   # (not 0 * out: the buffer may hold anything, inf included)
    else:
        times_t(state, net, seed, trial, given, l, j, x, out, net.orthogonal_layers,
                net.uniform_layers)
    return _add_bias(state, net, seed, trial, given, l, j, out, s)


@njit(cache=True)
def _backprop(state, cond, net, seed, trial, given, l, j, k, g, x, out):
    """out = g @ M for matrix j of block l (x: its input in the forward; skipped when out
    is empty). Returns the weight gradient's sum of squares, sum((g^T x)^2)."""
    if cond is not None:
        return residual_conditional.backprop(cond, net, seed, trial, l, j, k, g, x, out)
    wsq = wgrad_sumsq(g, x, state.wbuf)
    if out.size > 0:
        _times(state, net, seed, trial, given, l, j, g, out, net.orthogonal_layers,
               net.uniform_layers)
    return wsq


@njit(cache=True)
def forward_block(state, cond, net, act, seed, trial, given, l, k, out):
    """Block l from the stream in xcur (log-scale log_s[l]) into xcur; kept in slot k.

    Writes the block's forward statistics into ``out``; returns x_l's log-scale.
    """
    rows = state.rs.shape[0]
    n, m = net.width, net.hidden
    count = rows * n
    x = state.rec_x[k, :count].reshape((rows, n))
    copy_rows(x, state.xcur[:count].reshape((rows, n)))
    s = state.log_s[l]
    sc = state.rec_sc[k]
    sc[SC_X] = s
    u = state.rec_u[k, :count].reshape((rows, n))
    if net.post or net.norm == NO_NORM:
        copy_rows(u, x)
        s_u = s
    else:
        s_u = normalize(net.centered, net.eps, x, s, u, state.rec_ls[k], state.rowtmp)
    sc[SC_U] = s_u
    a = state.hbuf[:rows * m].reshape((rows, m))
    if net.branch == 2:
        t = _affine(state, cond, net, seed, trial, given, l, plain(0), k, u, s_u, a)
    else:
        copy_rows(a, u)
        t = s_u
    y = state.rec_y[k, :rows * m].reshape((rows, m))
    sc[SC_Y] = activate_layer(state, act, a, t, y, state.rec_d[k, :rows * m].reshape((rows, m)),
                              out)
    last = net.branch - 1
    f = state.fbuf[:count].reshape((rows, n))
    t_f = _affine(state, cond, net, seed, trial, given, l, last, k, y, sc[SC_Y], f)
    row_sumsq(f, state.rowsq)
    out[LOG10_BRANCH_Q] = log10_mean_sq(ordered_sum(state.rowsq), count, t_f + net.log_alpha)
    xn = state.xcur[:count].reshape((rows, n))
    s_z = combine(x, s + net.log_beta, f, t_f + net.log_alpha, xn)
    if net.post:
        s_z = normalize(net.centered, net.eps, xn, s_z, xn, state.rec_ls[k], state.rowtmp)
    s_new, sq = renormalise(xn, s_z, state.rowsq)
    out[LOG10_STREAM_Q] = log10_mean_sq(sq, count, s_z)
    if net.post:
        copy_into(state.rec_o[k, :count], state.xcur[:count])
        sc[SC_OUT] = s_new
    return s_new


@njit(inline="always")
def forward_trial(state, cond, net, act, draws, trial, given, stats):
    """The forward pass of one trial: every block's statistics into ``stats``, a
    stream checkpoint per segment, the last segment's records kept."""
    rows = draws.rows
    n = net.width
    depth = net.sampler.shape[0]
    seg_len = state.seg_len
    load_input(net, draws.seed, trial, given, state.xcur[:rows * n].reshape((rows, n)))
    state.log_s[0] = 0.0
    n_seg = state.ckpt.shape[0]
    for seg in range(n_seg):
        first = seg * seg_len
        copy_into(state.ckpt[seg], state.xcur[:rows * n])
        for l in range(first, min(depth, first + seg_len)):
            state.log_s[l + 1] = forward_block(state, cond, net, act, draws.seed, trial, given,
                                                l, l - first, stats[l])
    state.loaded[0] = n_seg - 1


@njit(inline="always")
def _recompute_segment(state, cond, net, act, seed, trial, given, seg):
    """Re-run one segment from its checkpoint (same keys, same arithmetic: bit-identical)."""
    depth = net.sampler.shape[0]
    first = seg * state.seg_len
    copy_into(state.xcur, state.ckpt[seg])
    for l in range(first, min(depth, first + state.seg_len)):
        forward_block(state, cond, net, act, seed, trial, given, l, l - first, state.scratch)
    state.loaded[0] = seg


@njit(inline="always")
def _backward_block(state, cond, net, seed, trial, given, l, k, lg, out):
    """dloss/dx_l (in grad, log-scale lg) -> dloss/dx_{l-1}; the block's gradient
    statistics into ``out``. Returns the new log-scale."""
    rows = state.rs.shape[0]
    n, m = net.width, net.hidden
    count = rows * n
    sc = state.rec_sc[k]
    ls = state.rec_ls[k]
    g = state.grad[:count].reshape((rows, n))
    row_sumsq(g, state.rowsq)
    out[B_STREAM_GRAD] = log10_mean_sq(ordered_sum(state.rowsq), count, lg)
    if net.post:    # g <- dloss/dz, z = beta x + alpha F the norm's input
        lg = norm_backward(net.centered, state.rec_o[k, :count].reshape((rows, n)),
                           sc[SC_OUT], ls, g, lg, g)
        lg, _ = renormalise(g, lg, state.rowsq)
    lb = lg + net.log_alpha       # dloss/dF = alpha g
    last = net.branch - 1
    y = state.rec_y[k, :rows * m].reshape((rows, m))
    delta = state.gy[:rows * m].reshape((rows, m))
    out[B_WGRAD + last] = log10_mean_sq(
        _backprop(state, cond, net, seed, trial, given, l, last, k, g, y, delta), n * m,
        lb + sc[SC_Y])
    product_rows(delta, state.rec_d[k, :rows * m].reshape((rows, m)), delta, state.rowsq)
    sq = ordered_sum(state.rowsq)
    out[B_GRAD] = log10_mean_sq(sq, rows * m, lb)
    ld, _ = renormalise(delta, lb, state.rowsq)
    u = state.rec_u[k, :count].reshape((rows, n))
    below = n if l > 0 else 0   # the gradient below block 1 is not needed
    gu = state.gu[:rows * below].reshape((rows, below))
    if net.branch == 2:
        out[B_WGRAD] = log10_mean_sq(
            _backprop(state, cond, net, seed, trial, given, l, plain(0), k, delta, u, gu), n * m,
            ld + sc[SC_U])
    if l == 0:
        return lg
    if net.branch == 1:
        copy_rows(gu, delta)
    if not net.post and net.norm != NO_NORM:
        ld = norm_backward(net.centered, u, sc[SC_U], ls, gu, ld, gu)
    lg = combine(g, lg + net.log_beta, gu, ld, g)
    lg, _ = renormalise(g, lg, state.rowsq)
    return lg


@njit(inline="always")
def backward_from(state, cond, net, act, draws, trial, given, top, grads):
    """The backward pass of the depth-``top`` net (gradient injected at x_top): per
    block the statistics of :data:`BLOCK_BACKWARD_COLUMNS` into ``grads``."""
    rows = draws.rows
    n = net.width
    load_top_gradient(draws.seed, trial, given, state.grad[:rows * n].reshape((rows, n)))
    log_g = 0.0
    seg_len = state.seg_len
    for seg in range((top - 1) // seg_len, -1, -1):
        if seg != state.loaded[0]:
            _recompute_segment(state, cond, net, act, draws.seed, trial, given, seg)
        first = seg * seg_len
        for l in range(min(top, first + seg_len) - 1, first - 1, -1):
            log_g = _backward_block(state, cond, net, draws.seed, trial, given, l, l - first,
                                    log_g, grads[l])
