"""Slow, obviously-correct NumPy references for the kernels (float64, no log-scales)."""
import numpy as np

from winit_sim import _rng, dphi, phi

EPS = np.finfo(np.float64).eps


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
