"""Singular values of the input-output Jacobian of residual nets (the blocks of
:mod:`.residual`), by the stratified product of :mod:`.spectrum`.

Arithmetic only. Block l maps the stream by x' = beta x + alpha F(N(x)) (pre) or
x' = N(beta x + alpha F(x)) (post), F(u) = M phi(W u + b) + c (branch 2) or
M phi(u) + c (branch 1). Its Jacobian, in true units, is

    pre:  J = beta I + alpha M D W J_N(x)         (branch 1: without W)
    post: J = J_N(z) (beta I + alpha M D W),      z = beta x + alpha F(x)

with D = diag(phi'(a)) and J_N the norm's Jacobian: J_N(x) = (I - 1 1^T / n - N N^T / n)
/ sigma for LayerNorm (N = N(x), sigma its divisor; without the 1 1^T term for RMSNorm),
the identity without a norm. J_N is symmetric, so J_N applied to the columns of U is
:func:`.residual.norm_backward` applied to the rows of U^T, with the sample's divisor
on every row. The whole step is the block's forward, linearised, run on the k rows of
U^T: the same matrix products as the forward (sampled on the fly, orthogonal
reflectors, formed or given), D between them, and the two paths added at their
log-scales (:func:`.residual.combine`). The forward itself is the block forward of
:mod:`.residual` on one row, so the net is the one ``simulate`` runs (method "matrix").

The identity path keeps J of full rank, except where a post-LayerNorm projects: its
J_N sends 1 to 0 exactly (rank n - 1), and the caller caps the rank to that. With
eps > 0 the direction N keeps the singular value eps / (var + eps) / sigma, small but
not zero, so RMSNorm's J_N has full rank.
"""
import numpy as np

from . import copy_into, copy_rows, njit
from .blocks import plain
from .residual import SC_OUT, SC_U, combine, forward_block, norm_backward, times_t
from .spectrum import spectrum_at, stratify
from .matrix import load_input
from ..layers import NO_NORM


@njit(cache=True)
def _tiled(row, k):
    """k copies of ``row`` as the rows of a (k, n) matrix."""
    out = np.empty((k, row.size))
    for r in range(k):
        copy_into(out[r], row)
    return out


@njit(cache=True)
def _scale_columns(p, d):
    rows, n = p.shape
    for r in range(rows):
        for j in range(n):
            p[r, j] *= d[j]


@njit(cache=True)
def _tangent_block(state, net, seed, trial, given, l, p):
    """J_l U from p = U^T (k x n), with the forward of block l in slot 0 of ``state``:
    returns (X^T, log-scale) with J_l U = e^scale X."""
    k, n = p.shape
    m = net.hidden
    ls = np.full(k, state.rec_ls[0, 0])     # the sample's norm divisor, on every row
    pu = np.empty((k, n))
    if net.post or net.norm == NO_NORM:
        copy_rows(pu, p)
        s_pu = 0.0
    else:                                    # J_N(x) U, at log-scale s_pu
        s_pu = norm_backward(net.centered, _tiled(state.rec_u[0, :n], k), state.rec_sc[0, SC_U],
                             ls, p, 0.0, pu)
    pa = np.empty((k, m))
    if net.branch == 2:
        times_t(state, net, seed, trial, given, l, plain(0), pu, pa, net.orthogonal_layers,
                net.uniform_layers)
    else:
        copy_rows(pa, pu)
    _scale_columns(pa, state.rec_d[0, :m])
    pf = np.empty((k, n))
    times_t(state, net, seed, trial, given, l, net.branch - 1, pa, pf, net.orthogonal_layers,
            net.uniform_layers)
    out = np.empty((k, n))
    t = combine(p, net.log_beta, pf, net.log_alpha + s_pu, out)
    if net.post and net.norm != NO_NORM:     # J_N(z), z the block's sum
        t = norm_backward(net.centered, _tiled(state.rec_o[0, :n], k), state.rec_sc[0, SC_OUT],
                          ls, out, t, out)
    return out, t


@njit(cache=True)
def block_step(state, net, act, seed, trial, given, l, p):
    """Block l of the forward on one row (slot 0 of ``state``), then J_l U from p = U^T
    (or, with no rows in p, nothing): returns (X^T, log-scale) with J_l U = e^scale X.
    At l = 0 it first loads the net's input."""
    n = net.width
    if l == 0:
        load_input(net, seed, trial, given, state.xcur[:n].reshape((1, n)))
        state.log_s[0] = 0.0
    state.log_s[l + 1] = forward_block(state, None, net, act, seed, trial, given, l, plain(0),
                                        state.scratch)
    if p.shape[0] == 0:
        return np.empty((0, n)), 0.0
    return _tangent_block(state, net, seed, trial, given, l, p)


def jacobian_blocks_trial(state, net, act, seed, trial, given, cap, tops, log_sv, sweeps):
    """Singular values of dx_D/dx_0 of a residual net at every D in ``tops`` (ascending),
    as :func:`.spectrum.jacobian_trial` gives them for an MLP, and like it a Python loop
    of compiled steps (:func:`block_step`, then the shared linear algebra).

    ``state``: a :mod:`.residual` State of one row and one record slot. ``cap``: the
    rank each block's Jacobian can have at most.
    """
    n = net.width
    depth = net.sampler.shape[0]
    perm = np.empty(n, np.int64)
    p = np.eye(n)
    t_rows = np.empty((0, n))   # T = I (see stratify)
    s = np.zeros(n)
    ti = 0
    for l in range(depth):
        xt, shift = block_step(state, net, act, seed, trial, given, l,
                               p if s.size > 0 else p[:0])
        if s.size > 0:
            q, s, t_rows = stratify(np.ascontiguousarray(xt.T), s + shift, t_rows, perm,
                                    min(cap, s.size))
            p = np.ascontiguousarray(q.T)
        while ti < tops.size and tops[ti] == l + 1:
            log_sv[ti, :] = -np.inf
            if s.size > 0:
                sweeps[ti] = spectrum_at(t_rows, s, log_sv[ti])
            ti += 1
