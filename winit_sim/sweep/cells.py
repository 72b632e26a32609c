"""Parameter sweeps: every (width, depth, activation, init, arch) cell, one tidy DataFrame."""
import sys
import time

import numpy as np
import pandas as pd

from .. import engine
from ..activations import resolve_activation
from ..inits import resolve_init
from ..layers import ARCHS, resolve_arch
from .cluster import check_scheduler, run_on_cluster
from .grid import MLP, cell_seed, depth_free, make_grid
from .store import ResultStore


class SweepTimer:
    """Wall time of a sweep split into kernel time and everything else."""

    def __init__(self):
        self.kernel = 0.0
        self.start = time.perf_counter()

    @property
    def wall(self):
        return time.perf_counter() - self.start


def run_group(grid, width, activation, init, arch=MLP):
    """Rows of every depth of one (width, activation, init, arch) net.

    One forward pass of the deepest net gives every depth's forward statistics
    (prefix property); the backward pass of each depth D starts at layer D. An
    arch whose blocks change with the depth (see :func:`.grid.depth_free`) runs
    one net per depth instead, each from the cell's seed.
    """
    if depth_free(arch, width, grid.depths):
        parts = _run_depths(grid, width, activation, init, arch, grid.depths)
    else:
        parts = [df for d in grid.depths
                 for df in _run_depths(grid, width, activation, init, arch, (d,))]
    return pd.concat(parts, ignore_index=True)


def _run_depths(grid, width, activation, init, arch, depths):
    """Frames of the given depths, from one net of the deepest of them."""
    tops = np.array(depths, dtype=np.int64)
    dmax = int(tops[-1])
    widths = np.full(dmax + 1, width, dtype=np.int64)
    blocks = resolve_arch(arch, dmax, width)
    fwd, bwd = engine.simulate_arrays(
        widths, activation, init, rows=grid.batch, trials=grid.trials,
        seed=cell_seed(grid.seed, width, activation, init, arch), bias_std=grid.bias_std,
        input_std=1.0, dtype=grid.dtype, tops=tops if grid.backward else [],
        method=grid.method, blocks=blocks,
        scope=engine.compile_scope(grid.activations, grid.inits))
    parts = []
    for i, d in enumerate(depths):
        if blocks is None:
            df = engine.frame(fwd, bwd if grid.backward else None, widths, depth=d, top_index=i)
        else:
            df = engine.block_frame(fwd, bwd if grid.backward else None, blocks, width,
                                    depth=d, top_index=i)
        df.insert(0, "arch", arch)
        df.insert(0, "init", init)
        df.insert(0, "activation", activation)
        df.insert(0, "depth", d)
        df.insert(0, "width", width)
        parts.append(df)
    return parts


def run_here(grid, groups, threads):
    """Yield ``(group, rows, info)`` for each net, run in this process."""
    with engine.threads(threads):
        for group in groups:
            start = time.perf_counter()
            df = run_group(grid, *group)
            yield group, df, {"seconds": time.perf_counter() - start}


def check_grid_memory(grid):
    """Refuse a grid with a net too large for memory before any cell runs."""
    depth = grid.depths[-1]
    widths = np.full(depth + 1, 1, dtype=np.int64)
    for width, activation, init, arch in grid.groups:
        blocks = resolve_arch(arch, depth, width)
        if blocks is None:
            net = engine.describe(widths * width, activation, init, grid.bias_std)
        else:
            net = engine.describe_blocks(blocks, width, depth, activation, init, grid.bias_std)
        engine.plan(net, init, grid.batch, grid.dtype, grid.method)


def _progress(total, enabled):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="cell", desc="sweep", file=sys.stderr)


def tidy(results, grid):
    """Sort rows and give the cell columns categorical dtypes in grid order."""
    results = results.sort_values(["width", "activation", "init", "arch", "depth", "trial",
                                   "layer"],
                                  key=lambda c: _order(c, grid)).reset_index(drop=True)
    for col, names in _CATEGORIES.items():
        results[col] = pd.Categorical(results[col].astype(str),
                                      categories=list(getattr(grid, names)))
    return results


_CATEGORIES = {"activation": "activations", "init": "inits", "arch": "archs"}


def _order(col, grid):
    if col.name in _CATEGORIES:
        names = getattr(grid, _CATEGORIES[col.name])
        return col.astype(str).map({a: i for i, a in enumerate(names)})
    return col


def run_sweep(grid, *, progress=True, out=None, force=False, timer=None, threads=None,
              scheduler=None, workers=None):
    """Run (or resume) a validated grid; returns the tidy results DataFrame.

    Nets already saved in ``out`` are loaded; the others run here or, with a
    ``scheduler``, as Dask tasks (:mod:`winit_sim.sweep.cluster`). Either way each net
    is saved the moment it finishes.
    """
    scheduler, workers = check_scheduler(scheduler, workers, threads)
    if scheduler is None:   # a cluster checks its workers' memory instead
        check_grid_memory(grid)
    store = ResultStore(out, grid, force=force) if out is not None else None
    rows_per_group = grid.trials * sum(grid.depths)   # one row per (trial, layer or block)
    done, pending = {}, []
    for group in grid.groups:
        df = store.load(group, rows_per_group) if store else None
        if df is None:
            pending.append(group)
        else:
            done[group] = df
    bar = _progress(grid.n_cells, progress)
    try:
        if bar is not None:
            bar.update(len(done) * len(grid.depths))
        results = (run_here(grid, pending, threads) if scheduler is None
                   else run_on_cluster(grid, pending, scheduler, workers, task=run_group,
                                       check=check_grid_memory))
        for group, df, info in results:
            if store:
                store.save(group, df)
            done[group] = df
            if timer is not None:
                timer.kernel += info["seconds"]
            if bar is not None:
                bar.update(len(grid.depths))
    finally:
        if bar is not None:
            bar.close()
    return tidy(pd.concat([done[g] for g in grid.groups], ignore_index=True), grid)


def sweep(widths, depths, activations, inits, *, trials=1, seed=0, batch=64, bias_std=0.0,
          dtype="float64", backward=True, method="auto", progress=True, out=None, scheduler=None,
          workers=None, archs=(MLP,)):
    """Simulate every (width, depth, activation, init, arch) cell of a grid.

    Parameters
    ----------
    widths, depths : sequence of int
        Uniform layer widths and network depths.
    activations, inits : sequence of str or tuple
        Activation and init specs (``"leaky_relu:slope=0.2"``, ``("normal", {"std": 0.1})``).
    trials, seed, batch, bias_std, dtype, backward, method
        As in :func:`winit_sim.simulate`; the input variance is 1.
    progress : bool
        Show a progress bar (cells done / total, ETA) when stderr is a terminal.
    out : path, optional
        Results directory: each finished (width, activation, init) net is saved
        there at once, atomically, and a rerun of the same grid resumes from it.
        A directory holding another grid's results is refused.
    scheduler : None, "local", str or dask.distributed.Client, optional
        None (default) runs every net in this process with Numba's threads.
        Otherwise each (width, activation, init) net is one Dask task:
        ``"local"`` starts a LocalCluster on this machine, an address such as
        ``"tcp://host:8786"`` connects to a running scheduler, and a Client is
        used as is (and left open). Needs ``pip install -e ".[dask]"``.
        Results are identical, bit for bit, to the in-process run; finished
        nets stream back and are saved one by one, so a sweep interrupted
        on a cluster resumes here or on a cluster, and a task whose worker
        dies is run again elsewhere.
    workers : int, optional
        Number of worker processes of ``scheduler="local"`` (default: one per
        core, each with one thread).
    archs : sequence of str or tuple
        Architecture specs (``"mlp"``, ``"residual:alpha=inv_sqrt_depth"``,
        presets such as ``"fixup"``; see :func:`winit_sim.simulate`). Default:
        the plain MLP only.

    Returns
    -------
    pandas.DataFrame
        The :func:`~winit_sim.simulate` columns plus ``width``, ``depth``,
        ``activation``, ``init``, ``arch`` (canonical spec strings,
        categorical); residual archs add their stream columns (NaN in MLP rows).

    Notes
    -----
    The net of a (width, activation, init, arch) cell has its own seed, a hash of
    (seed, width, activation, init, arch) (for the MLP, of the first four), so its
    numbers do not depend on the rest of the grid. All depths come from one
    forward pass of the deepest net: the depth-D cell equals
    ``simulate(width, D, ...)`` with that seed, its backward pass starting at
    layer D. An arch whose blocks scale with the depth (``inv_sqrt_depth``,
    ``inv_depth``, the presets) runs each depth as a net of its own, from the
    same seed.
    """
    grid = make_grid(widths, depths, activations, inits, trials=trials, seed=seed, batch=batch,
                     bias_std=bias_std, dtype=dtype, backward=backward, method=method,
                     archs=archs)
    return run_sweep(grid, progress=progress, out=out, scheduler=scheduler, workers=workers)


def seed_of_cell(seed, width, activation, init, arch=MLP):
    """The seed :func:`sweep` uses for a cell (pass it to ``simulate`` to reproduce it)."""
    return cell_seed(seed, width, resolve_activation(activation).canonical(),
                     resolve_init(init).canonical(), ARCHS.resolve(arch).canonical())


__all__ = ["sweep", "seed_of_cell", "run_sweep", "run_group", "run_here", "check_grid_memory",
           "SweepTimer", "tidy"]
