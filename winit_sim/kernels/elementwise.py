"""Every activation's formulas: phi, phi', and the large- and small-signal limits.

One branch per entry of :data:`winit_sim.activations.ACTIVATIONS`, selected by
the entry's code (``a``) with its kernel parameter ``p``. The codes are read
from the registry, never written by hand. An unknown code is refused by
:func:`check_code` before any loop runs (a raise inside a parallel loop would
serialise it), and inside the formulas it gives NaN, never another
activation. ``tests/test_activations.py`` checks that every entry has a branch
in each of these, a NumPy/SciPy reference, and theory.

The limits are used where a layer's log-scale is beyond float range:
``phi_large`` is the limit of phi(c h) as c -> inf split as (growing part / c,
bounded part, phi'), and ``phi_small`` the limit of (phi(c h) - phi(0)) / c as
c -> 0 with phi' there.
"""
import math

import numpy as np
from numba import prange

from . import njit

from ..activations import ACTIVATIONS, SELU_ALPHA, SELU_LAMBDA

LINEAR = ACTIVATIONS.code("linear")
RELU = ACTIVATIONS.code("relu")
LEAKY_RELU = ACTIVATIONS.code("leaky_relu")
TANH = ACTIVATIONS.code("tanh")
SIGMOID = ACTIVATIONS.code("sigmoid")
GELU = ACTIVATIONS.code("gelu")
SILU = ACTIVATIONS.code("silu")
ELU = ACTIVATIONS.code("elu")
SELU = ACTIVATIONS.code("selu")
SOFTPLUS = ACTIVATIONS.code("softplus")
LN2 = math.log(2.0)
N_CODES = len(ACTIVATIONS.names())
NAN = np.nan


@njit(cache=True)
def check_code(a):
    """Refuse a code that is no entry of the registry (call before the loops)."""
    if a < 0 or a >= N_CODES:
        raise ValueError("unknown activation code")


@njit(inline="always")
def _sigmoid(h):
    if h >= 0.0:
        return 1.0 / (1.0 + math.exp(-h))
    e = math.exp(h)
    return e / (1.0 + e)


@njit(inline="always")
def _sech2(h):
    """tanh'(h) = 1/cosh(h)^2: stays accurate (not 1 - 1) where tanh(h) rounds to +-1."""
    c = math.cosh(h)
    return 1.0 / (c * c)


@njit(inline="always")
def _dsigmoid(h):
    """sigmoid'(h) = e/(1+e)^2 with e = exp(-|h|): accurate in both tails."""
    e = math.exp(-abs(h))
    return e / ((1.0 + e) * (1.0 + e))


@njit(inline="always")
def _softplus(b, h):
    """log(1 + e^(b h)) / b without overflow: h + log1p(e^-(b h)) / b for b h > 0."""
    z = b * h
    if z > 0.0:
        return h + math.log1p(math.exp(-z)) / b
    return math.log1p(math.exp(z)) / b


@njit(inline="always")
def phi(a, p, h):
    """phi(h) in float64; ``a`` is the code, ``p`` its parameter."""
    if a == LINEAR:
        return h
    if a == RELU:
        return h if h > 0.0 else 0.0
    if a == LEAKY_RELU:
        return h if h > 0.0 else p * h
    if a == TANH:
        return math.tanh(h)
    if a == SIGMOID:
        return _sigmoid(h)
    if a == GELU:
        return 0.5 * h * math.erfc(-h / math.sqrt(2.0))
    if a == SILU:
        return h * _sigmoid(h)
    if a == ELU:
        return h if h > 0.0 else p * math.expm1(h)
    if a == SELU:
        return SELU_LAMBDA * (h if h > 0.0 else SELU_ALPHA * math.expm1(h))
    if a == SOFTPLUS:
        return _softplus(p, h)
    return NAN   # no formula: refused by check_code, caught by the coverage test


@njit(inline="always")
def dphi(a, p, h):
    """phi'(h); at the kink of relu/leaky_relu/elu the left derivative (h = 0 -> h <= 0)."""
    if a == LINEAR:
        return 1.0
    if a == RELU:
        return 1.0 if h > 0.0 else 0.0
    if a == LEAKY_RELU:
        return 1.0 if h > 0.0 else p
    if a == TANH:
        return _sech2(h)
    if a == SIGMOID:
        return _dsigmoid(h)
    if a == GELU:
        return 0.5 * math.erfc(-h / math.sqrt(2.0)) + h * math.exp(-0.5 * h * h) / math.sqrt(2.0 * math.pi)
    if a == SILU:
        s = _sigmoid(h)
        return s * (1.0 + h * (1.0 - s))
    if a == ELU:
        return 1.0 if h > 0.0 else p * math.exp(h)
    if a == SELU:
        return SELU_LAMBDA * (1.0 if h > 0.0 else SELU_ALPHA * math.exp(h))
    if a == SOFTPLUS:
        return _sigmoid(p * h)
    return NAN


@njit(inline="always")
def phi_dphi_homogeneous(a, p, h):
    """:func:`phi_dphi` of the homogeneous entries only (``homogeneous`` in the registry),
    NaN for the others: what a homogeneous activation's kernels compile."""
    if a == RELU:
        return (h, 1.0) if h > 0.0 else (0.0, 0.0)
    if a == LINEAR:
        return h, 1.0
    if a == LEAKY_RELU:
        return (h, 1.0) if h > 0.0 else (p * h, p)
    return NAN, NAN


@njit(inline="always")
def phi_dphi(a, p, h):
    """(phi(h), phi'(h)) in one call, sharing work where the formulas allow."""
    if a == RELU or a == LINEAR or a == LEAKY_RELU:
        return phi_dphi_homogeneous(a, p, h)
    if a == TANH:
        return math.tanh(h), _sech2(h)
    if a == SIGMOID:
        return _sigmoid(h), _dsigmoid(h)
    if a == SILU:
        sg = _sigmoid(h)
        return h * sg, sg * (1.0 + h * (1.0 - sg))
    return phi(a, p, h), dphi(a, p, h)


@njit(inline="always")
def phi_large(a, p, h):
    """Limit of phi(c h) as c -> inf, split as (growing part / c, bounded part, phi')."""
    pos = h > 0.0
    if a == TANH:
        return 0.0, (1.0 if pos else (-1.0 if h < 0.0 else 0.0)), 0.0
    if a == SIGMOID:
        return 0.0, (1.0 if pos else (0.0 if h < 0.0 else 0.5)), 0.0
    if a == GELU or a == SILU:
        return (h if pos else 0.0), 0.0, (1.0 if pos else 0.0)
    if a == ELU:
        return (h if pos else 0.0), (0.0 if pos or h == 0.0 else -p), (1.0 if pos else 0.0)
    if a == SELU:
        return ((SELU_LAMBDA * h) if pos else 0.0), \
            (0.0 if pos or h == 0.0 else -SELU_LAMBDA * SELU_ALPHA), (SELU_LAMBDA if pos else 0.0)
    if a == SOFTPLUS:
        return (h if pos else 0.0), (LN2 / p if h == 0.0 else 0.0), \
            (1.0 if pos else (0.5 if h == 0.0 else 0.0))
    # homogeneous: exact at any scale (the engines never need it; the tests do)
    if a == LINEAR:
        return h, 0.0, 1.0
    if a == RELU:
        return (h if pos else 0.0), 0.0, (1.0 if pos else 0.0)
    if a == LEAKY_RELU:
        return (h if pos else p * h), 0.0, (1.0 if pos else p)
    return NAN, NAN, NAN


@njit(inline="always")
def phi_small(a, p, h):
    """Limit of (phi(c h) - phi(0)) / c as c -> 0, and phi' there: (value, phi')."""
    if a == TANH:
        return h, 1.0
    if a == SIGMOID:
        return 0.25 * h, 0.25
    if a == GELU or a == SILU:
        return 0.5 * h, 0.5
    if a == ELU:
        return (h, 1.0) if h > 0.0 else (p * h, p)
    if a == SELU:
        return (SELU_LAMBDA * h, SELU_LAMBDA) if h > 0.0 else \
            (SELU_LAMBDA * SELU_ALPHA * h, SELU_LAMBDA * SELU_ALPHA)
    if a == SOFTPLUS:
        return 0.5 * h, 0.5
    if a == LINEAR:   # homogeneous: exact at any scale (the engines never need it)
        return h, 1.0
    if a == RELU:
        return (h, 1.0) if h > 0.0 else (0.0, 0.0)
    if a == LEAKY_RELU:
        return (h, 1.0) if h > 0.0 else (p * h, p)
    return NAN, NAN


# ---------------------------------------------------------------------------
# Array forms (public phi/dphi, the theory's quadratures and the coverage tests)

@njit(cache=True)
def eval_phi(a, p, h, out):
    """out = phi(h) for 1-D float64 arrays."""
    check_code(a)
    for i in range(h.size):
        out[i] = phi(a, p, h[i])


@njit(cache=True)
def eval_dphi(a, p, h, out):
    """out = phi'(h) for 1-D float64 arrays."""
    check_code(a)
    for i in range(h.size):
        out[i] = dphi(a, p, h[i])


@njit(cache=True)
def eval_phi_dphi(a, p, h, phi_out, dphi_out):
    """phi and phi' of every entry of a 1-D float64 array (the theory's quadratures)."""
    check_code(a)
    for i in range(h.size):
        phi_out[i], dphi_out[i] = phi_dphi(a, p, h[i])


@njit(cache=True)
def eval_limits(a, p, z, large, small):
    """Per entry: (growing, bounded, phi') of the large-signal limit and (value, phi') of the small one.

    ``large`` has 3 columns and ``small`` 2; used where exp(log q) is out of float range.
    """
    check_code(a)
    for i in range(z.size):
        large[i, 0], large[i, 1], large[i, 2] = phi_large(a, p, z[i])
        small[i, 0], small[i, 1] = phi_small(a, p, z[i])


@njit(parallel=True, cache=True)
def pair_moments(a, p, q, c, z, w, out):
    """out = (E[phi(u1) phi(u2)], E[phi'(u1) phi'(u2)]) for unit-correlation c at second
    moment q, on the product rule (z, w).

    phi and phi' come from :func:`eval_phi_dphi`, one compiled copy of every formula
    (written out twice inside the parallel loop, they cost 12 s of first compile)."""
    check_code(a)
    s = math.sqrt(max(0.0, 1.0 - c * c))
    rq = math.sqrt(q)
    n = z.size
    f1 = np.empty(n)
    d1 = np.empty(n)
    eval_phi_dphi(a, p, rq * z, f1, d1)
    part = np.zeros((n, 2))
    for i in prange(n):
        h = np.empty(n)
        for j in range(n):
            h[j] = rq * (c * z[i] + s * z[j])
        f2 = np.empty(n)
        d2 = np.empty(n)
        eval_phi_dphi(a, p, h, f2, d2)
        acc_f = 0.0
        acc_d = 0.0
        for j in range(n):
            acc_f += w[j] * f2[j]
            acc_d += w[j] * d2[j]
        part[i, 0] = w[i] * f1[i] * acc_f
        part[i, 1] = w[i] * d1[i] * acc_d
    out[0] = 0.0
    out[1] = 0.0
    for i in range(n):  # fixed order: deterministic
        out[0] += part[i, 0]
        out[1] += part[i, 1]
