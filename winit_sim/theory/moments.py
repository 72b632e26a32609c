"""Gaussian moments of activations: the quadrature every theory number rests on, and gains.

Needs the activation registry and its formulas only (no engine, no inits).

Quadrature: E_z[f(sqrt(q) z)], z ~ N(0, 1), by composite Gauss-Legendre on
panels in z split at 0 (the kink of relu, leaky_relu, elu, selu), dyadic from
2^-40 to 1 (so the transition of any activation at |z| ~ 1/sqrt(q) is resolved
for q up to 1e24) and of width 0.5 from 1 to 40 (the density is below 1e-340
beyond). Accurate to ~1e-12 against scipy.integrate.quad for q in [1e-6, 1e6].
Where q is beyond float range (|log q| > 400) the activation's exact large- or
small-signal limit is integrated instead, in log space.
"""
import functools
import math

import numpy as np

from ..activations import kernel_data, resolve_activation
from ..checks import check_nonneg_float
from ..inits import needs_gain, resolve_init
from ..kernels.elementwise import eval_limits, eval_phi_dphi, pair_moments

LN10 = math.log(10.0)
LOG_Q_SAFE = 400.0  # natural log of q beyond which the limit forms are used


def gauss_rule(points, smallest_power, z_max):
    """Nodes z and weights (times the normal density) of the composite Gauss-Legendre rule.

    Panels split at 0, dyadic from 2^smallest_power to 1, width 0.5 from 1 to z_max.
    """
    x, w = np.polynomial.legendre.leggauss(points)
    edges = np.concatenate([[0.0], 2.0 ** np.arange(smallest_power, 1),
                            np.arange(1.5, z_max + 0.01, 0.5)])
    a, b = edges[:-1], edges[1:]
    z = ((b - a)[:, None] * (x[None, :] + 1.0) / 2.0 + a[:, None]).ravel()
    wz = ((b - a)[:, None] / 2.0 * w[None, :]).ravel()
    z = np.concatenate([-z[::-1], z])
    wz = np.concatenate([wz[::-1], wz]) * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return z, wz


Z, WZ = gauss_rule(24, -40, 40.0)


def _code(activation):
    data = kernel_data(activation)
    return data.code, data.param


def phi_dphi_at(code, param, h):
    phi = np.empty_like(h)
    dphi = np.empty_like(h)
    eval_phi_dphi(code, param, h, phi, dphi)
    return phi, dphi


def log_moments(activation, log_q):
    """Natural logs of E[phi(u)^2] and E[phi'(u)^2] for u ~ N(0, q), given log q.

    Exact in log space for any q: homogeneous activations scale exactly; the
    others use their large-/small-signal limits where q is beyond float range.
    """
    data = kernel_data(activation)
    code, param = data.code, data.param
    if data.homogeneous:
        phi, dphi = phi_dphi_at(code, param, Z)
        return math.log(WZ @ phi ** 2) + log_q, math.log(WZ @ dphi ** 2)
    if abs(log_q) <= LOG_Q_SAFE:
        phi, dphi = phi_dphi_at(code, param, math.exp(0.5 * log_q) * Z)
        return safe_log(WZ @ phi ** 2), safe_log(WZ @ dphi ** 2)
    large = np.empty((Z.size, 3))
    small = np.empty((Z.size, 2))
    eval_limits(code, param, Z, large, small)
    if log_q > 0:
        grow = WZ @ large[:, 0] ** 2
        if grow > 0:
            return math.log(grow) + log_q, safe_log(WZ @ large[:, 2] ** 2)
        return safe_log(WZ @ large[:, 1] ** 2), safe_log(WZ @ large[:, 2] ** 2)
    if data.phi0 != 0.0:  # phi(0)^2 dominates
        return math.log(data.phi0 * data.phi0), safe_log(WZ @ small[:, 1] ** 2)
    return math.log(WZ @ small[:, 0] ** 2) + log_q, safe_log(WZ @ small[:, 1] ** 2)


def safe_log(v):
    return math.log(v) if v > 0 else -math.inf


def gaussian_expectation(f, q):
    """E_z[f(sqrt(q) z)] for a vectorised f, with the engine's quadrature rule."""
    return float(WZ @ f(math.sqrt(q) * Z))




def phi0_moments(activation):
    """(phi(0)^2, phi'(0)^2): the moments of a pre-activation that is exactly 0."""
    code, param = _code(activation)
    p0, d0 = phi_dphi_at(code, param, np.zeros(1))
    return p0[0] ** 2, d0[0] ** 2


def gaussian_pair_moments(activation, q, c, z, w):
    """(E[phi(u1) phi(u2)], E[phi'(u1) phi'(u2)]) for correlation c at second moment q."""
    code, param = _code(activation)
    out = np.empty(2)
    pair_moments(code, param, q, c, z, w, out)
    return out


def gain(activation, q=1.0):
    """sigma_w keeping the forward second moment at q (no bias): sqrt(q / E[phi(sqrt(q) z)^2]).

    This is what ``gain=auto`` in an init spec uses (e.g. ``"xavier_normal:gain=auto"``).
    """
    q = check_nonneg_float(q, "q")
    if q == 0:
        raise ValueError("q must be > 0")
    return _gain_cached(resolve_activation(activation).canonical(), q)


@functools.lru_cache(maxsize=256)
def _gain_cached(activation, q):
    return math.sqrt(q / math.exp(log_moments(activation, math.log(q))[0]))




def auto_gain(init, activation):
    """The gain ``gain=auto`` in ``init`` stands for (the computed gain of ``activation``),
    or None when the init does not say auto."""
    if not needs_gain(init):
        return None
    if activation is None:
        raise ValueError(f"init {resolve_init(init).canonical()!r} needs the activation to "
                         f"compute its gain")
    return gain(activation)
