"""Mean-field theory of residual and normalized networks (infinite width).

The network is that of :mod:`winit_sim.kernels.residual`: stream x of width n,
block ``x_l = beta x_{l-1} + alpha F(N(x_{l-1}))`` (pre) or
``x_l = N(beta x_{l-1} + alpha F(x_{l-1}))`` (post), ``F(u) = M phi(a) + c`` with
``a = u`` (branch 1) or ``a = W u + b`` (branch 2).

Forward, with Q_l = E[x_l^2], per matrix sw2 = fan_in Var(W), sb2 = bias_std^2:

* N at infinite width: the mean over units of a zero-mean stream vanishes, so
  LayerNorm and RMSNorm both give N(x) = x / sqrt(Q + eps), of second moment
  Q / (Q + eps);
* q_a = q_u (branch 1) or sw2_W q_u + sb2 (branch 2);
* q_F = sw2_M E[phi(sqrt(q_a) z)^2] + sb2;
* E[x F] = 0 (the branch's last matrix has mean zero and is independent of x), so
  pre: Q_l = beta^2 Q_{l-1} + alpha^2 q_F; post: Q_l = q_z / (q_z + eps) with
  q_z = beta^2 Q_{l-1} + alpha^2 q_F.

Backward, gradient independence (Yang & Schoenholz 2017), with G_l =
E[(dloss/dx_l)^2], G_L = 1, and per matrix the backward gain fan_out Var(W):

* post: G_z = G_l / (q_z + eps) (N's Jacobian, less rank-one terms that vanish
  per entry), else G_z = G_l;
* E[delta^2] = alpha^2 G_z gain_M E[phi'(a)^2], E[g_u^2] = E[delta^2] gain_W
  (branch 2) or E[delta^2] (branch 1);
* G_{l-1} = beta^2 G_z + E[g_u^2] / (Q_{l-1} + eps) (pre-norm) or + E[g_u^2];
* a weight gradient sums over the batch of independent samples: batch times the
  mean squares of its two factors.

All in natural logs, so any depth is finite.
"""
import math

import numpy as np
import pandas as pd

from ..inits import variance
from ..layers import NO_NORM
from .moments import LN10, auto_gain, log_moments, phi0_moments, safe_log


def _log_add(a, b):
    return np.logaddexp(a, b) if (a > -math.inf or b > -math.inf) else -math.inf


def _log(v):
    return math.log(v) if v > 0 else -math.inf


def _moments(activation, log_q):
    if log_q == -math.inf:
        p0, d0 = phi0_moments(activation)
        return safe_log(p0), safe_log(d0)
    return log_moments(activation, log_q)


def predict_blocks(blocks, width, depth, activation, init, bias_std, input_var, batch):
    """The mean-field prediction of a residual net's per-block columns (see the module).

    ``blocks``: a resolved arch (:func:`winit_sim.layers.resolve_arch`).
    Returns a DataFrame with ``layer`` and ``theory_*`` for every column of
    :func:`winit_sim.simulate` the theory predicts.
    """
    n, m = width, blocks.hidden
    gain = auto_gain(init, activation)
    shapes = [(n, n)] if blocks.branch == 1 else [(m, n), (n, m)]
    mults = [blocks.out_scale] if blocks.branch == 1 else [blocks.in_scale, blocks.out_scale]
    var = [mult ** 2 * variance(init, n_in, n_out, gain)
           for (n_out, n_in), mult in zip(shapes, mults)]
    fwd = [_log(n_in * v) for (n_out, n_in), v in zip(shapes, var)]
    bwd = [_log(n_out * v) for (n_out, n_in), v in zip(shapes, var)]
    log_sb2 = _log(bias_std ** 2)
    log_a2, log_b2, log_eps = 2 * _log(blocks.alpha), 2 * _log(blocks.beta), math.log(blocks.eps)
    normed = blocks.norm != NO_NORM
    cols = {k: np.empty(depth) for k in ("pre_q", "post_q", "stream_q", "branch_q", "grad_q",
                                         "wgrad_q", "wgrad2_q", "stream_grad_q")}
    log_q = _log(input_var)
    keep = []     # per block: log Q_{l-1}, q_u, q_a, E[phi^2], E[phi'^2], q_z
    for l in range(depth):
        q_u = log_q - _log_add(log_q, log_eps) if normed and not blocks.post else log_q
        q_a = q_u if blocks.branch == 1 else _log_add(fwd[0] + q_u, log_sb2)
        phi2, dphi2 = _moments(activation, q_a)
        q_f = _log_add(fwd[-1] + phi2, log_sb2)
        q_z = _log_add(log_b2 + log_q, log_a2 + q_f)
        keep.append((log_q, q_u, q_a, phi2, dphi2, q_z))
        log_q = q_z - _log_add(q_z, log_eps) if blocks.post else q_z
        cols["pre_q"][l], cols["post_q"][l] = q_a, phi2
        cols["branch_q"][l], cols["stream_q"][l] = log_a2 + q_f, log_q
    log_g = 0.0
    log_batch = math.log(batch)
    for l in range(depth - 1, -1, -1):
        q_prev, q_u, q_a, phi2, dphi2, q_z = keep[l]
        cols["stream_grad_q"][l] = log_g
        g_z = log_g - _log_add(q_z, log_eps) if blocks.post else log_g
        g_f = log_a2 + g_z
        delta = g_f + bwd[-1] + dphi2
        cols["grad_q"][l] = delta
        last, first = ("wgrad2_q", "wgrad_q") if blocks.branch == 2 else ("wgrad_q", None)
        cols[last][l] = log_batch + g_f + phi2
        if first:
            cols[first][l] = log_batch + delta + q_u
            g_u = delta + bwd[0]
        else:
            g_u = delta
        if normed and not blocks.post:
            g_u -= _log_add(q_prev, log_eps)
        log_g = _log_add(log_b2 + g_z, g_u)
    if blocks.branch == 1:
        del cols["wgrad2_q"]
    out = {"layer": np.arange(1, depth + 1)}
    with np.errstate(invalid="ignore"):
        out.update({f"theory_log10_{k}": v / LN10 for k, v in cols.items()})
    return pd.DataFrame(out)
