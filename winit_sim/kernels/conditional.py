"""The conditional engine: exact Gaussian-weight networks without weight matrices.

Arithmetic only; :mod:`winit_sim.engine` plans the run. The driver skeleton is
:func:`winit_sim.kernels.driver.run`; this module gives it :data:`State`,
:func:`forward_trial` and :func:`backward_from`.

The identity
------------
Layer l computes H = X W^T + 1 b^T with W (n_out x n_in) i.i.d. N(0, sw^2) and
b i.i.d. N(0, sb^2). Write X~ = [X, (sb/sw) 1] and W~ = [W, (sw/sb) b]: then
H = X~ W~^T with W~ i.i.d. N(0, sw^2), and given X the columns of H (units) are
independent N(0, sw^2 G~), G~ = X~ X~^T (B x B). So H = C Z with C C^T = sw^2 G~
and Z (B x n_out) i.i.d. N(0, 1): O(B^2 n) work, B n random numbers, no W.

The backward pass must use the same W. Given the forward (W~ X~^T = H^T),
W~ = H^T G~^+ X~ + W' (I - X~^T G~^+ X~) with W' an independent copy, so

    delta W~ = (delta H^T - M X~^T) G~^+ X~ + M,   M = delta W',

where M has independent columns N(0, sw^2 delta delta^T): again C' Z'. Only the
first n_in columns (W, not b) feed the gradient of the layer below. The joint
law of every forward and backward quantity is exactly that of the matrix
engine; only the random numbers differ.

Factors (see :func:`factor`): Cholesky when G~ is well conditioned. Rank
deficiency (batch > width, repeated inputs, samples whose activations are all
0) goes to a symmetric eigendecomposition instead: eigenvalues below
``batch * eps * largest`` are set to 0 and G~^+ is the pseudo-inverse on the
same kept eigenvectors, so H lies exactly in the kept subspace, the
conditioning stays consistent, and nothing is divided by zero.

Passes: the forward of a layer is one parallel pass over blocks of BLOCK
columns (:func:`forward_pass`): draw Z, H = C Z, phi and phi' in a tile,
the statistics' block sums and the block's part of the next layer's Gram,
which is all the next layer needs (x itself is never written). The backward
of layer l is two: x_l and phi'(h_{l-1}) from h_{l-1} (drawn again unless
kept), Z' and Z' x_l^T (:func:`activation_pass`); then grad_in = C' Z' + R x_l
together with the sums layer l-1 needs, delta delta^T and delta h^T
(:func:`mix_rows`). Block sums are added in block order, so nothing depends
on the thread count.

Memory: nothing of size n needs to be kept per layer. The forward stores, per
layer, the B x B factor C (scaled), x x^T, a log-scale and two bias weights;
the backward regenerates H_l = C_l Z_l from its key and X_l = phi(H_{l-1})
from the layer below, so a net of any depth needs a few B x n buffers plus
depth x B^2. Small nets keep H_l instead (``keep``): the same bits, faster.

Scales: as in the matrix engine, x is kept at unit RMS with x_true = e^s x.
X~ = e^u [a x, c 1] with u = max(s, log(sb/sw)), so a, c <= 1; Gs = a^2 x x^T
+ c^2 J, m = mean(diag Gs), and h = H_true e^-t with t = u + log sw + log(m)/2
has columns N(0, Gs / m).
"""
from collections import namedtuple
import math

import numpy as np
from numba import prange

from . import FAST, internal, njit, orthogonal, rng
from .blocks import (BLOCK, add_product_block, add_scaled, blas_products, column_blocks,
                     cross_block, cross_gram, draw_row_block, factor, gram_block, mix_block,
                     pinv_from_factor, sum_blocks)
from .weights import NOT_DESCRIBED, ORTHOGONAL
from .layer import (N_RS, RS_M2, RS_SUM, RS_YSQ, activate_block, activation_regime, block_sums,
                    bounded_fallback, check_layer_kind, draw_input, draw_top_gradient, key,
                    layer_statistics, log10_mean_sq, output_log_scale)



@internal(parallel=True, fastmath=FAST)
def mix_rows(c, z, r, x, out, below, d, h, part_d, part_h, blas):
    """out = c @ z + r @ x for small square c, r (B x B) and z, x, out (B x n).

    With ``below``, out is the gradient w.r.t. the layer below's output, and
    the same pass also adds up that layer's delta = out * d (d = its phi',
    h its pre-activations) as :func:`delta_grams` does, while the block is in
    cache. ``blas`` (:func:`.blocks.blas_products`): None, r @ x in register loops;
    True, by BLAS (r rounded to out's dtype first, as the loops round each coefficient).
    """
    rows, n = out.shape
    nch = column_blocks(n)
    rc = r.astype(out.dtype)
    for ch in prange(nch):
        j0 = ch * BLOCK
        j1 = min(n, j0 + BLOCK)
        for i in range(rows):   # accumulated in the compute dtype (float32: twice the lanes)
            out[i, j0:j1] = 0.0
        mix_block(out, j0, j1, c, z, j0)
        if blas is None:
            mix_block(out, j0, j1, r, x, j0)
        else:
            add_product_block(out, j0, j1, rc, x, j0)
        if below:
            _delta_block(out, d, h, j0, j1, part_d[ch], part_h[ch], blas)


# how layer j's pre-activations are drawn (H = C Z, Z from ``key``, plus bias_coef times
# the standard normal row of ``bias_key`` for orthogonal layers) and activated
Pre = namedtuple("Pre", ["key", "factor", "signal", "t", "regime", "bias_key", "bias_coef"])
# what a run keeps per layer from the forward, and its buffers: see new_state
State = namedtuple("State", [
    "keep", "grams", "kept_h", "cfs", "chol", "t_l", "m_l", "a_l", "c_l", "beta_l", "regimes",
    "log_s",
    "xs_l", "buf_x", "buf_h", "buf_h2", "buf_d", "buf_d2", "buf_z", "grad", "part_rs", "part_g",
    "part_h", "rs", "g", "gp", "gd", "cd", "dh", "pz", "mx", "rmat", "zb", "zz", "bz", "blas"])


@internal(fastmath=FAST)
def draw_mix(key, cf, signal, j0, j1, tile, bits, rejected, h):
    """h[:, j0:j1] = cf @ Z[:, j0:j1], Z[k, j] ~ N(0, 1) at counter k * n + j of ``key``
    (as fill_normal draws it), drawn into the block tile; 0 without ``signal``."""
    rows, n = h.shape
    if not signal:
        for i in range(rows):
            h[i, j0:j1] = 0.0
        return
    for k in range(rows):
        draw_row_block(key, k, n, j0, tile[k], bits, rejected)
    for i in range(rows):   # accumulated in the compute dtype (float32: twice the lanes)
        h[i, j0:j1] = 0.0
    mix_block(h, j0, j1, cf, tile, 0)


@njit(inline="always")
def _draw_pre(pre, j0, j1, tile, bits, rejected, h):
    """Block j0:j1 of a layer's pre-activations as ``pre`` says (draw_mix, then the
    orthogonal layers' bias row; the tile is scratch)."""
    draw_mix(pre.key, pre.factor, pre.signal, j0, j1, tile, bits, rejected, h)
    if pre.bias_coef != 0.0 and pre.signal:
        row = tile[0, :j1 - j0]
        draw_row_block(pre.bias_key, 0, h.shape[1], j0, row, bits, rejected)
        for i in range(h.shape[0]):
            add_scaled(h[i, j0:j1], pre.bias_coef, row)


@internal(parallel=True, fastmath=FAST)
def forward_pass(pre, act, h, part_rs, part_g):
    """A layer's forward in one pass over column blocks, each block while it is in cache.

    h = C Z (see draw_mix); y = phi(h_true) and d = phi'(h_true) exist only as
    block tiles (see activate_block). Per block c: the row sums of block_sums
    into part_rs[c] and the upper triangle of y y^T into part_g[c] (formed in
    the compute dtype from y scaled by a power of two, so float32 neither
    underflows nor overflows at any log-scale; stored in float64).
    The next layer needs only y y^T, so its input x is never written.
    """
    rows, n = h.shape
    nch = column_blocks(n)
    t, regime = pre.t, pre.regime
    sat_thr = act.sat_thr
    for ch in prange(nch):
        j0 = ch * BLOCK
        j1 = min(n, j0 + BLOCK)
        m = j1 - j0
        tile = np.empty((rows, m), h.dtype)
        y = np.empty((rows, m))
        d = np.empty(m, h.dtype)
        bits = np.empty(rng.CHUNK, np.uint64)
        rejected = np.empty(rng.CHUNK, np.int32)
        _draw_pre(pre, j0, j1, tile, bits, rejected, h)
        ysq = 0.0
        for i in range(rows):
            hi = h[i, j0:j1]
            activate_block(act, hi, t, regime, y[i], d)
            block_sums(hi, y[i], d, sat_thr, part_rs[ch, i])
            ysq += part_rs[ch, i, RS_YSQ]
        # y y^T in the compute dtype (float32: twice the lanes, as cross_gram) from y
        # scaled by 2^-e, e from the block's sum of squares: exact, every |y| < 1, and
        # y far below float32's range (tanh of tiny signals) does not underflow
        e = math.frexp(math.sqrt(ysq))[1] if ysq > 0.0 else 0
        sc = math.ldexp(1.0, -e)
        for i in range(rows):
            yi = y[i]
            ti = tile[i]
            for j in range(m):
                ti[j] = yi[j] * sc
        gram_block(tile, 0, tile, 0, m, part_g[ch], True)
        back = math.ldexp(1.0, 2 * e)
        for i in range(rows):
            for k in range(i, rows):
                part_g[ch, i, k] *= back


@internal(parallel=True, fastmath=FAST)
def activation_pass(pre, regen, act, xs, h, x, d, rest, rest_key, z, part_z, blas):
    """The backward's view of layer j, one pass over column blocks.

    With ``regen``, h = C Z is drawn again from its key (the forward's bits);
    then x = xs * phi(h_true) (layer j+1's input at unit RMS) and
    d = phi'(h_true) in the compute dtype. With ``rest``, also z = Z' of layer
    j+1 (standard normals at counter k * n + j of ``rest_key``) and per block c
    the products z x^T into part_z[c], in the compute dtype as cross_gram (by BLAS
    where ``blas`` is True, see :func:`mix_rows`).
    """
    rows, n = h.shape
    nch = column_blocks(n)
    t, regime = pre.t, pre.regime
    for ch in prange(nch):
        j0 = ch * BLOCK
        j1 = min(n, j0 + BLOCK)
        m = j1 - j0
        tile = np.empty((rows, m), h.dtype)
        y = np.empty(m)
        bits = np.empty(rng.CHUNK, np.uint64)
        rejected = np.empty(rng.CHUNK, np.int32)
        if regen:
            _draw_pre(pre, j0, j1, tile, bits, rejected, h)
        for i in range(rows):
            activate_block(act, h[i, j0:j1], t, regime, y, d[i, j0:j1])
            xi = x[i, j0:j1]
            for j in range(m):
                xi[j] = xs * y[j]
        if rest:
            for i in range(rows):
                draw_row_block(rest_key, i, n, j0, z[i, j0:j1], bits, rejected)
            if blas is None:
                gram_block(z, j0, x, j0, m, part_z[ch], False)
            else:
                cross_block(z, j0, x, j0, m, part_z[ch])


@internal(fastmath=FAST)
def _delta_block(grad, d, h, j0, j1, pd, ph, blas):
    """Block j0:j1 of delta = grad * d (in a tile, never stored): pd = delta delta^T (upper
    triangle), ph = delta h^T, in the compute dtype as cross_gram (by BLAS where ``blas``
    is True, see :func:`mix_rows`)."""
    rows = grad.shape[0]
    m = j1 - j0
    tile = np.empty((rows, m), grad.dtype)
    for i in range(rows):
        gi = grad[i, j0:j1]
        di = d[i, j0:j1]
        ti = tile[i]
        for j in range(m):
            ti[j] = gi[j] * di[j]
    gram_block(tile, 0, tile, 0, m, pd, True)
    if blas is None:
        gram_block(tile, 0, h, j0, m, ph, False)
    else:
        cross_block(tile, 0, h, j0, m, ph)


@internal(parallel=True, fastmath=FAST)
def delta_grams(grad, d, h, part_d, part_h, blas):
    """Per block c of delta = grad * d: part_d[c] = delta delta^T, part_h[c] = delta h^T
    (added up by :func:`delta_sums`)."""
    n = grad.shape[1]
    for c in prange(column_blocks(n)):
        _delta_block(grad, d, h, c * BLOCK, min(n, (c + 1) * BLOCK), part_d[c], part_h[c],
                     blas)


@internal()
def delta_sums(part_d, part_h, n, gd, dh):
    """gd = delta delta^T, dh = delta h^T from the block sums of a width-n layer, in
    block order; returns sum delta^2."""
    nch = column_blocks(n)
    sum_blocks(part_d[:nch], gd, True)
    sum_blocks(part_h[:nch], dh, False)
    sq = 0.0
    for i in range(gd.shape[0]):
        sq += gd[i, i]
    return sq


@internal()
def _combine_row_sums(part_rs, n, rs):
    """Per-row sums of block_sums from per-block ones, in block order; the M2 column
    about each row's mean (Chan et al.: exact)."""
    nch = column_blocks(n)
    rs[:, :] = 0.0
    for i in range(rs.shape[0]):
        for c in range(nch):
            for q in range(rs.shape[1]):
                if q != RS_M2:
                    rs[i, q] += part_rs[c, i, q]
        mean = rs[i, RS_SUM] / n
        for c in range(nch):
            m = min(n, (c + 1) * BLOCK) - c * BLOCK
            dm = part_rs[c, i, RS_SUM] / m - mean
            rs[i, RS_M2] += part_rs[c, i, RS_M2] + m * dm * dm


@njit(inline="always")
def _pre(state, seed, trial, j):
    """How layer j's pre-activations were drawn in the forward (see Pre)."""
    return Pre(key(seed, trial, j, rng.STREAM_COND_PRE), state.cfs[j], state.t_l[j] != -np.inf,
               state.t_l[j], state.regimes[j], key(seed, trial, j, rng.STREAM_BIAS),
               state.beta_l[j])


@njit(inline="always")
def _pre_activations(state, j, buf, n):
    """Layer j's pre-activations (B x n): kept ones, or the buffer they are drawn into."""
    B = state.rs.shape[0]
    return (state.kept_h[j] if state.keep else buf)[:B * n].reshape((B, n))


@njit(inline="always")
def _forward_layer(state, act, seed, trial, l, h):
    """Layer l's forward from its factor: statistics into ``stats``, the next layer's
    x x^T (x at unit RMS) into ``grams[l + 1]``. Returns (log-scale of x, 1 / RMS of y,
    regime), and the statistics in state.rs."""
    n = h.shape[1]
    t = state.t_l[l]
    regime = activation_regime(act.homogeneous, t)
    k = key(seed, trial, l, rng.STREAM_COND_PRE)
    kb = key(seed, trial, l, rng.STREAM_BIAS)
    beta = state.beta_l[l]
    forward_pass(Pre(k, state.cfs[l], t != -np.inf, t, regime, kb, beta), act, h, state.part_rs,
                 state.part_g)
    _combine_row_sums(state.part_rs, n, state.rs)
    fallback = bounded_fallback(regime, state.rs)
    if fallback != regime:
        regime = fallback
        forward_pass(Pre(k, state.cfs[l], t != -np.inf, t, regime, kb, beta), act, h,
                     state.part_rs, state.part_g)
        _combine_row_sums(state.part_rs, n, state.rs)
    return regime, output_log_scale(t, regime, act.phi0)


def new_state(net, rows, keep, proto):
    """Buffers of a run in the compute dtype of ``proto``. ``keep``: hold every layer's
    pre-activations for the backward pass (small nets) instead of regenerating them from
    their keys (any size); the numbers are the same either way, bit for bit. Plain
    Python (allocation only: nothing to compile)."""
    widths = net.widths
    depth = widths.size - 1
    maxn = int(np.max(widths))
    dt = proto.dtype
    B = rows
    nch = column_blocks(maxn)
    n_kept = depth if keep else 0
    return State(
        keep=keep,
        # per layer: x x^T, factor C_l of Gs_l / m_l, log-scales, the weights a_l, c_l of
        # X~, how phi was evaluated and the factor xs_l that takes phi(h_{l-1}) to x_l
        grams=np.zeros((depth + 1, B, B)),
        kept_h=np.empty((n_kept, B * maxn), dt),
        cfs=np.zeros((depth, B, B)),
        chol=np.zeros(depth, np.bool_),
        t_l=np.zeros(depth),
        m_l=np.zeros(depth),
        a_l=np.ones(depth),
        c_l=np.zeros(depth),
        beta_l=np.zeros(depth),            # orthogonal layers: the bias row's weight in h
        regimes=np.zeros(depth, np.int64),
        log_s=np.zeros(depth + 1),
        xs_l=np.ones(depth + 1),
        buf_x=np.empty(B * maxn, dt),    # layer input x_l (the net's input; x_l in the backward)
        buf_h=np.empty(B * maxn, dt),    # pre-activations of the current layer
        buf_h2=np.empty(B * maxn, dt),   # ... of the layer below (backward)
        buf_d=np.empty(B * maxn, dt),    # phi'(h)
        buf_d2=np.empty(B * maxn, dt),   # ... of the layer below (backward)
        buf_z=np.empty(B * maxn, dt),    # standard normals Z'
        grad=np.empty(B * maxn, dt),
        part_rs=np.zeros((nch, B, N_RS)),
        part_g=np.zeros((nch, B, B)),
        part_h=np.zeros((nch, B, B)),
        rs=np.zeros((B, N_RS)),
        g=np.empty((B, B)), gp=np.empty((B, B)), gd=np.empty((B, B)), cd=np.empty((B, B)),
        dh=np.empty((B, B)), pz=np.empty((B, B)), mx=np.empty((B, B)), rmat=np.empty((B, B)),
        zb=np.empty((B, 1), dt), zz=np.empty((B, B)), bz=np.empty(B),
        blas=blas_products(B))   # a type: None compiles no BLAS block product


@njit(inline="always")
def forward_trial(state, net, act, draws, trial, given, stats):
    """The forward pass of one trial (``given`` must be None: Gaussian draws only)."""
    widths = net.widths
    B = draws.rows
    seed = draws.seed
    x = state.buf_x[:B * widths[0]].reshape((B, widths[0]))
    draw_input(seed, trial, net.input_std, x)
    cross_gram(x, x, state.grams[0])
    for l in range(widths.size - 1):
        check_layer_kind(net, l)
        n_out = widths[l + 1]
        _factor_of(net.orthogonal_layers, state, net, seed, trial, l)
        h = _pre_activations(state, l, state.buf_h, n_out)
        t = state.t_l[l]
        state.regimes[l], v = _forward_layer(state, act, seed, trial, l, h)
        rms = layer_statistics(state.rs, n_out, t, v, stats[l])
        inv = 1.0 / rms if rms > 0.0 else 0.0
        gram_next = state.grams[l + 1]
        sum_blocks(state.part_g[:column_blocks(n_out)], gram_next, True)
        for i in range(B):
            for k in range(B):
                gram_next[i, k] *= inv * inv
        state.log_s[l + 1] = v + math.log(rms) if rms > 0.0 else 0.0
        state.xs_l[l + 1] = inv


@njit(inline="always")
def backward_from(state, net, act, draws, trial, given, top, grads):
    """The backward pass of the depth-``top`` net: per layer (log10_grad_q,
    log10_wgrad_q) into ``grads`` (depth x 2)."""
    widths = net.widths
    B = draws.rows
    seed = draws.seed
    n_top = widths[top]
    gl = state.grad[:B * n_top].reshape((B, n_top))
    draw_top_gradient(seed, trial, gl)
    log_g = 0.0
    # h and phi'(h) of the top layer; each step below makes the layer under
    # it (h_{l-1}, x_l = phi(h_{l-1}), phi'(h_{l-1})) exactly as the forward did
    j = top - 1
    h = _pre_activations(state, j, state.buf_h, n_top)
    scratch = state.buf_z[:B * n_top].reshape((B, n_top))
    d_top = state.buf_d[:B * n_top].reshape((B, n_top))
    activation_pass(_pre(state, seed, trial, j), not state.keep, act, state.xs_l[top], h,
                    scratch, d_top, np.bool_(False), np.uint64(0), scratch, state.part_g,
                    state.blas)
    sq = _delta_of(gl, d_top, h, state.part_g, state.part_h, state.gd, state.dh, state.blas)
    cur, below = state.buf_h, state.buf_h2
    d_cur, d_below = state.buf_d, state.buf_d2
    for l in range(top - 1, -1, -1):
        n_in, n_out = widths[l], widths[l + 1]
        # gd = delta delta^T, dh = delta h^T and sq = sum delta^2 of this layer
        # are ready (from the pass that formed its gradient)
        log_g = _delta_layer(sq, B * n_out, n_in, log_g, state.log_s[l], state.grams[l],
                             state.gd, state.dh, grads[l])
        if l == 0:
            break
        # layer l-1 (regenerated unless kept) gives x_l; Z' of layer l with Z' x_l^T
        hb = _pre_activations(state, l - 1, below, n_in)
        db = d_below[:B * n_in].reshape((B, n_in))
        xl = state.buf_x[:B * n_in].reshape((B, n_in))
        zx = state.buf_z[:B * n_in].reshape((B, n_in))
        activation_pass(_pre(state, seed, trial, l - 1), not state.keep, act, state.xs_l[l], hb,
                        xl, db, np.bool_(True), key(seed, trial, l, rng.STREAM_COND_REST), zx,
                        state.part_g, state.blas)
        sum_blocks(state.part_g[:column_blocks(n_in)], state.pz, False)
        _conditioned_mix_of(net.orthogonal_layers, state, net, seed, trial, l, zx,
                            state.grad[:B * n_out].reshape((B, n_out)),
                            d_cur[:B * n_out].reshape((B, n_out)), sq)
        # grad <- delta_l W_l, and layer l-1's delta sums in the same pass
        mix_rows(state.cd, zx, state.rmat, xl, state.grad[:B * n_in].reshape((B, n_in)), True,
                 db, hb, state.part_g, state.part_h, state.blas)
        sq = delta_sums(state.part_g, state.part_h, n_in, state.gd, state.dh)
        log_g += math.log(net.scale[l])
        cur, below = below, cur
        d_cur, d_below = d_below, d_cur


@internal()
def _factor_of(orthogonal_layers, state, net, seed, trial, l):
    """Layer l's factor by its kind (Gaussian or orthogonal); ``orthogonal_layers``
    (net.orthogonal_layers, an argument so that Numba can resolve it) None: the
    orthogonal code is not compiled."""
    if net.sampler[l] != ORTHOGONAL:
        _layer_factor(state, l, net.scale[l], net.bias_std)
    elif orthogonal_layers is None:
        raise ValueError(NOT_DESCRIBED)
    else:
        orthogonal.layer_factor(state, seed, trial, l, net.widths[l], net.widths[l + 1],
                                net.scale[l], net.bias_std)


@internal()
def _conditioned_mix_of(orthogonal_layers, state, net, seed, trial, l, z, grad, d, sq):
    """Layer l's backward mixing matrices by its kind, as :func:`_factor_of`."""
    if net.sampler[l] != ORTHOGONAL:
        _conditioned_mix(state, l, seed, trial)
    elif orthogonal_layers is None:
        raise ValueError(NOT_DESCRIBED)
    else:
        orthogonal.conditioned_mix(state, seed, trial, l, net.widths[l], net.widths[l + 1],
                                   net.scale[l], z, grad, d, sq)


@internal()
def scaled_gram(gram, s, sw, sb, g):
    """g = Gs = Xs Xs^T for Xs = [a x, c 1] = e^-u X~ (X~ = [e^s x, (sb/sw) 1], gram = x x^T):
    returns (a, c, u, m = mean(diag Gs)); a, c <= 1, so nothing overflows."""
    B = gram.shape[0]
    aa, cc, u = 1.0, 0.0, s
    if sb > 0.0:
        lb = math.log(sb / sw)
        u = max(s, lb)
        aa = math.exp(s - u)
        cc = math.exp(lb - u)
    for i in range(B):
        for j in range(B):
            g[i, j] = aa * aa * gram[i, j] + cc * cc
    m = 0.0
    for i in range(B):
        m += g[i, i]
    return aa, cc, u, m / B


@internal()
def _layer_factor(state, l, sw, sb):
    """Factor of the covariance of layer l's units given its input x (x_true = e^s x),
    from grams[l] = x x^T."""
    g = state.g
    cf = state.cfs[l]
    B = g.shape[0]
    aa, cc, u, m = scaled_gram(state.grams[l], state.log_s[l], sw, sb, g)
    state.a_l[l] = aa
    state.c_l[l] = cc
    state.m_l[l] = m
    if m == 0.0:   # no signal and no bias: H = 0
        cf[:, :] = 0.0
        state.t_l[l] = -np.inf
        return
    for i in range(B):
        for j in range(B):
            g[i, j] /= m
    state.chol[l] = factor(g, cf)
    state.t_l[l] = u + math.log(sw) + 0.5 * math.log(m)


@njit(inline="always")
def _delta_of(grad, d, h, part_d, part_h, gd, dh, blas):
    """gd, dh and sum delta^2 of the top layer's delta = grad * d (see delta_grams)."""
    delta_grams(grad, d, h, part_d, part_h, blas)
    return delta_sums(part_d, part_h, h.shape[1], gd, dh)


@internal()
def _delta_layer(sq, count, n_in, log_g, s, g, gd, dh, out):
    """Statistics of delta_l (sum of squares sq over ``count`` entries, log-scale log_g)
    into out; rescales gd = delta delta^T and dh = delta h^T to delta at unit RMS and
    returns that log-scale.

    ``g`` = x x^T of the layer input (log-scale s), ``n_in`` its width.
    """
    B = gd.shape[0]
    n_out = count // B
    out[0] = log10_mean_sq(sq, count, log_g)
    if sq > 0.0:   # continue with delta at unit RMS
        rms = math.sqrt(sq / count)
        log_g += math.log(rms)
        for i in range(B):
            for j in range(B):
                gd[i, j] /= rms * rms
                dh[i, j] /= rms
    acc = 0.0
    for i in range(B):
        for j in range(B):
            acc += gd[i, j] * g[i, j]
    out[1] = log10_mean_sq(max(acc, 0.0), n_in * n_out, log_g + s)
    return log_g


@internal()
def _conditioned_mix(state, l, seed, trial):
    """The B x B matrices of delta_l W_l = C' Z' + R x for W_l conditioned on the forward:
    cd = C' and rmat = a R (in units of e^(log_g) sw, delta's log-scale and the weight std).

    On entry pz = Z' x^T, gd = delta delta^T, dh = delta h^T (delta at unit RMS).
    """
    cf, chol, m = state.cfs[l], state.chol[l], state.m_l[l]
    aa, cc = state.a_l[l], state.c_l[l]
    zb, gp, gd, cd, dh, pz, mx, rmat = (state.zb, state.gp, state.gd, state.cd, state.dh,
                                        state.pz, state.mx, state.rmat)
    B = gd.shape[0]
    # M Xs^T = C' (a Z' x^T + c z'_b 1^T), M = delta W' = C' [Z', z'_b] with
    # C' C'^T = delta delta^T (times sw^2, carried in log_g)
    for i in range(B):
        for j in range(B):
            pz[i, j] *= aa
    if cc > 0.0:
        rng.fill_normal_serial(key(seed, trial, l, rng.STREAM_COND_REST_BIAS), zb, 1.0)
        for i in range(B):
            for j in range(B):
                pz[i, j] += cc * zb[i, 0]
    # C', mx = M Xs^T and Gs^+ = (C C^T)^+ / m: two independent chains at once
    _factor_mix_and_pinv(gd, cd, pz, mx, cf, chol, gp)
    # R = (sqrt(m) delta h^T - M Xs^T) Gs^+
    root = math.sqrt(m)
    for i in range(B):
        for j in range(B):
            dh[i, j] = root * dh[i, j] - mx[i, j]
    np.dot(dh, gp, rmat)
    scale = aa / m if m > 0.0 else 0.0
    for i in range(B):
        for j in range(B):
            rmat[i, j] *= scale


@internal(parallel=True)
def _factor_mix_and_pinv(gd, cd, pz, mx, cf, chol, gp):
    """cd = factor of gd, then mx = cd pz; and gp = (cf cf^T)^+: the two chains of
    B x B work of a layer's backward that do not depend on each other, one per thread.
    Each runs the arithmetic it would alone (the same bits at any thread count); the
    BLAS products inside are single-threaded (the engine pins BLAS for the whole call,
    as for :func:`.blocks.rows_dot`)."""
    for task in prange(2):
        if task == 0:
            factor(gd, cd)
            np.dot(cd, pz, mx)
        else:
            pinv_from_factor(cf, chol, gp)
