"""Mean-field theory beside the simulation: q-maps, predictions, fixed points, depth scales.

Conventions (Poole et al. 2016, Schoenholz et al. 2017): layer l has weight
variance ``sigma_w^2 / fan_in`` as the init scheme gives it, bias variance
``sigma_b^2``; ``q`` is the second moment mean(h^2) of a pre-activation (not its
centered variance), as in the engine's ``log10_pre_q``. Every expectation is a
quadrature of :mod:`.moments`.
"""
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..activations import ACTIVATIONS, resolve_activation, torch_gain
from ..checks import check_nonneg_float, check_positive_int, resolve_widths
from ..inits import variance
from ..layers import stream_blocks
from .moments import (LN10, auto_gain, gain, gaussian_pair_moments, log_moments, phi0_moments,
                      safe_log, gauss_rule)
from .residual import predict_blocks


def qmap(activation, sw2, sb2, q):
    """q-map: sw2 * E_z[phi(sqrt(q) z)^2] + sb2."""
    sw2, sb2, q = (check_nonneg_float(v, n) for v, n in ((sw2, "sw2"), (sb2, "sb2"), (q, "q")))
    if q == 0.0:
        return sw2 * phi0_moments(activation)[0] + sb2
    return sw2 * math.exp(log_moments(activation, math.log(q))[0]) + sb2


def _logaddexp(a, b):
    return np.logaddexp(a, b) if (a > -math.inf or b > -math.inf) else -math.inf


def predict(width=None, depth=None, *, widths=None, activation="relu", init="he_normal",
            bias_std=0.0, input_var=1.0, batch=64, arch="mlp"):
    """Mean-field prediction of the engine's per-layer statistics (infinite width).

    Parameters
    ----------
    width, depth, widths
        As in :func:`winit_sim.simulate` (non-uniform widths allowed).
    activation, init, bias_std, input_var
        As in :func:`winit_sim.simulate`.
    batch : int
        Batch size (the weight gradient sums over it).
    arch : str or tuple
        As in :func:`winit_sim.simulate`. A residual arch predicts its per-block
        columns too (``theory_log10_stream_q``, ``..._branch_q``,
        ``..._stream_grad_q``, ``..._wgrad2_q``); see
        :mod:`winit_sim.theory.residual` for the recursions.

    Returns
    -------
    pandas.DataFrame
        ``layer``, ``theory_log10_pre_q`` (log10 E[h_l^2]), ``theory_log10_post_q``
        (log10 E[phi(h_l)^2]), ``theory_log10_grad_q`` (log10 E[delta_l^2] for a
        top gradient of i.i.d. N(0, 1) entries) and ``theory_log10_wgrad_q``
        (log10 E[(dloss/dW_l)^2] = log10(batch E[delta_l^2] E[x_{l-1}^2]): the
        top gradient is independent across samples, so cross-sample terms vanish).

    Notes
    -----
    Forward: q_1 = n_0 Var(W_1) input_var + sb2, q_{l+1} = n_l Var(W_{l+1}) E[phi(h_l)^2]
    + sb2, each layer with its own ``weight_variance``. Backward:
    E[delta_{l-1}^2] = n_l Var(W_l) E[phi'(h_{l-1})^2] E[delta_l^2] (the gradient
    independence assumption). All in log space, so any depth is finite.
    """
    w = resolve_widths(width, depth, widths)
    bias_std = check_nonneg_float(bias_std, "bias_std")
    input_var = check_nonneg_float(input_var, "input_var")
    batch = check_positive_int(batch, "batch")
    depth = w.size - 1
    blocks = stream_blocks(arch, w)
    if blocks is not None:
        return predict_blocks(blocks, int(w[0]), depth, activation, init, bias_std, input_var,
                              batch)
    g = auto_gain(init, activation)
    var = [variance(init, int(w[l]), int(w[l + 1]), g) for l in range(depth)]
    log_sb2 = 2.0 * math.log(bias_std) if bias_std > 0 else -math.inf
    return _mlp_recursion(w, activation, var, [log_sb2] * depth, input_var, batch, True)


def predict_layers(widths, activation, weight_variances, bias_variances=None, *,
                   input_var=1.0, batch=64, last_activation=True):
    """The mean-field prediction of :func:`predict` for an MLP whose layers have their own
    weight and bias variances (such as a trained or a user's model, from its weights).

    Parameters
    ----------
    widths : sequence of int
        ``[n_0, ..., n_L]``.
    activation : str or tuple
        The activation after every layer.
    weight_variances, bias_variances : sequence of float
        Var(W_l) and Var(b_l) (default 0) of layers 1..L.
    input_var, batch
        As in :func:`predict`.
    last_activation : bool
        False: layer L has no activation (a linear read-out), so the top gradient
        is dloss/dh_L ~ N(0, 1).

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`predict`.
    """
    w = resolve_widths(None, None, widths)
    depth = w.size - 1
    for name, values in (("weight_variances", weight_variances),
                         ("bias_variances", bias_variances)):
        if values is not None and len(values) != depth:
            raise ValueError(f"{name} must have one value per layer ({depth}), got {len(values)}")
    var = [check_nonneg_float(v, "weight_variances") for v in weight_variances]
    sb2 = [0.0] * depth if bias_variances is None else \
        [check_nonneg_float(v, "bias_variances") for v in bias_variances]
    log_sb2 = [math.log(v) if v > 0 else -math.inf for v in sb2]
    return _mlp_recursion(w, activation, var, log_sb2, check_nonneg_float(input_var, "input_var"),
                          check_positive_int(batch, "batch"), bool(last_activation))


def _mlp_recursion(w, activation, var, log_sb2, input_var, batch, last_activation):
    """predict's forward and backward recursions, in log space, over per-layer Var(W_l) and
    log Var(b_l)."""
    depth = w.size - 1
    # forward: h_{l+1} sums fan_in terms; backward: dloss/dx_l sums fan_out terms
    log_gain = [math.log(w[l] * v) if v > 0 else -math.inf for l, v in enumerate(var)]
    log_back = [math.log(w[l + 1] * v) if v > 0 else -math.inf for l, v in enumerate(var)]
    pre, post, dmom = np.empty(depth), np.empty(depth), np.empty(depth)
    log_x = math.log(input_var) if input_var > 0 else -math.inf
    x_prev = np.empty(depth)
    for l in range(depth):
        x_prev[l] = log_x
        pre[l] = _logaddexp(log_gain[l] + log_x, log_sb2[l])
        if pre[l] == -math.inf:
            p0, d0 = phi0_moments(activation)
            post[l], dmom[l] = safe_log(p0), safe_log(d0)
        else:
            post[l], dmom[l] = log_moments(activation, pre[l])
        log_x = post[l]
    grad = np.empty(depth)
    g = dmom[-1] if last_activation else 0.0  # E[g^2] = 1
    for l in range(depth - 1, -1, -1):
        grad[l] = g
        if l > 0:
            g = log_back[l] + dmom[l - 1] + g
    wgrad = math.log(batch) + grad + x_prev
    with np.errstate(invalid="ignore"):
        return pd.DataFrame({
            "layer": np.arange(1, depth + 1),
            "theory_log10_pre_q": pre / LN10,
            "theory_log10_post_q": post / LN10,
            "theory_log10_grad_q": grad / LN10,
            "theory_log10_wgrad_q": wgrad / LN10,
        })


@dataclass(frozen=True)
class FixedPoint:
    """Result of :func:`fixed_point`: ``q`` (NaN when there is none) and a status."""
    q: float
    status: str  # "converged", "grows without bound", "collapses to 0"

    def __float__(self):
        return self.q


def fixed_point(activation, sw2, sb2):
    """The stable fixed point q* of the q-map.

    Solved in x = log q: F(x) = log(qmap(e^x)) - x is scanned over q in
    [1e-300, 1e300] for a crossing from + to - (the crossing iteration converges
    to), then refined by bisection. Returns a :class:`FixedPoint`; without a
    finite positive stable fixed point ``q`` is NaN and ``status`` says
    "grows without bound" (F > 0 everywhere) or "collapses to 0" (F < 0).
    """
    sw2 = check_nonneg_float(sw2, "sw2")
    sb2 = check_nonneg_float(sb2, "sb2")
    log_sw2 = math.log(sw2) if sw2 > 0 else -math.inf
    log_sb2 = math.log(sb2) if sb2 > 0 else -math.inf

    def excess(x):
        return _logaddexp(log_sw2 + log_moments(activation, x)[0], log_sb2) - x

    xs = np.linspace(-690.0, 690.0, 277)
    fs = np.array([excess(x) for x in xs])
    if np.all(np.abs(fs) < 1e-12):  # every q is fixed (relu at sw2 = 2, no bias)
        return FixedPoint(1.0, "converged")
    down = np.nonzero((fs[:-1] > 0) & (fs[1:] <= 0))[0]
    if down.size == 0:
        return FixedPoint(math.nan, "grows without bound" if fs[-1] > 0 else "collapses to 0")
    return FixedPoint(math.exp(_bisect_down(excess, xs[down[0]], xs[down[0] + 1], 1e-14)),
                      "converged")


def _bisect_down(f, lo, hi, tol, max_iter=200):
    """The point in [lo, hi] where f passes from > 0 (at lo) to <= 0 (at hi)."""
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < tol:
            break
    return 0.5 * (lo + hi)


def chi1(activation, sw2, sb2, q=None):
    """chi_1 = sw2 * E[phi'(sqrt(q*) z)^2], the per-layer gradient (and correlation) factor at c = 1.

    ``q`` defaults to the fixed point q*; where there is none, a ValueError says why.
    """
    if q is None:
        fp = fixed_point(activation, sw2, sb2)
        if fp.status != "converged":
            raise ValueError(f"no fixed point for {activation} at sw2={sw2}, sb2={sb2}: "
                             f"{fp.status}; pass q explicitly")
        q = fp.q
    return sw2 * math.exp(log_moments(activation, math.log(q))[1])


def critical_sw2(activation, sb2=0.0, lo=1e-3, hi=1e3):
    """The sigma_w^2 with chi_1 = 1 at the fixed point (the edge of chaos), by bisection.

    Each search is some 500 fixed-point scans (about a second), so results are kept
    per (activation, sb2, lo, hi) for the process: the gain table, the CLI and the
    phase diagram ask for the same ones again.
    """
    key = (resolve_activation(activation).canonical(), check_nonneg_float(sb2, "sb2"),
           float(lo), float(hi))
    if key not in _CRITICAL:
        try:
            _CRITICAL[key] = _critical_sw2(*key)
        except ValueError as err:   # kept too: the search is as long when it fails
            _CRITICAL[key] = err
    found = _CRITICAL[key]
    if isinstance(found, ValueError):
        raise ValueError(str(found))
    return found


_CRITICAL = {}


def _critical_sw2(activation, sb2, lo, hi):
    def excess(sw2):
        fp = fixed_point(activation, sw2, sb2)
        q = fp.q if fp.status == "converged" else (1e-300 if fp.status == "collapses to 0"
                                                   else 1e300)
        return chi1(activation, sw2, sb2, q=q) - 1.0

    a, b = math.log(lo), math.log(hi)
    fa, fb = excess(lo), excess(hi)
    if fa * fb > 0:
        raise ValueError(f"chi_1 - 1 does not change sign for sw2 in [{lo}, {hi}]")
    for _ in range(200):
        m = 0.5 * (a + b)
        fm = excess(math.exp(m))
        if (fm > 0) == (fb > 0):
            b, fb = m, fm
        else:
            a, fa = m, fm
        if b - a < 1e-13:
            break
    return math.exp(0.5 * (a + b))


def gain_table(activations=None):
    """Every activation: computed gain, edge-of-chaos sigma_w, chi_1 at the gain, torch's gain."""
    rows = []
    for act in activations or ACTIVATIONS.names():
        spec = resolve_activation(act)
        g = gain(spec)
        try:
            edge = math.sqrt(critical_sw2(spec, 0.0))
        except ValueError:
            edge = math.nan
        t = torch_gain(spec)
        t = math.nan if t is None else t
        rows.append({"activation": spec.canonical(), "gain": g, "edge_of_chaos_sigma_w": edge,
                     "chi1_at_gain": chi1(spec, g * g, 0.0, q=1.0), "torch_gain": t,
                     "torch_minus_gain": t - g})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------
# Correlation map and depth scales (Schoenholz et al. 2017)

Z2, W2 = gauss_rule(16, -12, 9.0)  # coarser rule for the 2-D correlation map
W2 = W2 / W2.sum()


def _pairs(activation, q, c):
    return gaussian_pair_moments(activation, q, c, Z2, W2)


def correlation_map(activation, sw2, sb2, c, q=None):
    """c -> (sw2 E[phi(u1) phi(u2)] + sb2) / q*, u1, u2 ~ N(0, q*) with correlation c.

    ``q`` defaults to the fixed point q*. Accuracy ~1e-6 (a product Gauss-Legendre
    rule; the kink of relu-like activations is not aligned with it for c < 1).
    """
    q = _q_star(activation, sw2, sb2) if q is None else q
    return (sw2 * _pairs(activation, q, c)[0] + sb2) / q


def _q_star(activation, sw2, sb2):
    fp = fixed_point(activation, sw2, sb2)
    if fp.status != "converged":
        raise ValueError(f"no fixed point for {activation} at sw2={sw2}, sb2={sb2}: {fp.status}")
    return fp.q


def depth_scales(activation, sw2, sb2):
    """Fixed points, slopes and depth scales of signal propagation.

    Returns
    -------
    dict
        ``q_star``; ``chi1`` = sw2 E[phi'(u)^2]; ``chi_q``, the slope of the
        q-map at q* (found by a central difference) and ``xi_q`` = -1/log(chi_q),
        the depth over which q approaches q*; ``c_star``, the stable fixed point of
        the correlation map (1 in the ordered phase); ``chi_c`` = sw2
        E[phi'(u1) phi'(u2)] at c*, and ``xi_c`` = -1/log(chi_c), the depth over
        which inputs' correlations are forgotten (infinite at the edge of chaos);
        ``phase``: "ordered" (chi1 < 1) or "chaotic".
    """
    q = _q_star(activation, sw2, sb2)
    eps = 1e-5
    chi_q = (qmap(activation, sw2, sb2, q * (1 + eps)) -
             qmap(activation, sw2, sb2, q * (1 - eps))) / (2 * eps * q)
    c1 = chi1(activation, sw2, sb2, q=q)
    if c1 <= 1.0:
        c_star, chi_c = 1.0, c1
    else:  # chaotic: the stable correlation fixed point is below 1; bisection on map(c) - c
        lo, hi = -1.0 + 1e-12, 1.0 - 1e-9
        f = lambda c: correlation_map(activation, sw2, sb2, c, q=q) - c  # noqa: E731
        if f(lo) < 0:
            lo = 0.0
        c_star = _bisect_down(f, lo, hi, 0.0, max_iter=60)
        chi_c = sw2 * _pairs(activation, q, c_star)[1]
    scale = lambda chi: math.inf if chi >= 1.0 or chi <= 0 else -1.0 / math.log(chi)  # noqa: E731
    return {"q_star": q, "chi1": c1, "chi_q": chi_q, "xi_q": scale(chi_q), "c_star": c_star,
            "chi_c": chi_c, "xi_c": scale(chi_c), "phase": "ordered" if c1 < 1.0 else "chaotic"}


def phase_diagram(activation, sw2_values, sb2_values):
    """Order/chaos table over a (sw2, sb2) grid: one row per point, with depth scales.

    Points without a finite fixed point get NaN scales and their status as phase.
    """
    rows = []
    for sb2 in sb2_values:
        for sw2 in sw2_values:
            try:
                d = depth_scales(activation, sw2, sb2)
            except ValueError:
                fp = fixed_point(activation, sw2, sb2)
                d = {"q_star": math.nan, "chi1": math.nan, "chi_q": math.nan, "xi_q": math.nan,
                     "c_star": math.nan, "chi_c": math.nan, "xi_c": math.nan,
                     "phase": fp.status}
            rows.append({"sw2": sw2, "sb2": sb2, **d})
    return pd.DataFrame(rows)
