"""Sweeps: grids of networks, their results directory, and the optional Dask path.

* :mod:`.grid`    the grid: validation, canonical names, per-net seeds
* :mod:`.cells`   :func:`sweep`: one deep pass per net, every depth from it
* :mod:`.store`   the results directory: atomic cell files, resume, grid guard
* :mod:`.cluster` the same sweep as Dask tasks (handed the task function)
"""
from .cells import run_sweep, seed_of_cell, sweep
from .grid import Grid, make_grid

__all__ = ["Grid", "make_grid", "run_sweep", "seed_of_cell", "sweep"]
