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
:func:`form` builds the same W explicitly for ``sample_weights``, training and the
spectra; it agrees with the reflector products to rounding (the sums run in another
order, in panels of 128 reflectors), not bit for bit.
"""
import math

import numpy as np
from numba import prange, uint64

from . import FAST, njit, rng
from .blocks import plain, rows_dot

_PANEL = 32   # reflectors per compact-WY panel of the products
_FORM_PANEL = 128   # ... and of :func:`form`, whose panels are products on BLAS alone


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
    n_panels = (k + width - 1) // width
    starts = np.zeros(n_panels + 1, np.int64)
    for p in range(n_panels):
        c0 = p * width
        starts[p + 1] = starts[p] + (min(k, c0 + width) - c0) * (m - c0)
    vt = np.zeros(starts[n_panels])
    t = np.zeros((n_panels, width, width))
    for p in range(n_panels):
        c0 = p * width
        w = min(k, c0 + width) - c0
        n = m - c0
        vp = vt[starts[p]:starts[p + 1]].reshape((w, n))
        for c in range(w):
            off = _offset(m, c0 + c)
            vp[c, c:] = v[off:off + n - c]
        gram = np.dot(vp, vp.T)
        tp = t[p]
        # T = [[T_prev, -tau_c T_prev V_prev^T v_c], [0, tau_c]]
        for c in range(w):
            tc = tau[c0 + c]
            tp[c, c] = tc
            for i in range(c):
                acc = 0.0
                for q in range(i, c):
                    acc += tp[i, q] * gram[q, c]
                tp[i, c] = -tc * acc
    return vt, t, starts


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
        part[:, :] = y[c0:, c0:]
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
