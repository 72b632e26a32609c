"""A sweep on a Dask LocalCluster against the same sweep in this process.

Usage: python asv_benchmarks/cluster_overhead.py [--repeat 3]

Grid: 2 widths x 4 activations x 4 inits = 32 nets (64 depth cells), batch 16.
Runs, each timed as the median of ``--repeat`` after a warm-up (JIT and the
cluster's start are outside the timings):

- here, 1 thread     serial baseline (the sum of the per-net kernel times)
- here, 2 threads    the default in-process run
- dask 2 x 1 thread  LocalCluster of 2 single-thread worker processes
- tiny nets          width 8, depth 2: almost no kernel work, so the wall per
                     net on the cluster is its per-task overhead

Overhead per net = (workers x wall - sum of the tasks' kernel seconds) / nets:
the time a worker slot spends not computing, per net (scheduling, pickling
the rows, the client writing nothing here). Scaling = serial / cluster wall.
"""
import argparse
import statistics
import time

import distributed

from winit_sim.sweep.cells import check_grid_memory, run_group, run_here
from winit_sim.sweep.cluster import run_on_cluster
from winit_sim.sweep.grid import make_grid

AXES = dict(activations=["relu", "tanh", "sigmoid", "leaky_relu"],
            inits=["he_normal", "xavier_normal", "xavier_uniform", "small"], trials=2,
            batch=16)


def timed(fn, repeat):
    fn()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        kernel = fn()
        runs.append((time.perf_counter() - start, kernel))
    wall = statistics.median(r[0] for r in runs)
    return wall, statistics.median(r[1] for r in runs)


def here(grid, threads):
    return lambda: sum(i["seconds"] for _, _, i in run_here(grid, grid.groups, threads))


def on(client, grid):
    return lambda: sum(i["seconds"] for _, _, i in run_on_cluster(
        grid, grid.groups, client, task=run_group, check=check_grid_memory))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    grid = make_grid([256, 512], [100, 300], **AXES)
    tiny = make_grid([8, 9], [2], **AXES)   # 32 nets of almost no work
    n = len(grid.groups)
    serial, _ = timed(here(grid, 1), args.repeat)
    both, _ = timed(here(grid, 2), args.repeat)
    tiny_here, _ = timed(here(tiny, 1), args.repeat)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as lc, distributed.Client(lc) as c:
        dask_wall, dask_kernel = timed(on(c, grid), args.repeat)
        tiny_wall, tiny_kernel = timed(on(c, tiny), args.repeat)
    print(f"grid: {n} nets ({grid.n_cells} cells), widths {grid.widths}, depths {grid.depths}, "
          f"batch {grid.batch}, trials {grid.trials}; median of {args.repeat}")
    print(f"{'run':<24}{'wall s':>9}{'per net ms':>12}")
    for name, wall in (("here, 1 thread", serial), ("here, 2 threads", both),
                       ("dask 2 x 1 thread", dask_wall)):
        print(f"{name:<24}{wall:9.3f}{1000 * wall / n:12.1f}")
    print(f"scaling dask vs serial: {serial / dask_wall:.2f}x (ideal 2); "
          f"vs here with 2 threads: {both / dask_wall:.2f}x")
    print(f"overhead per net (busy nets): {1000 * (2 * dask_wall - dask_kernel) / n:.1f} ms "
          f"(kernel {1000 * dask_kernel / n:.1f} ms per net)")
    print(f"tiny nets: here {1000 * tiny_here / len(tiny.groups):.2f} ms per net, dask "
          f"{1000 * tiny_wall / len(tiny.groups):.2f} ms per net wall, overhead per net "
          f"{1000 * (2 * tiny_wall - tiny_kernel) / len(tiny.groups):.1f} ms")


if __name__ == "__main__":
    main()
