"""Block arithmetic of the conditional engines: B x n matrices in column blocks, B x B factors.

Every O(B^2 n) loop of :mod:`.conditional`, :mod:`.residual_conditional` and
:mod:`.orthogonal` runs over blocks of BLOCK columns; the block count depends on
n only and per-block sums are added in block order, so no result depends on the
thread count. The B x B factors (:func:`factor`, :func:`pinv_from_factor`) are
what conditioning on a layer's input needs. :func:`rows_dot` splits a product's rows
into fixed blocks the same way, for the matrix engine.
"""
import math

import numpy as np
from numba import prange, types

from . import FAST, copy_into, njit, rng

# columns per block of every O(B^2 n) loop: a block of B rows stays in L1, and the
# block count depends on n only, so sums never depend on the thread count
BLOCK = 512
_EPS = 2.220446049250313e-16
CHOL_PIVOT = 1e-9   # relative pivot below which a factor comes from eigh instead of Cholesky


@njit(cache=True)
def column_blocks(n):
    """Column blocks of a width-n layer (the last may be partial)."""
    return (n + BLOCK - 1) // BLOCK


@njit(inline="always", fastmath=FAST)
def _dot(a, b):
    """Dot product of two 1-D blocks in their dtype (see cross_gram)."""
    acc = a.dtype.type(0.0)
    for j in range(a.size):
        acc += a[j] * b[j]
    return acc


@njit(inline="always", fastmath=FAST)
def _dot2x2(a0, a1, b0, b1):
    """The four dot products of rows a0, a1 with rows b0, b1, in their dtype: each load
    feeds two multiply-adds (about 1.7x the rate of _dot, measured)."""
    z = a0.dtype.type(0.0)
    s00 = z
    s01 = z
    s10 = z
    s11 = z
    for j in range(a0.size):
        u = a0[j]
        v = a1[j]
        p = b0[j]
        q = b1[j]
        s00 += u * p
        s01 += u * q
        s10 += v * p
        s11 += v * q
    return s00, s01, s10, s11


@njit(inline="always")
def plain(i):
    """``i`` as a plain int64: a constant argument (0, a literal True) would otherwise
    make Numba compile the callee once more for that constant (a cold-compile cost)."""
    return np.int64(i)


@njit(inline="always")
def gram_block(a, a0, b, b0, m, out, upper):
    """:func:`_gram_block` with its offsets and flag as plain values (see :func:`plain`)."""
    _gram_block(a, plain(a0), b, plain(b0), plain(m), out, np.bool_(upper))


@njit(cache=True, fastmath=FAST)
def _gram_block(a, a0, b, b0, m, out, upper):
    """out[i, k] = a[i, a0:a0+m] . b[k, b0:b0+m] in the inputs' dtype, in 2 x 2 blocks.

    With ``upper`` only k >= i is needed: entries just below the diagonal are
    written as well and must be ignored (as sum_blocks does). (4 x 2 blocks give the
    same bits, but measured no faster at batch 256 and cost 20 s more on a cold start:
    every kernel that forms a Gram links this one.)
    """
    ra = a.shape[0]
    rb = b.shape[0]
    a1 = a0 + m
    b1 = b0 + m
    i = 0
    while i + 1 < ra:
        k = i if upper else 0
        while k + 1 < rb:
            out[i, k], out[i, k + 1], out[i + 1, k], out[i + 1, k + 1] = _dot2x2(
                a[i, a0:a1], a[i + 1, a0:a1], b[k, b0:b1], b[k + 1, b0:b1])
            k += 2
        if k < rb:
            out[i, k] = _dot(a[i, a0:a1], b[k, b0:b1])
            out[i + 1, k] = _dot(a[i + 1, a0:a1], b[k, b0:b1])
        i += 2
    if i < ra:
        for k in range(i if upper else 0, rb):
            out[i, k] = _dot(a[i, a0:a1], b[k, b0:b1])


@njit(inline="always", fastmath=FAST)
def add_scaled(out, coef, src):
    """out += coef * src for 1-D blocks, in out's dtype; a zero coef (the upper half of a
    Cholesky factor) is skipped."""
    if coef == 0.0:
        return
    c = out.dtype.type(coef)
    for j in range(out.size):
        out[j] += c * src[j]


@njit(cache=True, fastmath=FAST)
def _mix_row(out, coef, src, s0):
    """out += coef . src[:, s0:s0+m] (m = out.size) in out's dtype.

    Four source rows per pass over out (a quarter of the loads and stores of
    one row at a time: 1.4x the rate, measured); groups of four zero
    coefficients (the upper half of a Cholesky factor, dead samples) skipped.
    """
    rows = src.shape[0]
    m = out.size
    s1 = s0 + m
    k = 0
    while k + 3 < rows:
        c0, c1, c2, c3 = coef[k], coef[k + 1], coef[k + 2], coef[k + 3]
        if c0 != 0.0 or c1 != 0.0 or c2 != 0.0 or c3 != 0.0:
            a0 = out.dtype.type(c0)
            a1 = out.dtype.type(c1)
            a2 = out.dtype.type(c2)
            a3 = out.dtype.type(c3)
            r0 = src[k, s0:s1]
            r1 = src[k + 1, s0:s1]
            r2 = src[k + 2, s0:s1]
            r3 = src[k + 3, s0:s1]
            for j in range(m):
                out[j] += a0 * r0[j] + a1 * r1[j] + a2 * r2[j] + a3 * r3[j]
        k += 4
    while k < rows:
        add_scaled(out, coef[k], src[k, s0:s1])
        k += 1


@njit(inline="always")
def mix_block(out, j0, j1, coef, src, s0):
    """:func:`_mix_block` with plain offsets (see :func:`plain`)."""
    _mix_block(out, plain(j0), plain(j1), coef, src, plain(s0))


MIX_MIN_COLUMNS = 16   # narrower blocks take _mix_row row by row (see _mix_block)


@njit(cache=True, fastmath=FAST)
def _mix_block(out, j0, j1, coef, src, s0):
    """out[i, j0:j1] += coef[i] . src[:, s0:s0+m] for every row i: :func:`_mix_row` four
    rows of out at a time, so each load of src feeds four rows (1.6x its rate at
    256 x 256 x 512, measured).

    Each entry gets _mix_row's sums in its order and the same bits: checked for every
    block width from 1 to 79 on AVX-512 and on the corpus's generic x86-64, where LLVM
    evaluates blocks of 4 to 7 columns differently; blocks narrower than
    MIX_MIN_COLUMNS therefore run _mix_row itself. A group of four source rows is
    skipped when its coefficients for all four rows are 0 (adding 0 x src is exact).
    """
    rows = out.shape[0]
    n_src = src.shape[0]
    m = j1 - j0
    s1 = s0 + m
    i = 0
    while m >= MIX_MIN_COLUMNS and i + 3 < rows:
        o0 = out[i, j0:j1]
        o1 = out[i + 1, j0:j1]
        o2 = out[i + 2, j0:j1]
        o3 = out[i + 3, j0:j1]
        c0, c1, c2, c3 = coef[i], coef[i + 1], coef[i + 2], coef[i + 3]
        k = 0
        while k + 3 < n_src:
            live = False
            for p in range(k, k + 4):
                if c0[p] != 0.0 or c1[p] != 0.0 or c2[p] != 0.0 or c3[p] != 0.0:
                    live = True
            if live:
                t = out.dtype.type
                a00, a01, a02, a03 = t(c0[k]), t(c0[k + 1]), t(c0[k + 2]), t(c0[k + 3])
                a10, a11, a12, a13 = t(c1[k]), t(c1[k + 1]), t(c1[k + 2]), t(c1[k + 3])
                a20, a21, a22, a23 = t(c2[k]), t(c2[k + 1]), t(c2[k + 2]), t(c2[k + 3])
                a30, a31, a32, a33 = t(c3[k]), t(c3[k + 1]), t(c3[k + 2]), t(c3[k + 3])
                r0 = src[k, s0:s1]
                r1 = src[k + 1, s0:s1]
                r2 = src[k + 2, s0:s1]
                r3 = src[k + 3, s0:s1]
                for j in range(m):
                    v0 = o0[j]
                    v1 = o1[j]
                    v2 = o2[j]
                    v3 = o3[j]
                    u0 = r0[j]
                    u1 = r1[j]
                    u2 = r2[j]
                    u3 = r3[j]
                    o0[j] = v0 + (a00 * u0 + a01 * u1 + a02 * u2 + a03 * u3)
                    o1[j] = v1 + (a10 * u0 + a11 * u1 + a12 * u2 + a13 * u3)
                    o2[j] = v2 + (a20 * u0 + a21 * u1 + a22 * u2 + a23 * u3)
                    o3[j] = v3 + (a30 * u0 + a31 * u1 + a32 * u2 + a33 * u3)
            k += 4
        while k < n_src:
            add_scaled(o0, c0[k], src[k, s0:s1])
            add_scaled(o1, c1[k], src[k, s0:s1])
            add_scaled(o2, c2[k], src[k, s0:s1])
            add_scaled(o3, c3[k], src[k, s0:s1])
            k += 1
        i += 4
    while i < rows:
        _mix_row(out[i, j0:j1], coef[i], src, s0)
        i += 1


@njit(inline="always")
def sum_blocks(part, out, upper):
    """out = sum over blocks of part, in block order (only i <= k when ``upper``)."""
    out[:, :] = 0.0
    for c in range(part.shape[0]):
        for i in range(part.shape[1]):
            for k in range(i if upper else 0, part.shape[2]):
                out[i, k] += part[c, i, k]
    if upper:
        for i in range(out.shape[0]):
            for k in range(i):
                out[i, k] = out[k, i]


@njit(inline="always")
def draw_row_block(key, i, n, j0, row, bits, rejected):
    """row = standard normals at counters i * n + j0 + (0, 1, ...), as fill_normal draws them."""
    rng.fill_normal_row(key, np.uint64(i) * np.uint64(n) + np.uint64(j0), row, 1.0, bits,
                          rejected)


@njit(parallel=True, cache=True, fastmath=FAST)
def cross_gram(a, b, out):
    """out = a @ b.T (rows x rows), column blocks summed in float64 in a fixed order.

    Within a block of BLOCK columns the dot products run in the inputs' dtype
    (float32 runs: twice the SIMD lanes; relative error ~1e-6, below what
    float32 storage of the signal already costs). 1-D row slices let LLVM
    vectorise them.
    """
    ra, n = a.shape
    rb = b.shape[0]
    same = a.shape == b.shape and a.ctypes.data == b.ctypes.data
    nch = column_blocks(n)
    part = np.zeros((nch, ra, rb))
    for c in prange(nch):
        j0 = c * BLOCK
        j1 = min(n, j0 + BLOCK)
        gram_block(a, j0, b, j0, j1 - j0, part[c], same)
    sum_blocks(part, out, same)


@njit(cache=True)
def _cholesky(g, f):
    """Lower-triangular f with f f^T = g; False (f unusable) if a pivot is below CHOL_PIVOT.

    Right-looking, on the upper triangle u = f^T row by row, four pivot rows at a
    time: each trailing row takes their four updates in one pass,
    ``u[i, k] - c0 r0[k] - c1 r1[k] - c2 r2[k] - c3 r3[k]`` evaluated left to right.
    Entry (i, j) is therefore g[i, j] minus f[i, k] f[j, k] for k = 0, 1, ... in that
    order, then divided by f[j, j]: the operations of the textbook (Crout) loop, so
    the same bits, with a quarter of the trailing matrix's memory traffic of one
    pivot row at a time (the loop is bound by it, not by arithmetic).
    """
    B = g.shape[0]
    top = 0.0
    for i in range(B):
        top = max(top, g[i, i])
    u = np.empty((B, B))
    for i in range(B):
        for k in range(i, B):
            u[i, k] = g[k, i]   # the lower triangle's values, read row-wise
    f[:, :] = 0.0
    for j0 in range(0, B, 4):
        j1 = min(B, j0 + 4)
        # the group's own rows, one pivot at a time (the unblocked loop)
        for j in range(j0, j1):
            s = u[j, j]
            if not s > CHOL_PIVOT * top:
                return False
            d = math.sqrt(s)
            uj = u[j]
            uj[j] = d
            for k in range(j + 1, B):
                uj[k] = uj[k] / d
            for i in range(j + 1, j1):
                c = uj[i]
                ui = u[i]
                for k in range(i, B):
                    ui[k] -= c * uj[k]
        # the rows below (a short group is the last): the group's updates in one pass
        if j1 < B:
            r0, r1, r2, r3 = u[j0], u[j0 + 1], u[j0 + 2], u[j0 + 3]
            for i in range(j1, B):
                c0, c1, c2, c3 = r0[i], r1[i], r2[i], r3[i]
                ui = u[i]
                for k in range(i, B):
                    ui[k] = ui[k] - c0 * r0[k] - c1 * r1[k] - c2 * r2[k] - c3 * r3[k]
    for i in range(B):
        for j in range(i + 1):
            f[i, j] = u[j, i]
    return True


@njit(cache=True)
def factor(g, f):
    """f with f f^T = g (symmetric PSD); returns True for a Cholesky factor.

    Well-conditioned g (every Cholesky pivot above CHOL_PIVOT x the largest
    diagonal entry) gets its Cholesky factor, which is cheap. Otherwise
    f = V sqrt(L) from the eigendecomposition, eigenvalues below
    ``batch * eps * largest`` set to 0, each eigenvector's sign fixed (largest
    entry positive) so the factor does not depend on the LAPACK build, and rows
    with a zero diagonal (samples with no signal) exactly 0.
    """
    if _cholesky(g, f):
        return True
    lam, v = np.linalg.eigh(g)
    top = lam.max()
    tol = g.shape[0] * _EPS * top
    for k in range(lam.size):
        root = math.sqrt(lam[k]) if top > 0.0 and lam[k] > tol else 0.0
        big = 0
        for i in range(lam.size):
            if abs(v[i, k]) > abs(v[big, k]):
                big = i
        if v[big, k] < 0.0:
            root = -root
        for i in range(lam.size):
            f[i, k] = v[i, k] * root
    for i in range(lam.size):   # (f f^T)_ii = 0 forces row i of f to 0: drop eigh's rounding
        if g[i, i] == 0.0:
            f[i, :] = 0.0
    return False


@njit(cache=True)
def lower_inverse(f):
    """The inverse of a lower-triangular f with a nonzero diagonal, row by row (forward
    substitution), four earlier rows at a time: row i is
    ``inv[i] - c0 inv[k] - c1 inv[k+1] - c2 inv[k+2] - c3 inv[k+3]`` evaluated left to
    right, the one-row-at-a-time loop's operations in its order (a row of L^-1 is 0
    beyond its diagonal, and subtracting an exact 0 changes nothing), so the same bits
    with a quarter of the passes over row i."""
    rows = f.shape[0]
    inv = np.zeros((rows, rows))
    for i in range(rows):
        inv[i, i] = 1.0
        out = inv[i]
        k = 0
        while k + 3 < i:
            c0, c1, c2, c3 = f[i, k], f[i, k + 1], f[i, k + 2], f[i, k + 3]
            if c0 != 0.0 or c1 != 0.0 or c2 != 0.0 or c3 != 0.0:
                r0, r1, r2, r3 = inv[k], inv[k + 1], inv[k + 2], inv[k + 3]
                for j in range(k + 4):
                    out[j] = out[j] - c0 * r0[j] - c1 * r1[j] - c2 * r2[j] - c3 * r3[j]
            k += 4
        while k < i:
            c = f[i, k]
            if c != 0.0:
                rk = inv[k]
                for j in range(k + 1):
                    out[j] -= c * rk[j]
            k += 1
        for j in range(i + 1):
            out[j] /= f[i, i]
    return inv


@njit(cache=True)
def pinv_from_factor(f, chol, out):
    """out = (f f^T)^+ for f from :func:`factor` (``chol``: f is its Cholesky factor).

    The B x B products go to BLAS (pinned to one thread by the caller; 30x the
    loops' speed at batch 128).
    """
    rows = f.shape[0]
    if chol:   # (L L^T)^-1 = L^-T L^-1
        inv = lower_inverse(f)
        np.dot(inv.T, inv, out)
        return
    scaled = np.zeros((rows, f.shape[1]))   # eigen factor: columns v_k sqrt(lam_k)
    for k in range(f.shape[1]):
        lam = 0.0
        for i in range(rows):
            lam += f[i, k] * f[i, k]
        if lam > 0.0:
            for i in range(rows):
                scaled[i, k] = f[i, k] / lam
    np.dot(scaled, scaled.T, out)


# BLAS dgemm through Numba's own binding (what np.dot calls), with its leading dimensions
# and alpha, beta: in-place updates of blocks of larger arrays, which np.dot cannot do
_dgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,
    types.CPointer(types.float64), types.CPointer(types.float64), types.intp,
    types.CPointer(types.float64), types.intp, types.CPointer(types.float64),
    types.CPointer(types.float64), types.intp))


@njit(inline="always")
def _lead(a):
    """The leading dimension BLAS sees for a float64 array whose rows are contiguous
    (the column-major view of row-major storage)."""
    return max(a.strides[0] // 8, a.shape[1], 1)


@njit(inline="always")
def gemm(alpha, a, transpose_a, b, transpose_b, beta, c):
    """c = alpha op(a) @ op(b) + beta c in float64, one BLAS call; op(a) is a or a.T.

    Each array may be a block of a larger one (any row stride) whose rows are
    contiguous. Row-major c = op(a) op(b) is column-major c^T = op(b)^T op(a)^T, and a
    row-major array read column-major is its transpose: the flags carry over. Inlined:
    its callers pass several array layouts, each of which would be a compile.
    """
    m, n = c.shape
    inner = b.shape[1] if transpose_b else b.shape[0]
    if m == 0 or n == 0:
        return
    if inner == 0:
        for i in range(m):
            for j in range(n):
                c[i, j] = beta * c[i, j] if beta != 0.0 else 0.0
        return
    coef = np.empty(2)
    coef[0] = alpha
    coef[1] = beta
    _dgemm(ord("d"), ord("T") if transpose_b else ord("N"),
           ord("T") if transpose_a else ord("N"), n, m, inner, coef.ctypes, b.ctypes,
           _lead(b), a.ctypes, _lead(a), coef[1:].ctypes, c.ctypes, _lead(c))


_DOT_BLOCKS = 4  # fixed (not the thread count), so the split never changes a result


@njit(parallel=True, cache=True)
def rows_dot(a, b, out):
    """out = a @ b, as single-threaded BLAS calls on fixed blocks of rows of a."""
    n = a.shape[0]
    step = (n + _DOT_BLOCKS - 1) // _DOT_BLOCKS
    for k in prange(_DOT_BLOCKS):
        i0 = k * step
        i1 = min(n, i0 + step)
        if i0 < i1:
            np.dot(a[i0:i1], b, out[i0:i1])


@njit(parallel=True, cache=True)
def upper_rows_dot(a, b, out):
    """out = a @ b for an upper-triangular a (r x k, r <= k: a[i, j] = 0 for j < i), as
    single-threaded BLAS calls on fixed blocks of rows of a, each from its first
    column on (about half of :func:`rows_dot`'s flops). The blocks' boundaries split the
    work k - i of the rows evenly, so contiguous blocks balance across threads; they
    depend on the sizes alone."""
    r, k = a.shape
    total = r * k - r * (r - 1) // 2        # sum of k - i over the rows
    for blk in prange(_DOT_BLOCKS):
        i0 = _upper_block_start(np.int64(blk), r, k, total)
        i1 = _upper_block_start(np.int64(blk) + 1, r, k, total)
        if i0 < i1:
            gemm(1.0, a[i0:i1, i0:], False, b[i0:], False, 0.0, out[i0:i1])


@njit(inline="always")
def _upper_block_start(blk, r, k, total):
    """The first row of block ``blk`` of :func:`upper_rows_dot`: the first row i whose
    work before it, sum_{j<i} (k - j), reaches blk / _DOT_BLOCKS of the total."""
    if blk >= _DOT_BLOCKS:
        return r
    i = 0
    done = 0
    while i < r and done * _DOT_BLOCKS < blk * total:
        done += k - i
        i += 1
    return i


# from this many rows the conditional engines' full block products are BLAS calls: per
# 512-column block on one thread, BLAS took 0.4x to 0.6x the time of the register loops at
# 128 and 256 rows, about the same at 64, and up to twice their time at 8 to 32 (float32
# and float64, measured)
BLAS_MIN_ROWS = 128


def blas_products(rows):
    """The conditional engines' type-level flag for a batch of ``rows``: True from
    BLAS_MIN_ROWS (the full block products are BLAS calls), else None. Passed down as an
    argument, None prunes the BLAS branch, so smaller batches compile none of it."""
    return True if rows >= BLAS_MIN_ROWS else None


@njit(cache=True)
def _cross_block(a, a0, b, b0, m, out):
    """out = a[:, a0:a0+m] @ b[:, b0:b0+m]^T (stored in out's dtype) by one BLAS call in
    the inputs' dtype, on contiguous copies of the two blocks (the copies cost O(B m),
    the product O(B^2 m)). The caller pins BLAS to one thread, so the sums' order is
    BLAS's own and never depends on the thread count."""
    ta = np.empty((a.shape[0], m), a.dtype)
    tb = np.empty((b.shape[0], m), b.dtype)
    for i in range(a.shape[0]):
        copy_into(ta[i], a[i, a0:a0 + m])
    for i in range(b.shape[0]):
        copy_into(tb[i], b[i, b0:b0 + m])
    prod = np.dot(ta, tb.T)
    for i in range(out.shape[0]):
        for k in range(out.shape[1]):
            out[i, k] = prod[i, k]


@njit(inline="always")
def cross_block(a, a0, b, b0, m, out):
    """:func:`_cross_block` with plain offsets (see :func:`plain`)."""
    _cross_block(a, plain(a0), b, plain(b0), plain(m), out)


@njit(cache=True)
def _add_product_block(out, j0, j1, coef, src, s0):
    """out[:, j0:j1] += coef @ src[:, s0:s0+m] by one BLAS call in out's dtype (``coef`` in
    out's dtype already), on a contiguous copy of src's block."""
    m = j1 - j0
    ts = np.empty((src.shape[0], m), src.dtype)
    for i in range(src.shape[0]):
        copy_into(ts[i], src[i, s0:s0 + m])
    prod = np.dot(coef, ts)
    for i in range(out.shape[0]):
        oi = out[i, j0:j1]
        pi = prod[i]
        for j in range(m):
            oi[j] += pi[j]


@njit(inline="always")
def add_product_block(out, j0, j1, coef, src, s0):
    """:func:`_add_product_block` with plain offsets (see :func:`plain`)."""
    _add_product_block(out, plain(j0), plain(j1), coef, src, plain(s0))
