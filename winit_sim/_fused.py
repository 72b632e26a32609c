"""Products with a layer's weights sampled on the fly, never stored (small batches).

For a small batch the product with W costs less than sampling W, and writing W
to memory and reading it back costs as much as the product. These kernels
sample each block of W into a small buffer that stays in cache and use it at
once, in parallel over blocks of the output, so the product uses every core
without BLAS. Each weight comes from the same (key, counter) as in
:func:`winit_sim.inits.fill_weights`, rounded to the same dtype: the matrix is
exactly the one :func:`winit_sim.sample_weights` returns.

Both kernels split work over output blocks only, and each output is summed in
a fixed order, so results do not depend on the thread count.
"""
import numpy as np
from numba import njit, prange, uint64

from . import _rng
from .inits import KIND_NORMAL

_ROW_BLOCK = 16    # rows of W per task in the forward product
_FAST = {"reassoc", "contract", "nsz"}


@njit(inline="always")
def _sample_span(kind, scale, key, first, out, bits, rejected):
    """out[c] = weight at counter first + c (normal or uniform kinds)."""
    if kind == KIND_NORMAL:
        _rng._fill_normal_row(key, first, out, scale, bits, rejected, _rng.ZIG_X, _rng.ZIG_XS,
                              _rng.ZIG_XNEXT, _rng.ZIG_F)
    else:
        _rng._fill_uniform_row(key, first, out, scale, bits)


@njit(parallel=True, cache=True, fastmath=_FAST)
def times_weights_t(kind, scale, key, x, h):
    """h = x @ W.T for W (n_out, n_in) sampled from ``key``; x (B, n_in), h (B, n_out)."""
    rows, n_in = x.shape
    n_out = h.shape[1]
    n_blocks = (n_out + _ROW_BLOCK - 1) // _ROW_BLOCK
    for blk in prange(n_blocks):
        w = np.empty(n_in, x.dtype)
        bits = np.empty(_rng._CHUNK, np.uint64)
        rejected = np.empty(_rng._CHUNK, np.int32)
        for j in range(blk * _ROW_BLOCK, min(n_out, (blk + 1) * _ROW_BLOCK)):
            _sample_span(kind, scale, key, uint64(j) * uint64(n_in), w, bits, rejected)
            for b in range(rows):
                acc = x.dtype.type(0.0)
                xb = x[b]
                for k in range(n_in):
                    acc += xb[k] * w[k]
                h[b, j] = acc


@njit(parallel=True, cache=True, fastmath=_FAST)
def times_weights(kind, scale, key, delta, out):
    """out = delta @ W for W (n_out, n_in) sampled from ``key``; delta (B, n_out), out (B, n_in)."""
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
        bits = np.empty(_rng._CHUNK, np.uint64)
        rejected = np.empty(_rng._CHUNK, np.int32)
        for j in range(n_out):
            _sample_span(kind, scale, key, uint64(j) * uint64(n_in) + uint64(k0), w, bits, rejected)
            for b in range(rows):
                dbj = delta[b, j]
                ab = acc[b]
                for k in range(m):
                    ab[k] += dbj * w[k]
        for b in range(rows):
            for k in range(m):
                out[b, k0 + k] = acc[b, k]
