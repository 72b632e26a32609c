"""Free-probability theory of the input-output Jacobian's singular values (infinite width).

Pennington, Schoenholz & Ganguli (2017, 2018). The net ``h_l = W_l x_{l-1} + b_l``,
``x_l = phi(h_l)`` of uniform width n has Jacobian ``J = D_L W_L ... D_1 W_1`` with
``D_l = diag(phi'(h_l))``, ``h_l ~ N(0, q_l)`` (q_l from the q-map). At infinite
width the W_l and D_l are asymptotically free, so the spectrum of ``J J^T`` is the
free multiplicative convolution of the laws of ``W_l W_l^T`` and ``D_l^2``:

* ``W W^T``: Marchenko-Pastur of aspect ratio 1 and scale sw2 for i.i.d. weights
  of any law (universality: normal and uniform give the same), the point mass at
  sw2 for scaled Haar-orthogonal weights (``W W^T = sw2 I``);
* ``D^2``: the law of ``phi'(h)^2``, ``h ~ N(0, q)``, represented by the package's
  Gauss quadrature (:data:`winit_sim.theory.moments.Z`, ``WZ``).

:func:`jacobian_moments` gives the first two moments at any depth (in log space);
:func:`jacobian_density` the whole density at a fixed point, from S-transforms;
:func:`sample_jacobian_density` draws from it (for two-sample tests).
"""
import cmath
import math

import numpy as np
import pandas as pd

from ..activations import kernel_data, resolve_activation
from ..checks import check_depths, check_nonneg_float, check_positive_int, resolve_widths
from ..inits import INITS, SAMPLINGS, resolve_init, variance
from ..kernels.elementwise import eval_dphi, eval_limits
from .meanfield import fixed_point, predict
from .moments import LN10, LOG_Q_SAFE, WZ, Z, auto_gain, phi0_moments

WEIGHTS = ("gaussian", "orthogonal")
# sampling kinds with random weights, and their v_W = m2/m1^2 - 1 of W W^T
_KIND_NVAR = {"normal": 1.0, "uniform": 1.0, "orthogonal": 0.0}
RANDOM_INITS = tuple(INITS.select(lambda e: SAMPLINGS[e.sampling].name in _KIND_NVAR))

_THETA = 1e-9        # arg(w) of the continuation: w = lambda e^{i theta}, just above the axis
_TAIL_MASS = 1e-4    # default grid: continuous mass left below it (heavy lower tails)
_MAX_DECADES = 4000  # ... but never more decades than this below the top of the support
_MIN_STEP = 1e-12    # decades: the continuation gives up below this step
_MAX_STEPS = 500000  # ... or beyond this many steps
_DENS_ZERO = 1e-7    # density of log10 lambda below which the scan counts it as 0 (theta tails)


# ---------------------------------------------------------------------------
# phi'(h)^2 at quadrature nodes

def _dphi_at(activation, log_q, z):
    """phi'(sqrt(q) z) for an array z, given log q, as the kernels evaluate it.

    Homogeneous activations have a scale-free phi'; beyond float range the exact
    large-/small-signal limits are used, as in :func:`~.moments.log_moments`.
    """
    data = kernel_data(activation)
    out = np.empty_like(z)
    if log_q == -math.inf:
        return np.full_like(z, math.sqrt(phi0_moments(activation)[1]))
    if data.homogeneous:
        h = z
    elif abs(log_q) <= LOG_Q_SAFE:
        h = math.exp(0.5 * log_q) * z
    else:
        large = np.empty((z.size, 3))
        small = np.empty((z.size, 2))
        eval_limits(data.code, data.param, z, large, small)
        return (large[:, 2] if log_q > 0 else small[:, 1]).copy()
    eval_dphi(data.code, data.param, np.ascontiguousarray(h), out)
    return out


def _d2_moments(activation, log_q, cache):
    """(ln E[phi'^2], v_D = E[phi'^4]/E[phi'^2]^2 - 1) at h ~ N(0, e^log_q).

    The quadrature and branches of :func:`~.moments.log_moments` (whose second
    value this first one is), on one evaluation of phi' for both moments.
    """
    if log_q not in cache:
        d = _dphi_at(activation, log_q, Z) ** 2
        m1 = float(WZ @ d)
        if m1 > 0:
            # E[phi'^4] / E[phi'^2]^2 in logs: E[phi'^2] may be far below 1
            nvar = math.exp(math.log(WZ @ (d * d)) - 2.0 * math.log(m1)) - 1.0
            cache[log_q] = (math.log(m1), max(nvar, 0.0))
        else:
            cache[log_q] = (-math.inf, math.nan)
    return cache[log_q]


# ---------------------------------------------------------------------------
# Moments at any depth

def _random_kind(init):
    """The sampling kind of an init with random weights (ValueError for constant ones)."""
    spec = resolve_init(init)
    kind = SAMPLINGS[spec.entry.sampling].name
    if kind not in _KIND_NVAR:
        raise ValueError(f"init {spec.canonical()!r} has {kind} weights: the Jacobian's "
                         f"spectrum theory needs random weights; valid inits: "
                         f"{', '.join(RANDOM_INITS)}")
    return kind


def jacobian_moments(width=None, depth=None, *, widths=None, activation, init, depths=None,
                     bias_std=0.0, input_var=1.0):
    """Mean and normalized variance of the squared singular values of J = dx_D/dx_0.

    Parameters
    ----------
    width, depth, widths
        As in :func:`winit_sim.simulate`; the widths must be uniform (all equal,
        input included): the theory here is that of square weight matrices.
    activation, init, bias_std, input_var
        As in :func:`winit_sim.simulate`. The init must draw random weights: normal,
        uniform (i.i.d.) or orthogonal sampling kinds.
    depths : sequence of int, optional
        Depths D (each in 1..depth) at which to report the moments of the
        Jacobian of the first D layers; default [depth].

    Returns
    -------
    pandas.DataFrame
        One row per depth: ``depth``, ``theory_log10_mean_sq_sv`` (log10 of the
        mean of sigma^2 over the spectrum of J J^T) and ``theory_nvar``
        (var(sigma^2) / mean(sigma^2)^2: 0 at dynamical isometry). Where
        E[phi'^2] = 0 at some layer the mean is -inf and nvar NaN from there on.

    Notes
    -----
    With sw2_l = fan_in Var(W_l) (:func:`winit_sim.inits.variance`) and q_l the
    mean-field second moment of h_l (``theory_log10_pre_q`` of
    :func:`~winit_sim.theory.predict`), E over h ~ N(0, q_l):

    * mean: sum_{l<=D} log10(sw2_l E[phi'(h_l)^2]);
    * nvar: sum_{l<=D} (v_W + v_D,l), v_W = 1 for i.i.d. weights (Marchenko-Pastur,
      m2/m1^2 = 2), 0 for orthogonal ones, v_D,l = E[phi'^4]/E[phi'^2]^2 - 1 at q_l.

    Why they add: for free a, b, the first two S-transform coefficients give
    m1(ab) = m1(a) m1(b) and m2(ab) = m2(a) m1(b)^2 + m1(a)^2 m2(b) - m1(a)^2 m1(b)^2;
    dividing by m1(ab)^2, m2(ab)/m1(ab)^2 - 1 = (m2(a)/m1(a)^2 - 1) + (m2(b)/m1(b)^2 - 1).
    J J^T has the spectrum of the free product of every W_l W_l^T and D_l^2, so
    means multiply and normalized variances add, exactly, at infinite width.
    Everything is a sum of per-layer logs, so any depth (10,000 layers) is finite.
    """
    w = resolve_widths(width, depth, widths)
    if np.any(w != w[0]):
        raise ValueError(f"jacobian_moments supports uniform widths only (square weight "
                         f"matrices, input width included), got widths {w.tolist()}")
    depth = w.size - 1
    depths = check_depths(depths, depth)
    v_w = _KIND_NVAR[_random_kind(init)]
    n = int(w[0])
    sw2 = n * variance(init, n, n, auto_gain(init, activation))
    log_sw2 = math.log(sw2) if sw2 > 0 else -math.inf
    pred = predict(widths=w.tolist(), activation=activation, init=init, bias_std=bias_std,
                   input_var=input_var)
    cache = {}
    log_mean = np.empty(depth)
    nvar = np.empty(depth)
    for l, lq in enumerate(pred["theory_log10_pre_q"].to_numpy() * LN10):
        log_m1, v_d = _d2_moments(activation, float(lq), cache)
        log_mean[l] = log_sw2 + log_m1
        nvar[l] = v_w + v_d
    with np.errstate(invalid="ignore"):
        log_mean = np.cumsum(log_mean)
        nvar = np.cumsum(nvar)
    # once a layer kills every gradient, the normalized variance is undefined above it
    nvar[log_mean == -math.inf] = math.nan
    idx = np.asarray(depths) - 1
    return pd.DataFrame({"depth": np.asarray(depths, dtype=np.int64),
                         "theory_log10_mean_sq_sv": log_mean[idx] / LN10,
                         "theory_nvar": nvar[idx]})


# ---------------------------------------------------------------------------
# The density at a fixed point: S-transforms

class _Law:
    """The law of d = phi'(h)^2 on the quadrature: mass p0 at 0, distinct d > 0, weights.

    d below 1e-200 of the largest (deep saturation: tanh at q ~ 1e6 spans hundreds of
    decades) counts as 0, as d that underflows does: u ~ 1/d must stay in float range.
    """

    def __init__(self, d, wz):
        keep = wz > 1e-30   # |z| > 11: no mass, only cost
        zero = d <= 1e-200 * d.max() if d.max() > 0 else d == d
        self.p0 = float(wz[keep & zero].sum())
        pos = keep & ~zero
        self.d, inv, self.count = np.unique(d[pos], return_inverse=True, return_counts=True)
        self.w = np.bincount(inv, weights=wz[pos])
        self.m1 = float(self.w @ self.d)
        self.nvar = max(float(self.w @ self.d ** 2) / self.m1 ** 2 - 1.0, 0.0) \
            if self.m1 > 0 else math.nan

    def psi(self, u):
        """(psi(u), 1 + psi(u), psi'(u)), psi(u) = E[u d / (1 - u d)] (moment generating).

        1 + psi = p0 + E[1/(1 - u d); d > 0] directly: near lambda -> 0 it is small and
        1 + (a number near -1) would lose its digits.
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            t = 1.0 / (1.0 - u * self.d)
            return (complex(self.w @ (u * self.d * t)), complex(self.p0 + self.w @ t),
                    complex(self.w @ (self.d * t * t)))

    def atoms(self):
        """Point masses at d > 0: values the quadrature hits at many nodes (flat phi')."""
        big = (self.count >= 3) & (self.w > 1e-9)
        return list(zip(self.d[big].tolist(), self.w[big].tolist()))


class _Equation:
    """chi_J(m) = 1/w in the unknown u = chi_D(m) (so m = psi_D(u)), in logs.

    S_J(m) = [S_W(m) S_D(m)]^L, S_D(m) = u (1+m)/m, S_W(m) = 1/(sw2 (1+m)) (Gaussian)
    or 1/sw2 (orthogonal), and chi_J(m) = S_J(m) m/(1+m). So the equation is
    F(u) = L log A(u) + log(m/(1+m)) + log w = 0 (mod 2 pi i), A = u/(sw2 m) or
    u (1+m)/(sw2 m): any branch of each log will do, F is reduced mod 2 pi i.
    """

    def __init__(self, law, sw2, depth, orthogonal):
        self.law, self.log_sw2, self.L, self.orth = law, math.log(sw2), depth, orthogonal
        self.tol = 1e-12 * (1.0 + 0.1 * depth)   # L log A carries L roundings

    def __call__(self, u, log_w):
        m, m1p, dm = self.law.psi(u)
        if not (cmath.isfinite(m) and cmath.isfinite(dm)) or m == 0 or m1p == 0 or u == 0:
            return complex(math.nan, math.nan), complex(math.nan, math.nan), m
        lm, l1m = cmath.log(m), cmath.log(m1p)
        log_a = cmath.log(u) - lm - self.log_sw2
        dlog_a = 1.0 / u - dm / m
        if self.orth:
            log_a += l1m
            dlog_a += dm / m1p
        f = self.L * log_a + lm - l1m + log_w
        if cmath.isfinite(f):
            f -= 2j * math.pi * round(f.imag / (2.0 * math.pi))
        return f, self.L * dlog_a + dm / m - dm / m1p, m

    def newton(self, u, log_w, max_iter=40):
        """Newton from u: (root, m, iterations) or None when it does not converge."""
        for it in range(max_iter):
            f, df, m = self(u, log_w)
            if not (cmath.isfinite(f) and cmath.isfinite(df)) or df == 0:
                return None
            if abs(f) < self.tol:   # F is a log: relative accuracy in chi_J
                return u, m, it
            step = f / df
            if abs(step) > 0.5 * abs(u):   # never jump through u = 0 (the m -> 0 end)
                step *= 0.5 * abs(u) / abs(step)
            u = u - step
            if not cmath.isfinite(u) or abs(u.real) > 1e300 or abs(u.imag) > 1e300:
                return None
            # u settled to rounding while F stays above tol: F's own rounding (1 - u d
            # loses digits when every d is within ~1e-8 of 1, q* -> 0)
            if abs(step) < 1e-15 * abs(u) and abs(f) < 1e-6:
                return u, self(u, log_w)[2], it
        return None


def _density_y(m):
    """Density of log10 lambda: -Im G(lambda) lambda ln10 / pi, G = (1 + m)/lambda."""
    return -m.imag * LN10 / math.pi


class _March:
    """The root u(y) continued from above the spectrum down along y = log10 lambda.

    w = lambda e^{i theta}, theta tiny: Im w > 0 picks the physical root (Im u < 0,
    Im m < 0, density >= 0). Steps are adaptive, at most ``h_max`` decades where the
    spectrum may be; a step is taken only where the predictor already solves the
    equation to |F| < 0.5 and Newton lands near it, so the root never jumps to
    another of the L sheets of A^L or to the conjugate root.
    """

    def __init__(self, eq, y_start, u_start, y_bound, h_max):
        self.eq, self.y_bound, self.h_max = eq, y_bound, h_max
        found = eq.newton(u_start, y_start * LN10 + 1j * _THETA)
        if found is None:
            raise RuntimeError("jacobian_density: no root above the spectrum")
        self.ys, self.us, self.ms = [y_start], [found[0]], [found[1]]
        self.h = h_max

    def allowed(self, y):
        # above the norm bound the spectrum is empty and the root smooth on scale y - y_bound
        return max(self.h_max, min(0.25, 0.5 * (y - self.y_bound)))

    def step_to(self, y_target):
        """Advance (downwards) to y_target; return (u, m) there."""
        while self.ys[-1] > y_target:
            if len(self.ys) > _MAX_STEPS:
                raise RuntimeError(f"jacobian_density: more than {_MAX_STEPS} continuation "
                                   f"steps (a spectrum too narrow for float64, or too deep)")
            y0 = self.ys[-1]
            h = min(self.h, self.allowed(y0), y0 - y_target)
            while True:
                y1 = y0 - h if h < y0 - y_target else y_target
                got = self._try(y1, h)
                if got is not None:
                    break
                h *= 0.5
                if h < _MIN_STEP:
                    raise RuntimeError(f"jacobian_density: lost the root near "
                                       f"log10 lambda = {y0:.6g}")
            u1, m1, iters = got
            self.ys.append(y1)
            self.us.append(u1)
            self.ms.append(m1)
            self.h = min(h * 1.5, self.allowed(y1)) if iters <= 8 else h
        return self.us[-1], self.ms[-1]

    def _try(self, y1, h):
        u0 = self.us[-1]
        if len(self.us) > 1:   # linear predictor in y
            du = (u0 - self.us[-2]) / (self.ys[-2] - self.ys[-1])
            pred = u0 + du * h
        else:
            pred = u0
        log_w = y1 * LN10 + 1j * _THETA
        f0 = self.eq(pred, log_w)[0]
        if not cmath.isfinite(f0) or abs(f0) > 0.5:
            return None
        start = pred
        if abs(pred.imag) < 1e-3 * abs(pred):   # nudge off the real axis, towards Im u < 0
            start = pred - 1e-4j * abs(pred) / self.eq.L
        got = self.eq.newton(start, log_w)
        if got is None:
            return None
        u1, m1, it = got
        if u1.imag > 0:   # the conjugate root: restart from its mirror image
            got = self.eq.newton(u1.conjugate(), log_w)
            if got is None or got[0].imag > 0:
                return None
            u1, m1, it = got
        if abs(u1 - pred) > 0.25 * abs(pred) or m1.imag > 1e-6 * abs(m1):
            return None
        return u1, m1, it


def _polish(eq, u, y):
    """The root exactly on the real axis (theta = 0), from the continued one."""
    got = eq.newton(u, y * LN10 + 0j, max_iter=20)
    if got is None or got[0].imag > 1e-10 * abs(u) or abs(got[0] - u) > 1e-3 * abs(u):
        return eq(u, y * LN10 + 1j * _THETA)[2]   # keep the theta root (at an edge)
    return got[1]


def _scan_range(march, target, tail, y_floor):
    """Default grid: from the top edge of the continuous spectrum to where it has ended.

    Marches down in steps of ``march.h_max``, integrating the density. A candidate
    lower end is where 90% of the mass has been seen and either the density
    vanished (a compact lower edge) or the tail, exponential in y at its local
    log-slope, holds less than ``tail``. It is kept if the next quarter of the
    range scanned so far holds less than ``tail`` too (so a gap or a dip of the
    quadrature's ripples in a thin tail does not end the grid). Returns (y_lo, y_top).
    """
    h = march.h_max
    cum, y_top, cand, extra = 0.0, None, None, 0.0
    hist = []   # (y, density) from the top edge down
    y = march.ys[-1]
    while y > y_floor:
        y_prev = y
        y -= h if y_top is not None else march.allowed(y)   # big steps above the norm bound
        try:
            u = march.step_to(y)[0]
        except RuntimeError:
            if y_top is None or cum < 0.99 * target:
                raise
            return march.ys[-1], y_top   # lost in a far tail (float range): end there
        # polished on the axis: near a narrow spectrum the theta root's own smoothing
        # (Im m ~ theta |dm/dlog w|) would read as density above the top edge
        dens = max(_density_y(_polish(march.eq, u, y)), 0.0)
        if y_top is None:
            if dens <= _DENS_ZERO:   # still above the spectrum
                continue
            y_top = y_prev
            hist.append((y_top, 0.0))
        piece = 0.5 * (dens + hist[-1][1]) * (hist[-1][0] - y)
        cum += piece
        hist.append((y, dens))
        if cand is not None:
            extra += piece
            if extra >= tail:      # more below: not the end
                cand = None
            elif y <= cand - 0.25 * (y_top - cand):
                return cand, y_top
            continue
        if cum < 0.9 * target:
            continue
        if dens <= _DENS_ZERO:
            cand, extra = y, 0.0
        elif len(hist) > 20 and hist[-21][1] > dens:
            # log-slope over 20 steps: an exponential tail in y holds density / slope
            slope = math.log(hist[-21][1] / dens) / (hist[-21][0] - y)
            if dens / slope < tail:
                cand, extra = y, 0.0
    if y_top is None:
        raise RuntimeError("jacobian_density: found no continuous spectrum")
    return (y if cand is None else cand), y_top


def _orthogonal_depth1(activation, log_q, sw2, tail):
    """Orthogonal depth 1: J J^T = sw2 D^2 exactly, the law of sw2 phi'(h)^2 itself.

    Computed by pushing N(0, 1) forward through y(z) = log10(sw2 phi'(sqrt(q) z)^2)
    on a fine grid in z (geometric near 0, so any scale of q is resolved), each
    interval's mass spread evenly over its y-range. Flat stretches of phi' are
    atoms; those of mass < 1e-6 (where phi'(h)^2 rounds to phi'(0)^2 for tiny h)
    stay in the continuous part as steps of its CDF.
    Returns (cdf(y) for an array y, atoms at lambda > 0, mass at 0, top, and the
    y below which the continuous part has the fraction ``tail`` of its mass), with
    top None when there is no continuous part.
    """
    from scipy.special import ndtr   # here: importing scipy.special costs every run ~0.1 s
    zp = 10.0 ** np.linspace(-16.0, 1.0, 200001)
    z = np.concatenate([-zp[::-1], [0.0], zp])
    with np.errstate(divide="ignore"):
        g = math.log10(sw2) + 2.0 * np.log10(np.abs(_dphi_at(activation, log_q, z)))
    mass = np.diff(ndtr(z))
    mass[0] += ndtr(z[0])
    mass[-1] += 1.0 - ndtr(z[-1])
    a, b = np.minimum(g[:-1], g[1:]), np.maximum(g[:-1], g[1:])
    zero = a == -np.inf
    flat = ~zero & (a == b)
    p0 = float(mass[zero].sum())
    vals, inv = np.unique(a[flat], return_inverse=True)
    wts = np.bincount(inv, weights=mass[flat]) if vals.size else np.zeros(0)
    big = wts > 1e-6
    atoms = [(10.0 ** v, m) for v, m in zip(vals[big].tolist(), wts[big].tolist())]
    cont = ~zero & ~flat
    a, b, mc = a[cont], b[cont], mass[cont]
    if mc.sum() < 1e-12:
        return None, atoms, p0, None, None
    # CDF of a sum of boxes: piecewise linear between the sorted breakpoints
    edges = np.concatenate([a, b])
    jumps = np.concatenate([mc / (b - a), -mc / (b - a)])
    order = np.argsort(edges, kind="stable")
    edges, dens = edges[order], np.cumsum(jumps[order])
    cdf = np.concatenate([[0.0], np.cumsum(dens[:-1] * np.diff(edges))])
    steps, step_mass = vals[~big], wts[~big]

    def cdf_at(y):
        out = np.interp(y, edges, cdf, left=0.0, right=cdf[-1])
        for v, m in zip(steps, step_mass):
            out = out + m * (y >= v)
        return out

    top = float(max(edges[-1], steps.max() if steps.size else -np.inf))
    lo = float(np.interp(tail * cdf[-1], cdf, edges))
    return cdf_at, atoms, p0, top, lo


def jacobian_density(activation, sw2, sb2=0.0, depth=1, *, weights="gaussian", q=None,
                     points=400, log10_range=None):
    """Density of the log10 squared singular values of J at the fixed point (infinite width).

    Parameters
    ----------
    activation : str or tuple
        Activation spec.
    sw2, sb2 : float
        Weight variance times fan_in (sw2 > 0) and bias variance.
    depth : int
        Number of layers L (all identical, at q).
    weights : {"gaussian", "orthogonal"}
        "gaussian": i.i.d. weights of any law with that variance (the spectrum is
        universal); "orthogonal": scaled Haar-orthogonal, ``W W^T = sw2 I``.
    q : float, optional
        Second moment of the pre-activations; default the fixed point q* of the
        q-map (:func:`~winit_sim.theory.fixed_point`; ValueError where there is
        none). Homogeneous activations (linear, relu, leaky_relu) do not depend
        on q, so they need no fixed point.
    points : int
        Grid size (>= 2).
    log10_range : (float, float), optional
        Grid ends in log10 lambda. Default: from the top edge of the continuous
        spectrum (found by a scan) down to where it ends, or to where the mass
        left below is below 1e-4 min(1, nvar) of the continuous mass (so that
        it shifts nvar by < 1e-4 relative). Deep i.i.d. nets have heavy lower
        tails: the density of log10 lambda decays like lambda^{1/(L+1)} towards
        0, so the default grid spans ~4 (L+1) decades, and 400 points resolve
        the top edge (which carries the moments of lambda) only coarsely: pass
        more points, or a range, for moments to better than 1%.

    Returns
    -------
    pandas.DataFrame
        ``log10_sq_sv`` (y = log10 lambda, lambda an eigenvalue of J J^T, uniform
        grid), ``density`` (of y: rho(lambda) lambda ln 10, the continuous part
        only) and ``lambda``. ``attrs``: ``atom_at_zero`` (mass of lambda = 0: the
        fraction of phi'(h) = 0, e.g. 1/2 for relu at any depth), ``atoms`` (list
        of (lambda, mass) with lambda > 0), ``atom`` ((lambda, mass) when one
        point mass holds everything, as orthogonal linear nets: (sw2^L, 1.0)),
        ``continuous_mass`` (1 - all atoms: what ``density`` integrates to over
        the whole line), ``grid_mass`` (its trapezoid integral on the grid),
        ``theory_log10_mean_sq_sv`` and ``theory_nvar`` (the exact moments, as
        :func:`jacobian_moments`), and the inputs (``q`` included).

    Notes
    -----
    S-transforms multiply under free products:
    S_{JJ^T}(m) = [S_{WW^T}(m) S_{D^2}(m)]^L, S_{WW^T}(m) = 1/(sw2 (1+m)) for
    i.i.d. weights (Marchenko-Pastur), 1/sw2 for orthogonal ones, and
    S_{D^2}(m) = chi(m) (1+m)/m with chi the inverse of psi_D(z) = E[z d/(1 - z d)],
    d = phi'(h)^2 by quadrature. For each lambda, chi_J(m) = m S_J(m)/(1+m) = 1/w
    is solved for complex m (in the variable u = chi_D(m), by Newton's method),
    on the branch continued from large lambda (where m ~ m1/lambda), with
    w = lambda e^{i 1e-9} and the root finally polished at w = lambda. Then
    G(lambda) = (m + 1)/lambda and the density of lambda is -Im G / pi; atoms do
    not enter it (at 0 the mass of phi' = 0, as rank(J) = min_l rank(D_l); at
    lambda > 0, for orthogonal weights only, a point mass p of D^2 at a gives
    L p - (L - 1) at (sw2 a)^L where that is positive).

    Orthogonal depth 1 is J J^T = sw2 D^2: there ``density`` is the exact law of
    log10(sw2 phi'(h)^2), as averages over cells of one grid step centred on the
    grid points (its top edge, at phi'(0) for tanh, is an integrable 1/sqrt
    singularity, which pointwise values would not integrate). Elsewhere the
    density is pointwise: against closed forms (Marchenko-Pastur, the arcsine
    law of orthogonal relu at depth 2) it agrees to ~1e-13.

    Limits: the branch tracking is meant for moderate depths (hundreds of
    layers). Orthogonal depth 2 with an atom of mass 1/2 in D^2 (relu,
    leaky_relu, elu, selu: phi' constant for h > 0) has an integrable 1/sqrt
    singularity at its top edge, so a trapezoid over the grid misses
    O(sqrt(step)) of the mass there. With orthogonal weights, where the
    density is below ~1e-3 of its peak (thin tails), it carries the ripples of
    the quadrature's discrete law of phi'^2 (u near the real axis). Values of
    phi'^2 below 1e-200 of the largest count as 0 (as underflowing ones do).
    ValueError for orthogonal weights where phi'^2 spreads by less than 1e-6
    relative (q -> 0: J J^T is a multiple of I to that accuracy); RuntimeError
    if the continuation loses the root.
    """
    data = kernel_data(activation)
    sw2 = check_nonneg_float(sw2, "sw2")
    if sw2 == 0:
        raise ValueError("sw2 must be > 0 (J = 0 otherwise)")
    sb2 = check_nonneg_float(sb2, "sb2")
    depth = check_positive_int(depth, "depth")
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; valid choices: {', '.join(WEIGHTS)}")
    points = check_positive_int(points, "points", minimum=2)
    if log10_range is not None:
        lo, hi = (float(v) for v in log10_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"log10_range must be finite (lo, hi) with lo < hi, "
                             f"got {log10_range!r}")
    if q is None:
        if data.homogeneous:
            q = 1.0
        else:
            fp = fixed_point(activation, sw2, sb2)
            if fp.status != "converged":
                raise ValueError(f"no fixed point for {activation} at sw2={sw2}, sb2={sb2}: "
                                 f"{fp.status}; pass q explicitly")
            q = fp.q
    else:
        q = check_nonneg_float(q, "q")
        if q == 0:
            raise ValueError("q must be > 0")
    log_q = math.log(q)
    orth = weights == "orthogonal"
    law = _Law(_dphi_at(activation, log_q, Z) ** 2, WZ)
    L = depth
    attrs = {"activation": resolve_activation(activation).canonical(), "sw2": sw2, "sb2": sb2,
             "depth": L, "weights": weights, "q": q}
    if law.m1 > 0:
        attrs["theory_log10_mean_sq_sv"] = L * math.log10(sw2 * law.m1)
        attrs["theory_nvar"] = L * ((0.0 if orth else 1.0) + law.nvar)
    else:
        attrs["theory_log10_mean_sq_sv"], attrs["theory_nvar"] = -math.inf, math.nan

    def frame(ys, dens, atoms, p0):
        ys = np.asarray(ys, dtype=np.float64)
        dens = np.asarray(dens, dtype=np.float64)
        with np.errstate(over="ignore", under="ignore"):
            lam = 10.0 ** ys
        df = pd.DataFrame({"log10_sq_sv": ys, "density": dens, "lambda": lam})
        df.attrs.update(attrs)
        df.attrs["atom_at_zero"] = p0
        df.attrs["atoms"] = atoms
        df.attrs["continuous_mass"] = max(1.0 - p0 - sum(m for _, m in atoms), 0.0)
        if len(atoms) == 1 and df.attrs["continuous_mass"] < 1e-12 and p0 < 1e-12:
            df.attrs["atom"] = atoms[0]
        df.attrs["grid_mass"] = float(np.trapezoid(dens, ys))
        return df

    def grid(lo, hi):
        return np.linspace(lo, hi, points) if log10_range is None else \
            np.linspace(log10_range[0], log10_range[1], points)

    if law.m1 == 0:   # phi' = 0 almost surely: J = 0
        ys = grid(-1.0, 1.0)
        return frame(ys, np.zeros(points), [], 1.0)
    if orth and L == 1:
        cdf_at, atoms, p0, top, lo = _orthogonal_depth1(
            activation, log_q, sw2, _TAIL_MASS * min(1.0, law.nvar))
        if top is None:   # only atoms (relu, leaky_relu: phi' takes two values)
            where = [math.log10(a) for a, _ in atoms] or [0.0]
            ys = grid(min(where) - 1.0, max(where) + 1.0)
            return frame(ys, np.zeros(points), atoms, p0)
        span = top - lo
        ys = grid(lo - 0.01 * span, top + 0.01 * span)
        step = ys[1] - ys[0]
        dens = (cdf_at(ys + 0.5 * step) - cdf_at(ys - 0.5 * step)) / step
        return frame(ys, dens, atoms, p0)
    if orth and law.d.size == 1 and law.p0 == 0:   # D^2 = a I: J J^T = (sw2 a)^L I
        lam = (sw2 * float(law.d[0])) ** L
        centre = L * math.log10(sw2 * float(law.d[0]))
        ys = grid(centre - 1.0, centre + 1.0)
        return frame(ys, np.zeros(points), [(lam, 1.0)], 0.0)

    if orth and law.nvar < 1e-12:
        # 1 - u d keeps ~16 digits: a law of phi'^2 narrower than 1e-6 (tiny q) is
        # below what the continuation resolves
        raise ValueError(f"phi'(h)^2 at q={q:.3g} spreads by {math.sqrt(law.nvar):.1e} "
                         f"relative (< 1e-6): with orthogonal weights J J^T is "
                         f"(sw2 E[phi'^2])^L I to that accuracy, too narrow to resolve "
                         f"in float64")
    atoms = []
    if orth:
        atoms = [((sw2 * a) ** L, L * p - (L - 1)) for a, p in law.atoms() if L * p > L - 1]
    target = 1.0 - law.p0 - sum(m for _, m in atoms)
    eq = _Equation(law, sw2, L, orth)
    dmax = float(law.d[-1])
    y_bound = L * math.log10((1.0 if orth else 4.0) * sw2 * dmax)   # ||J J^T|| <= this
    nvar = attrs["theory_nvar"]
    h_max = min(0.05, math.log10(1.0 + math.sqrt(nvar)) / 20.0) if nvar > 0 else 0.05
    h_max = max(h_max, 1e-9)
    y_start = y_bound + 1.0
    if log10_range is not None:
        y_start = max(y_start, log10_range[1] + 1.0)
    # far above the spectrum: m = psi_J(1/lambda) ~ m1_J/lambda and u = chi_D(m) ~ m/m1_D
    log_m1j = L * math.log(sw2 * law.m1)
    u0 = complex(math.exp(log_m1j - y_start * LN10) / law.m1)
    march = _March(eq, y_start, u0, y_bound, h_max)
    if log10_range is None:
        y_top_mean = attrs["theory_log10_mean_sq_sv"]
        floor = min(y_top_mean, y_bound) - _MAX_DECADES
        if orth and law.p0 == 0:   # D invertible: sigma_min(J)^2 >= (sw2 min d)^L
            floor = max(floor, L * math.log10(sw2 * float(law.d[0])) - 2.0 * h_max)
        # mass delta left near 0 shifts nvar by ~ delta: keep it below 1e-4 of nvar too
        tail = _TAIL_MASS * target * min(1.0, nvar)
        y_lo, y_top = _scan_range(_March(eq, y_start, u0, y_bound, h_max), target, tail, floor)
        # the scan brackets both ends to within one of its steps
        ys = grid(y_lo - h_max, y_top + 1.5 * h_max)
    else:
        ys = grid(None, None)
    dens = np.empty(points)
    for i in range(points - 1, -1, -1):   # descending, continuing the root
        u, _ = march.step_to(ys[i])
        dens[i] = max(_density_y(_polish(eq, u, ys[i])), 0.0)
    return frame(ys, dens, atoms, law.p0)


def sample_jacobian_density(df, size, seed=0):
    """Draw log10 lambda from a :func:`jacobian_density` frame's continuous part.

    Inverse CDF on the grid: the CDF is the cumulative trapezoid of ``density``
    (normalized to the grid's mass), linear between grid points.

    Parameters
    ----------
    df : pandas.DataFrame
        A :func:`jacobian_density` frame.
    size : int
        Number of samples.
    seed : int
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    numpy.ndarray
        ``size`` samples of log10 lambda (atoms excluded).
    """
    missing = [c for c in ("log10_sq_sv", "density") if c not in getattr(df, "columns", ())]
    if missing:
        raise ValueError(f"not a jacobian_density frame: columns {missing} are missing")
    size = check_positive_int(size, "size")
    y = df["log10_sq_sv"].to_numpy(dtype=np.float64)
    dens = np.maximum(df["density"].to_numpy(dtype=np.float64), 0.0)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(y))])
    if not cdf[-1] > 0:
        raise ValueError("the frame has no continuous density to sample from")
    cdf /= cdf[-1]
    return np.interp(np.random.default_rng(seed).random(size), cdf, y)
