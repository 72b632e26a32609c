"""Haar orthogonal weights as Householder reflectors, applied without forming W.

The matrix engine's orthogonal layers (torch's ``orthogonal_`` convention, the
``semi-orthogonal`` (max x min) frame of a rectangular layer) are sampled the way
a Householder QR of a Gaussian matrix would produce them, minus the QR:

* Householder QR of a Gaussian (m x k) matrix A reflects, at step j, the current
  column j restricted to rows j..m-1. By rotational invariance that vector is a
  fresh standard Gaussian of length m - j, independent of the earlier steps. So
  drawing those k vectors directly (Stewart 1980) and building each reflector
  H_j = I - tau_j v_j v_j^T from its own vector gives the QR's Q in distribution,
  without the O(m k^2) updates of the trailing columns.
* Q = H_0 H_1 ... H_{k-1} restricted to its first k columns, and torch's sign
  fix (columns times sign(diag R)) is the diagonal S with S_jj = sign(beta_j),
  beta_j = -sign(alpha_j) |x_j| being R's diagonal. Q S is Haar on the Stiefel
  manifold: exactly the law of ``orthogonal_``.
* With m = max(fan_out, fan_in), k = min: W = g Q S (fan_out >= fan_in) or
  W = g (Q S)^T (fan_out < fan_in). Then

      (Q S) c   = H_0 (H_1 (... H_{k-1} [S c; 0]))       (length k -> m)
      (Q S)^T z = S [H_{k-1} (... H_0 z)]_{:k}           (length m -> k)

  cost 4 (m k - k^2 / 2) flops per row each: a layer's forward and backward for
  a batch of B rows cost O(B m k), as a product with a stored W would, instead of
  a QR of O(m k^2) twice.

Randomness: reflector j's vector is drawn at counters off_j .. off_j + m - j - 1 of
the layer's weight key, off_j = j m - j (j - 1) / 2 (the vectors packed end to end).
:func:`form` builds the same W explicitly for ``sample_weights`` and training; it
agrees with the reflector products to rounding (the sums run in another order, in
panels of 128 reflectors), not bit for bit. The spectra apply the reflectors to
columns (:func:`times_columns`, 128-reflector panels, BLAS on fixed blocks of
columns in parallel) and never form W.

:func:`qr_columns` is a Householder QR of any matrix built from the same pieces:
LAPACK's dgeqrf on panels of ``_QR_PANEL`` columns, the trailing columns and Q's
columns (:func:`times_columns` of the identity) updated on fixed blocks in parallel,
so that the spectra's QRs use both cores with results that do not depend on the
thread count (LAPACK's own threaded QR gives no such promise).
"""
import math

import numpy as np
from numba import prange, types, uint64

from . import FAST, copy_into, copy_rows, njit, rng
from .blocks import gemm, plain, rows_dot

_PANEL = 32   # reflectors per compact-WY panel of the products
_FORM_PANEL = 128   # ... and of :func:`form` and :func:`times_columns` (products on BLAS alone)
_QR_PANEL = 32   # columns per panel of :func:`qr_columns` (its dgeqrf part runs serially)
# columns per task of times_columns: fixed, so that no result depends on the thread count
_COLUMN_BLOCK = 256


@njit(inline="always")
def packed_size(m, k):
    """Entries of k packed reflector vectors of lengths m, m - 1, ..., m - k + 1."""
    return k * m - k * (k - 1) // 2


def workspace_bytes(fan_out, fan_in, rows):
    """Bytes one orthogonal layer's products allocate for a batch of ``rows`` (and
    :func:`form` for ``rows = min(fan_in, fan_out)``): the packed vectors, their panels
    and T, and four float64 copies of the batch at width max(fan_in, fan_out)."""
    m, k = max(fan_out, fan_in), min(fan_out, fan_in)
    n_panels = (k + _PANEL - 1) // _PANEL
    return 8 * (2 * packed_size(m, k) + _PANEL * m + n_panels * _PANEL * (_PANEL + 1)
                + 3 * k + 4 * rows * m + rows * _PANEL * 2)


@njit(inline="always")
def _offset(m, j):
    return j * m - j * (j - 1) // 2


@njit(parallel=True, cache=True, fastmath=FAST)
def draw(key, m, k, v, tau, sign):
    """Reflectors of one layer from its key: vectors into ``v`` (packed, float64),
    factors ``tau`` and sign fixes ``sign`` (both length k)."""
    for j in prange(k):
        bits = np.empty(rng.CHUNK, np.uint64)
        rejected = np.empty(rng.CHUNK, np.int32)
        off = _offset(m, j)
        x = v[off:off + m - j]
        rng.fill_normal_row(key, uint64(off), x, 1.0, bits, rejected)
        sq = 0.0
        for i in range(m - j):
            sq += x[i] * x[i]
        alpha = x[0]
        norm = math.sqrt(sq)
        beta = -norm if alpha >= 0.0 else norm
        if norm == 0.0:    # probability 0; H_j = I keeps it finite
            tau[j], sign[j] = 0.0, 1.0
            continue
        # v = x - beta e_0, and H = I - v v^T / (beta (beta - alpha)): no cancellation,
        # as beta - alpha has beta's sign
        x[0] = alpha - beta
        tau[j] = 1.0 / (beta * (beta - alpha))
        sign[j] = 1.0 if beta > 0.0 else -1.0


@njit(cache=True)
def panels(v, tau, m, k, width):
    """The reflectors in compact-WY panels of ``width``: panel p (reflectors c0 = p *
    width up to c1) is H_c0 ... H_{c1-1} = I - V T V^T on coordinates c0..m-1, with V^T
    stored dense and contiguous (zeros left of each vector's start) and T upper
    triangular.

    Returns (vt, t, starts): panel p is vt[starts[p]:starts[p + 1]] reshaped to
    (c1 - c0, m - c0), and t[p, :w, :w] its T.
    """
    vt, t, starts = _empty_panels(m, k, width)
    for p in range(starts.size - 1):
        _fill_panel(v, tau, m, k, width, p, vt[starts[p]:starts[p + 1]], t[p])
    return vt, t, starts


@njit(inline="always")
def _empty_panels(m, k, width):
    """Zeroed (vt, t) of :func:`panels` and the panels' offsets in vt."""
    n_panels = (k + width - 1) // width
    starts = np.zeros(n_panels + 1, np.int64)
    for p in range(n_panels):
        c0 = p * width
        starts[p + 1] = starts[p] + (min(k, c0 + width) - c0) * (m - c0)
    return np.zeros(starts[n_panels]), np.zeros((n_panels, width, width)), starts


@njit(cache=True)
def _fill_panel(v, tau, m, k, width, p, flat, tp):
    """Panel p of :func:`panels`: its V^T into ``flat`` (zeroed) and its T into tp."""
    c0 = p * width
    w = min(k, c0 + width) - c0
    n = m - c0
    vp = flat.reshape((w, n))
    for c in range(w):
        off = _offset(m, c0 + c)
        copy_into(vp[c, c:], v[off:off + n - c])
    _panel_t(vp, tau[c0:c0 + w], tp)


@njit(inline="always")
def _panel_t(vp, tau, tp):
    """T (upper triangular) of the panel whose V^T is ``vp``, H_0 ... H_{w-1} = I - V T
    V^T with H_c = I - tau_c v_c v_c^T."""
    gram = np.dot(vp, vp.T)
    # T = [[T_prev, -tau_c T_prev V_prev^T v_c], [0, tau_c]]
    for c in range(vp.shape[0]):
        tc = tau[c]
        tp[c, c] = tc
        for i in range(c):
            acc = 0.0
            for q in range(i, c):
                acc += tp[i, q] * gram[q, c]
            tp[i, c] = -tc * acc


@njit(cache=True)
def _apply_panel(vp, tp, y, c0, transposed):
    """y[:, c0:] <- y[:, c0:] (I - V T V^T) (or with T^T: ``transposed``), for rows y."""
    w, n = vp.shape
    rows = y.shape[0]
    part = np.ascontiguousarray(y[:, c0:])
    proj = np.empty((rows, w))
    rows_dot(part, vp.T, proj)                  # part V
    mixed = np.zeros((rows, w))
    for r in range(rows):                       # (part V) T, or (part V) T^T
        for c in range(w):
            acc = 0.0
            if transposed:
                for q in range(c, w):
                    acc += proj[r, q] * tp[c, q]
            else:
                for q in range(c + 1):
                    acc += proj[r, q] * tp[q, c]
            mixed[r, c] = acc
    update = np.empty((rows, n))
    rows_dot(mixed, vp, update)                 # ... V^T
    for r in range(rows):
        for i in range(n):
            y[r, c0 + i] = part[r, i] - update[r, i]


@njit(cache=True)
def times_q(v, tau, sign, m, k, gain, c, out):
    """out[b] = gain (Q S) c[b] for every row b: c (B, k) -> out (B, m).

    Rows: out = [c S, 0] Q^T, the panels' transposes applied last panel first."""
    rows = c.shape[0]
    vt, t, starts = panels(v, tau, m, k, plain(_PANEL))
    y = np.zeros((rows, m))
    for r in range(rows):
        for i in range(k):
            y[r, i] = sign[i] * c[r, i]
    for p in range(starts.size - 2, -1, -1):
        c0 = p * _PANEL
        w = min(k, c0 + _PANEL) - c0
        _apply_panel(vt[starts[p]:starts[p + 1]].reshape((w, m - c0)), t[p], y, c0, True)
    for r in range(rows):
        for i in range(m):
            out[r, i] = gain * y[r, i]


@njit(cache=True)
def times_qt(v, tau, sign, m, k, gain, z, out):
    """out[b] = gain (Q S)^T z[b] for every row b: z (B, m) -> out (B, k).

    Rows: out = (z Q)[:, :k] S, the panels applied first panel first."""
    rows = z.shape[0]
    vt, t, starts = panels(v, tau, m, k, plain(_PANEL))
    y = np.empty((rows, m))
    for r in range(rows):
        for i in range(m):
            y[r, i] = z[r, i]
    for p in range(starts.size - 1):
        c0 = p * _PANEL
        w = min(k, c0 + _PANEL) - c0
        _apply_panel(vt[starts[p]:starts[p + 1]].reshape((w, m - c0)), t[p], y, c0, False)
    for r in range(rows):
        for i in range(k):
            out[r, i] = gain * sign[i] * y[r, i]


@njit(cache=True)
def reflectors(key, fan_out, fan_in):
    """(v, tau, sign, m, k) of the layer with this key and shape."""
    m, k = max(fan_out, fan_in), min(fan_out, fan_in)
    v = np.empty(packed_size(m, k))
    tau = np.empty(k)
    sign = np.empty(k)
    draw(key, m, k, v, tau, sign)
    return v, tau, sign, m, k


@njit(cache=True)
def times_w_t(gain, key, x, h):
    """h = x @ W.T for the orthogonal W (n_out, n_in) of ``key``; x (B, n_in)."""
    n_in, n_out = x.shape[1], h.shape[1]
    v, tau, sign, m, k = reflectors(key, n_out, n_in)
    if n_out >= n_in:     # W = g Q S
        times_q(v, tau, sign, m, k, gain, x, h)
    else:                 # W = g (Q S)^T
        times_qt(v, tau, sign, m, k, gain, x, h)


@njit(cache=True)
def times_w(gain, key, delta, out):
    """out = delta @ W for the orthogonal W (n_out, n_in) of ``key``; delta (B, n_out)."""
    n_out, n_in = delta.shape[1], out.shape[1]
    v, tau, sign, m, k = reflectors(key, n_out, n_in)
    if n_out >= n_in:
        times_qt(v, tau, sign, m, k, gain, delta, out)
    else:
        times_q(v, tau, sign, m, k, gain, delta, out)


@njit(cache=True)
def form(gain, key, out):
    """The orthogonal W (fan_out, fan_in) of ``key`` itself, into ``out``: the rows of
    gain (Q S)^T = times_q of the identity, in wider panels (``_FORM_PANEL``) whose three
    products are all BLAS, on the rows each panel can change (a third of the work of a
    full times_q). Agrees with times_q to rounding."""
    fan_out, fan_in = out.shape
    v, tau, sign, m, k = reflectors(key, fan_out, fan_in)
    vt, t, starts = panels(v, tau, m, k, plain(_FORM_PANEL))
    # times_q of the identity, where row r stays zero right of column r until the panel
    # holding reflector r: each panel (starting at c0) changes rows c0.. only. The
    # buffers are allocated once (fresh pages cost as much as the arithmetic).
    y = np.zeros((k, m))
    for i in range(k):
        y[i, i] = sign[i]
    part_buf = np.empty(k * m)
    update_buf = np.empty(k * m)
    proj_buf = np.empty(k * _FORM_PANEL)
    for p in range(starts.size - 2, -1, -1):
        c0 = p * _FORM_PANEL
        w = min(k, c0 + _FORM_PANEL) - c0
        r, n = k - c0, m - c0
        vp = vt[starts[p]:starts[p + 1]].reshape((w, n))
        part = part_buf[:r * n].reshape((r, n))
        copy_rows(part, y[c0:, c0:])
        proj = proj_buf[:r * w].reshape((r, w))
        rows_dot(part, np.ascontiguousarray(vp.T), proj)   # part V
        mixed = np.dot(proj, np.ascontiguousarray(t[p, :w, :w].T))   # ... T^T
        update = update_buf[:r * n].reshape((r, n))
        rows_dot(mixed, vp, update)                 # ... V^T
        for i in range(r):
            for j in range(n):
                y[c0 + i, c0 + j] = part[i, j] - update[i, j]
    if fan_out >= fan_in:   # out = gain y^T, in tiles that stay in cache
        for i0 in range(0, m, 64):
            for r0 in range(0, k, 64):
                for i in range(i0, min(m, i0 + 64)):
                    for r in range(r0, min(k, r0 + 64)):
                        out[i, r] = gain * y[r, i]
    else:
        for r in range(k):
            for i in range(m):
                out[r, i] = gain * y[r, i]


@njit(parallel=True, cache=True)
def wide_panels(key, fan_out, fan_in):
    """The orthogonal W (fan_out, fan_in) of ``key`` for :func:`times_columns`: its
    reflectors in panels of ``_FORM_PANEL`` (vt, t, starts, as :func:`panels`, built in
    parallel: each panel is its own) and the sign fixes."""
    v, tau, sign, m, k = reflectors(key, fan_out, fan_in)
    vt, t, starts = _empty_panels(m, k, _FORM_PANEL)
    n_panels = starts.size - 1
    for i in prange(n_panels):
        p = _balanced(i, n_panels)
        _fill_panel(v, tau, m, k, _FORM_PANEL, p, vt[starts[p]:starts[p + 1]], t[p])
    return vt, t, starts, sign


@njit(inline="always")
def _panel_left(vp, tp, z, proj, mixed, transposed):
    """z <- (I - V T V^T) z (T^T where ``transposed``) for the columns z (n, c) on the
    panel's coordinates: three BLAS products, the last one in place."""
    gemm(1.0, vp, False, z, False, 0.0, proj)            # V^T z
    gemm(1.0, tp, transposed, proj, False, 0.0, mixed)   # T V^T z, or T^T V^T z
    gemm(-1.0, vp, True, mixed, False, 1.0, z)           # z - V (...)


@njit(parallel=True, cache=True)
def times_columns(gain, wide, cols, out):
    """out = W @ cols for the orthogonal W (fan_out, fan_in) of ``wide`` (vt, t, starts,
    sign: :func:`wide_panels`, or any panels of :func:`panels`' layout): cols (fan_in,
    r) -> out (fan_out, r), without forming W. ``cols`` with no rows stands for the
    identity (r = fan_in): out = W.

    W = g Q S: Q S c = H_0 (... H_{k-1} [S c; 0]), the panels last first; the identity's
    column j needs only the panels up to the one holding reflector j (H_i e_j = e_j for
    i > j).
    W = g (Q S)^T: S (Q^T c)[:k], the panels first first, with T^T.
    The columns are independent: fixed blocks of ``_COLUMN_BLOCK`` run in parallel (the
    identity's in an order that balances them), each through its panels with
    single-threaded BLAS, so the thread count changes no bit. 4 (m k - k^2 / 2) flops per
    column, where forming W and multiplying costs more.
    """
    fan_out = out.shape[0]
    identity = cols.shape[0] == 0
    fan_in = out.shape[1] if identity else cols.shape[0]
    r = out.shape[1]
    m, k = max(fan_out, fan_in), min(fan_out, fan_in)
    forward = fan_out >= fan_in
    # the identity's blocks carry unequal work: smaller ones balance better
    size = _COLUMN_BLOCK // 2 if identity else _COLUMN_BLOCK
    n_blocks = (r + size - 1) // size
    for i in prange(n_blocks):
        j0 = (_balanced(i, n_blocks) if identity else np.int64(i)) * size
        _column_block(gain, wide, cols, out, j0, min(r, j0 + size), identity, forward, m, k)


@njit(cache=True)
def _column_block(gain, wide, cols, out, j0, j1, identity, forward, m, k):
    """Columns j0..j1 of :func:`times_columns`, through the panels with single-threaded
    BLAS. A function of its own, so the parallel loop that calls it stays small to
    compile."""
    vt, t, starts, sign = wide
    width = t.shape[1]
    fan_out = out.shape[0]
    n_panels = starts.size - 1
    cb = j1 - j0
    y = np.zeros((m, cb))
    proj = np.empty((width, cb))
    mixed = np.empty((width, cb))
    for j in range(cb):
        if identity:
            y[j0 + j, j] = sign[j0 + j] if forward else 1.0
        else:
            for q in range(k if forward else m):
                y[q, j] = sign[q] * cols[q, j0 + j] if forward else cols[q, j0 + j]
    reach = (j1 - 1) // width + 1 if identity and forward else n_panels
    for step in range(reach):
        p = reach - 1 - step if forward else step
        c0 = p * width
        w = min(k, c0 + width) - c0
        vp = vt[starts[p]:starts[p + 1]].reshape((w, m - c0))
        _panel_left(vp, t[p, :w, :w], y[c0:], proj[:w], mixed[:w], not forward)
    for q in range(fan_out):
        f = gain if forward else gain * sign[q]
        for j in range(cb):
            out[q, j0 + j] = f * y[q, j]


# LAPACK dgeqrf through Numba's own binding (what np.linalg.qr calls), for qr's panels
_geqrf = types.ExternalFunction("numba_ez_geqrf", types.intc(
    types.char, types.intp, types.intp, types.CPointer(types.float64), types.intp,
    types.CPointer(types.float64)))


@njit(inline="always")
def _balanced(b, n_blocks):
    """The b-th of n_blocks blocks of a triangular workload in the order last, first,
    second last, ...: contiguous halves of the iterations then carry similar work."""
    b = np.int64(b)     # a prange index may be unsigned
    return n_blocks - 1 - b // 2 if b % 2 == 0 else b // 2


@njit(parallel=True, cache=True)
def _reflect_trailing(at, c0, c1, vp, tp):
    """Columns c1.. of A (rows of ``at``, A's transpose) <- (I - V T^T V^T) on coordinates
    c0..: each row a^T <- a^T - (a^T V) T V^T, in fixed blocks of rows."""
    k = at.shape[0]
    w = vp.shape[0]
    n_blocks = (k - c1 + _COLUMN_BLOCK - 1) // _COLUMN_BLOCK
    for b in prange(n_blocks):
        j0 = c1 + np.int64(b) * _COLUMN_BLOCK
        _trailing_block(at[j0:min(k, j0 + _COLUMN_BLOCK), c0:], vp, tp)


@njit(cache=True)
def _trailing_block(rows, vp, tp):
    """rows <- rows - (rows V) T V^T (single-threaded BLAS); a function of its own, so
    the parallel loop that calls it stays small to compile."""
    w = vp.shape[0]
    proj = np.empty((rows.shape[0], w))
    mixed = np.empty((rows.shape[0], w))
    gemm(1.0, rows, False, vp, True, 0.0, proj)       # a^T V
    gemm(1.0, proj, False, tp, False, 0.0, mixed)     # ... T
    gemm(-1.0, mixed, False, vp, False, 1.0, rows)    # a^T - (...) V^T


@njit(inline="always")
def _factor_columns(at):
    """Householder QR of A, given by its columns as the rows of ``at`` (k x m,
    overwritten), in panels of ``_QR_PANEL`` columns: LAPACK's dgeqrf on each panel, the
    trailing columns updated in fixed blocks in parallel with single-threaded BLAS
    (:func:`.blocks.gemm`). Returns R (min(m, k) x k) and the reflectors' panels."""
    k, m = at.shape
    kk = min(m, k)
    tau = np.zeros(kk)
    vt, t, starts = _empty_panels(m, kk, _QR_PANEL)
    for p in range(starts.size - 1):
        c0 = p * _QR_PANEL
        w = min(kk, c0 + _QR_PANEL) - c0
        n = m - c0
        _geqrf(ord("d"), n, w, at[c0, c0:].ctypes, m, tau[c0:].ctypes)
        vp = vt[starts[p]:starts[p + 1]].reshape((w, n))
        for c in range(w):
            vp[c, c] = 1.0
            copy_into(vp[c, c + 1:], at[c0 + c, c0 + c + 1:])
        _panel_t(vp, tau[c0:c0 + w], t[p])
        if c0 + w < k:
            _reflect_trailing(at, c0, c0 + w, vp, t[p, :w, :w])
    r = np.zeros((kk, k))
    for j in range(k):
        for i in range(min(j + 1, kk)):
            r[i, j] = at[j, i]
    return r, vt, t, starts


@njit(cache=True)
def qr_columns(at):
    """(q, r) of np.linalg.qr(A) (reduced) for A given by its columns as the rows of
    ``at`` (k x m, overwritten): :func:`_factor_columns`, then Q's columns by
    :func:`times_columns` of the identity. The thread count changes no bit; the sums run in another order
    than LAPACK's blocked QR."""
    k, m = at.shape
    kk = min(m, k)
    r, vt, t, starts = _factor_columns(at)
    q = np.empty((m, kk))
    times_columns(1.0, (vt, t, starts, np.ones(kk)), np.empty((0, kk)), q)
    return q, r
