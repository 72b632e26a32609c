"""Slow, obviously-correct NumPy references for the kernels (float64, no log-scales).

Activations are written here with NumPy's and SciPy's own functions, not the
package's: a reference that borrowed ``winit_sim.phi`` would never test the
formulas themselves. Only the random streams (which the references must share
to compare bit-for-bit draws) and the registry's names come from the package.
"""
import math

import numpy as np
from scipy.special import expit, ndtr

from winit_sim import ACTIVATIONS
from winit_sim.activations import resolve_activation
from winit_sim.kernels import rng as _rng

EPS = np.finfo(np.float64).eps
SELU_LAMBDA = 1.0507009873554805   # Klambauer et al. 2017, eq. 14
SELU_ALPHA = 1.6732632423543772

# name -> (phi(h, params), phi'(h, params)); phi' at a kink is the left derivative
NAIVE = {
    "linear": (lambda h, p: h, lambda h, p: np.ones_like(h)),
    "relu": (lambda h, p: np.maximum(h, 0.0), lambda h, p: np.where(h > 0, 1.0, 0.0)),
    "leaky_relu": (lambda h, p: np.where(h > 0, h, p["slope"] * h),
                   lambda h, p: np.where(h > 0, 1.0, p["slope"])),
    "tanh": (lambda h, p: np.tanh(h),   # sech^2 h = 4 e^(-2|h|) / (1 + e^(-2|h|))^2
             lambda h, p: 4.0 * np.exp(-2.0 * np.abs(h)) / (1.0 + np.exp(-2.0 * np.abs(h))) ** 2),
    "sigmoid": (lambda h, p: expit(h), lambda h, p: expit(h) * expit(-h)),
    "gelu": (lambda h, p: h * ndtr(h),   # ndtr: the standard normal CDF, accurate in its tails
             lambda h, p: ndtr(h) + h * np.exp(-0.5 * h * h) / math.sqrt(2.0 * math.pi)),
    "silu": (lambda h, p: h * expit(h), lambda h, p: expit(h) * (1.0 + h * expit(-h))),
    "elu": (lambda h, p: np.where(h > 0, h, p["alpha"] * np.expm1(np.minimum(h, 0.0))),
            lambda h, p: np.where(h > 0, 1.0, p["alpha"] * np.exp(np.minimum(h, 0.0)))),
    "selu": (lambda h, p: SELU_LAMBDA * np.where(h > 0, h, SELU_ALPHA * np.expm1(np.minimum(h, 0.0))),
             lambda h, p: SELU_LAMBDA * np.where(h > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(h, 0.0)))),
    "softplus": (lambda h, p: np.logaddexp(0.0, p["beta"] * h) / p["beta"],
                 lambda h, p: expit(p["beta"] * h)),
}


def example_specs():
    """One spec per registry entry, each parameter moved off its default (the tests'
    parametrization: derived from the registry, so a new entry is tested at once)."""
    out = []
    for entry in ACTIVATIONS:
        extra = [f"{k}={1.5 * v.default + 0.2:g}" for k, v in entry.params.items()
                 if not v.choices]
        out.append(entry.name + (":" + ",".join(extra) if extra else ""))
    return out


def phi(activation, h):
    """phi of an activation spec, by the formulas above."""
    spec = resolve_activation(activation)
    return NAIVE[spec.name][0](np.asarray(h, np.float64), spec.params)


def dphi(activation, h):
    """phi' of an activation spec, by the formulas above."""
    spec = resolve_activation(activation)
    return NAIVE[spec.name][1](np.asarray(h, np.float64), spec.params)


def _log10_mean_sq(v):
    q = np.mean(np.asarray(v) ** 2)
    return np.log10(q) if q > 0 else -np.inf


def _forward_rows(hs, xs, activation, sup):
    rows = []
    for l, h in enumerate(hs):
        y, d = xs[l + 1], dphi(activation, h)
        q = np.mean(h ** 2)
        rows.append({
            "pre_mean": h.mean(), "pre_var": h.var(),
            "log10_pre_q": _log10_mean_sq(h), "log10_post_q": _log10_mean_sq(y),
            "frac_zero": np.mean(y == 0), "frac_saturated": np.mean(np.abs(d) < 0.01 * sup),
            "unit_var_ratio": np.mean(h.var(axis=1)) / q if q > 0 else 0.0,
        })
    return rows


def reference_stats(weights, x, activation, grad_output=None, biases=None, sup=1.0):
    """Per-layer statistics of a plain forward/backward pass, one dict per layer."""
    x = np.asarray(x, np.float64)
    xs, hs = [x], []
    for l, w in enumerate(weights):
        h = xs[-1] @ np.asarray(w, np.float64).T
        if biases is not None:
            h = h + np.asarray(biases[l], np.float64)
        hs.append(h)
        xs.append(phi(activation, h))
    rows = _forward_rows(hs, xs, activation, sup)
    if grad_output is not None:
        gx = np.asarray(grad_output, np.float64)
        for l in range(len(weights) - 1, -1, -1):
            delta = gx * dphi(activation, hs[l])
            rows[l]["log10_grad_q"] = _log10_mean_sq(delta)
            rows[l]["log10_wgrad_q"] = _log10_mean_sq(delta.T @ xs[l])
            gx = delta @ np.asarray(weights[l], np.float64)
    return rows


def _normals(seed, trial, layer, stream, shape):
    z = np.empty(shape)
    _rng.fill_normal(np.uint64(_rng.stream_key(seed, trial, layer, stream)), z, 1.0)
    return z


CHOL_PIVOT = 1e-9


def _sqrt_factor(k, c):
    """C with C C^T = k, from k / c (the kernel factorises matrices of that scale).

    Cholesky when every pivot exceeds CHOL_PIVOT x the largest diagonal entry,
    else V sqrt(L) from eigh with tiny eigenvalues dropped (as the kernel does).
    """
    try:
        low = np.linalg.cholesky(k / c)
        if np.all(np.diag(low) ** 2 > CHOL_PIVOT * np.max(np.diag(k / c))):
            return np.sqrt(c) * low
    except np.linalg.LinAlgError:
        pass
    lam, v = np.linalg.eigh(k / c)
    keep = lam > k.shape[0] * EPS * lam.max()
    v = v * np.sign(v[np.argmax(np.abs(v), axis=0), np.arange(v.shape[1])])  # largest entry > 0
    f = np.sqrt(c) * v * np.where(keep, np.sqrt(np.where(keep, lam, 0.0)), 0.0)
    f[np.diag(k) == 0] = 0.0   # a sample with no signal has an exactly zero row
    return f


def reference_conditional(widths, activation, stds, bias_std, seed, trial, batch, sup=1.0):
    """The conditional engine written out in true units with the engine's random streams.

    Forward: H_l = C Z with C C^T = sw^2 X~ X~^T, X~ = [X, (sb/sw) 1]. Backward:
    M = C' Z' with C' C'^T = sw^2 delta delta^T, and the gradient below is
    M_x + (delta H^T - M X~^T) pinv(X~ X~^T) X.
    """
    B = batch
    x = _normals(seed, trial, 0, _rng.STREAM_INPUT, (B, widths[0]))
    xs, hs, xts = [x], [], []
    for l, sw in enumerate(stds):
        xt = xs[-1] if bias_std == 0 else np.hstack([xs[-1], np.full((B, 1), bias_std / sw)])
        k = sw ** 2 * xt @ xt.T
        h = _sqrt_factor(k, np.mean(np.diag(k))) @ _normals(seed, trial, l + 1,
                                                            _rng.STREAM_COND_PRE,
                                                            (B, widths[l + 1]))
        hs.append(h)
        xs.append(phi(activation, h))
        xts.append(xt)
    rows = _forward_rows(hs, xs, activation, sup)
    g = _normals(seed, trial, 0, _rng.STREAM_GRAD, (B, widths[-1]))
    for l in range(len(stds) - 1, -1, -1):
        delta = g * dphi(activation, hs[l])
        rows[l]["log10_grad_q"] = _log10_mean_sq(delta)
        rows[l]["log10_wgrad_q"] = _log10_mean_sq(delta.T @ xs[l])
        if l == 0:
            break
        cd = stds[l] * _sqrt_factor(delta @ delta.T, np.mean(delta ** 2))
        m = cd @ _normals(seed, trial, l + 1, _rng.STREAM_COND_REST, (B, widths[l]))
        mt = m if bias_std == 0 else np.hstack(
            [m, cd @ _normals(seed, trial, l + 1, _rng.STREAM_COND_REST_BIAS, (B, 1))])
        gram = xts[l] @ xts[l].T
        r = (delta @ hs[l].T - mt @ xts[l].T) @ np.linalg.pinv(gram, rcond=B * EPS)
        g = m + r @ xs[l]
    return rows


def _norm(kind, z, eps):
    """N(z) per row and, per row, its Jacobian dN/dz (n x n), from the definitions."""
    n = z.shape[1]
    if kind == "none":
        return z, np.broadcast_to(np.eye(n), (z.shape[0], n, n))
    c = z - z.mean(axis=1, keepdims=True) if kind == "layernorm" else z
    sigma = np.sqrt(np.mean(c ** 2, axis=1, keepdims=True) + eps)
    u = c / sigma
    centre = np.eye(n) - (1.0 / n if kind == "layernorm" else 0.0)
    # d u_i / d z_k = centre_ik / sigma - c_i c_k / (n sigma^3)
    jac = (centre[None] / sigma[:, :, None]
           - c[:, :, None] * c[:, None, :] / (n * sigma[:, :, None] ** 3))
    return u, jac


def reference_residual(weights, x, activation, grad_output=None, biases=None, *, branch=1,
                       norm="none", post=False, alpha=1.0, beta=1.0, eps=1e-5, sup=1.0):
    """Per-block statistics of a residual net (see winit_sim.kernels.residual), plainly.

    weights in forward order (branch 2: W_1, V_1, W_2, ...); the backward builds
    every norm's Jacobian explicitly.
    """
    x = np.asarray(x, np.float64)
    mats = [np.asarray(w, np.float64) for w in weights]
    bs = [np.zeros(w.shape[0]) if biases is None else np.asarray(biases[i], np.float64)
          for i, w in enumerate(mats)]
    depth = len(mats) // branch
    tape, rows = [], []
    for l in range(depth):
        ws_, b_ = mats[l * branch:(l + 1) * branch], bs[l * branch:(l + 1) * branch]
        u, jac_in = (x, None) if post else _norm(norm, x, eps)
        a = u @ ws_[0].T + b_[0] if branch == 2 else u
        y = phi(activation, a)
        f = y @ ws_[-1].T + b_[-1]
        z = beta * x + alpha * f
        xn, jac_out = _norm(norm, z, eps) if post else (z, None)
        row = _forward_rows([a], [u, y], activation, sup)[0]
        row["log10_stream_q"] = _log10_mean_sq(xn)
        row["log10_branch_q"] = _log10_mean_sq(alpha * f)
        rows.append(row)
        tape.append((ws_, u, jac_in, a, y, jac_out))
        x = xn
    if grad_output is not None:
        g = np.asarray(grad_output, np.float64)
        for l in range(depth - 1, -1, -1):
            ws_, u, jac_in, a, y, jac_out = tape[l]
            rows[l]["log10_stream_grad_q"] = _log10_mean_sq(g)
            if post:
                g = np.einsum("ri,rik->rk", g, jac_out)
            gf = alpha * g
            rows[l]["log10_wgrad2_q" if branch == 2 else "log10_wgrad_q"] = \
                _log10_mean_sq(gf.T @ y)
            delta = (gf @ ws_[-1]) * dphi(activation, a)
            rows[l]["log10_grad_q"] = _log10_mean_sq(delta)
            if branch == 2:
                rows[l]["log10_wgrad_q"] = _log10_mean_sq(delta.T @ u)
                gu = delta @ ws_[0]
            else:
                gu = delta
            if not post:
                gu = np.einsum("ri,rik->rk", gu, jac_in)
            g = beta * g + gu
    return rows
