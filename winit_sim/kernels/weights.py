"""Weights: every sampling kind of :data:`winit_sim.inits.SAMPLINGS`, as a matrix
(:func:`fill_weights`) or sampled on the fly inside products (small batches).

On the fly: the weights are never stored.

For a small batch the product with W costs less than sampling W, and writing W
to memory and reading it back costs as much as the product. These kernels
sample each block of W into a small buffer that stays in cache and use it at
once, in parallel over blocks of the output, so the product uses every core
without BLAS. Each weight comes from the same (key, counter) as in
:func:`fill_weights`, rounded to the same dtype: the matrix is exactly the one
:func:`winit_sim.sample_weights` returns.

Both kernels split work over output blocks only, and each output is summed in
a fixed order, so results do not depend on the thread count.

Orthogonal layers are used on the fly at any batch, as Householder reflectors
(:mod:`.householder`): a product then costs what a product with a stored W does,
and no QR. :func:`fill_weights` forms the same W, equal to the products' to
rounding. Constant layers (zeros included) are rank one, at any batch: each output
is the constant times a row sum, O(batch x width) instead of O(batch x width^2).
"""
import numpy as np
from numba import prange, uint64

from . import FAST, householder, internal, njit, rng
from ..inits import SAMPLINGS

CONSTANT = SAMPLINGS.code("constant")
NORMAL = SAMPLINGS.code("normal")
UNIFORM = SAMPLINGS.code("uniform")
ORTHOGONAL = SAMPLINGS.code("orthogonal")
_ROW_BLOCK = 16    # rows of W per task in the forward product
NOT_DESCRIBED = "an orthogonal layer in a net described with orthogonal_layers=None"
UNIFORM_NOT_DESCRIBED = "a uniform layer in a net described with uniform_layers=None"


@njit(cache=True)
def fill_weights(kind, scale, key, out, orthogonal_layers, uniform_layers):
    """Sample one layer's weights into ``out`` (fan_out, fan_in) from its stream key.

    Values are drawn in float64 and rounded once to ``out``'s dtype, so a
    float32 net uses the float64 net's weights, rounded. ``orthogonal_layers``:
    None when the net has no orthogonal layer, so that the Householder code is not
    compiled (Numba resolves ``is None`` per signature); else True. ``uniform_layers``
    the same for uniform layers (a normal net then compiles no uniform sampling).
    """
    fan_out, fan_in = out.shape
    if kind == CONSTANT:
        v = out.dtype.type(scale)
        for i in range(fan_out):
            for j in range(fan_in):
                out[i, j] = v
    elif kind == NORMAL:
        rng.fill_normal(key, out, scale)
    elif kind == UNIFORM:
        if uniform_layers is None:
            raise ValueError(UNIFORM_NOT_DESCRIBED)
        else:
            rng.fill_uniform(key, out, scale)
    elif kind == ORTHOGONAL:
        if orthogonal_layers is None:
            raise ValueError(NOT_DESCRIBED)
        else:
            householder.form(scale, key, out)
    else:
        raise ValueError("unknown sampling kind")


@njit(inline="always")
def elementwise_kind(kind):
    """Kinds whose entries are independent draws, so a product can sample them on the fly."""
    return kind == NORMAL or kind == UNIFORM


@internal()
def _sample_span(kind, scale, key, first, out, bits, rejected, uniform_layers):
    """out[c] = weight at counter first + c (normal or uniform kinds). A function of its
    own, so that Numba prunes the uniform branch when ``uniform_layers`` is None."""
    if kind == NORMAL:
        rng.fill_normal_row(key, first, out, scale, bits, rejected)
    elif kind == UNIFORM and uniform_layers is not None:
        rng.fill_uniform_row(key, first, out, scale, bits)
    else:   # never sampled on the fly (see elementwise_kind), or refused before the loop
        out[:] = np.nan


@njit(cache=True, inline="always")
def times_weights_t(kind, scale, key, x, h, orthogonal_layers, uniform_layers):
    """h = x @ W.T for W (n_out, n_in) sampled from ``key``; x (B, n_in), h (B, n_out).
    ``orthogonal_layers``, ``uniform_layers``: as in :func:`fill_weights`.

    Inlined into its callers (one level less for Numba to re-optimise, see
    :mod:`.driver`); a caller passes the two flags on from its own arguments, since
    Numba prunes ``is None`` only on a function's arguments, not on an inlined value."""
    if kind == CONSTANT:
        _times_constant(scale, x, h)
    elif kind == UNIFORM and uniform_layers is None:
        raise ValueError(UNIFORM_NOT_DESCRIBED)
    elif kind != ORTHOGONAL:
        _times_drawn_t(kind, scale, key, x, h, uniform_layers)
    elif orthogonal_layers is None:
        raise ValueError(NOT_DESCRIBED)
    else:
        householder.times_w_t(scale, key, x, h)


@njit(cache=True, inline="always")
def times_weights(kind, scale, key, delta, out, orthogonal_layers, uniform_layers):
    """out = delta @ W for W (n_out, n_in) sampled from ``key``; delta (B, n_out), out (B, n_in).
    ``orthogonal_layers``, ``uniform_layers``: as in :func:`fill_weights` (and see
    :func:`times_weights_t`)."""
    if kind == CONSTANT:
        _times_constant(scale, delta, out)
    elif kind == UNIFORM and uniform_layers is None:
        raise ValueError(UNIFORM_NOT_DESCRIBED)
    elif kind != ORTHOGONAL:
        _times_drawn(kind, scale, key, delta, out, uniform_layers)
    elif orthogonal_layers is None:
        raise ValueError(NOT_DESCRIBED)
    else:
        householder.times_w(scale, key, delta, out)


@internal()
def _times_constant(value, a, out):
    """out = a @ W.T for W of shape (out.shape[1], a.shape[1]) with every entry ``value``:
    out[b, :] = value * sum(a[b, :]), the row sum in float64 in index order, rounded once.
    A zero W gives +0 exactly (as a product with zeros does), whatever the signs in a."""
    rows, n = a.shape
    for b in range(rows):
        acc = 0.0
        for k in range(n):
            acc += np.float64(a[b, k])
        v = out.dtype.type(value * acc) if value != 0.0 else out.dtype.type(0.0)
        for j in range(out.shape[1]):
            out[b, j] = v


@internal(parallel=True, fastmath=FAST)
def _times_drawn_t(kind, scale, key, x, h, uniform_layers):
    """times_weights_t for the elementwise kinds: W drawn block by block."""
    rows, n_in = x.shape
    n_out = h.shape[1]
    n_blocks = (n_out + _ROW_BLOCK - 1) // _ROW_BLOCK
    for blk in prange(n_blocks):
        w = np.empty(n_in, x.dtype)
        bits = np.empty(rng.CHUNK, np.uint64)
        rejected = np.empty(rng.CHUNK, np.int32)
        for j in range(blk * _ROW_BLOCK, min(n_out, (blk + 1) * _ROW_BLOCK)):
            _sample_span(kind, scale, key, uint64(j) * uint64(n_in), w, bits, rejected,
                         uniform_layers)
            for b in range(rows):
                acc = x.dtype.type(0.0)
                xb = x[b]
                for k in range(n_in):
                    acc += xb[k] * w[k]
                h[b, j] = acc


@internal(parallel=True, fastmath=FAST)
def _times_drawn(kind, scale, key, delta, out, uniform_layers):
    """times_weights for the elementwise kinds."""
    rows, n_out = delta.shape
    n_in = out.shape[1]
    # columns per task: up to 256 (measured best at width 1024), at least 4 tasks
    # when wide enough; from the shape only, and each output's sum runs over j in
    # order whatever the block, so the split never changes a result
    cols = min(256, max(32, ((n_in + 63) // 64) * 16))
    n_blocks = (n_in + cols - 1) // cols
    for blk in prange(n_blocks):
        k0 = blk * cols
        m = min(n_in, k0 + cols) - k0
        w = np.empty(m, out.dtype)
        acc = np.zeros((rows, m), out.dtype)
        bits = np.empty(rng.CHUNK, np.uint64)
        rejected = np.empty(rng.CHUNK, np.int32)
        for j in range(n_out):
            _sample_span(kind, scale, key, uint64(j) * uint64(n_in) + uint64(k0), w, bits, rejected,
                         uniform_layers)
            for b in range(rows):
                dbj = delta[b, j]
                ab = acc[b]
                for k in range(m):
                    ab[k] += dbj * w[k]
        for b in range(rows):
            for k in range(m):
                out[b, k0 + k] = acc[b, k]
