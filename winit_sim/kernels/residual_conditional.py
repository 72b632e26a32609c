"""A residual block's matrices on the conditional engine: no weight matrix is formed.

Arithmetic only. :mod:`.residual` runs the blocks, and calls :func:`affine` and
:func:`backprop` in place of the matrix engine's products when its run is
conditional (see :mod:`.conditional` for the identity).

Block l's matrix j (fan-in p, fan-out q, std sw; bias std sb) sees an input X
(B x p) that the stream makes explicit. Given X, the forward H = X M^T + 1 b^T
has independent columns N(0, sw^2 G~), G~ = X X^T + (sb/sw)^2 J, so H = C Z with
C C^T the scaled G~ and Z (B x q) standard normals from key (seed, trial, l + 1,
STREAM_COND_PRE or STREAM_COND_PRE2). The backward's g M, for M conditioned on
that forward, is

    g M = sw (C' Z' + R a x),   R = (sqrt(m) g h^T - C' Z'~ Xs^T) Gs^+ / m,

with C' C'^T = g g^T, Z' (B x p) from STREAM_COND_REST(2) and its bias column
from STREAM_COND_REST_BIAS(2), in the scaled units of :mod:`.conditional`
(Xs = [a x, c 1], Gs = Xs Xs^T, h = C Z, m = mean(diag Gs)). Only B x B
matrices are kept per matrix (its input's Gram, the factor and four scalars),
so a block costs O(B^2 n) per matrix and the memory is that of the stream.

A matrix of std 0 (fixup's last) is exactly zero: H is its bias and g M = 0.
The weight gradient's sum of squares is sum((g g^T) * (x x^T)), from the Grams.
Every sum over units is added in column blocks in a fixed order, so nothing
depends on the thread count.
"""
from collections import namedtuple
import math

import numpy as np
from numba import prange

from . import njit, rng
from .blocks import (BLOCK, column_blocks, cross_gram, draw_row_block, factor, gram_block,
                     pinv_from_factor, sum_blocks)
from .conditional import draw_mix, mix_rows, scaled_gram
from .layer import key

# per matrix of each block of a segment: its input's x x^T, the factor C of Gs / m,
# and (m, a, c, Cholesky?); the buffers of the backward
CondState = namedtuple("CondState", ["grams", "cfs", "rec", "g", "gd", "gz", "cd", "pz", "rmat",
                                     "zb", "zbuf", "part_a", "part_b"])
R_M, R_A, R_C, R_CHOL = range(4)


def new_state(seg_len, branch, rows, widest, proto):
    """Buffers of a conditional residual run (``widest``: the largest matrix side); plain
    Python (allocation only: nothing to compile)."""
    B = rows
    nch = column_blocks(widest)
    return CondState(
        grams=np.zeros((seg_len, branch, B, B)),
        cfs=np.zeros((seg_len, branch, B, B)),
        rec=np.zeros((seg_len, branch, 4)),
        g=np.empty((B, B)), gd=np.empty((B, B)), gz=np.empty((B, B)), cd=np.empty((B, B)),
        pz=np.empty((B, B)), rmat=np.empty((B, B)),
        zb=np.empty((B, 1), proto.dtype),
        zbuf=np.empty(B * widest, proto.dtype),
        part_a=np.zeros((nch, B, B)),
        part_b=np.zeros((nch, B, B)))


@njit(cache=True)
def _streams(j):
    """(pre, rest, rest-bias) stream ids of a block's matrix j."""
    if j == 0:
        return rng.STREAM_COND_PRE, rng.STREAM_COND_REST, rng.STREAM_COND_REST_BIAS
    return rng.STREAM_COND_PRE2, rng.STREAM_COND_REST2, rng.STREAM_COND_REST_BIAS2


@njit(parallel=True, cache=True)
def _draw_product(key_pre, cf, h):
    """h = cf @ Z, Z standard normals of ``key_pre`` at counter k * n + j, by column blocks."""
    rows, n = h.shape
    for ch in prange(column_blocks(n)):
        j0 = ch * BLOCK
        j1 = min(n, j0 + BLOCK)
        tile = np.empty((rows, j1 - j0), h.dtype)
        bits = np.empty(rng.CHUNK, np.uint64)
        rejected = np.empty(rng.CHUNK, np.int32)
        draw_mix(key_pre, cf, True, j0, j1, tile, bits, rejected, h)


@njit(cache=True)
def keep_gram(cs, k, j, x):
    """Record x x^T of matrix j's input in slot k (all a zero matrix keeps)."""
    cross_gram(x, x, cs.grams[k, j])


@njit(cache=True)
def affine(cs, net, seed, trial, l, j, k, x, s, out):
    """out = h with e^t h = e^s x M^T + 1 b^T for matrix j of block l (std > 0), drawn given
    x; returns t. Slot k keeps what the backward conditions on."""
    B = x.shape[0]
    sw = net.scale[l, j]
    gram = cs.grams[k, j]
    cross_gram(x, x, gram)
    g = cs.g
    aa, cc, u, m = scaled_gram(gram, s, sw, net.bias_std, g)
    rec, cf = cs.rec[k, j], cs.cfs[k, j]
    rec[R_M], rec[R_A], rec[R_C], rec[R_CHOL] = m, aa, cc, 0.0
    if m == 0.0:   # no signal and no bias: H = 0, and nothing to condition on
        cf[:, :] = 0.0
        out[:, :] = 0.0
        return 0.0
    for i in range(B):
        for r in range(B):
            g[i, r] /= m
    rec[R_CHOL] = 1.0 if factor(g, cf) else 0.0
    _draw_product(key(seed, trial, l, _streams(j)[0]), cf, out)
    return u + math.log(sw) + 0.5 * math.log(m)


@njit(parallel=True, cache=True)
def _output_sums(key_pre, g, part_gz, part_gg):
    """Per column block c of g (B x q): part_gz[c] = g Z^T (Z: the forward's normals, drawn
    again) and part_gg[c] = g g^T (upper triangle)."""
    rows, n = g.shape
    for ch in prange(column_blocks(n)):
        j0 = ch * BLOCK
        j1 = min(n, j0 + BLOCK)
        tile = np.empty((rows, j1 - j0), g.dtype)
        bits = np.empty(rng.CHUNK, np.uint64)
        rejected = np.empty(rng.CHUNK, np.int32)
        for i in range(rows):
            draw_row_block(key_pre, i, n, j0, tile[i], bits, rejected)
        gram_block(g, j0, tile, 0, j1 - j0, part_gz[ch], False)
        gram_block(g, j0, g, j0, j1 - j0, part_gg[ch], True)


@njit(parallel=True, cache=True)
def _input_sums(key_rest, x, z, part_zx):
    """z = Z' (B x p, standard normals of ``key_rest``) and per column block c
    part_zx[c] = Z' x^T."""
    rows, n = x.shape
    for ch in prange(column_blocks(n)):
        j0 = ch * BLOCK
        j1 = min(n, j0 + BLOCK)
        bits = np.empty(rng.CHUNK, np.uint64)
        rejected = np.empty(rng.CHUNK, np.int32)
        for i in range(rows):
            draw_row_block(key_rest, i, n, j0, z[i, j0:j1], bits, rejected)
        gram_block(z, j0, x, j0, j1 - j0, part_zx[ch], False)


@njit(cache=True)
def backprop(cs, net, seed, trial, l, j, k, g, x, out):
    """out = g M for matrix j of block l conditioned on its forward (slot k; x its input as
    the forward saw it), skipped when ``out`` is empty. Returns sum((g^T x)^2)."""
    B, q = g.shape
    p = x.shape[1]
    pre, rest, rest_bias = _streams(j)
    gd, gz = cs.gd, cs.gz
    nch = column_blocks(q)
    _output_sums(key(seed, trial, l, pre), g, cs.part_a, cs.part_b)
    sum_blocks(cs.part_a[:nch], gz, False)
    sum_blocks(cs.part_b[:nch], gd, True)
    gram = cs.grams[k, j]
    wsq = 0.0
    for i in range(B):
        for r in range(B):
            wsq += gd[i, r] * gram[i, r]
    wsq = max(wsq, 0.0)
    if out.size == 0:
        return wsq
    sw = net.scale[l, j]
    if sw == 0.0:
        out[:, :] = 0.0
        return wsq
    rec, cf = cs.rec[k, j], cs.cfs[k, j]
    m, aa, cc = rec[R_M], rec[R_A], rec[R_C]
    cd, pz, rmat = cs.cd, cs.pz, cs.rmat
    # the unseen part M' of the weights: g M' = C' Z'~, C' C'^T = g g^T
    factor(gd, cd)
    z = cs.zbuf[:B * p].reshape((B, p))
    _input_sums(key(seed, trial, l, rest), x, z, cs.part_a)
    sum_blocks(cs.part_a[:column_blocks(p)], pz, False)
    # Z'~ Xs^T = a Z' x^T + c z'_b 1^T
    for i in range(B):
        for r in range(B):
            pz[i, r] *= aa
    if cc > 0.0:
        rng.fill_normal_serial(key(seed, trial, l, rest_bias), cs.zb, 1.0)
        for i in range(B):
            for r in range(B):
                pz[i, r] += cc * cs.zb[i, 0]
    # R = (sqrt(m) g h^T - C' Z'~ Xs^T) (C C^T)^+ a / m, with g h^T = (g Z^T) C^T
    root = math.sqrt(m)
    dh = root * np.dot(gz, cf.T) - np.dot(cd, pz)
    pinv_from_factor(cf, rec[R_CHOL] != 0.0, cs.g)
    np.dot(dh, cs.g, rmat)
    scale = sw * aa / m if m > 0.0 else 0.0
    for i in range(B):
        for r in range(B):
            rmat[i, r] *= scale
            cd[i, r] *= sw
    # None: the residual engine keeps the register loops at every batch (no BLAS path)
    mix_rows(cd, z, rmat, x, out, False, x, x, cs.part_a, cs.part_b, None)
    return wsq
