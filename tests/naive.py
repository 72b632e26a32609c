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


def _frame(z):
    """The orthonormal rows L^-1 Z (L L^T = Z Z^T, Cholesky), explicitly."""
    return np.linalg.solve(np.linalg.cholesky(z @ z.T), z)


def reference_orthogonal(widths, activation, gains, bias_std, seed, trial, batch, sup=1.0):
    """The conditional engine's Haar orthogonal layers in true units, with explicit
    N-dimensional frames and projections (N = max(fan_in, fan_out)) on the engine's streams.

    Forward: H = g F V + b with F F^T = X X^T (Cholesky) and V the first fan_out columns
    of the frame of Z = [Z_a, Z_b]. Backward: with U_X = F^-1 X, delta_full = [delta, 0],
    delta_full O = (delta_full V_full^T) U_X + L_perp U, where delta_perp = delta_full minus
    its projection on the frame, L_perp L_perp^T = delta_perp delta_perp^T and U the frame
    of Z' projected off span(U_X); the gradient below is g (delta_full O)[:, :fan_in].
    """
    B = batch
    x = _normals(seed, trial, 0, _rng.STREAM_INPUT, (B, widths[0]))
    xs, hs, frames = [x], [], []
    for l, gain in enumerate(gains):
        n_in, n_out = widths[l], widths[l + 1]
        big = max(n_in, n_out)
        z = _normals(seed, trial, l + 1, _rng.STREAM_COND_PRE, (B, n_out))
        if big > n_out:
            z = np.hstack([z, _normals(seed, trial, l + 1, _rng.STREAM_COND_PRE_EXTRA,
                                       (B, big - n_out))])
        v_full = _frame(z)
        f = np.linalg.cholesky(xs[-1] @ xs[-1].T)
        h = gain * f @ v_full[:, :n_out]
        if bias_std:
            h = h + bias_std * _normals(seed, trial, l + 1, _rng.STREAM_BIAS, (1, n_out))
        hs.append(h)
        frames.append((v_full, f))
        xs.append(phi(activation, h))
    rows = _forward_rows(hs, xs, activation, sup)
    g = _normals(seed, trial, 0, _rng.STREAM_GRAD, (B, widths[-1]))
    for l in range(len(gains) - 1, -1, -1):
        delta = g * dphi(activation, hs[l])
        rows[l]["log10_grad_q"] = _log10_mean_sq(delta)
        rows[l]["log10_wgrad_q"] = _log10_mean_sq(delta.T @ xs[l])
        if l == 0:
            break
        n_in, n_out = widths[l], widths[l + 1]
        big = max(n_in, n_out)
        v_full, f = frames[l]
        u_x = np.zeros((B, big))
        u_x[:, :n_in] = np.linalg.solve(f, xs[l])
        d_full = np.zeros((B, big))
        d_full[:, :n_out] = delta
        k = d_full @ v_full.T
        d_perp = d_full - k @ v_full
        zp = _normals(seed, trial, l + 1, _rng.STREAM_COND_REST, (B, n_in))
        if big > n_in:
            zp = np.hstack([zp, _normals(seed, trial, l + 1, _rng.STREAM_COND_REST_EXTRA,
                                         (B, big - n_in))])
        u = _frame(zp - (zp @ u_x.T) @ u_x)
        g = gains[l] * (k @ u_x + np.linalg.cholesky(d_perp @ d_perp.T) @ u)[:, :n_in]
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


class GivenWeights:
    """A residual reference's matrices as explicit weights: forward(l, j, x) = x M^T + b,
    backward(l, j, g) = g M."""

    def __init__(self, weights, biases, branch):
        self.mats = [np.asarray(w, np.float64) for w in weights]
        self.bs = [np.zeros(w.shape[0]) if biases is None else np.asarray(biases[i], np.float64)
                   for i, w in enumerate(self.mats)]
        self.branch = branch
        self.depth = len(self.mats) // branch

    def forward(self, l, j, x):
        i = l * self.branch + j
        return x @ self.mats[i].T + self.bs[i]

    def backward(self, l, j, g):
        return g @ self.mats[l * self.branch + j]


class ConditionalDraws:
    """A residual reference's matrices drawn as the conditional engine draws them, in true
    units and with its random streams: forward H = C Z with C C^T = sw^2 X~ X~^T,
    X~ = [X, (sb/sw) 1]; backward g M = M' + (g H^T - M'~ X~^T) pinv(X~ X~^T) X with
    M'~ = C' Z'~, C' C'^T = sw^2 g g^T. A matrix of std 0 is zero (H its bias)."""

    PRE = (_rng.STREAM_COND_PRE, _rng.STREAM_COND_PRE2)
    REST = (_rng.STREAM_COND_REST, _rng.STREAM_COND_REST2)
    REST_BIAS = (_rng.STREAM_COND_REST_BIAS, _rng.STREAM_COND_REST_BIAS2)
    BIAS = (_rng.STREAM_BIAS, _rng.STREAM_BIAS2)

    def __init__(self, stds, bias_std, seed, trial, depth, hidden=None):
        self.stds, self.sb, self.seed, self.trial = list(stds), bias_std, seed, trial
        self.branch, self.depth, self.hidden = len(self.stds), depth, hidden
        self.seen = {}

    def forward(self, l, j, x):
        sw, sb = self.stds[j], self.sb
        B, q = x.shape[0], self.width_out[j]
        if sw == 0.0:
            h = np.zeros((B, q))
            if sb > 0:
                h = h + sb * _normals(self.seed, self.trial, l + 1, self.BIAS[j], (1, q))
            self.seen[l, j] = (x, None, h)
            return h
        xt = x if sb == 0 else np.hstack([x, np.full((B, 1), sb / sw)])
        k = sw ** 2 * xt @ xt.T
        h = _sqrt_factor(k, np.mean(np.diag(k))) @ _normals(self.seed, self.trial, l + 1,
                                                            self.PRE[j], (B, q))
        self.seen[l, j] = (x, xt, h)
        return h

    def backward(self, l, j, g):
        x, xt, h = self.seen[l, j]
        sw = self.stds[j]
        B, p = x.shape
        if sw == 0.0 or not np.any(g):
            return np.zeros((B, p))
        cd = sw * _sqrt_factor(g @ g.T, np.mean(g ** 2))
        m = cd @ _normals(self.seed, self.trial, l + 1, self.REST[j], (B, p))
        mt = m if self.sb == 0 else np.hstack(
            [m, cd @ _normals(self.seed, self.trial, l + 1, self.REST_BIAS[j], (B, 1))])
        r = (g @ h.T - mt @ xt.T) @ np.linalg.pinv(xt @ xt.T, rcond=B * EPS)
        return m + r @ x


def reference_residual(weights, x, activation, grad_output=None, biases=None, *, branch=1,
                       norm="none", post=False, alpha=1.0, beta=1.0, eps=1e-5, sup=1.0,
                       ops=None):
    """Per-block statistics of a residual net (see winit_sim.kernels.residual), plainly.

    weights in forward order (branch 2: W_1, V_1, W_2, ...); or ``ops`` (a
    :class:`ConditionalDraws`, weights None) for matrices drawn as the
    conditional engine draws them. The backward builds every norm's Jacobian
    explicitly.
    """
    x = np.asarray(x, np.float64)
    if ops is None:
        ops = GivenWeights(weights, biases, branch)
    else:
        ops.width_out = [x.shape[1]] if branch == 1 else [ops.hidden, x.shape[1]]
    tape, rows = [], []
    for l in range(ops.depth):
        u, jac_in = (x, None) if post else _norm(norm, x, eps)
        a = ops.forward(l, 0, u) if branch == 2 else u
        y = phi(activation, a)
        f = ops.forward(l, branch - 1, y)
        z = beta * x + alpha * f
        xn, jac_out = _norm(norm, z, eps) if post else (z, None)
        row = _forward_rows([a], [u, y], activation, sup)[0]
        row["log10_stream_q"] = _log10_mean_sq(xn)
        row["log10_branch_q"] = _log10_mean_sq(alpha * f)
        rows.append(row)
        tape.append((u, jac_in, a, y, jac_out))
        x = xn
    if grad_output is not None:
        g = np.asarray(grad_output, np.float64)
        for l in range(ops.depth - 1, -1, -1):
            u, jac_in, a, y, jac_out = tape[l]
            rows[l]["log10_stream_grad_q"] = _log10_mean_sq(g)
            if post:
                g = np.einsum("ri,rik->rk", g, jac_out)
            gf = alpha * g
            rows[l]["log10_wgrad2_q" if branch == 2 else "log10_wgrad_q"] = \
                _log10_mean_sq(gf.T @ y)
            delta = ops.backward(l, branch - 1, gf) * dphi(activation, a)
            rows[l]["log10_grad_q"] = _log10_mean_sq(delta)
            if branch == 2:
                rows[l]["log10_wgrad_q"] = _log10_mean_sq(delta.T @ u)
                gu = ops.backward(l, 0, delta) if l > 0 else None
            else:
                gu = delta
            if l == 0:
                break
            if not post:
                gu = np.einsum("ri,rik->rk", gu, jac_in)
            g = beta * g + gu
    return rows


def reflector_product(fo, fi, gain, key):
    """The orthogonal W (fo, fi) of a weight ``key``: its Householder reflectors (v_j,
    tau_j, the sign fix) applied one at a time to the identity, as Q = H_0 ... H_{k-1}
    defines it."""
    from winit_sim.kernels import householder
    v, tau, sign, m, k = householder.reflectors(key, fo, fi)
    q = np.eye(m)[:, :k]
    for j in range(k - 1, -1, -1):
        off = j * m - j * (j - 1) // 2
        vj = v[off:off + m - j]
        q[j:] -= tau[j] * np.outer(vj, vj @ q[j:])
    w = gain * q * sign
    return w if fo >= fi else w.T
