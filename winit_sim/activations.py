"""Activation functions: the public registry and their exact derivatives.

Each activation is written once here, as ``_phi`` / ``_dphi`` (and its large-
and small-signal limits, used when the log-scale of a layer is beyond float
range); every kernel calls these.
"""
import math

import numpy as np
from numba import njit

from ._spec import Entry, Param, Registry

LINEAR, RELU, LEAKY_RELU, TANH, SIGMOID, GELU, SILU, ELU, SELU = range(9)

SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717

ACTIVATIONS = Registry("activation", [
    Entry("linear", doc="identity"),
    Entry("relu", doc="max(h, 0)"),
    Entry("leaky_relu", {"slope": Param(0.01)}, doc="h if h > 0 else slope*h"),
    Entry("tanh"),
    Entry("sigmoid", doc="1/(1+exp(-h))"),
    Entry("gelu", doc="h*Phi(h) (exact erf form)"),
    Entry("silu", doc="h*sigmoid(h)"),
    Entry("elu", {"alpha": Param(1.0, minimum=0.0)}, doc="h if h > 0 else alpha*(exp(h)-1)"),
    Entry("selu", doc="lambda*elu_alpha with the self-normalising constants"),
])
_CODES = {n: i for i, n in enumerate(ACTIVATIONS.names())}
# positively homogeneous: phi(c h) = c phi(h) for c > 0, so a log-scale is exact
HOMOGENEOUS = (LINEAR, RELU, LEAKY_RELU)


def resolve_activation(activation):
    """Validate an activation spec and return its Spec."""
    return ACTIVATIONS.resolve(activation)


def activation_code(spec):
    """(code, parameter) pair passed to the kernels."""
    p = spec.params
    return _CODES[spec.name], float(p.get("slope", p.get("alpha", 0.0)))


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
def _phi(a, p, h):
    """phi(h) in float64; ``a`` is the code, ``p`` its parameter (slope or alpha)."""
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
    return SELU_LAMBDA * (h if h > 0.0 else SELU_ALPHA * math.expm1(h))


@njit(inline="always")
def _dphi(a, p, h):
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
    return SELU_LAMBDA * (1.0 if h > 0.0 else SELU_ALPHA * math.exp(h))


@njit(inline="always")
def _phi_dphi(a, p, h):
    """(phi(h), phi'(h)) in one call, sharing work where the formulas allow."""
    if a == RELU:
        return (h, 1.0) if h > 0.0 else (0.0, 0.0)
    if a == LINEAR:
        return h, 1.0
    if a == LEAKY_RELU:
        return (h, 1.0) if h > 0.0 else (p * h, p)
    if a == TANH:
        return math.tanh(h), _sech2(h)
    if a == SIGMOID:
        return _sigmoid(h), _dsigmoid(h)
    if a == SILU:
        sg = _sigmoid(h)
        return h * sg, sg * (1.0 + h * (1.0 - sg))
    return _phi(a, p, h), _dphi(a, p, h)


@njit(inline="always")
def _phi_large(a, p, h):
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
    # SELU (homogeneous codes never get here)
    return ((SELU_LAMBDA * h) if pos else 0.0), \
        (0.0 if pos or h == 0.0 else -SELU_LAMBDA * SELU_ALPHA), (SELU_LAMBDA if pos else 0.0)


@njit(inline="always")
def _phi_small(a, p, h):
    """Limit of (phi(c h) - phi(0)) / c as c -> 0, and phi' there: (value, phi')."""
    if a == TANH:
        return h, 1.0
    if a == SIGMOID:
        return 0.25 * h, 0.25
    if a == GELU or a == SILU:
        return 0.5 * h, 0.5
    if a == ELU:
        return (h, 1.0) if h > 0.0 else (p * h, p)
    return (SELU_LAMBDA * h, SELU_LAMBDA) if h > 0.0 else \
        (SELU_LAMBDA * SELU_ALPHA * h, SELU_LAMBDA * SELU_ALPHA)


def sup_dphi(spec):
    """sup |phi'| over the real line (the reference for ``frac_saturated``)."""
    code, p = activation_code(spec)
    if code in (LINEAR, RELU, TANH):
        return 1.0
    if code == LEAKY_RELU:
        return max(1.0, abs(p))
    if code == SIGMOID:
        return 0.25
    if code == ELU:
        return max(1.0, p)
    if code == SELU:
        return SELU_LAMBDA * SELU_ALPHA
    # gelu, silu: smooth, single interior maximum; dense grid then golden-section refine
    f = lambda h: abs(_dphi(code, p, h))  # noqa: E731
    grid = np.linspace(-10.0, 10.0, 20001)
    i = int(np.argmax([f(h) for h in grid]))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    g = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(100):
        m1, m2 = hi - g * (hi - lo), lo + g * (hi - lo)
        if f(m1) > f(m2):
            hi = m2
        else:
            lo = m1
    return f(0.5 * (lo + hi))


def phi(activation, h):
    """Evaluate an activation elementwise (NumPy array in, float64 array out)."""
    code, p = activation_code(resolve_activation(activation))
    h = np.asarray(h, dtype=np.float64)
    return np.vectorize(lambda v: _phi(code, p, v), otypes=[np.float64])(h)


def dphi(activation, h):
    """Evaluate an activation's exact derivative elementwise."""
    code, p = activation_code(resolve_activation(activation))
    h = np.asarray(h, dtype=np.float64)
    return np.vectorize(lambda v: _dphi(code, p, v), otypes=[np.float64])(h)


@njit(cache=True)
def eval_phi_dphi(a, p, h, phi_out, dphi_out):
    """phi and phi' of every entry of a 1-D float64 array (the theory's quadratures)."""
    for i in range(h.size):
        phi_out[i], dphi_out[i] = _phi_dphi(a, p, h[i])


@njit(cache=True)
def eval_limits(a, p, z, large, small):
    """Per entry: (growing, bounded, phi') of the large-signal limit and (value, phi') of the small one.

    ``large`` has 3 columns and ``small`` 2; used where exp(log q) is out of float range.
    """
    for i in range(z.size):
        large[i, 0], large[i, 1], large[i, 2] = _phi_large(a, p, z[i])
        small[i, 0], small[i, 1] = _phi_small(a, p, z[i])
