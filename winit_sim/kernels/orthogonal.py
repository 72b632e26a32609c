"""Haar (semi-)orthogonal layers on the conditional engine: exact, without weight matrices.

Arithmetic only; :mod:`.conditional` calls :func:`layer_factor` in its forward and
:func:`conditioned_mix` in its backward for layers whose sampling kind is
orthogonal. Everything else (the passes over column blocks, the statistics) is
the Gaussian engine's.

The weights
-----------
W = g O restricted to an (n_out x n_in) block, O Haar orthogonal of size
N = max(n_in, n_out): torch's ``orthogonal_`` convention (orthonormal columns when
n_out >= n_in, orthonormal rows otherwise). Biases b are i.i.d. N(0, sb^2),
independent of W (they are not part of an orthogonal matrix, so the Gaussian
engine's trick of appending them to W does not apply).

Forward
-------
Let the layer input X (B x n_in) have X X^T = F F^T (F = :func:`blocks.factor`,
Cholesky when well conditioned), so X = F U_X with U_X = F^+ X orthonormal rows
(on the kept directions). Embed X in R^N (zeros beyond n_in). O maps the rows of
U_X to a uniformly random orthonormal B-frame V_full (B x N), and W keeps its first
n_out coordinates: H = g F V + 1 b^T, V = V_full[:, :n_out]. A Haar B-frame is a
Gaussian B x N matrix Z with orthonormalised rows, V_full = L_Z^-1 Z, L_Z L_Z^T =
Z Z^T. So

    H = A Z_a + beta 1 bhat^T,   A = g F L_Z^-1,

with Z_a = Z[:, :n_out] drawn exactly as the Gaussian engine draws its Z (key
STREAM_COND_PRE, counter i n_out + j), the other N - n_out columns of Z from
STREAM_COND_PRE_EXTRA (they enter only Z Z^T), and bhat the standard normal row of
the matrix engine's bias key. Cost: one more O(B^2 N) pass (Z Z^T) than the
Gaussian layer, and B^3 work.

Backward
--------
Given the forward, O is fixed on span(U_X) and is an independent Haar isometry
from its complement onto the complement of span(V_full). Embed delta (B x n_out) in
R^N as delta_full (zeros beyond n_out). Then

    delta_full O = K U_X + L_perp U,

* K = delta_full V_full^T Pi = delta V^T Pi, Pi the projector on the kept directions
  of F; from the forward's delta h^T: delta Z_a^T A^T = delta h^T - beta (delta
  bhat) 1^T = g delta V^T F^T, so K = (delta h^T - beta (delta bhat) 1^T) (F^T)^+ / g;
* the part of delta_full outside span(V_full) has Gram S = delta delta^T - K K^T, and
  O sends it to a uniformly random frame of the complement of span(U_X):
  L_perp L_perp^T = S, and U = L_q^-1 (Z' - P X) with Z' (B x N) Gaussian,
  P = Z'_in X^T (X X^T)^+, L_q L_q^T = Z' Z'^T - P X Z'_in^T (its rows projected out
  of span(X) and orthonormalised: a Haar frame of that complement).

The layer below needs delta W = g (delta_full O)[:, :n_in] = g (C' Z'_in + R X) with

    C' = L_perp L_q^-1,   R = K F^+ - C' P,

the Gaussian engine's form (:func:`.conditional.mix_rows` does the O(B^2 n) work).
Z'_in is the Gaussian engine's Z' (STREAM_COND_REST); the other N - n_in columns come
from STREAM_COND_REST_EXTRA and enter only Z' Z'^T. A rectangular layer is this
square case of size N with its unused coordinates dropped. Needs 2B <= N (checked
by the engine), so that L_q is a full-rank factor.

Scales: x is at unit RMS (x_true = e^s x) with x x^T = m Fh Fh^T (Fh from the
factor of x x^T / m), and h = H_true e^-t with t = log RMS of (g e^s sqrt(m / N), sb),
so A = g e^{s-t} sqrt(m) Fh L_Z^-1 and beta = sb e^-t <= 1.
"""
import math

import numpy as np
from numba import prange

from . import FAST, copy_rows, njit, rng
from .blocks import (BLOCK, column_blocks, cross_gram, draw_row_block, factor, gram_block,
                     lower_inverse, sum_blocks)
from .layer import key


@njit(parallel=True, cache=True, fastmath=FAST)
def normal_gram(key_, rows, n, out):
    """out += Z Z^T for Z (rows x n) standard normals at counter i n + j of ``key_`` (as
    fill_normal draws them), column blocks summed in block order."""
    nch = column_blocks(n)
    part = np.zeros((nch, rows, rows))
    for c in prange(nch):
        j0 = c * BLOCK
        m = min(n, j0 + BLOCK) - j0
        tile = np.empty((rows, m))
        bits = np.empty(rng.CHUNK, np.uint64)
        rejected = np.empty(rng.CHUNK, np.int32)
        for i in range(rows):
            draw_row_block(key_, i, n, j0, tile[i], bits, rejected)
        gram_block(tile, 0, tile, 0, m, part[c], True)
    g = np.empty((rows, rows))
    sum_blocks(part, g, True)
    for i in range(rows):
        for k in range(rows):
            out[i, k] += g[i, k]


@njit(cache=True)
def _frame_factor_inverse(seed, trial, l, stream_extra, n, big, rows, zz):
    """L^-1 with L L^T = Z Z^T for Z = [Z_a, Z_b]: zz holds Z_a Z_a^T (rows x n) on entry;
    Z_b (rows x big - n) comes from ``stream_extra``."""
    if big > n:
        normal_gram(key(seed, trial, l, stream_extra), rows, big - n, zz)
    lz = np.empty((rows, rows))
    factor(zz, lz)   # Gaussian with rows <= big / 2: Cholesky, full rank
    return lower_inverse(lz)



@njit(cache=True)
def input_factor(gram, m):
    """Fh with Fh Fh^T = gram / m, and whether it is a Cholesky factor."""
    rows = gram.shape[0]
    fh = np.empty((rows, rows))
    chol = factor(gram / m, fh)
    return fh, chol


@njit(cache=True)
def layer_factor(state, seed, trial, l, n_in, n_out, gain, sb):
    """The forward of orthogonal layer l: cfs[l] = A, t_l[l] = t, beta_l[l] = beta, m_l[l]
    = mean diag(x x^T) (module docstring), from grams[l] = x x^T."""
    rows = state.g.shape[0]
    big = max(n_in, n_out)
    gram = state.grams[l]
    s = state.log_s[l]
    m = 0.0
    for i in range(rows):
        m += gram[i, i]
    m /= rows
    state.m_l[l] = m
    ln_w = s + math.log(gain) + 0.5 * math.log(m / big) if m > 0.0 and gain > 0.0 else -np.inf
    ln_b = math.log(sb) if sb > 0.0 else -np.inf
    cf = state.cfs[l]
    if ln_w == -np.inf and ln_b == -np.inf:   # no signal and no bias: H = 0
        cf[:, :] = 0.0
        state.t_l[l] = -np.inf
        state.beta_l[l] = 0.0
        return
    top = max(ln_w, ln_b)
    t = top + 0.5 * math.log(math.exp(2.0 * (ln_w - top)) + math.exp(2.0 * (ln_b - top)))
    state.t_l[l] = t
    state.beta_l[l] = math.exp(ln_b - t)
    if ln_w == -np.inf:
        cf[:, :] = 0.0
        return
    zz = state.zz
    zz[:, :] = 0.0
    normal_gram(key(seed, trial, l, rng.STREAM_COND_PRE), rows, n_out, zz)
    lzi = _frame_factor_inverse(seed, trial, l, rng.STREAM_COND_PRE_EXTRA, n_out, big, rows, zz)
    fh, chol = input_factor(gram, m)
    state.chol[l] = chol
    a = np.dot(fh, lzi)
    c = math.exp(s + math.log(gain) - t) * math.sqrt(m)
    for i in range(rows):
        for k in range(rows):
            cf[i, k] = c * a[i, k]


@njit(parallel=True, cache=True, fastmath=FAST)
def delta_dot_normal_row(grad, d, key_, out):
    """out[i] = sum_j grad[i, j] d[i, j] bhat_j, bhat the standard normal row of ``key_``
    (counter j), in float64, column blocks summed in block order."""
    rows, n = grad.shape
    nch = column_blocks(n)
    part = np.zeros((nch, rows))
    for c in prange(nch):
        j0 = c * BLOCK
        j1 = min(n, j0 + BLOCK)
        row = np.empty(j1 - j0)
        bits = np.empty(rng.CHUNK, np.uint64)
        rejected = np.empty(rng.CHUNK, np.int32)
        draw_row_block(key_, 0, n, j0, row, bits, rejected)
        for i in range(rows):
            acc = 0.0
            for j in range(j0, j1):
                acc += np.float64(grad[i, j]) * np.float64(d[i, j]) * row[j - j0]
            part[c, i] = acc
    for i in range(rows):
        out[i] = 0.0
        for c in range(nch):
            out[i] += part[c, i]


@njit(cache=True)
def _symmetrize(a):
    for i in range(a.shape[0]):
        for k in range(i):
            v = 0.5 * (a[i, k] + a[k, i])
            a[i, k] = v
            a[k, i] = v


@njit(cache=True)
def conditioned_mix(state, seed, trial, l, n_in, n_out, gain, z, grad, d, sq):
    """cd = C', rmat = R of delta_l W_l = g (C' Z'_in + R x) for orthogonal layer l,
    conditioned on its forward (module docstring; g is added to the log-scale by the
    caller).

    On entry gd = delta delta^T, dh = delta h^T (delta at unit RMS), pz = Z'_in x^T,
    and ``z`` holds Z'_in (B x n_in); ``grad`` * ``d`` is delta before rescaling (sum of
    squares ``sq``), for the bias row's term.
    """
    rows = state.g.shape[0]
    big = max(n_in, n_out)
    gd, dh, pz = state.gd, state.dh, state.pz
    m = state.m_l[l]
    k_mat = np.zeros((rows, rows))
    fh_pinv = np.zeros((rows, rows))
    gx_pinv = np.zeros((rows, rows))   # (x x^T)^+; 0 when the forward saw no signal
    if m > 0.0 and gain > 0.0:
        # delta Z_a^T A^T = delta h^T - beta (delta bhat) 1^T = c delta V^T Fh^T
        m1 = dh.copy()
        beta = state.beta_l[l]
        if beta != 0.0 and sq > 0.0:
            delta_dot_normal_row(grad, d, key(seed, trial, l, rng.STREAM_BIAS), state.bz)
            rms = math.sqrt(sq / (rows * n_out))
            for i in range(rows):
                for k in range(rows):
                    m1[i, k] -= beta * state.bz[i] / rms
        fh, _ = input_factor(state.grams[l], m)
        fh_pinv = np.ascontiguousarray(np.linalg.pinv(fh))
        c = math.exp(state.log_s[l] + math.log(gain) - state.t_l[l]) * math.sqrt(m)
        fh_pinv_t = np.ascontiguousarray(fh_pinv.T)
        k_mat = np.dot(m1, fh_pinv_t) / c
        gx_pinv = np.dot(fh_pinv_t, fh_pinv) / m
    # the part of delta outside the forward's frame (Gram S) and the frame it goes to
    s_mat = gd - np.dot(k_mat, np.ascontiguousarray(k_mat.T))
    _symmetrize(s_mat)
    l_perp = np.empty((rows, rows))
    factor(s_mat, l_perp)
    p_mat = np.dot(pz, gx_pinv)
    zz = state.zz
    cross_gram(z, z, zz)
    if big > n_in:
        normal_gram(key(seed, trial, l, rng.STREAM_COND_REST_EXTRA), rows, big - n_in, zz)
    q_mat = zz - np.dot(p_mat, np.ascontiguousarray(pz.T))
    _symmetrize(q_mat)
    lq = np.empty((rows, rows))
    factor(q_mat, lq)   # Z' projected off span(x): full rank when 2B <= N
    c_mat = np.dot(l_perp, lower_inverse(lq))
    copy_rows(state.cd, c_mat)
    copy_rows(state.rmat, np.dot(k_mat, fh_pinv) / math.sqrt(max(m, 1e-300)) - np.dot(c_mat, p_mat))
