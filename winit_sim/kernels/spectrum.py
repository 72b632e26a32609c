"""Singular values of the input-output Jacobian J = D_L W_L ... D_1 W_1 at any depth.

Arithmetic only; :func:`winit_sim.jacobian_spectrum` validates and frames.

Why not a product of matrices
-----------------------------
At depth 10,000 the singular values of a Gaussian ReLU or linear net span
thousands of decades. A product in float64 keeps only those within 1e-16 of
the largest (and overflows); normalising the product only rescales the top.
Every factor here is kept orthonormal or bounded, and every scale is a natural
log.

The product as U diag(e^s) T (the stratification of quantum Monte Carlo)
------------------------------------------------------------------------
After l layers ``J_l = U_l diag(exp(s_l)) T_l`` with U_l (n_l x k) orthonormal
columns, s_l (k) log-scales and T_l (k x n_0) of O(1) entries. One layer,
``M = D W`` with D = diag(phi'(h)):

1. X = M U_l, so J_{l+1} = X diag(e^s) T_l.
2. Sort the columns of X diag(e^s) by their norm, log ||x_j|| + s_j, largest
   first (permutation P; pre-pivoting). The column scaling never needs to be
   formed: it does not change the Q of a QR decomposition.
3. X P = Q R (Householder: :func:`.householder.qr_columns`). Then X diag(e^s) P =
   Q R diag(e^{s_P}), and with s' = log|R_ii| + s_P(i), F = diag(e^{-s'}) R
   diag(e^{s_P}) has entries F_ij = R_ij / |R_ii| * exp(s_P(j) - s_P(i)): a product
   of R_ij and two normal floats where the scales span under ``_FACTOR_SPAN``, else
   from logs. Sorting makes them O(1) (|F_ij| <= ||x_Pi|| / |R_ii|, the local
   conditioning): the large scales sit in s', never in a matrix entry.
4. U_{l+1} = Q, s_{l+1} = s', T_{l+1} = F P^T T_l.

J_0 = I: U and T start as the identity, stored as arrays with no rows (no product
with them is ever computed). Once T has at least twice as many columns as rows (ReLU
halves the rank at once), it is replaced by L of T = L Z (Z orthonormal rows, so the
singular values stay; :func:`compress`), and later products cost k^2 per row of T
instead of k n_0.

Rows of D that are exactly 0 (ReLU's inactive units, saturated hard
activations) are dropped before the QR, so an exact rank loss stays exact: those
singular values are reported as 0 (log -inf), not as rounding noise. The rank
is also capped per layer (``rank_cap``: constant weights have rank 1, zeros 0).
The product of step 1 then only needs W's rows of active units and its columns
of the previous layer's active units (a quarter of W for ReLU). A sampled orthogonal
W is never formed: its Householder reflectors are applied to U
(:func:`.householder.times_columns`, fewer flops than forming W and multiplying).

Products that wait (isometric layers)
-------------------------------------
A layer whose W is a multiple of an isometry (sampled orthogonal, fan_out >=
fan_in) and whose units are all active has cond(D W) = cond(D) = max|d| / min|d|
on any input subspace. Its product X = D W X_prev skips steps 2-4 while the
product of those bounds since the last QR stays below ``DELAY_MAX_COND`` and the
entries stay within [1e-100, 1e100]: a column of X is then computed to a relative
error of at most about eps times that bound (1e4 eps = 2e-12), where a QR per layer
leaves eps cond(D) per layer. Tanh with orthogonal weights near isometry then
needs a QR only every few tens of layers. At a depth in ``tops`` such a product
gives its spectrum without a QR where that spectrum spans under 1 / LAPACK_MIN_RATIO
(:func:`_direct_spectrum`: dgesdd on X diag(e^s) T formed by BLAS, whose error
bound is the one a QR of X leaves), and may then wait on; else the depth gets its
QR. This reorders no sum of a stratified layer; it changes which layers are
stratified, so results differ from a QR per layer by rounding (bounded above).

Singular values of diag(e^s) T
------------------------------
Where they span less than 1 / ``LAPACK_MIN_RATIO`` (1e4: tanh or linear nets near
isometry), LAPACK's dgesdd on diag(e^(s - max s)) T: its error, about eps
sigma_max per value, is then below eps / LAPACK_MIN_RATIO relative (checked on the
computed values). Beyond that, one-sided Jacobi (Hestenes) on the rows
a_i = e^{s_i} t_i, each row carrying its log-scale. For a pair with s_i >= s_j,
r = e^{s_j - s_i} <= 1 (it may underflow to 0), a = |t_i|^2, b = |t_j|^2,
g = t_i . t_j; the rotation that makes the two rows orthogonal has tangent
t = tau r with

    tau = 2 g / (b r^2 - a) / (1 + sqrt(1 + w^2)),   w = 2 g r / (b r^2 - a),

and gives t_i <- c (t_i - tau r^2 t_j) (scale s_i), t_j <- c (tau t_i + t_j)
(scale s_j), c = 1 / sqrt(1 + t^2). As r -> 0 it becomes Gram-Schmidt of the
small row against the large one, so no quantity ever leaves float range. Sweeps
run until every pair's cosine |g| / sqrt(a b) is below ``JACOBI_TOL``; a pair whose
rows have not changed since it was last found so is not checked again (the same bits).
The pairs are visited block by block (``_JACOBI_BLOCKS`` fixed blocks of rows paired by the
circle method), the block pairs of a round in parallel: they share no row.
Jacobi computes each singular value to a relative accuracy set by the
conditioning of T (O(1) by construction), not by the largest singular value.

Determinism: every LAPACK and BLAS call runs on one BLAS thread, on blocks fixed by
the sizes alone: products on fixed blocks of rows (:func:`.blocks.rows_dot`) or
columns (:func:`.householder.times_columns`), the QR's
trailing updates on fixed blocks of columns, Jacobi on fixed blocks of rows. Only
which thread runs a block depends on the thread count, so results do not.
"""
import math

import numpy as np
from numba import prange, types

from . import FAST, copy_into, householder, njit, rng
from .blocks import rows_dot, upper_rows_dot
from .layer import key
from .matrix import activate_layer, add_bias, layer_bias, layer_weights, load_input
from .weights import ORTHOGONAL

JACOBI_TOL = 1e-15
JACOBI_MAX_SWEEPS = 80
# a rotation whose rows' cosine^2 is at most this updates their squared norms from the
# pair's a, b, g (relative error a few eps); the norms are recomputed every sweep
_NORM_UPDATE_COS2 = 0.25
_JACOBI_BLOCKS = 8   # row blocks of a Jacobi sweep (fixed: no result depends on threads)
PRECONDITION_STEPS = 2
# LAPACK's singular values are kept where the smallest is at least this fraction of the
# largest: their error, about eps sigma_max each, is then below ~1e-12 sigma_i
LAPACK_MIN_RATIO = 1e-4
# a product of isometric layers is stratified once the bound on its condition number
# would pass this (its columns then carry relative errors up to about eps times it)
DELAY_MAX_COND = 1e4
_SCALE_GUARD = 1e100   # ... or once its entries leave [1 / guard, guard]
# stratify's factor entries are plain products where the scales span at most this (nats):
# e^-500 is far above the smallest normal float (e^-708), and e^500 |R_ij / R_ii| far below
# the largest unless a column is 1e90 times more dependent than any of this package makes
_FACTOR_SPAN = 500.0

# LAPACK dgesdd through Numba's own binding (what np.linalg.svd calls), with jobz "N":
# singular values only, which np.linalg.svd in Numba cannot ask for
_gesdd = types.ExternalFunction("numba_ez_gesdd", types.intc(
    types.char, types.char, types.intp, types.intp, types.CPointer(types.float64), types.intp,
    types.CPointer(types.float64), types.CPointer(types.float64), types.intp,
    types.CPointer(types.float64), types.intp))


@njit(cache=True)
def stratify(x, s, t_rows, perm_out, cap):
    """One step of J = U diag(e^s) T: ``x`` (m x k, the layer's M U) -> (Q, s', T').

    ``t_rows`` (k x n_0) is T, or with no rows (0 x k) the identity. Keeps at most
    ``cap`` directions. Returns Q (m x k'), s' (k') and T' (k' x n_0); k' = 0 when
    nothing survives (J = 0).
    """
    m, k = x.shape
    n0 = t_rows.shape[1]
    # log |x_j| + s_j, the squares summed row by row (contiguous; each column's sum in
    # row order as before)
    sq = np.zeros(k)
    for i in range(m):
        for j in range(k):
            sq[j] += x[i, j] * x[i, j]
    keys = np.empty(k)
    for j in range(k):
        keys[j] = (0.5 * math.log(sq[j]) if sq[j] > 0.0 else -np.inf) + s[j]
    perm = np.argsort(-keys, kind="mergesort")   # stable: ties keep their order
    nonzero = 0
    for j in range(k):
        nonzero += keys[j] > -np.inf
    kk = min(m, nonzero, cap)
    if kk == 0:
        return np.empty((m, 0)), np.empty(0), np.empty((0, n0))
    # the sorted columns as rows (column-major X P), in tiles that stay in cache
    xpt = np.empty((k, m))
    for i0 in range(0, m, 64):
        for j0 in range(0, k, 64):
            for i in range(i0, min(m, i0 + 64)):
                for j in range(j0, min(k, j0 + 64)):
                    xpt[j, i] = x[i, perm[j]]
    q, r = householder.qr_columns(xpt)
    # exact dependence (a zero pivot) ends the kept directions
    for i in range(kk):
        if r[i, i] == 0.0:
            kk = i
            break
    s_new = np.empty(kk)
    log_rii = np.empty(kk)
    sp = np.empty(k)
    for j in range(k):
        sp[j] = s[perm[j]]
    for i in range(kk):
        log_rii[i] = math.log(abs(r[i, i]))
        s_new[i] = log_rii[i] + sp[i]
    f = np.zeros((kk, k))
    # F_ij = R_ij / |R_ii| e^(sp_j - sp_i). Where the finite scales span under
    # _FACTOR_SPAN nats, e^(sp_j - c) and e^(c - sp_i) are normal floats and the entry
    # is a product of three; else it is formed from logs
    lo, hi = np.inf, -np.inf
    for j in range(k):
        if sp[j] > -np.inf:
            lo = min(lo, sp[j])
            hi = max(hi, sp[j])
    if lo <= hi and hi - lo <= _FACTOR_SPAN:
        col = np.empty(k)
        for j in range(k):
            col[j] = math.exp(sp[j] - hi)    # 0 for a zero column
        for i in range(kk):
            row = math.exp(hi - sp[i]) / abs(r[i, i])
            for j in range(i, k):
                f[i, j] = r[i, j] * row * col[j]
    else:
        for i in range(kk):
            for j in range(i, k):
                v = r[i, j]
                if v != 0.0 and sp[j] > -np.inf:
                    f[i, j] = math.copysign(
                        math.exp(math.log(abs(v)) - log_rii[i] + sp[j] - sp[i]), v)
    t_new = np.empty((kk, n0))
    if t_rows.shape[0] == 0:     # T = I: T' = F P^T, F's columns in place
        for i in range(kk):
            for j in range(k):
                t_new[i, perm[j]] = f[i, j]
    else:
        tp = np.empty((k, n0))
        for j in range(k):
            copy_into(tp[j], t_rows[perm[j]])
        upper_rows_dot(f, tp, t_new)     # F is upper triangular
    for j in range(k):
        perm_out[j] = perm[j]
    return (q if kk == q.shape[1] else np.ascontiguousarray(q[:, :kk])), s_new, t_new


@njit(cache=True)
def compress(t_rows):
    """T (k x n) with k < n as L (k x k), T = L Z, Z with orthonormal rows: diag(e^s) T
    and diag(e^s) L have the same singular values. L = R^T of the QR of T^T, which
    errs rowwise (eps |t_i| per row), as the scales need. Later products then cost k^2
    per row of T instead of k n."""
    return np.ascontiguousarray(householder.qr_columns(t_rows.copy())[1].T)


@njit(cache=True)
def precondition(t_rows, s, steps):
    """``steps`` QR iterations on diag(e^s) T (transpose, stratify): the same singular
    values, with rows closer to orthogonal, so Jacobi needs fewer sweeps."""
    k = s.size
    perm = np.empty(k, np.int64)
    for _ in range(steps):
        _, s, t_rows = stratify(np.ascontiguousarray(t_rows.T), s, np.empty((0, k)), perm, k)
        k = s.size
        perm = perm[:k]
    return t_rows, s


@njit(inline="always", fastmath=FAST)
def _rotate_pair(a, sc, sq, p, q, moved, moved_now):
    """One Jacobi rotation of rows p, q of diag(e^sc) a (module docstring); True where the
    pair was not yet orthogonal to JACOBI_TOL. ``moved[r]``: row r changed in this sweep
    or the last (``moved_now``: in this sweep). A pair with neither row moved was found
    orthogonal on these very rows, norms and scales in the last sweep, so it is skipped:
    the same bits, without its dot product."""
    if sq[p] == 0.0 or sq[q] == 0.0 or not (moved[p] or moved[q]):
        return False
    # i: the row of the larger scale
    if sc[p] >= sc[q]:
        i, j = p, q
    else:
        i, j = q, p
    ai = a[i]
    aj = a[j]
    n = ai.size
    g = 0.0
    for c in range(n):
        g += ai[c] * aj[c]
    if abs(g) <= JACOBI_TOL * math.sqrt(sq[i] * sq[j]):
        return False
    moved[p] = moved[q] = moved_now[p] = moved_now[q] = True
    r = math.exp(sc[j] - sc[i])
    den = sq[j] * r * r - sq[i]
    if den == 0.0:
        tau = 1.0 / r
    else:
        w = 2.0 * g * r / den
        tau = 2.0 * g / den / (1.0 + math.sqrt(1.0 + w * w))
    t = tau * r
    cs = 1.0 / math.sqrt(1.0 + t * t)
    rr = tau * r * r
    if g * g <= _NORM_UPDATE_COS2 * sq[i] * sq[j]:
        # the new squared norms from a, b and g: no cancellation at this angle
        for c in range(n):
            vi = cs * (ai[c] - rr * aj[c])
            aj[c] = cs * (tau * ai[c] + aj[c])
            ai[c] = vi
        c2 = cs * cs
        ni = c2 * (sq[i] - 2.0 * rr * g + rr * rr * sq[j])
        sq[j] = c2 * (tau * tau * sq[i] + 2.0 * tau * g + sq[j])
        sq[i] = ni
    else:
        ni = 0.0
        nj = 0.0
        for c in range(n):
            vi = cs * (ai[c] - rr * aj[c])
            vj = cs * (tau * ai[c] + aj[c])
            ai[c] = vi
            aj[c] = vj
            ni += vi * vi
            nj += vj * vj
        sq[i] = ni
        sq[j] = nj
    # keep rows near unit norm: their scales hold the magnitude
    for idx in (i, j):
        if sq[idx] > 0.0 and (sq[idx] > 1e100 or sq[idx] < 1e-100):
            f = 1.0 / math.sqrt(sq[idx])
            row = a[idx]
            for c in range(row.size):   # (a loop: see kernels.copy_into)
                row[c] *= f
            sc[idx] -= math.log(f)
            sq[idx] = 1.0
    return True


@njit(inline="always", fastmath=FAST)
def _row_norms(a, sq):
    """sq[i] = |a_i|^2 for every row."""
    for i in range(a.shape[0]):
        acc = 0.0
        for x in a[i]:
            acc += x * x
        sq[i] = acc


@njit(inline="always")
def _block_start(b, k):
    """First row of Jacobi block b of ``_JACOBI_BLOCKS`` over k rows."""
    return b * k // _JACOBI_BLOCKS


@njit(inline="always")
def _block_pair(i, rnd):
    """The i-th pair of Jacobi blocks in round ``rnd`` (the circle method: block 0 stays,
    the others turn a seat a round, so every two blocks meet once in _JACOBI_BLOCKS - 1
    rounds)."""
    seats = _JACOBI_BLOCKS - 1
    if i == 0:
        return 0, 1 + rnd % seats
    return 1 + (i + rnd) % seats, 1 + (seats - i + rnd) % seats


@njit(cache=True, fastmath=FAST)
def _rotate_blocks(a, sc, sq, moved, moved_now, lo0, lo1, hi0, hi1, inside):
    """Every row pair across rows lo0..lo1 and hi0..hi1, in a fixed order, and first
    (``inside``) every pair within each. True where a pair was rotated. A function of
    its own, so the parallel loop that calls it stays small to compile."""
    any_rot = False
    # one loop, so the rotation is compiled once
    for phase in range(0 if inside else 2, 3):
        p0, p1 = (lo0, lo1) if phase != 1 else (hi0, hi1)
        for p in range(p0, p1):
            q0, q1 = (p + 1, p1) if phase != 2 else (hi0, hi1)
            for q in range(q0, q1):
                any_rot |= _rotate_pair(a, sc, sq, p, q, moved, moved_now)
    return any_rot


@njit(parallel=True, cache=True, fastmath=FAST)
def log_singular_values(t_rows, s, out):
    """Natural logs of the singular values of diag(e^s) T, descending, into out[:k].

    One-sided Jacobi with per-row log-scales (module docstring), block-parallel: the rows
    fall in ``_JACOBI_BLOCKS`` fixed blocks; each round of a sweep pairs the blocks (the
    circle method) and rotates every row pair across each block pair in a fixed order,
    the block pairs in parallel (they share no row), and the first round also every pair
    inside a block. No bit depends on the thread count. Returns the number of sweeps it
    took (JACOBI_MAX_SWEEPS + 1 if it did not converge).
    """
    k, n = t_rows.shape
    a = t_rows.copy()
    sc = s.copy()
    sq = np.empty(k)
    nb = _JACOBI_BLOCKS
    rotated_in = np.zeros(nb // 2, np.bool_)
    moved = np.ones(k, np.bool_)        # every pair is checked in the first sweep
    moved_now = np.zeros(k, np.bool_)
    sweeps = 0
    rotated = True
    while rotated and sweeps <= JACOBI_MAX_SWEEPS:
        rotated = False
        if sweeps > 0:
            copy_into(moved, moved_now)
            moved_now[:] = False
        sweeps += 1
        _row_norms(a, sq)
        for rnd in range(nb - 1):
            rotated_in[:] = False
            for i in prange(nb // 2):
                b0, b1 = _block_pair(np.int64(i), rnd)   # a prange index may be unsigned
                lo0, lo1 = _block_start(b0, k), _block_start(b0 + 1, k)
                hi0, hi1 = _block_start(b1, k), _block_start(b1 + 1, k)
                rotated_in[i] = _rotate_blocks(a, sc, sq, moved, moved_now, lo0, lo1, hi0, hi1,
                                               rnd == 0)
            for i in range(nb // 2):
                rotated = rotated or rotated_in[i]
    _row_norms(a, sq)
    vals = np.empty(k)
    for i in range(k):
        vals[i] = 0.5 * math.log(sq[i]) + sc[i] if sq[i] > 0.0 else -np.inf
    vals.sort()
    for i in range(k):
        out[i] = vals[k - 1 - i]
    return sweeps


@njit(cache=True)
def _lapack_log_singular_values(t_rows, s, out):
    """Natural logs of the singular values of diag(e^s) T by LAPACK (dgesdd), descending,
    into out[:k]; False (out untouched) where they span more than LAPACK_MIN_RATIO.

    dgesdd's values carry absolute errors of about eps sigma_max, so they are kept only
    where sigma_min >= LAPACK_MIN_RATIO sigma_max: each is then relatively accurate to
    about eps / LAPACK_MIN_RATIO. Checked on the computed values, which are within eps
    sigma_max of the true ones.
    """
    k, n = t_rows.shape
    top = s.max()
    return _gesdd_log(_scaled_rows(t_rows, s, top), top, out)


@njit(cache=True)
def _scaled_rows(t_rows, s, top):
    """diag(e^(s - top)) T."""
    k, n = t_rows.shape
    a = np.empty((k, n))
    for i in range(k):
        f = math.exp(s[i] - top)
        for c in range(n):
            a[i, c] = f * t_rows[i, c]
    return a


@njit(cache=True)
def _gesdd_log(a, top, out):
    """top + natural logs of a's singular values (dgesdd, a overwritten), descending, into
    out; False (out untouched) where the smallest is under LAPACK_MIN_RATIO times the
    largest (see :func:`_lapack_log_singular_values`)."""
    rows, cols = a.shape    # row-major rows x cols is column-major cols x rows
    count = min(rows, cols)
    vals = np.empty(count)
    dummy = np.empty(1)
    info = _gesdd(ord("d"), ord("N"), cols, rows, a.ctypes, cols, vals.ctypes, dummy.ctypes,
                  1, dummy.ctypes, 1)
    if info != 0 or not vals[count - 1] >= LAPACK_MIN_RATIO * vals[0]:
        return False
    for i in range(count):
        out[i] = math.log(vals[i]) + top
    return True


@njit(cache=True)
def _direct_spectrum(xm, s, t_rows, out):
    """Natural logs of the singular values of J = X diag(e^s) T from the product itself,
    without its QR, into out[:n_0]; False where they (or s) span more than LAPACK allows.

    Forming X (diag(e^s) T) by BLAS errs by at most ~k eps sum_j |x_j| e^(s_j) |t_j|, the
    bound a column-pivoted QR of X leaves (its backward error is columnwise eps |x_j|);
    dgesdd's own error and its check are those of :func:`_lapack_log_singular_values`.
    """
    if s.max() - s.min() > -2.0 * math.log(LAPACK_MIN_RATIO):
        return False
    top = s.max()
    m = np.empty((xm.shape[0], t_rows.shape[1]))
    if t_rows.shape[0] == 0:     # T = I
        for j in range(s.size):
            f = math.exp(s[j] - top)
            for i in range(xm.shape[0]):
                m[i, j] = f * xm[i, j]
    else:
        rows_dot(xm, _scaled_rows(t_rows, s, top), m)
    return _gesdd_log(m, top, out)


@njit(cache=True)
def spectrum_at(t_rows, s, out):
    """Natural logs of the singular values of diag(e^s) T, descending, into out[:k].

    LAPACK where they span less than 1 / LAPACK_MIN_RATIO (a spread of s beyond twice
    that is not tried), else preconditioned one-sided Jacobi. Returns the Jacobi sweeps
    (0: LAPACK).
    """
    if s.max() - s.min() <= -2.0 * math.log(LAPACK_MIN_RATIO):
        if _lapack_log_singular_values(t_rows, s, out):
            return 0
    tp, sp = precondition(t_rows, s, PRECONDITION_STEPS)
    return log_singular_values(tp, sp, out)


@njit(cache=True)
def _delay_cond(dl, xm):
    """ln cond(D) of a layer whose units are all active, or inf where its product ``xm``
    left [1 / _SCALE_GUARD, _SCALE_GUARD] (then it must be stratified)."""
    top = 0.0
    for v in xm.ravel():
        top = max(top, abs(v))
    if not 1.0 / _SCALE_GUARD <= top <= _SCALE_GUARD:
        return np.inf
    dmax = 0.0
    dmin = np.inf
    for v in dl:
        dmax = max(dmax, abs(v))
        dmin = min(dmin, abs(v))
    return math.log(dmax / dmin)


@njit(cache=True)
def _layer_forward(orthogonal_layers, wbuf, net, seed, trial, given, l, x, h):
    """h = x W_l^T. Returns (W, wide): W formed, or for a sampled orthogonal layer its
    reflectors' panels (:func:`.householder.wide_panels`, W not formed; W is then
    empty). ``orthogonal_layers``: the net's flag, None prunes the reflector code."""
    if orthogonal_layers is not None:
        if given is None and net.sampler[l] == ORTHOGONAL:
            n_in, n_out = net.widths[l], net.widths[l + 1]
            wide = householder.wide_panels(key(seed, trial, l, rng.STREAM_WEIGHT), n_out,
                                           n_in)
            h_col = np.empty((n_out, 1))
            householder.times_columns(net.scale[l], wide, np.ascontiguousarray(x.T), h_col)
            copy_into(h[0], h_col[:, 0])
            return np.empty((0, 0)), wide
    w = layer_weights(wbuf, net, seed, trial, given, l)
    np.dot(x, w.T, h)
    return w, (np.empty(0), np.empty((0, 0, 0)), np.empty(0, np.int64), np.empty(0))


@njit(cache=True)
def _layer_tangent(orthogonal_layers, w, wide, gain, n_in, n_out, u, u_rows, rows):
    """W U on W's output rows ``rows``, from U's nonzero rows ``u_rows`` (indices into
    W's inputs): the formed W's submatrix times U, or (W empty) W's reflectors applied
    to U with zeros in its other rows. U with no rows is the identity (all rows)."""
    active, k = rows.size, u.shape[1]
    xm = np.empty((active, k))
    if orthogonal_layers is not None:
        if w.size == 0:
            full_u = u
            if u_rows.size != n_in:
                full_u = np.zeros((n_in, k))
                for b in range(u_rows.size):
                    copy_into(full_u[u_rows[b]], u[b])
            if active == n_out:
                householder.times_columns(gain, wide, full_u, xm)
            else:
                full = np.empty((n_out, k))
                householder.times_columns(gain, wide, full_u, full)
                for a in range(active):
                    copy_into(xm[a], full[rows[a]])
            return xm
    if u.shape[0] == 0:     # U = I
        for a in range(active):
            copy_into(xm[a], w[rows[a]])
    elif active == n_out and u_rows.size == n_in:
        rows_dot(w, u, xm)
    else:
        wsub = np.empty((active, u_rows.size))
        for a in range(active):
            for b in range(u_rows.size):
                wsub[a, b] = w[rows[a], u_rows[b]]
        rows_dot(wsub, u, xm)
    return xm


@njit(cache=True)
def layer_step(fwd, net, act, seed, trial, given, l, x, log_x, xnext, dl, wbuf):
    """Layer l of the forward on one row: ``xnext`` = phi(x W^T + b) at unit RMS, ``dl``
    = phi' there. Returns (its log-scale, W, wide): W formed in ``wbuf`` (or a view of
    the given weights), or for a sampled orthogonal layer empty and its reflectors in
    ``wide`` (:func:`_layer_forward`). At l = 0 it first loads the net's input into x."""
    if l == 0:
        load_input(net, seed, trial, given, x)
    n_out = net.widths[l + 1]
    h = fwd.hbuf[:n_out].reshape((1, n_out))
    w, wide = _layer_forward(net.orthogonal_layers, wbuf, net, seed, trial, given, l, x, h)
    bias, brms = layer_bias(fwd.bbuf, net, seed, trial, given, l)
    log_x = activate_layer(fwd, act, h, add_bias(h, log_x, bias, brms), xnext, dl,
                           fwd.scratch)
    return log_x, w, wide


@njit(cache=True)
def tangent_step(orthogonal_layers, w, wide, gain, n_in, u, u_rows, rows, dl):
    """D W U on W's rows ``rows`` (the active units, d = ``dl``), from U's nonzero rows
    ``u_rows`` (:func:`_layer_tangent`; U with no rows: the identity)."""
    xm = _layer_tangent(orthogonal_layers, w, wide, gain, n_in, dl.size, u, u_rows, rows)
    for a in range(rows.size):
        d = dl[rows[a]]
        for c in range(xm.shape[1]):
            xm[a, c] *= d
    return xm


def jacobian_trial(fwd, net, act, seed, trial, given, rank_cap, isometric, tops, log_sv,
                   sweeps):
    """Singular values of dx_D/dx_0 at the net's input for every D in ``tops`` (ascending).

    ``fwd``: a matrix-engine State of one row (its forward buffers). ``isometric[l]``:
    layer l's W is a multiple of an isometry (||W x|| = g ||x||), so cond(D W) = cond(D)
    and its product may wait for the next stratification. ``log_sv`` (len(tops), min(n_0,
    max n)) receives natural logs, descending, -inf for exact zeros, NaN past min(n_0,
    n_D). ``sweeps[ti]``: Jacobi sweeps at that top (0: LAPACK, see :func:`spectrum_at`).

    A Python loop over layers, each step a compiled kernel: only :func:`layer_step`
    depends on the activation and the net's types, so the linear algebra (stratify,
    spectrum_at and what they call) is compiled once for every net, not once per net
    type with its whole call tree (Numba re-optimises a callee's tree in every caller).
    A step costs tens of microseconds of Python; a layer at width 1024 costs tens of ms.
    """
    widths = net.widths
    depth = widths.size - 1
    n0 = int(widths[0])
    wbuf = np.empty(int(np.max(widths[:-1] * widths[1:])))
    maxn = int(widths.max())
    xa, xb, d = np.empty(maxn), np.empty(maxn), np.empty(maxn)
    perm = np.empty(n0, np.int64)
    top_sv = np.empty(n0)
    # U's nonzero rows (the previous layer's active units) and their indices: the last Q,
    # or the products that wait applied to it (log_cond bounds their ln condition number)
    u_rows = np.arange(n0)
    u = np.empty((0, n0))        # U = I (see _layer_tangent)
    log_cond = 0.0
    t_rows = np.empty((0, n0))   # T = I (see stratify)
    s = np.zeros(n0)
    x = xa[:n0].reshape((1, n0))   # the input, loaded by the first step
    log_x = 0.0
    max_log_cond = math.log(DELAY_MAX_COND)
    ti = 0
    for l in range(depth):
        n_out = int(widths[l + 1])
        xnext = (xb if l % 2 == 0 else xa)[:n_out].reshape((1, n_out))
        dl = d[:n_out]
        log_x, w, wide = layer_step(fwd, net, act, seed, trial, given, l, x, log_x, xnext,
                                    dl.reshape((1, n_out)), wbuf)
        x = xnext
        k = s.size
        direct = False
        if k > 0:
            rows = np.flatnonzero(dl)
            active = rows.size
            xm = tangent_step(net.orthogonal_layers, w, wide, net.scale[l], widths[l], u,
                              u_rows, rows, dl)
            at_top = ti < tops.size and tops[ti] == l + 1
            isometric_step = isometric[l] and active == n_out and rank_cap[l] >= k
            # at a depth in tops, a product through isometric layers that spans little
            # gives its spectrum without a QR, and may then wait on
            if at_top and isometric_step and k == n0 and active >= n0:
                direct = _direct_spectrum(xm, s, t_rows, top_sv)
            grow = np.inf
            if isometric_step and (direct or not at_top):
                grow = _delay_cond(dl, xm)
            if direct and tops[-1] == l + 1:
                pass    # the last spectrum is taken: nothing uses U any more
            elif log_cond + grow <= max_log_cond:
                log_cond += grow
                u = xm
            else:
                u, s, t_rows = stratify(xm, s, t_rows, perm, min(int(rank_cap[l]), k))
                log_cond = 0.0
                if t_rows.shape[1] >= 2 * t_rows.shape[0]:
                    t_rows = compress(t_rows)
            u_rows = rows
        while ti < tops.size and tops[ti] == l + 1:
            count = min(n0, n_out)
            if direct:
                log_sv[ti, :count] = top_sv
            else:
                log_sv[ti, :count] = -np.inf
                if s.size > 0:
                    sweeps[ti] = spectrum_at(t_rows, s, log_sv[ti])
            ti += 1
        if ti == tops.size:
            break
