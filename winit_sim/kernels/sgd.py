"""Numba kernel of one SGD step of an MLP with explicit weights (the training probe)."""
from collections import namedtuple
import math

import numpy as np

from . import copy_rows, njit, rng
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
def teacher_loss(x0, teacher, out, grad):
    """mean((out - tanh(x0 teacher^T))^2) over batch and outputs; grad = its gradient."""
    rows, n_out = out.shape
    target = np.empty((rows, n_out))
    rows_dot(x0, teacher.T, target)
    loss = 0.0
    scale = 2.0 / (rows * n_out)
    for r in range(rows):
        for j in range(n_out):
            e = out[r, j] - math.tanh(target[r, j])
            loss += e * e
            grad[r, j] = scale * e
    return loss / (rows * n_out)


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
    rng.fill_normal_serial(rng.stream_key(seed, step, 0, rng.STREAM_INPUT), x0, 1.0)
    copy_rows(xs[:, offs[0]:offs[1]], x0)
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
        copy_rows(hs[:, offs[l + 1]:offs[l + 2]], h)
        copy_rows(xs[:, offs[l + 1]:offs[l + 2]], xn)
        x = xn
    delta = np.empty((rows, n_out))
    loss = teacher_loss(x0, teacher, x, delta)
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


# a residual net in training: the kernels' ResNet (its shapes, norm, position and
# beta), the weights (flat, matrix i of the forward order at w_off[i]:w_off[i+1])
# and their momentum buffer, alpha per block with its momentum buffer, whether alpha
# trains (skipinit), each block's norm gain and shift (depth x 2 x width; RMSNorm
# trains the gain only) with their momentum buffer, and the teacher matrix
ResModel = namedtuple("ResModel", ["net", "w_flat", "w_off", "velocity", "alpha",
                                   "alpha_velocity", "train_alpha", "affine",
                                   "affine_velocity", "teacher"])
# per block: streams (depth + 1), branch inputs, pre-activations, branch outputs, each
# row's norm divisor before the branch (pre) or after the sum (post), and the norm's
# output before its gain and shift
ResScratch = namedtuple("ResScratch", ["xs", "us", "hs", "fs", "sig", "ns", "gnorm"])


@njit(cache=True)
def _norm_rows(centered, eps, z, u, sig):
    """u = N(z) per row, sig[r] = sqrt(var + eps) (plain float64: training stays O(1))."""
    rows, n = z.shape
    for r in range(rows):
        mu = 0.0
        if centered:
            for j in range(n):
                mu += z[r, j]
            mu /= n
        acc = 0.0
        for j in range(n):
            acc += (z[r, j] - mu) * (z[r, j] - mu)
        sig[r] = math.sqrt(acc / n + eps)
        for j in range(n):
            u[r, j] = (z[r, j] - mu) / sig[r]


@njit(cache=True)
def _norm_back(centered, u, sig, gu, out):
    """out = dloss/dz from gu = dloss/dN(z), N(z) = u with row divisors sig."""
    rows, n = u.shape
    for r in range(rows):
        mg = 0.0
        mgu = 0.0
        for j in range(n):
            mg += gu[r, j]
            mgu += gu[r, j] * u[r, j]
        mg = mg / n if centered else 0.0
        mgu /= n
        for j in range(n):
            out[r, j] = (gu[r, j] - mg - u[r, j] * mgu) / sig[r]


@njit(cache=True)
def _momentum_update(w, g, v, lr, momentum):
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            v[i, j] = momentum * v[i, j] + g[i, j]
            w[i, j] -= lr * v[i, j]


@njit(cache=True)
def _block_matrices(net, w_flat, w_off, l):
    """(first, last) matrix of block l as views of w_flat (the same one for branch 1)."""
    n, m = net.width, net.hidden
    if net.branch == 1:
        w = w_flat[w_off[l]:w_off[l + 1]].reshape((n, n))
        return w, w
    i = 2 * l
    return (w_flat[w_off[i]:w_off[i + 1]].reshape((m, n)),
            w_flat[w_off[i + 1]:w_off[i + 2]].reshape((n, m)))


@njit(cache=True)
def _apply_affine(nz, gain, shift, out):
    rows, n = nz.shape
    for r in range(rows):
        for j in range(n):
            out[r, j] = gain[j] * nz[r, j] + shift[j]


@njit(cache=True)
def _affine_backward(nz, g, model, l, lr, momentum, out):
    """out = dloss/dN(z) from g = dloss/d(gain N(z) + shift); then the gain (and, for
    LayerNorm, the shift) take their momentum step."""
    rows, n = nz.shape
    gain, vel = model.affine[l], model.affine_velocity[l]
    for j in range(n):
        dg = 0.0
        ds = 0.0
        for r in range(rows):
            dg += g[r, j] * nz[r, j]
            ds += g[r, j]
            out[r, j] = g[r, j] * gain[0, j]
        vel[0, j] = momentum * vel[0, j] + dg
        gain[0, j] -= lr * vel[0, j]
        if model.net.centered:
            vel[1, j] = momentum * vel[1, j] + ds
            gain[1, j] -= lr * vel[1, j]


@njit(cache=True)
def residual_train_step(model, a, p, opt, scratch):
    """:func:`train_step` for a residual net (see :mod:`.residual` for the blocks): the
    stream is the input and the output, the target tanh(x A^T) of the same width.

    Trains every matrix, each norm's gain (and LayerNorm's shift), and alpha when
    ``model.train_alpha``. ``scratch.gnorm[l]`` receives the Frobenius norm of block
    l's weight gradient (its matrices together).
    """
    net, w_flat, w_off, velocity, alpha, alpha_velocity, train_alpha = model[:7]
    teacher = model.teacher
    seed, step, lr, momentum, rows = opt
    xs, us, hs, fs, sig, ns, gnorm = scratch
    n, branch = net.width, net.branch
    depth = alpha.size
    beta = math.exp(net.log_beta)
    normed = net.norm != 0
    x0 = np.empty((rows, n))
    rng.fill_normal_serial(rng.stream_key(seed, step, 0, rng.STREAM_INPUT), x0, 1.0)
    xs[0] = x0
    for l in range(depth):
        first, last = _block_matrices(net, w_flat, w_off, l)
        x, u = xs[l], us[l]
        if normed and not net.post:
            _norm_rows(net.centered, net.eps, x, ns[l], sig[l])
            _apply_affine(ns[l], model.affine[l, 0], model.affine[l, 1], u)
        else:
            copy_rows(u, x)
        h = hs[l]
        if branch == 2:
            rows_dot(u, first.T, h)
        else:
            copy_rows(h, u)
        y = np.empty((rows, h.shape[1]))
        for r in range(rows):
            for j in range(h.shape[1]):
                y[r, j], _ = phi_dphi(a, p, h[r, j])
        f = fs[l]
        rows_dot(y, last.T, f)
        z = xs[l + 1]
        for r in range(rows):
            for j in range(n):
                z[r, j] = beta * x[r, j] + alpha[l] * f[r, j]
        if net.post:
            _norm_rows(net.centered, net.eps, z, ns[l], sig[l])
            _apply_affine(ns[l], model.affine[l, 0], model.affine[l, 1], z)
    out = xs[depth]
    g = np.empty((rows, n))
    loss = teacher_loss(x0, teacher, out, g)
    gz = np.empty((rows, n))
    gx = np.empty((rows, n))
    gn = np.empty((rows, n))
    for l in range(depth - 1, -1, -1):
        first, last = _block_matrices(net, w_flat, w_off, l)
        if net.post:
            _affine_backward(ns[l], g, model, l, lr, momentum, gn)
            _norm_back(net.centered, ns[l], sig[l], gn, gz)
        else:
            copy_rows(gz, g)
        h, u, f = hs[l], us[l], fs[l]
        k = h.shape[1]
        y = np.empty((rows, k))
        d = np.empty((rows, k))
        dalpha = 0.0
        for r in range(rows):
            for j in range(k):
                y[r, j], d[r, j] = phi_dphi(a, p, h[r, j])
            for j in range(n):
                dalpha += gz[r, j] * f[r, j]
        gf = alpha[l] * gz
        g_last = np.dot(gf.T, y)
        delta = np.empty((rows, k))
        rows_dot(gf, last, delta)
        for r in range(rows):
            for j in range(k):
                delta[r, j] *= d[r, j]
        acc = 0.0
        for v in g_last.ravel():
            acc += v * v
        gu = delta
        if branch == 2:
            g_first = np.dot(delta.T, u)
            for v in g_first.ravel():
                acc += v * v
            gu = np.empty((rows, n))
            rows_dot(delta, first, gu)   # with W before its update
            _momentum_update(first, g_first, velocity[w_off[l * 2]:w_off[l * 2 + 1]].reshape(
                first.shape), lr, momentum)
        gnorm[l] = math.sqrt(acc)
        i_last = l * branch + branch - 1
        _momentum_update(last, g_last, velocity[w_off[i_last]:w_off[i_last + 1]].reshape(
            last.shape), lr, momentum)
        if normed and not net.post:
            _affine_backward(ns[l], gu, model, l, lr, momentum, gn)
            _norm_back(net.centered, ns[l], sig[l], gn, gx)
        else:
            copy_rows(gx, gu)
        for r in range(rows):
            for j in range(n):
                g[r, j] = beta * gz[r, j] + gx[r, j]
        if train_alpha:
            alpha_velocity[l] = momentum * alpha_velocity[l] + dalpha
            alpha[l] -= lr * alpha_velocity[l]
    return loss
