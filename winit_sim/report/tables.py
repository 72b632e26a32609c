"""Variance-decay tables: how a quantity changes with depth, per (arch, activation, init,
width)."""
import numpy as np
import pandas as pd

from ..sweep.grid import MLP, depth_free
from ..theory.meanfield import predict

QUANTITIES = {
    # quantity: (column, direction) -- forward compares layer D with layer 1,
    # backward and weight_grad compare layer 1 with the top layer D
    "forward": ("log10_pre_q", "forward"),
    "backward": ("log10_grad_q", "backward"),
    "weight_grad": ("log10_wgrad_q", "backward"),
    # residual archs: the stream x_l itself, and dloss/dx_l
    "stream": ("log10_stream_q", "forward"),
    "stream_grad": ("log10_stream_grad_q", "backward"),
}
STABLE_DECADES = 1.0    # |total change| up to this many decades: stable
POWER_LAW_RATIO = 0.6   # late per-layer rate below this fraction of the mean rate: power law
SYMMETRIC_RATIO = 1e-20  # unit_var_ratio below this in every layer: units identical
VERDICTS = ("dead", "symmetric", "stable", "slow decay", "slow growth", "vanishing", "exploding")


def _log10_mean(log10_values):
    """log10 of the mean of 10**v, computed in log space (values may be +-1e4 decades)."""
    v = np.asarray(log10_values, dtype=float)
    top = v.max()
    if not np.isfinite(top):
        return top
    return top + np.log10(np.mean(10.0 ** (v - top)))


def row_keys(results):
    """The table's row keys: (arch,) activation, init, width; arch only when the results
    hold a net other than the plain MLP (so plain sweeps' tables read as before)."""
    keys = ["activation", "init", "width"]
    if "arch" in results.columns and (results["arch"].astype(str) != MLP).any():
        keys.insert(0, "arch")
    return keys


def _cell_ratios(results, column, direction):
    """Per (arch, activation, init, width, depth): log10 ratio of trial-mean second moments.

    Also the per-trial log10 ratios' spread, and the dead / symmetric flags.
    """
    keys = row_keys(results) + ["depth"]
    first = results[results.layer == 1].set_index(keys + ["trial"])[column]
    top = results[results.layer == results.depth].set_index(keys + ["trial"])[column]
    lo, hi = (first, top) if direction == "forward" else (top, first)
    with np.errstate(invalid="ignore"):
        ratio = hi.groupby(keys, observed=True).agg(_log10_mean) - \
            lo.groupby(keys, observed=True).agg(_log10_mean)
        spread = (hi - lo).groupby(keys, observed=True).std(ddof=0)
    dead = (np.isneginf(first) | np.isneginf(top)).groupby(keys, observed=True).any()
    sym = results.groupby(keys, observed=True)["unit_var_ratio"].max() < SYMMETRIC_RATIO
    return pd.DataFrame({"ratio": ratio, "spread": spread, "dead": dead,
                         "symmetric": sym.reindex(ratio.index)})


def _verdict(depths, ratios, dead, symmetric):
    if dead:
        return "dead"
    if symmetric:
        return "symmetric"
    total = ratios[-1]
    if not np.isfinite(total) or abs(total) <= STABLE_DECADES:
        return "stable" if np.isfinite(total) else "dead"
    grow = total > 0
    if len(depths) >= 2:
        late = (ratios[-1] - ratios[-2]) / (depths[-1] - depths[-2])
        mean = total / depths[-1]
        if late / mean < POWER_LAW_RATIO:
            return "slow growth" if grow else "slow decay"
    return "exploding" if grow else "vanishing"


def _theory_ratios(table_index, depths, quantity, bias_std):
    """Mean-field log10 ratios per table row and depth."""
    out = {}
    for key in table_index:
        arch, (act, init, width) = (key[0], key[1:]) if len(key) == 4 else (MLP, key)
        width = int(width)
        if depth_free(arch, width, depths):
            # batch only scales the weight gradient at every layer alike: it cancels in a ratio
            p = predict(width, int(depths[-1]), activation=act, init=init, bias_std=bias_std,
                        batch=1, arch=arch)
            row = [_theory_ratio(p, d, quantity) for d in depths]
        else:   # each depth is a net of its own
            row = [_theory_ratio(predict(width, int(d), activation=act, init=init,
                                         bias_std=bias_std, batch=1, arch=arch), d, quantity)
                   for d in depths]
        out[key] = row
    return pd.DataFrame.from_dict(out, orient="index", columns=[f"theory@{d}" for d in depths])


def _theory_ratio(p, d, quantity):
    """The predicted ratio of the depth-d net from a prediction of >= d layers (its
    backward factors are those of the deeper net's layers 1..d)."""
    column, direction = QUANTITIES[quantity]
    if quantity == "weight_grad":   # batch x delta^2 x the layer's input's q
        grad = p.theory_log10_grad_q.to_numpy()
        x_prev = np.concatenate([[0.0], p.theory_log10_post_q.to_numpy()[:-1]])
        if "theory_log10_stream_q" in p.columns:
            return p.theory_log10_wgrad_q.iloc[0] - p.theory_log10_wgrad_q.iloc[d - 1]
        with np.errstate(invalid="ignore"):
            return grad[0] - grad[d - 1] + x_prev[0] - x_prev[d - 1]
    v = p["theory_" + column].to_numpy()
    with np.errstate(invalid="ignore"):
        return v[d - 1] - v[0] if direction == "forward" else v[0] - v[d - 1]


def variance_decay_table(results, quantity="forward", at=None, theory=False, bias_std=0.0):
    """Pivot a sweep's results into a variance-decay table with a verdict per row.

    Parameters
    ----------
    results : pandas.DataFrame
        Output of :func:`winit_sim.sweep` (or of ``winit-sim sweep``'s results.parquet).
    quantity : {"forward", "backward", "weight_grad"}
        ``forward``: log10 of mean(h_D^2) / mean(h_1^2) for the net of depth D.
        ``backward``: log10 of mean(delta_1^2) / mean(delta_D^2), the gradient at
        the first layer relative to the top, for the net of depth D.
        ``weight_grad``: the same for mean((dloss/dW)^2).
        ``stream`` and ``stream_grad`` (residual archs): the same for the stream,
        mean(x_D^2) / mean(x_1^2), and for dloss/dx, block 1 against the top.
    at : sequence of int, optional
        Depths to show as columns (default: every depth in ``results``).
    theory : bool
        Add ``theory@D`` columns: the mean-field prediction of the same ratio
        (:func:`winit_sim.theory.predict`, infinite width), beside the simulation.
    bias_std : float
        The sweep's bias std (only used by ``theory``; results do not record it).

    Returns
    -------
    pandas.DataFrame
        Index (activation, init, width), led by ``arch`` when the results hold a
    residual net; one column per depth holding the log10
        ratio (decades) of the second moments, each first averaged over trials
        (the variance the theory talks about: He-normal keeps it exactly at any
        width); ``spread``: the std over trials of the per-trial log10 ratio at
        the deepest depth shown (finite-width dispersion, which grows with
        depth/width); ``verdict``.

    Notes
    -----
    Verdicts, in this order of precedence:

    * ``dead``: the quantity is exactly zero at layer 1 or at the top (no signal).
    * ``symmetric``: every layer's units are identical (``unit_var_ratio`` below
      1e-20 everywhere), as with constant weights.
    * ``stable``: the change at the deepest depth is at most 1 decade.
    * ``slow decay`` / ``slow growth``: more than a decade, but power-law: the
      per-layer rate between the two deepest depths is below 0.6 of the mean rate
      over the whole depth (an exponential has ratio 1; a power law across a
      decade of depth about 0.37). Tanh at its critical point decays like this.
    * ``vanishing`` / ``exploding``: more than a decade, exponential in depth.
    """
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; valid: {', '.join(QUANTITIES)}")
    column, direction = QUANTITIES[quantity]
    if column not in results.columns:
        raise ValueError(f"results have no {column!r} column (was the sweep run with backward?)")
    results = results[results[column].notna()]   # MLP rows have no stream columns
    if results.empty:
        raise ValueError(f"no results have a {column!r} value (quantity {quantity!r} needs a "
                         f"residual arch)")
    cells = _cell_ratios(results, column, direction)
    depths = sorted(results["depth"].unique())
    if at is not None:
        missing = sorted(set(at) - set(depths))
        if missing:
            raise ValueError(f"depths {missing} are not in the results; available: {depths}")
        depths = sorted(set(at))
    cells = cells[cells.index.get_level_values("depth").isin(depths)]
    rows = row_keys(results)
    table = cells["ratio"].unstack("depth").reindex(columns=depths)
    table["spread"] = cells["spread"].xs(depths[-1], level="depth")
    flags = cells.groupby(rows, observed=True)[["dead", "symmetric"]].any()
    if theory:
        pred = _theory_ratios(table.index, depths, quantity, bias_std)
        for col in pred.columns:
            table[col] = pred[col].to_numpy()
    table["verdict"] = [
        _verdict(depths, table.loc[idx, depths].to_numpy(dtype=float), flags.loc[idx, "dead"],
                 flags.loc[idx, "symmetric"])
        for idx in table.index]
    table.columns.name = None
    return table


def to_markdown(table, digits=2):
    """A Markdown table (reads well in a terminal too)."""
    head = list(table.index.names) + [f"D={c}" if not isinstance(c, str) else c
                                      for c in table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for idx, row in table.iterrows():
        cells = [str(v) for v in (idx if isinstance(idx, tuple) else (idx,))]
        for v in row:
            if isinstance(v, str):
                cells.append(v)
            elif np.isnan(v):
                cells.append("n/a")
            elif np.isinf(v):
                cells.append(f"{v:+}")
            else:
                cells.append(f"{v:+.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
