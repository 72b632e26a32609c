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
3. X P = Q R (Householder, LAPACK). Then X diag(e^s) P = Q R diag(e^{s_P}), and
   with s' = log|R_ii| + s_P(i), F = diag(e^{-s'}) R diag(e^{s_P}) has entries
   F_ij = R_ij / |R_ii| * exp(s_P(j) - s_P(i)), each computed from logs.
   Sorting makes them O(1) (|F_ij| <= ||x_Pi|| / |R_ii|, the local conditioning):
   the large scales sit in s', never in a matrix entry.
4. U_{l+1} = Q, s_{l+1} = s', T_{l+1} = F P^T T_l.

Rows of D that are exactly 0 (ReLU's inactive units, saturated hard
activations) are dropped before the QR, so an exact rank loss stays exact: those
singular values are reported as 0 (log -inf), not as rounding noise. The rank
is also capped per layer (``rank_cap``: constant weights have rank 1, zeros 0).
The product of step 1 then only needs W's rows of active units and its columns
of the previous layer's active units (a quarter of W for ReLU).

Products that wait (isometric layers)
-------------------------------------
A layer whose W is a multiple of an isometry (sampled orthogonal, fan_out >=
fan_in) and whose units are all active has cond(D W) = cond(D) = max|d| / min|d|
on any input subspace. Its product X = D W X_prev skips steps 2-4 while the
product of those bounds since the last QR stays below ``DELAY_MAX_COND`` and the
entries stay within [1e-100, 1e100]: a column of X is then computed to a relative
error of at most about eps times that bound (1e4 eps = 2e-12), where a QR per layer
leaves eps cond(D) per layer. Tanh with orthogonal weights near isometry then
needs a QR only every few tens of layers. A depth in ``tops`` always gets its QR.
This reorders no sum of a stratified layer; it changes which layers are
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
run until every pair's cosine |g| / sqrt(a b) is below ``JACOBI_TOL``.
Jacobi computes each singular value to a relative accuracy set by the
conditioning of T (O(1) by construction), not by the largest singular value.

Determinism: every LAPACK call and every product runs one BLAS thread in a fixed
order; the W U products are single-threaded BLAS calls on fixed blocks of rows
(:func:`.blocks.rows_dot`), so results do not depend on the thread count.
"""
import math

import numpy as np
from numba import types

from . import FAST, njit
from .blocks import rows_dot
from .layer import N_FORWARD, max_width
from .matrix import activate_layer, add_bias, layer_bias, layer_weights, load_input

JACOBI_TOL = 1e-15
JACOBI_MAX_SWEEPS = 80
PRECONDITION_STEPS = 2
# LAPACK's singular values are kept where the smallest is at least this fraction of the
# largest: their error, about eps sigma_max each, is then below ~1e-12 sigma_i
LAPACK_MIN_RATIO = 1e-4
# a product of isometric layers is stratified once the bound on its condition number
# would pass this (its columns then carry relative errors up to about eps times it)
DELAY_MAX_COND = 1e4
_SCALE_GUARD = 1e100   # ... or once its entries leave [1 / guard, guard]

# LAPACK dgesdd through Numba's own binding (what np.linalg.svd calls), with jobz "N":
# singular values only, which np.linalg.svd in Numba cannot ask for
_gesdd = types.ExternalFunction("numba_ez_gesdd", types.intc(
    types.char, types.char, types.intp, types.intp, types.CPointer(types.float64), types.intp,
    types.CPointer(types.float64), types.CPointer(types.float64), types.intp,
    types.CPointer(types.float64), types.intp))


@njit(cache=True)
def _log_norm(v):
    acc = 0.0
    for x in v:
        acc += x * x
    return 0.5 * math.log(acc) if acc > 0.0 else -np.inf


@njit(cache=True)
def stratify(x, s, t_rows, perm_out, cap):
    """One step of J = U diag(e^s) T: ``x`` (m x k, the layer's M U) -> (Q, s', T').

    ``t_rows`` (k x n_0) is T. Keeps at most ``cap`` directions. Returns Q (m x k'),
    s' (k') and T' (k' x n_0); k' = 0 when nothing survives (J = 0).
    """
    m, k = x.shape
    n0 = t_rows.shape[1]
    keys = np.empty(k)
    for j in range(k):
        keys[j] = _log_norm(x[:, j]) + s[j]
    perm = np.argsort(-keys, kind="mergesort")   # stable: ties keep their order
    nonzero = 0
    for j in range(k):
        nonzero += keys[j] > -np.inf
    kk = min(m, nonzero, cap)
    if kk == 0:
        return np.empty((m, 0)), np.empty(0), np.empty((0, n0))
    xp = np.empty((m, k))
    for j in range(k):
        xp[:, j] = x[:, perm[j]]
    q, r = np.linalg.qr(xp)
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
    for i in range(kk):
        for j in range(i, k):
            v = r[i, j]
            if v != 0.0 and sp[j] > -np.inf:
                f[i, j] = math.copysign(math.exp(math.log(abs(v)) - log_rii[i] + sp[j] - sp[i]), v)
    tp = np.empty((k, n0))
    for j in range(k):
        tp[j] = t_rows[perm[j]]
        perm_out[j] = perm[j]
    t_new = np.empty((kk, n0))
    rows_dot(f, tp, t_new)
    return np.ascontiguousarray(q[:, :kk]), s_new, t_new


@njit(cache=True)
def precondition(t_rows, s, steps):
    """``steps`` QR iterations on diag(e^s) T (transpose, stratify): the same singular
    values, with rows closer to orthogonal, so Jacobi needs fewer sweeps."""
    k = s.size
    perm = np.empty(k, np.int64)
    for _ in range(steps):
        _, s, t_rows = stratify(np.ascontiguousarray(t_rows.T), s, np.eye(k), perm, k)
        k = s.size
        perm = perm[:k]
    return t_rows, s


@njit(cache=True, fastmath=FAST)
def log_singular_values(t_rows, s, out):
    """Natural logs of the singular values of diag(e^s) T, descending, into out[:k].

    One-sided Jacobi with per-row log-scales (module docstring). Returns the number
    of sweeps it took (JACOBI_MAX_SWEEPS + 1 if it did not converge).
    """
    k, n = t_rows.shape
    a = t_rows.copy()
    sc = s.copy()
    sq = np.empty(k)
    for i in range(k):
        acc = 0.0
        for x in a[i]:
            acc += x * x
        sq[i] = acc
    sweeps = 0
    rotated = True
    while rotated and sweeps <= JACOBI_MAX_SWEEPS:
        rotated = False
        sweeps += 1
        for p in range(k - 1):
            for q in range(p + 1, k):
                if sq[p] == 0.0 or sq[q] == 0.0:
                    continue
                # i: the row of the larger scale
                if sc[p] >= sc[q]:
                    i, j = p, q
                else:
                    i, j = q, p
                ai = a[i]
                aj = a[j]
                g = 0.0
                for c in range(n):
                    g += ai[c] * aj[c]
                if abs(g) <= JACOBI_TOL * math.sqrt(sq[i] * sq[j]):
                    continue
                rotated = True
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
                        a[idx] *= f
                        sc[idx] -= math.log(f)
                        sq[idx] = 1.0
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
    a = np.empty((k, n))   # row-major k x n is column-major n x k: the same values
    for i in range(k):
        f = math.exp(s[i] - top)
        for c in range(n):
            a[i, c] = f * t_rows[i, c]
    vals = np.empty(k)
    dummy = np.empty(1)
    info = _gesdd(ord("d"), ord("N"), n, k, a.ctypes, n, vals.ctypes, dummy.ctypes, 1,
                  dummy.ctypes, 1)
    if info != 0 or not vals[k - 1] >= LAPACK_MIN_RATIO * vals[0]:
        return False
    for i in range(k):
        out[i] = math.log(vals[i]) + top
    return True


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
def jacobian_trial(fwd, net, act, seed, trial, given, rank_cap, isometric, tops, log_sv,
                   sweeps):
    """Singular values of dx_D/dx_0 at the net's input for every D in ``tops`` (ascending).

    ``fwd``: a matrix-engine State of one row (its forward buffers). ``isometric[l]``:
    layer l's W is a multiple of an isometry (||W x|| = g ||x||), so cond(D W) = cond(D)
    and its product may wait for the next stratification. ``log_sv`` (len(tops), min(n_0,
    max n)) receives natural logs, descending, -inf for exact zeros, NaN past min(n_0,
    n_D). ``sweeps[ti]``: Jacobi sweeps at that top (0: LAPACK, see :func:`spectrum_at`).
    """
    widths = net.widths
    depth = widths.size - 1
    n0 = widths[0]
    maxn = max_width(widths)
    wsize = 0
    for l in range(depth):
        wsize = max(wsize, widths[l] * widths[l + 1])
    wbuf = np.empty(wsize)
    xa = np.empty(maxn)
    xb = np.empty(maxn)
    d = np.empty(maxn)
    stats = np.empty(N_FORWARD)
    perm = np.empty(n0, np.int64)
    # U's nonzero rows (the previous layer's active units) and their indices: the last Q,
    # or the products that wait applied to it (log_cond bounds their ln condition number)
    u_rows = np.arange(n0)
    u = np.eye(n0)
    log_cond = 0.0
    t_rows = np.eye(n0)
    s = np.zeros(n0)
    x = xa[:n0].reshape((1, n0))
    load_input(net, seed, trial, given, x)
    log_x = 0.0
    ti = 0
    for l in range(depth):
        n_in, n_out = widths[l], widths[l + 1]
        w = layer_weights(wbuf, net, seed, trial, given, l)
        h = fwd.hbuf[:n_out].reshape((1, n_out))
        np.dot(x, w.T, h)
        bias, brms = layer_bias(fwd.bbuf, net, seed, trial, given, l)
        xnext = (xb if l % 2 == 0 else xa)[:n_out].reshape((1, n_out))
        dl = d[:n_out].reshape((1, n_out))
        log_x = activate_layer(fwd, act, h, add_bias(h, log_x, bias, brms), xnext, dl, stats)
        x = xnext
        k = s.size
        if k > 0:
            rows = np.empty(n_out, np.int64)
            active = 0
            for i in range(n_out):
                if dl[0, i] != 0.0:
                    rows[active] = i
                    active += 1
            rows = rows[:active]
            # D W U on the active rows, from U's nonzero rows only
            if active == n_out and u_rows.size == n_in:
                wsub = w
            else:
                wsub = np.empty((active, u_rows.size))
                for a in range(active):
                    for b in range(u_rows.size):
                        wsub[a, b] = w[rows[a], u_rows[b]]
            xm = np.empty((active, k))
            rows_dot(wsub, u, xm)
            for a in range(active):
                xm[a] *= dl[0, rows[a]]
            at_top = ti < tops.size and tops[ti] == l + 1
            grow = np.inf
            if isometric[l] and active == n_out and rank_cap[l] >= k and not at_top:
                grow = _delay_cond(dl[0], xm)
            if log_cond + grow <= math.log(DELAY_MAX_COND):
                log_cond += grow
                u = xm
            else:
                u, s, t_rows = stratify(xm, s, t_rows, perm, min(rank_cap[l], k))
                log_cond = 0.0
            u_rows = rows
        while ti < tops.size and tops[ti] == l + 1:
            count = min(n0, n_out)
            log_sv[ti, :count] = -np.inf
            if s.size > 0:
                sweeps[ti] = spectrum_at(t_rows, s, log_sv[ti])
            ti += 1
