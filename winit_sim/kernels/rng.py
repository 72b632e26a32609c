"""Counter-based, keyed random numbers for the kernels.

Every random number is a pure function of a key and a counter: the key mixes
(seed, trial, layer, stream) and the counter is the element's flat index. So the
result never depends on the thread count or on the order in which rows are
filled, and layer ``l`` of a depth-D net is layer ``l`` of any deeper net.

The bit generator is the SplitMix64 output function applied to ``key + c * gamma``
(a counter-based use of SplitMix64). Normals come from a 1024-layer ziggurat
(Marsaglia & Tsang 2000) whose fast path takes the layer index from the low
10 bits and the uniform from the top 53 bits, so the two never overlap; the rare
rejections draw more bits by re-hashing the same word, which keeps every value
a function of (key, counter) alone.
"""
import math

import numpy as np
from numba import prange, uint64

from . import njit

GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53

# stream ids: one per kind of random quantity
STREAM_WEIGHT = 1
STREAM_BIAS = 2
STREAM_INPUT = 3
STREAM_GRAD = 4
STREAM_WEIGHT2 = 8    # a residual block's second matrix (its first uses STREAM_WEIGHT)
STREAM_BIAS2 = 9
STREAM_TEACHER = 99   # the training probe's teacher matrix
# the conditional engine's draws (see winit_sim.kernels.conditional)
STREAM_COND_PRE = 5      # standard normals Z of H = C Z (forward)
STREAM_COND_REST = 6     # Z' of the part of W the forward did not see (backward)
STREAM_COND_REST_BIAS = 7  # the same for the bias column
STREAM_COND_PRE2 = 10     # ... for a residual block's second matrix
STREAM_COND_REST2 = 11
STREAM_COND_REST_BIAS2 = 12
STREAM_COND_PRE_EXTRA = 13   # orthogonal layers: the frame's columns beyond n_out (forward)
STREAM_COND_REST_EXTRA = 14  # ... and beyond n_in (backward)

CHUNK = 512  # elements hashed per vectorised batch


def _ziggurat_tables(layers):
    """Layer edges X, density values F and tail start R of a ``layers``-layer normal ziggurat.

    R is found by bisection so that the layers (equal areas v) close exactly at
    x = 0 (Marsaglia & Tsang's construction; for 256 layers R = 3.6541528853610088).
    """
    f = lambda x: math.exp(-0.5 * x * x)  # noqa: E731

    def area(r):  # rectangle r*f(r) plus the tail beyond r
        return r * f(r) + math.sqrt(math.pi / 2.0) * math.erfc(r / math.sqrt(2.0))

    def closing(r):  # > 1: the layers reach the top too early (r too small)
        v, x = area(r), r
        for i in range(1, layers - 1):
            y = v / x + f(x)
            if y >= 1.0:
                return 1.0 + (layers - 1 - i)
            x = math.sqrt(-2.0 * math.log(y))
        return v / x + f(x)

    lo, hi = 2.0, 6.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if closing(mid) > 1.0 else (lo, mid)
    r = 0.5 * (lo + hi)
    v = area(r)
    x = np.zeros(layers + 1)
    x[0] = v / f(r)
    x[1] = r
    for i in range(2, layers):
        x[i] = math.sqrt(-2.0 * math.log(v / x[i - 1] + f(x[i - 1])))
    x[layers] = 0.0
    return x, np.exp(-0.5 * x * x), r


# 1024 layers: the branch-free fast path accepts 99.6% of draws (256 layers: 98.6%)
ZIG_LAYERS = 1024
ZIG_X, ZIG_F, ZIG_R = _ziggurat_tables(ZIG_LAYERS)
_ZIG_MASK = np.uint64(ZIG_LAYERS - 1)
_TWO52 = 4503599627370496
ZIG_XS = ZIG_X * 2.0**-52  # layer edges pre-scaled for the integer form of the fast path
ZIG_XNEXT = ZIG_X[1:].copy()  # acceptance edge of each layer, for the fast path


@njit(inline="always")
def mix64(z):
    """SplitMix64 finaliser: a bijective avalanche mix of a 64-bit word."""
    z = (z ^ (z >> uint64(30))) * _M1
    z = (z ^ (z >> uint64(27))) * _M2
    return z ^ (z >> uint64(31))


@njit(cache=True)
def stream_key(seed, trial, layer, stream):
    """Key of one random stream, mixing (seed, trial, layer, stream)."""
    k = mix64(uint64(seed) + GAMMA)
    k = mix64(k ^ mix64(uint64(trial) * _M1 + uint64(0x632BE59BD9B4E019)))
    k = mix64(k ^ mix64(uint64(layer) * _M2 + uint64(0x8CB92BA72F3D8DD7)))
    k = mix64(k ^ mix64(uint64(stream) * GAMMA + uint64(0x2545F4914F6CDD1D)))
    return k


@njit(inline="always")
def _bits(key, counter):
    return mix64(key + (counter + uint64(1)) * GAMMA)


@njit(inline="always")
def _unit(bits):
    """Uniform in [0, 1) from the top 53 bits."""
    return np.float64(np.int64(bits >> uint64(11))) * _TO_UNIT


@njit
def _normal_slow(bits, zx, zf):
    """Full ziggurat from a first word ``bits`` (fast path, wedges, tail)."""
    while True:
        i = np.int64(bits & _ZIG_MASK)
        u = 2.0 * _unit(bits) - 1.0
        x = u * zx[i]
        if abs(x) < zx[i + 1]:
            return x
        if i == 0:  # tail beyond R (Marsaglia's method)
            while True:
                bits = mix64(bits + GAMMA)
                u1 = _unit(bits) + _TO_UNIT
                bits = mix64(bits + GAMMA)
                u2 = _unit(bits) + _TO_UNIT
                xt = -math.log(u1) / ZIG_R
                yt = -math.log(u2)
                if 2.0 * yt >= xt * xt:
                    return ZIG_R + xt if u > 0.0 else -(ZIG_R + xt)
        bits = mix64(bits + GAMMA)
        if zf[i + 1] + (zf[i] - zf[i + 1]) * _unit(bits) < math.exp(-0.5 * x * x):
            return x
        bits = mix64(bits + GAMMA)


@njit(cache=True)
def _hash_block(key, first, bits):
    # separate loop so LLVM vectorises the 64-bit multiplies
    for c in range(bits.size):
        bits[c] = _bits(key, first + uint64(c))


@njit(cache=True)
def _ziggurat_fast(bits, out, scale, rejected, zxs, zxn):
    """Branch-free fast path (99.6% of draws); returns how many were rejected.

    (m - 2^52) * (X[i] * 2^-52) is exactly (2u - 1) * X[i] of _normal_slow: both
    factors are exact, so the one rounding is the same. Rejected positions are
    compacted into ``rejected`` without a branch (always write, advance on reject).
    """
    nrej = 0
    for c in range(bits.size):
        w = bits[c]
        i = np.int32(w & _ZIG_MASK)
        x = np.float64(np.int64(w >> uint64(11)) - _TWO52) * zxs[i]
        out[c] = scale * x
        rejected[nrej] = c
        nrej += abs(x) >= zxn[i]
    return nrej


@njit
def fill_normal_row(key, first, row, scale, bits, rejected):
    """row[c] = scale * N(0,1) drawn at counter first + c.

    The tables are read here as globals, never passed in: a parallel loop passes a
    global array on as a writable one, and the other type would compile this (and
    what it calls) once more."""
    n = row.size
    for c0 in range(0, n, CHUNK):
        m = min(CHUNK, n - c0)
        b = bits[:m]
        _hash_block(key, first + uint64(c0), b)
        nrej = _ziggurat_fast(b, row[c0:c0 + m], scale, rejected, ZIG_XS, ZIG_XNEXT)
        for k in range(nrej):
            c = rejected[k]
            row[c0 + c] = scale * _normal_slow(b[c], ZIG_X, ZIG_F)


@njit
def fill_uniform_row(key, first, row, bound, bits):
    """row[c] = U[-bound, bound) drawn at counter first + c."""
    n = row.size
    for c0 in range(0, n, CHUNK):
        m = min(CHUNK, n - c0)
        b = bits[:m]
        _hash_block(key, first + uint64(c0), b)
        for c in range(m):
            row[c0 + c] = bound * (2.0 * _unit(b[c]) - 1.0)


@njit(parallel=True, cache=True)
def fill_normal(key, out, scale):
    """Fill a 2-D array with scale * N(0, 1); element (r, c) uses counter r*cols + c."""
    rows, cols = out.shape
    for r in prange(rows):
        bits = np.empty(CHUNK, np.uint64)
        rejected = np.empty(CHUNK, np.int32)
        fill_normal_row(key, uint64(r) * uint64(cols), out[r], scale, bits, rejected)


@njit(cache=True)
def fill_normal_serial(key, out, scale):
    """:func:`fill_normal` on one thread, the same numbers: for inputs, gradients and
    biases, where a parallel loop's compile costs more than it saves."""
    rows, cols = out.shape
    bits = np.empty(CHUNK, np.uint64)
    rejected = np.empty(CHUNK, np.int32)
    for r in range(rows):
        fill_normal_row(key, uint64(r) * uint64(cols), out[r], scale, bits, rejected)


@njit(parallel=True, cache=True)
def fill_uniform(key, out, bound):
    """Fill a 2-D array with U[-bound, bound); element (r, c) uses counter r*cols + c."""
    rows, cols = out.shape
    for r in prange(rows):
        bits = np.empty(CHUNK, np.uint64)
        fill_uniform_row(key, uint64(r) * uint64(cols), out[r], bound, bits)
