"""mup's coordinate check, extended to depth: diagnose a family of models across widths
(and depths), at init and after a few optimizer steps, and fit each module's log-slopes."""
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..checks import check_positive_int, check_seed
from ..report.plots import plot_scaling
from ..report.tables import STABLE_DECADES
from .diagnose import cotangent, diagnose, fitted_slope
from .modules import check_model, first_tensor

# |d log10 q / d log10 width| up to this: the statistic does not move with width (its
# RMS grows like width^0.25 or slower). Standard parametrization with Adam measures 1.5
# to 3 after a few steps; a 1/width learning rate 0.0 to 0.3 (tests/test_torch_bridge.py)
WIDTH_SLOPE_TOLERANCE = 0.5
QUANTITIES = ("log10_q", "log10_grad_q")


@dataclass
class ScalingCheck:
    """Result of :func:`scaling_check`.

    ``stats``: one row per (width, depth, step, module) with diagnose's columns and
    ``log10_q`` (log10_pre_q or log10_out_q). ``slopes``: one row per (step, module,
    quantity, against), the fitted slope (per decade of width, or per layer of depth), the
    change it makes across the range swept, and a verdict: flat, grows or shrinks.
    """
    stats: pd.DataFrame
    slopes: pd.DataFrame

    def plot(self, path, quantity="log10_q"):
        """mup's figure: one panel per step, the statistic against width (and a row
        against depth when depths were swept), a line per module."""
        return plot_scaling(self.stats, path, quantity)


def _positive_list(values, name):
    if values is None:
        return None
    values = list(values) if hasattr(values, "__iter__") else [values]
    if not values:
        raise ValueError(f"{name} must not be empty")
    return sorted({check_positive_int(v, name) for v in values})


def _slopes(stats, against):
    """Per (step, module[, the other axis]) slope of each quantity against width or depth."""
    x_col, other = ("width", "depth") if against == "width" else ("depth", "width")
    rows = []
    for (step, module, fixed), grp in stats.groupby(["step", "module", other], sort=False,
                                                    dropna=False):
        if grp[x_col].nunique() < 2:
            continue
        x = grp[x_col].to_numpy(float)
        if against == "width":
            x = np.log10(x)
        span = float(np.ptp(x))
        for quantity in QUANTITIES:
            slope = fitted_slope(x, grp[quantity].to_numpy(float))
            change = slope * span
            if against == "width":
                flat = abs(slope) <= WIDTH_SLOPE_TOLERANCE
            else:
                flat = abs(change) <= STABLE_DECADES
            verdict = ("flat" if flat else "grows" if slope > 0 else "shrinks") \
                if np.isfinite(slope) else "undetermined"
            rows.append({"step": step, "module": module, "role": grp.role.iloc[0],
                         "quantity": quantity, "against": against, other: fixed,
                         "slope": slope, "change": change, "verdict": verdict})
    return pd.DataFrame(rows)


def scaling_check(make_model, widths, *, depths=None, inputs, steps=0,
                  optimizer=torch.optim.Adam, lr=1e-3, loss=None, cotangent_seed=0, seed=0):
    """Diagnose models of growing width (and depth) at init and after training steps, and
    fit how each module's statistics move: mup's coordinate check, over depth too.

    Parameters
    ----------
    make_model : callable
        ``make_model(width)`` (or ``make_model(width, depth)`` when ``depths`` are
        given) returning a torch.nn.Module. It is called after ``torch.manual_seed(seed)``
        (the global RNG is restored afterwards).
    widths : sequence of int
    depths : sequence of int, optional
    inputs : tensor or callable
        The models' input, or ``inputs(width, depth)`` returning it.
    steps : int
        Optimizer steps after init; statistics are recorded at init (step 0) and after
        each step.
    optimizer : torch.optim.Optimizer class or callable
        A class (default Adam) is built as ``optimizer(model.parameters(), lr=lr)``; any
        other callable as ``optimizer(model, lr)``, returning an optimizer (for
        per-layer rates, as muP's).
    lr : float or callable
        The learning rate, or ``lr(width, depth)`` (``depth`` None without depths), as
        a width-scaled (muP-style) rate.
    loss : callable, optional
        ``loss(output) -> scalar``, for training and :func:`diagnose`. Default
        ``sum(output * g)`` with the fixed g of ``cotangent_seed``.
    cotangent_seed, seed : int

    Returns
    -------
    ScalingCheck
        ``stats`` and ``slopes``; ``.plot(path)`` draws the figure. Against width the
        slope is d log10(statistic) / d log10(width), flat within
        :data:`WIDTH_SLOPE_TOLERANCE`; against depth it is per layer, flat when its change
        across the depths swept is within the tables' stable band (1 decade). Modules
        are matched by name (and ``(input)`` / ``(output)``), so against depth only the
        modules every depth has are fitted.
    """
    if not callable(make_model):
        raise TypeError("make_model must be a function of the width (and depth) returning a "
                        "torch.nn.Module")
    widths = _positive_list(widths, "widths")
    depths = _positive_list(depths, "depths")
    steps = check_positive_int(steps, "steps", minimum=0)
    seed, cotangent_seed = check_seed(seed), check_seed(cotangent_seed)
    if not callable(optimizer):
        raise TypeError("optimizer must be a torch.optim.Optimizer class or a function "
                        "optimizer(model, lr) returning one")
    frames = []
    for depth in depths or [None]:
        for width in widths:
            lr_value = float(lr(width, depth)) if callable(lr) else float(lr)
            x = inputs(width, depth) if callable(inputs) else inputs
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                model = make_model(width) if depth is None else make_model(width, depth)
            check_model(model)
            frames += _train_and_diagnose(model, x, steps, optimizer, lr_value, loss,
                                          cotangent_seed, width, depth)
    stats = pd.concat(frames, ignore_index=True)
    stats.insert(stats.columns.get_loc("log10_pre_q"), "log10_q",
                 stats.log10_pre_q.fillna(stats.log10_out_q))
    parts = [_slopes(stats, "width")]
    if depths and len(depths) > 1:
        parts.append(_slopes(stats, "depth"))
    return ScalingCheck(stats, pd.concat(parts, ignore_index=True))


def _train_and_diagnose(model, x, steps, optimizer, lr, loss, cotangent_seed, width, depth):
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        opt = optimizer(model.parameters(), lr=lr)
    else:
        opt = optimizer(model, lr)
    args = x if isinstance(x, (tuple, list)) else (x,)
    out = []
    for step in range(steps + 1):
        if step:
            opt.zero_grad()
            y = model(*args)
            total = loss(y) if loss is not None else \
                (first_tensor(y) * cotangent(first_tensor(y), cotangent_seed)).sum()
            total.backward()
            opt.step()
        df = diagnose(model, x, loss=loss, cotangent_seed=cotangent_seed)
        df.insert(0, "step", step)
        df.insert(0, "depth", depth if depth is not None else np.nan)
        df.insert(0, "width", width)
        out.append(df)
    return out
