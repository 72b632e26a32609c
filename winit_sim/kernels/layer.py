"""What both engines share: the network description, per-layer statistics, log-scales.

The network a kernel runs is data, not a parameter list:

* :data:`Net` -- the layer table: sizes ``widths`` (n_0..n_L) and per layer its
  ``kind`` (a :data:`winit_sim.layers.LAYER_KINDS` code), ``sampler`` (a
  :data:`winit_sim.inits.SAMPLINGS` code) and ``scale``; the biases' std and
  the input's std; ``orthogonal_layers`` None when no layer is orthogonal (so
  that no orthogonal code is compiled for it), else True, and ``uniform_layers``
  the same for uniform layers.
* :data:`winit_sim.activations.ActivationData` -- the activation's code,
  parameter, phi(0), homogeneity and saturation threshold, and
  ``scale_dependent`` (None for a homogeneous activation: only its formulas compile).
* :data:`Draws` -- seed, trials, batch rows: what every random key depends on.
* :data:`Given` -- weights, biases, input and top gradient supplied by the
  caller (:func:`winit_sim.propagate`), or None: then every one is drawn from
  its keyed stream. Kernels test ``given is None``, which Numba resolves when
  it compiles, so a simulation never compiles the given-weights paths.

Log-scales: a signal is kept as ``x_true = exp(s) * x`` with ``x`` at unit RMS,
so exp(depth) growth or decay never overflows. Homogeneous activations are
exact under this; the others are evaluated on the true value while ``|s| <=
T_SAFE`` and by their exact large-/small-signal limits beyond (the regimes).
"""
from collections import namedtuple
import math

import numpy as np

from . import FAST, internal, njit, rng
from .elementwise import RELU, phi_dphi, phi_dphi_homogeneous, phi_large, phi_small
from ..layers import LAYER_KINDS

DENSE = LAYER_KINDS.code("dense")

Net = namedtuple("Net", ["widths", "kind", "sampler", "scale", "bias_std", "input_std",
                         "orthogonal_layers", "uniform_layers"])
Draws = namedtuple("Draws", ["seed", "trials", "rows"])
Given = namedtuple("Given", ["weights", "w_off", "biases", "b_off", "x0", "grad"])

T_SAFE = 200.0  # |natural log-scale| up to which phi is evaluated on the true value
LN10 = math.log(10.0)

STAT_COLUMNS = ("pre_mean", "pre_var", "log10_pre_q", "log10_post_q", "frac_zero",
                "frac_saturated", "unit_var_ratio", "log10_grad_q", "log10_wgrad_q")
(PRE_MEAN, PRE_VAR, LOG10_PRE_Q, LOG10_POST_Q, FRAC_ZERO, FRAC_SAT, UNIT_VAR_RATIO,
 LOG10_GRAD_Q, LOG10_WGRAD_Q) = range(len(STAT_COLUMNS))
N_FORWARD = LOG10_GRAD_Q                      # forward statistics come first
N_BACKWARD = len(STAT_COLUMNS) - N_FORWARD
FORWARD_COLUMNS = STAT_COLUMNS[:N_FORWARD]
BACKWARD_COLUMNS = STAT_COLUMNS[N_FORWARD:]

# how phi is evaluated for a layer (see activate_block)
DIRECT, HOMOG, LARGE_GROWING, LARGE_BOUNDED, SMALL = range(5)
# per-row partial sums written by block_sums
RS_SUM, RS_SQ, RS_M2, RS_YSQ, RS_ZERO, RS_SAT = range(6)
N_RS = 6


def results(trials, depth, tops):
    """NaN-filled (forward, backward) statistic arrays of a run (see driver.run); plain
    Python (allocation only: nothing to compile)."""
    return (np.full((trials, depth, N_FORWARD), np.nan),
            np.full((trials, tops.size, depth, N_BACKWARD), np.nan))


@njit(cache=True)
def max_width(widths):
    maxn = 0
    for w in widths:
        maxn = max(maxn, w)
    return maxn


@njit(inline="always")
def key(seed, trial, l, stream):
    """Stream key of layer l (0-based) of a trial: keyed by its 1-based index."""
    return rng.stream_key(seed, trial, l + 1, stream)


@njit(inline="always")
def draw_input(seed, trial, input_std, x0):
    """The net's input x_0 ~ N(0, input_std^2) of a trial."""
    rng.fill_normal_serial(rng.stream_key(seed, trial, np.int64(0), rng.STREAM_INPUT), x0,
                           input_std)


@njit(inline="always")
def draw_top_gradient(seed, trial, g):
    """dloss/dx_L ~ N(0, 1) of a trial (the same for every top)."""
    rng.fill_normal_serial(rng.stream_key(seed, trial, np.int64(0), rng.STREAM_GRAD), g, 1.0)


@njit(inline="always")
def activate_block(act, hr, t, regime, yr, dr):
    """yr = phi(h_true) relative to the layer's output scale, dr = phi'(h_true), for one
    block of a row (``h_true = exp(t) * hr``; yr is float64).

    Regimes: DIRECT evaluates phi(exp(t) h); HOMOG uses phi(h) (exact for
    homogeneous phi); LARGE_GROWING / LARGE_BOUNDED take the growing / bounded
    part of phi's t -> +inf limit; SMALL takes the t -> -inf limit (an
    activation with phi(0) != 0 keeps that offset).

    A homogeneous activation (``act.scale_dependent`` None) always has the HOMOG
    regime (:func:`activation_regime`), and compiles only its own formulas: about
    1.5 s less of a first run's compile than all of them.
    """
    _activate_block(act, act.scale_dependent, hr, t, regime, yr, dr)


@njit(cache=True, fastmath=FAST)
def _activate_block(act, scale_dependent, hr, t, regime, yr, dr):
    """:func:`activate_block`, with ``scale_dependent`` an argument so that Numba prunes
    the other activations' formulas when it is None."""
    a = act.code
    p = act.param
    n = hr.size
    # the regime (and for relu the activation) is fixed per layer: test it
    # outside the element loops so they stay branch-light
    if (scale_dependent is None or regime == HOMOG) and a == RELU:
        for j in range(n):
            v = np.float64(hr[j])
            yr[j] = v if v > 0.0 else 0.0
            dr[j] = 1.0 if v > 0.0 else 0.0
    elif scale_dependent is None:
        for j in range(n):
            yr[j], dr[j] = phi_dphi_homogeneous(a, p, np.float64(hr[j]))
    elif regime == HOMOG or regime == DIRECT:
        c = math.exp(t) if regime == DIRECT else 1.0
        for j in range(n):
            yr[j], dr[j] = phi_dphi(a, p, c * np.float64(hr[j]))
    elif regime == SMALL:
        phi0 = act.phi0
        for j in range(n):
            yr[j], dr[j] = phi_small(a, p, np.float64(hr[j]))
            if phi0 != 0.0:
                yr[j] = phi0
    else:
        for j in range(n):
            grow, bounded, dr[j] = phi_large(a, p, np.float64(hr[j]))
            yr[j] = grow if regime == LARGE_GROWING else bounded


@internal(fastmath=FAST)
def block_sums(hr, yr, dr, sat_thr, rs):
    """Sums over one block of a row into rs: sum h, sum h^2, sum of (h - block mean)^2,
    sum y^2, zeros of y, saturated phi' (float64)."""
    n = hr.size
    s = 0.0
    for j in range(n):
        s += hr[j]
    mean = s / n
    sq = 0.0
    m2 = 0.0
    ysq = 0.0
    zeros = 0
    sat = 0
    for j in range(n):
        v = np.float64(hr[j])
        sq += v * v
        m2 += (v - mean) * (v - mean)
        ysq += yr[j] * yr[j]
        zeros += yr[j] == 0.0
        sat += abs(dr[j]) < sat_thr
    rs[RS_SUM] = s
    rs[RS_SQ] = sq
    rs[RS_M2] = m2
    rs[RS_YSQ] = ysq
    rs[RS_ZERO] = zeros
    rs[RS_SAT] = sat


@internal()
def ordered_sum(v):
    acc = 0.0
    for i in range(v.size):
        acc += v[i]
    return acc


@internal()
def log10_mean_sq(sumsq, count, log_scale):
    """log10(mean(x_true^2)) for x_true = exp(log_scale) * x; -inf for exact zero."""
    if sumsq == 0.0:
        return -np.inf
    return math.log10(sumsq / count) + 2.0 * log_scale / LN10


@njit(cache=True)
def scaled(value, log_scale):
    """value * exp(log_scale) without 0 * inf."""
    if value == 0.0:
        return 0.0
    return math.copysign(math.exp(math.log(abs(value)) + log_scale), value)


@internal()
def activation_regime(homog, t):
    """How phi is evaluated for pre-activations of log-scale t (see activate_block)."""
    if homog:
        return HOMOG
    if t > T_SAFE:
        return LARGE_GROWING
    if t < -T_SAFE:
        return SMALL
    return DIRECT


@internal()
def bounded_fallback(regime, rs):
    """LARGE_BOUNDED when a LARGE_GROWING layer has no growing part anywhere (output O(1))."""
    if regime == LARGE_GROWING and ordered_sum(rs[:, RS_YSQ]) == 0.0:
        return LARGE_BOUNDED
    return regime


@internal()
def output_log_scale(t, regime, phi0):
    """Log-scale of y as activate_block returns it."""
    if regime == HOMOG or regime == LARGE_GROWING or (regime == SMALL and phi0 == 0.0):
        return t
    return 0.0


@internal()
def layer_statistics(rs, n_out, t, v, out):
    """A layer's forward statistics from its per-row sums rs; returns the RMS of y.

    ``t``, ``v``: log-scales of h and y.
    """
    rows = rs.shape[0]
    count = rows * n_out
    tot = 0.0
    sq = 0.0
    m2 = 0.0
    m2_rows = 0.0
    ysq = 0.0
    zeros = 0.0
    sat = 0.0
    for r in range(rows):
        tot += rs[r, RS_SUM]
        sq += rs[r, RS_SQ]
        m2_rows += rs[r, RS_M2]
        ysq += rs[r, RS_YSQ]
        zeros += rs[r, RS_ZERO]
        sat += rs[r, RS_SAT]
    mean = tot / count
    for r in range(rows):  # Chan et al.: combine per-row (mean, M2) exactly
        dm = rs[r, RS_SUM] / n_out - mean
        m2 += rs[r, RS_M2] + n_out * dm * dm
    out[PRE_MEAN] = scaled(mean, t)
    out[PRE_VAR] = scaled(m2 / count, 2.0 * t)
    out[LOG10_PRE_Q] = log10_mean_sq(sq, count, t)
    out[LOG10_POST_Q] = log10_mean_sq(ysq, count, v)
    out[FRAC_ZERO] = zeros / count
    out[FRAC_SAT] = sat / count
    out[UNIT_VAR_RATIO] = (m2_rows / count) / (sq / count) if sq > 0.0 else 0.0
    return math.sqrt(ysq / count)


@internal()
def check_layer_kind(net, l):
    """The engines implement the kinds of LAYER_KINDS; any other code is an error."""
    if net.kind[l] != DENSE:
        raise ValueError("unknown layer kind")
