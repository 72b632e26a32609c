"""Numba kernel of one SGD step of an MLP with explicit weights (the training probe)."""
from collections import namedtuple
import math

import numpy as np
from numba import njit

from . import rng
from .elementwise import phi_dphi
from .matrix import rows_dot


# the trained net: sizes, weights (flat, layer l at w_off[l]:w_off[l+1]), momentum
# buffer and the teacher matrix
Model = namedtuple("Model", ["widths", "w_flat", "w_off", "velocity", "teacher"])
# one step: the batch's keys (seed, step), learning rate, momentum, batch rows
Step = namedtuple("Step", ["seed", "step", "lr", "momentum", "rows"])
# scratch (rows x sum of widths) and the output: per-layer gradient norms
Scratch = namedtuple("Scratch", ["xs", "hs", "gnorm"])


@njit(cache=True)
def train_step(model, a, p, opt, scratch):
    """One step on a fresh keyed batch: forward, loss, backward, SGD (with momentum) update.

    Hidden layers use the activation (code ``a``, parameter ``p``), the last layer
    is linear. Loss: mean over the batch and outputs of (f(x) - y)^2 with
    y = tanh(x @ teacher.T). ``scratch.gnorm[l]`` receives the Frobenius norm
    of layer l's weight gradient. Returns the loss before the update.
    """
    widths, w_flat, w_off, velocity, teacher = model
    seed, step, lr, momentum, rows = opt
    xs, hs, gnorm = scratch
    depth = widths.size - 1
    n_out = widths[depth]
    offs = np.zeros(depth + 2, np.int64)
    for l in range(depth + 1):
        offs[l + 1] = offs[l] + widths[l]
    x0 = xs[:, offs[0]:offs[1]].copy()
    rng.fill_normal(rng.stream_key(seed, step, 0, rng.STREAM_INPUT), x0, 1.0)
    xs[:, offs[0]:offs[1]] = x0
    x = x0
    for l in range(depth):
        n_in, n = widths[l], widths[l + 1]
        w = w_flat[w_off[l]:w_off[l + 1]].reshape((n, n_in))
        h = np.empty((rows, n))
        rows_dot(x, w.T, h)
        xn = np.empty((rows, n))
        for r in range(rows):
            for j in range(n):
                if l == depth - 1:
                    xn[r, j] = h[r, j]
                else:
                    xn[r, j], _ = phi_dphi(a, p, h[r, j])
        hs[:, offs[l + 1]:offs[l + 2]] = h
        xs[:, offs[l + 1]:offs[l + 2]] = xn
        x = xn
    target = np.empty((rows, n_out))
    rows_dot(x0, teacher.T, target)
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
            rows_dot(delta, w, back)
            hprev = hs[:, offs[l]:offs[l + 1]]
            delta = np.empty((rows, n_in))
            for r in range(rows):
                for j in range(n_in):
                    _, d = phi_dphi(a, p, hprev[r, j])
                    delta[r, j] = back[r, j] * d
        v = velocity[w_off[l]:w_off[l + 1]].reshape((n, n_in))
        for i in range(n):
            for j in range(n_in):
                v[i, j] = momentum * v[i, j] + g[i, j]
                w[i, j] -= lr * v[i, j]
    return loss
