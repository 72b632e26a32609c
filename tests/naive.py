"""Slow, obviously-correct NumPy references for the kernels (float64, no log-scales)."""
import numpy as np

from winit_sim import dphi, phi


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
    rows = []
    for l, h in enumerate(hs):
        y, d = xs[l + 1], dphi(activation, h)
        q = np.mean(h ** 2)
        rows.append({
            "pre_mean": h.mean(), "pre_var": h.var(),
            "log10_pre_q": np.log10(q) if q > 0 else -np.inf,
            "log10_post_q": np.log10(np.mean(y ** 2)) if np.any(y) else -np.inf,
            "frac_zero": np.mean(y == 0), "frac_saturated": np.mean(np.abs(d) < 0.01 * sup),
            "unit_var_ratio": np.mean(h.var(axis=1)) / q if q > 0 else 0.0,
        })
    if grad_output is not None:
        gx = np.asarray(grad_output, np.float64)
        for l in range(len(weights) - 1, -1, -1):
            delta = gx * dphi(activation, hs[l])
            gw = delta.T @ xs[l]
            rows[l]["log10_grad_q"] = np.log10(np.mean(delta ** 2))
            rows[l]["log10_wgrad_q"] = np.log10(np.mean(gw ** 2))
            gx = delta @ np.asarray(weights[l], np.float64)
    return rows
