"""Training probe: does an initialisation let a deep MLP learn? (teacher-student regression)."""
import math

import numpy as np
import pandas as pd

from . import engine
from .activations import kernel_data, resolve_activation
from .checks import check_nonneg_float, check_positive_int, check_seed, resolve_widths
from .inits import layer_sampler, resolve_init
from .kernels import rng
from .kernels.sgd import (Model, ResModel, ResScratch, Scratch, Step, residual_train_step,
                          train_step)
from .kernels.weights import fill_weights
from .layers import NO_NORM, NORMS, stream_blocks
from .theory.moments import auto_gain

OPTIMIZERS = ("sgd", "momentum")
TASKS = ("teacher",)
DIVERGE_FACTOR = 1e6   # loss above this times the initial loss: diverged
DISTINCT_TOL = 1e-9    # rows of W closer than this (relative RMS) count as one unit
AUTO_LR = "auto"
LR_GRID = tuple(10.0 ** (k / 2) for k in range(-8, 2))   # 1e-4 ... 3.16 in half decades
LR_SEARCH_STEPS = 30   # steps per candidate of lr="auto" (fewer if the run is shorter)


def distinct_units(w, tol=DISTINCT_TOL):
    """Number of distinct rows of W: a row within ``tol`` x (W's RMS row norm) of an
    earlier row is not new. Exact differences, no Gram-matrix rounding."""
    w = np.asarray(w, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        return -1
    w = w / np.max(np.abs(w)) if np.any(w) else w  # huge (diverging) weights: no overflow
    scale = math.sqrt(np.mean(np.sum(w * w, axis=1)))
    if scale == 0.0:
        return 1
    count = 0
    for i in range(w.shape[0]):
        d = np.sqrt(np.sum((w[:i] - w[i]) ** 2, axis=1))
        count += not np.any(d <= tol * scale)
    return count


def train(width=None, depth=None, *, widths=None, activation="relu", init="he_normal",
          steps=200, lr=AUTO_LR, batch=64, task="teacher", seed=0, optimizer="sgd",
          momentum=0.9, data="fresh", arch="mlp"):
    """Train a deep net with the engine's kernels on a teacher-student regression.

    Parameters
    ----------
    width, depth, widths
        Architecture as in :func:`winit_sim.simulate` (``depth`` weight layers;
        hidden layers use ``activation``, the output layer is linear).
    activation, init
        Specs as in :func:`winit_sim.simulate`; the initial weights are exactly
        those :func:`winit_sim.simulate` samples for trial 0 with this seed.
    steps, lr, batch : int, float or "auto", int
        SGD steps, learning rate and batch size. ``lr="auto"`` (default) runs
        each learning rate of :data:`LR_GRID` (1e-4 to 10^0.5 in half decades) for
        ``min(steps, 30)`` steps from the same weights and batches, scores it by
        its mean loss over the last quarter of those steps over the initial loss
        (diverged: infinite), and trains at the best; if that full run diverges,
        at the next best (if every rate diverged, at the smallest). ``df.attrs["lr"]`` is the rate used and
        ``df.attrs["lr_search"]`` the search (``lr``, ``score``, ``diverged``),
        so every init is judged at a rate that suits it.
    task : {"teacher"}
        Targets y = tanh(x A^T) with a fixed random A ~ N(0, 1/n_0) of shape
        (n_L, n_0), inputs x ~ N(0, I); a fresh keyed batch every step.
    seed : int
        Seeds weights, teacher and batches.
    optimizer : {"sgd", "momentum"}
        Plain SGD, or heavy-ball momentum with ``momentum``.
    data : {"fresh", "fixed"}
        A fresh keyed batch every step, or the same batch (a fixed dataset of
        ``batch`` samples) every step, which makes the loss exactly comparable
        across steps.
    arch : str or tuple
        ``"mlp"`` or a residual arch as in :func:`winit_sim.simulate`: its stream
        is the input and the output (the teacher maps width to width), its
        blocks' initial weights are those :func:`winit_sim.simulate` samples, and
        every matrix trains; ``skipinit`` (or ``train_alpha=yes``) also trains
        each block's alpha, from 0. Each norm trains a gain per unit from 1
        and, LayerNorm, a shift from 0 (RMSNorm has no shift), as in Ba et al.
        2016 and Zhang & Sennrich 2019; ``df.attrs["norm_gain"]`` and
        ``["norm_shift"]`` hold them after training (blocks x width).

    Returns
    -------
    pandas.DataFrame
        One row per step: ``step``, ``loss`` (before that step's update),
        ``log10_gnorm_<l>`` (Frobenius norm of layer l's weight gradient, -inf
        when exactly zero; for a residual arch block l's, its matrices
        together), ``distinct_units_<l>`` for hidden layers of the MLP (rows of
        W_l that differ), ``diverged``. Training stops at the first step whose
        loss or weights are not finite or whose loss exceeds 1e6 times the
        initial loss; that row has ``diverged=True`` and ``df.attrs["diverged"]``
        is True.
    """
    w_sizes = resolve_widths(width, depth, widths)
    steps = check_positive_int(steps, "steps")
    rows = check_positive_int(batch, "batch")
    seed = check_seed(seed)
    if isinstance(lr, str):
        if lr != AUTO_LR:
            raise ValueError(f"lr must be a number >= 0 or {AUTO_LR!r}, got {lr!r}")
    else:
        lr = check_nonneg_float(lr, "lr")
    momentum = check_nonneg_float(momentum, "momentum")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    if data not in ("fresh", "fixed"):
        raise ValueError(f"unknown data {data!r}; valid: fresh, fixed")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    act = resolve_activation(activation)
    resolve_init(init)
    blocks = stream_blocks(arch, w_sizes)
    mom = momentum if optimizer == "momentum" else 0.0
    if blocks is not None:
        run = _residual_runner(blocks, int(w_sizes[0]), w_sizes.size - 1, act, init, rows, seed,
                               mom, data)
    else:
        run = _mlp_runner(w_sizes, act, init, rows, seed, mom, data)
    if lr != AUTO_LR:
        df = run(lr, steps)
        df.attrs["lr"] = lr
        return df
    return _train_auto_lr(run, steps)


def _train_auto_lr(run, steps):
    """lr="auto" of :func:`train`: the short search over LR_GRID, then the full run."""
    short = min(steps, LR_SEARCH_STEPS)
    tail = max(1, short // 4)
    search = []
    for lr in LR_GRID:
        df = run(lr, short)
        loss = df.loss.to_numpy()
        diverged = bool(df.attrs["diverged"])
        score = math.inf if diverged or not loss[0] > 0 else float(np.mean(loss[-tail:]) / loss[0])
        search.append({"lr": lr, "score": score, "diverged": diverged})
    table = pd.DataFrame(search)
    live = table[~table.diverged].sort_values(["score", "lr"], ascending=[True, False],
                                              kind="stable")
    # best first; if every rate diverged, the smallest shows how
    candidates = list(live.lr) if len(live) else [min(LR_GRID)]
    for lr in candidates:
        df = run(float(lr), steps)
        if not df.attrs["diverged"]:
            break
    df.attrs["lr"] = float(lr)
    df.attrs["lr_search"] = table
    return df


def _mlp_runner(w_sizes, act, init, rows, seed, mom, data):
    """run(lr, steps): a fresh MLP from its initial weights, trained (see :func:`train`)."""
    act_data = kernel_data(act)
    gain = auto_gain(init, act)
    depth = w_sizes.size - 1
    w_off = np.concatenate([[0], np.cumsum(w_sizes[:-1] * w_sizes[1:])]).astype(np.int64)
    w_flat = np.empty(int(w_off[-1]))
    for l in range(depth):
        kind, scale = layer_sampler(init, int(w_sizes[l]), int(w_sizes[l + 1]), gain)
        key = np.uint64(rng.stream_key(seed, 0, l + 1, rng.STREAM_WEIGHT))
        fill_weights(kind, scale, key, w_flat[w_off[l]:w_off[l + 1]].reshape(
            (int(w_sizes[l + 1]), int(w_sizes[l]))), engine.orthogonal_layers(kind),
                     engine.uniform_layers(kind))
    teacher = _teacher(seed, int(w_sizes[-1]), int(w_sizes[0]))
    total = int(w_sizes.sum())
    scratch = Scratch(np.empty((rows, total)), np.empty((rows, total)), np.empty(depth))

    def run(lr, steps):
        weights = w_flat.copy()
        model = Model(w_sizes, weights, w_off, np.zeros_like(weights), teacher)

        def step_fn(step):
            return train_step(model, act_data.code, act_data.param,
                              Step(np.uint64(seed), step if data == "fresh" else 0, lr, mom,
                                   rows), scratch)

        def units(row):
            for l in range(depth - 1):
                w = weights[w_off[l]:w_off[l + 1]].reshape((int(w_sizes[l + 1]),
                                                            int(w_sizes[l])))
                row[f"distinct_units_{l + 1}"] = distinct_units(w)

        return _run_steps(steps, step_fn, scratch.gnorm, weights, units)

    return run


def _teacher(seed, n_out, n_in):
    """The teacher matrix A ~ N(0, 1 / n_in) of a seed."""
    teacher = np.empty((n_out, n_in))
    rng.fill_normal(np.uint64(rng.stream_key(seed, 0, 0, rng.STREAM_TEACHER)), teacher,
                    1.0 / math.sqrt(n_in))
    return teacher


def _run_steps(steps, step_fn, gnorm, weights, extra=None):
    """Run ``step_fn(step)`` (the loss before that step's update) until ``steps`` or a
    divergence: one row per step with the gradient norms, ``extra(row)``'s columns and
    ``diverged``."""
    records, first_loss, diverged = [], None, False
    with engine.threads(None):
        for step in range(steps):
            loss = step_fn(step)
            first_loss = loss if first_loss is None else first_loss
            row = {"step": step, "loss": loss}
            _gnorm_columns(row, gnorm)
            if extra is not None:
                extra(row)
            bad = (not math.isfinite(loss) or loss > DIVERGE_FACTOR * max(first_loss, 1e-300)
                   or not np.all(np.isfinite(weights)))
            row["diverged"] = bad
            records.append(row)
            if bad:
                diverged = True
                break
    df = pd.DataFrame(records)
    df.attrs["diverged"] = diverged
    return df


def _residual_runner(blocks, width, depth, act, init, rows, seed, mom, data):
    """run(lr, steps) of a residual arch (arguments validated in :func:`train`)."""
    net = engine.describe_blocks(blocks, width, depth, act, init)
    shapes = engine.block_shapes(blocks.branch, width, blocks.hidden)
    sizes = [n_out * n_in for _ in range(depth) for n_out, n_in in shapes]
    w_off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    w_flat = np.empty(int(w_off[-1]))
    for l in range(depth):
        for j, (n_out, n_in) in enumerate(shapes):
            i = l * blocks.branch + j
            stream = rng.STREAM_WEIGHT2 if j else rng.STREAM_WEIGHT
            key = np.uint64(rng.stream_key(seed, 0, l + 1, stream))
            fill_weights(int(net.sampler[l, j]), float(net.scale[l, j]), key,
                         w_flat[w_off[i]:w_off[i + 1]].reshape((n_out, n_in)),
                         net.orthogonal_layers, net.uniform_layers)
    teacher = _teacher(seed, width, width)
    k = blocks.hidden if blocks.branch == 2 else width
    scratch = ResScratch(np.empty((depth + 1, rows, width)), np.empty((depth, rows, width)),
                         np.empty((depth, rows, k)), np.empty((depth, rows, width)),
                         np.empty((depth, rows)), np.empty((depth, rows, width)),
                         np.empty(depth))
    act_data = kernel_data(act)

    def run(lr, steps):
        weights = w_flat.copy()
        affine = np.zeros((depth, 2, width))
        affine[:, 0] = 1.0   # every norm starts as the identity map: gain 1, shift 0
        model = ResModel(net, weights, w_off, np.zeros_like(weights),
                         np.full(depth, blocks.alpha), np.zeros(depth), blocks.train_alpha,
                         affine, np.zeros_like(affine), teacher)

        def step_fn(step):
            return residual_train_step(
                model, act_data.code, act_data.param,
                Step(np.uint64(seed), step if data == "fresh" else 0, lr, mom, rows), scratch)

        df = _run_steps(steps, step_fn, scratch.gnorm, weights)
        df.attrs["alpha"] = model.alpha.copy()
        if blocks.norm != NO_NORM:
            df.attrs["norm_gain"] = affine[:, 0].copy()
            if list(NORMS)[blocks.norm].centered:
                df.attrs["norm_shift"] = affine[:, 1].copy()
        return df

    return run


def _gnorm_columns(row, gnorm):
    with np.errstate(divide="ignore"):
        for l in range(gnorm.size):
            row[f"log10_gnorm_{l + 1}"] = math.log10(gnorm[l]) if gnorm[l] > 0 \
                else (-math.inf if gnorm[l] == 0 else math.nan)


def summarize(df):
    """One run's summary: loss ratio, steps to halve, gradient ratio, distinct units, divergence."""
    loss0 = df.loss.iloc[0]
    halved = np.nonzero(df.loss.to_numpy() <= 0.5 * loss0)[0]
    gn = df.filter(like="log10_gnorm_").iloc[0].to_numpy(dtype=float)
    du = df.filter(like="distinct_units_")
    with np.errstate(invalid="ignore"):
        grad_ratio = gn[0] - gn[-1]
    return {
        "final_over_initial_loss": df.loss.iloc[-1] / loss0 if loss0 > 0 else math.nan,
        "steps_to_halve": int(halved[0]) if halved.size else None,
        "log10_grad_first_over_last": grad_ratio,
        "min_distinct_units": int(du.iloc[-1].min()) if du.shape[1] else None,
        "diverged": bool(df.attrs.get("diverged", False)),
        "steps_run": len(df),
    }


def train_grid(activations, inits, *, width=128, depths=(10, 30), steps=200, lr=AUTO_LR,
               batch=64, seed=0, optimizer="sgd", data="fresh"):
    """Train every (activation, init, depth) and return (summary table, per-step curves).

    With ``lr="auto"`` (default) each run trains at its own best learning rate (see
    :func:`train`), so inits are compared fairly; the table's ``lr`` column says which.
    """
    rows, curves = [], []
    for depth in depths:
        for act in activations:
            for init in inits:
                df = train(width, depth, activation=act, init=init, steps=steps, lr=lr,
                           batch=batch, seed=seed, optimizer=optimizer, data=data)
                rows.append({"activation": act, "init": init, "depth": depth,
                             "lr": df.attrs["lr"], **summarize(df)})
                curves.append(df[["step", "loss"]].assign(activation=act, init=init, depth=depth))
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)
