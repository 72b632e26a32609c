"""Jacobian singular-value spectra: dynamical isometry, measured.

:func:`jacobian_spectrum` computes every singular value of J = dx_D/dx_0 of the
nets :func:`winit_sim.simulate` runs (same keys), or of given weights, at any
depth (see :mod:`winit_sim.kernels.spectrum` for the log-space product SVD);
:func:`spectrum_summary` reduces them to the moments free probability predicts
(:func:`winit_sim.theory.jacobian_moments`).
"""
import math

import numpy as np
import pandas as pd

from . import engine
from .activations import resolve_activation
from .checks import (check_depths, check_nonneg_float, check_positive_int, check_seed,
                     resolve_widths)
from .inits import layer_sampler
from .kernels.layer import Given
from .layers import resolve_arch, stream_blocks
from .simulate import flatten_given, given_blocks, given_weights, weight_matrices
from .theory.moments import auto_gain
from .theory.spectrum import jacobian_moments

LN10 = math.log(10.0)
SPECTRUM_COLUMNS = ("trial", "depth", "index", "log10_sv")
SUMMARY_COLUMNS = ("log10_mean_sq_sv", "nvar", "log10_sv_max", "log10_sv_min", "frac_isometric")


def jacobian_spectrum(width=None, depth=None, *, widths=None, activation="relu",
                      init="he_normal", depths=None, trials=1, seed=0, bias_std=0.0,
                      input_var=1.0, threads=None, theory=False, weights=None, x=None,
                      biases=None, arch="mlp"):
    """Every singular value of the input-output Jacobian of deep nets, at several depths.

    J = dx_D/dx_0 = D_D W_D ... D_1 W_1 with D_l = diag(phi'(h_l)), at one input
    x_0 ~ N(0, input_var I): the first row of :func:`winit_sim.simulate`'s input,
    through the same weights and biases (same keys), so a net's spectrum at depth D
    is that of the first D layers of the net ``simulate`` runs. One pass of the
    deepest net gives every depth in ``depths``.

    Parameters
    ----------
    width, depth, widths
        As in :func:`winit_sim.simulate`.
    activation, init, seed, bias_std, input_var
        As in :func:`winit_sim.simulate` (any init: weight matrices are sampled).
    depths : sequence of int, optional
        Depths at which to report the spectrum (each in 1..depth); default [depth].
    trials : int
        Independent nets (trial indices 0..trials-1).
    threads : int, optional
        Numba threads for the call (restored afterwards); results do not depend on it.
    theory : bool
        Attach the free-probability moments (:func:`winit_sim.theory.jacobian_moments`)
        as ``df.attrs["theory"]``; :func:`spectrum_summary` then puts them beside the
        measured ones.
    weights : sequence of 2-D arrays, optional
        Given weights (fan_out, fan_in) in forward order, instead of sampled ones;
        then give ``x`` and ``activation`` (``width``, ``depth``, ``widths``, ``init``,
        ``seed``, ``trials``, ``bias_std`` and ``input_var`` are not used).
    x : array, shape (n_0,) or (1, n_0), optional
        The input of given weights.
    biases : sequence of 1-D arrays, optional
        One per given matrix, shape (fan_out,).
    arch : str or tuple
        ``"mlp"`` (default) or a residual architecture, as in
        :func:`winit_sim.simulate` (``depth`` then counts blocks, and the spectrum is
        that of the net ``simulate(..., method="matrix")`` runs). Given weights of a
        residual arch come in its forward order (W_1, V_1, W_2, ...). The theory
        (``theory=True``) is that of MLPs only.

    Returns
    -------
    pandas.DataFrame
        Long form, columns ``trial, depth, index, log10_sv``: the min(n_0, n_D)
        singular values of each (trial, depth), descending (``index`` 0 is the
        largest). Exact zeros (an exact rank loss: ReLU's inactive units, constant
        weights) are -inf. ``df.attrs`` holds the net (``"net"``), the Jacobi sweeps
        per (trial, depth) (``"sweeps"``; 0 where LAPACK computed the values, see the
        Notes) and, with ``theory``, the predicted moments.

    Notes
    -----
    Computed in log space (:mod:`winit_sim.kernels.spectrum`), so singular values
    thousands of decades apart are each accurate to about 1e-12 relative (checked
    against a direct SVD and an arbitrary-precision product). Float64 throughout.
    Cost per layer: one product of (width x n_0) matrices (only the active units'
    rows and columns) and one QR, which orthogonal layers with a small enough
    conditioning defer to a later layer; at each depth of ``depths``, LAPACK's SVD
    where the values span less than 4 decades, else a one-sided Jacobi SVD. Memory:
    about nine (width x n_0) matrices.
    """
    if weights is not None:
        return _given_spectrum(weights, x, activation, biases, depths, threads, arch)
    widths = resolve_widths(width, depth, widths)
    depth = widths.size - 1
    trials = check_positive_int(trials, "trials")
    seed = check_seed(seed)
    bias_std = check_nonneg_float(bias_std, "bias_std")
    input_var = check_nonneg_float(input_var, "input_var")
    resolve_activation(activation)
    layer_sampler(init, 1, 1, auto_gain(init, activation))  # validate before any work
    tops = check_depths(depths, depth)
    blocks = stream_blocks(arch, widths)
    if blocks is not None and theory:
        raise ValueError(f"theory=True: the free-probability moments are those of an MLP, "
                         f"not of arch {arch!r}")
    spec = dict(widths=[int(w) for w in widths], activation=activation, init=init,
                bias_std=bias_std, input_var=input_var, arch=arch)
    pred = None
    if theory:
        pred = jacobian_moments(widths=spec["widths"], activation=activation, init=init,
                                depths=tops, bias_std=bias_std, input_var=input_var)
    with engine.threads(threads):
        if blocks is None:
            net = engine.describe(widths, activation, init, bias_std, math.sqrt(input_var))
            log_sv, sweeps = engine.jacobian_arrays(net, activation, seed, trials, tops)
        else:
            net = engine.describe_blocks(blocks, int(widths[0]), depth, activation, init,
                                         bias_std, math.sqrt(input_var))
            log_sv, sweeps = engine.jacobian_block_arrays(net, activation, seed, trials, tops)
    return _frame(log_sv, sweeps, tops, widths, spec, pred)


def _given_spectrum(weights, x, activation, biases, depths, threads, arch):
    resolve_activation(activation)
    if x is None:
        raise ValueError("given weights need their input x, of shape (n_0,) or (1, n_0)")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] != 1 or x.shape[1] < 1:
        raise ValueError(f"x must have shape (n_0,) or (1, n_0), got {np.shape(x)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains inf or NaN")
    n0 = x.shape[1]
    if resolve_arch(arch) is None:
        w_flat, w_off, b_flat, b_off, widths = given_weights(weights, x, biases, np.float64)
        net = engine.describe(widths, activation, None)
        arrays = engine.jacobian_arrays
    else:
        mats = weight_matrices(weights)
        blocks = given_blocks(arch, mats, n0)
        w_flat, w_off, b_flat, b_off = flatten_given(mats, biases, np.float64)
        widths = np.full(len(mats) // blocks.branch + 1, n0, np.int64)
        net = engine.describe_blocks(blocks, n0, widths.size - 1, activation, None)
        arrays = engine.jacobian_block_arrays
    tops = check_depths(depths, widths.size - 1)
    given = Given(w_flat, w_off, b_flat, b_off, np.ascontiguousarray(x),
                  np.zeros((1, int(widths[-1]))))
    with engine.threads(threads):
        log_sv, sweeps = arrays(net, activation, 0, 1, tops, given)
    spec = dict(widths=[int(w) for w in widths], activation=activation, init=None, arch=arch)
    return _frame(log_sv, sweeps, tops, widths, spec, None)


def _frame(log_sv, sweeps, tops, widths, spec, pred):
    trials = log_sv.shape[0]
    parts = []
    for ti, d in enumerate(tops):
        count = int(min(widths[0], widths[d]))
        for trial in range(trials):
            parts.append(pd.DataFrame({
                "trial": trial, "depth": d, "index": np.arange(count),
                "log10_sv": log_sv[trial, ti, :count] / LN10}))
    df = pd.concat(parts, ignore_index=True).sort_values(
        ["trial", "depth", "index"], kind="stable", ignore_index=True)
    df.attrs["net"] = spec
    df.attrs["sweeps"] = sweeps.tolist()
    if pred is not None:
        df.attrs["theory"] = pred
    return df


def spectrum_summary(df, theory=False):
    """Per (trial, depth): the moments of sigma^2 that free probability predicts.

    Parameters
    ----------
    df : pandas.DataFrame
        A :func:`jacobian_spectrum` frame.
    theory : bool
        Add the predicted ``theory_log10_mean_sq_sv`` and ``theory_nvar`` (from
        ``df.attrs["theory"]``, or computed from ``df.attrs["net"]``), and the
        deviation ``dev_log10_mean_sq_sv`` (measured - predicted).

    Returns
    -------
    pandas.DataFrame
        ``trial, depth, log10_mean_sq_sv`` (log10 of the mean of sigma^2),
        ``nvar`` (var(sigma^2) / mean(sigma^2)^2: 0 at isometry), ``log10_sv_max``,
        ``log10_sv_min`` and ``frac_isometric`` (the fraction of sigma^2 within a
        factor 2 of their mean). Computed from the logs, so finite where the true
        values are, at any depth (a zero singular value gives log10_sv_min -inf).
    """
    missing = [c for c in SPECTRUM_COLUMNS if c not in getattr(df, "columns", ())]
    if missing:
        raise ValueError(f"not a jacobian_spectrum frame: columns {missing} are missing")
    rows = []
    for (trial, depth), g in df.groupby(["trial", "depth"], sort=True):
        rows.append((trial, depth) + _moments(g["log10_sv"].to_numpy()))
    out = pd.DataFrame(rows, columns=("trial", "depth") + SUMMARY_COLUMNS)
    if theory:
        pred = df.attrs.get("theory")
        if pred is None:
            spec = df.attrs.get("net")
            if not spec or spec.get("init") is None:
                raise ValueError("theory=True needs a sampled net's frame (given weights "
                                 "have no theory)")
            if resolve_arch(spec.get("arch", "mlp")) is not None:
                raise ValueError(f"theory=True: the free-probability moments are those of "
                                 f"an MLP, not of arch {spec['arch']!r}")
            pred = jacobian_moments(widths=spec["widths"], activation=spec["activation"],
                                    init=spec["init"], depths=sorted(out["depth"].unique()),
                                    bias_std=spec["bias_std"], input_var=spec["input_var"])
        out = out.merge(pred, on="depth", how="left")
        out["dev_log10_mean_sq_sv"] = out["log10_mean_sq_sv"] - out["theory_log10_mean_sq_sv"]
    return out


def _moments(log10_sv):
    """(log10 mean sigma^2, nvar, log10 max, log10 min, fraction within 2x of the mean)."""
    y = 2.0 * LN10 * np.asarray(log10_sv, dtype=np.float64)   # ln sigma^2
    top = np.max(y)
    if top == -np.inf:
        return (-np.inf, math.nan, -np.inf, -np.inf, 0.0)
    rel = np.exp(y - top)                   # sigma^2 / max sigma^2, zeros stay 0
    mean = rel.mean()
    nvar = rel.var() / mean ** 2
    log_mean = math.log(mean) + top
    frac = float(np.mean(np.abs(y - log_mean) <= math.log(2.0)))
    return (log_mean / LN10, float(nvar), top / (2.0 * LN10),
            np.min(y) / (2.0 * LN10), frac)
