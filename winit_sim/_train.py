"""Numba kernel of one SGD step of an MLP with explicit weights (the training probe)."""
import math

import numpy as np
from numba import njit

from . import _rng
from ._network import _rows_dot
from .activations import _phi_dphi


@njit(cache=True)
def train_step(widths, a, p, w_flat, w_off, velocity, teacher, seed, step, lr, momentum, rows,
               xs, hs, gnorm):
    """One step on a fresh keyed batch: forward, loss, backward, SGD (with momentum) update.

    Hidden layers use the activation, the last layer is linear. Loss: mean over the
    batch and outputs of (f(x) - y)^2 with y = tanh(x @ teacher.T). ``xs``/``hs``
    are scratch buffers (rows x sum of widths); ``gnorm[l]`` receives the
    Frobenius norm of layer l's weight gradient. Returns the loss before the update.
    """
    depth = widths.size - 1
    n0, n_out = widths[0], widths[depth]
    offs = np.zeros(depth + 2, np.int64)
    for l in range(depth + 1):
        offs[l + 1] = offs[l] + widths[l]
    x0 = xs[:, offs[0]:offs[1]].copy()
    _rng.fill_normal(_rng.stream_key(seed, step, 0, _rng.STREAM_INPUT), x0, 1.0)
    xs[:, offs[0]:offs[1]] = x0
    x = x0
    for l in range(depth):
        n_in, n = widths[l], widths[l + 1]
        w = w_flat[w_off[l]:w_off[l + 1]].reshape((n, n_in))
        h = np.empty((rows, n))
        _rows_dot(x, w.T, h)
        xn = np.empty((rows, n))
        for r in range(rows):
            for j in range(n):
                if l == depth - 1:
                    xn[r, j] = h[r, j]
                else:
                    xn[r, j], _ = _phi_dphi(a, p, h[r, j])
        hs[:, offs[l + 1]:offs[l + 2]] = h
        xs[:, offs[l + 1]:offs[l + 2]] = xn
        x = xn
    target = np.empty((rows, n_out))
    _rows_dot(x0, teacher.T, target)
    loss = 0.0
    delta = np.empty((rows, n_out))
    scale = 2.0 / (rows * n_out)
    for r in range(rows):
        for j in range(n_out):
            e = x[r, j] - math.tanh(target[r, j])
            loss += e * e
            delta[r, j] = scale * e
    loss /= rows * n_out
    for l in range(depth - 1, -1, -1):
        n_in, n = widths[l], widths[l + 1]
        w = w_flat[w_off[l]:w_off[l + 1]].reshape((n, n_in))
        xin = xs[:, offs[l]:offs[l + 1]].copy()
        g = np.dot(delta.T, xin)
        acc = 0.0
        for i in range(n):
            for j in range(n_in):
                acc += g[i, j] * g[i, j]
        gnorm[l] = math.sqrt(acc)
        if l > 0:  # the gradient below uses this layer's weights before the update
            back = np.empty((rows, n_in))
            _rows_dot(delta, w, back)
            hprev = hs[:, offs[l]:offs[l + 1]]
            delta = np.empty((rows, n_in))
            for r in range(rows):
                for j in range(n_in):
                    _, d = _phi_dphi(a, p, hprev[r, j])
                    delta[r, j] = back[r, j] * d
        v = velocity[w_off[l]:w_off[l + 1]].reshape((n, n_in))
        for i in range(n):
            for j in range(n_in):
                v[i, j] = momentum * v[i, j] + g[i, j]
                w[i, j] -= lr * v[i, j]
    return loss
