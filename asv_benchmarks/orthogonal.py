"""Orthogonal weights: the conditional engine against the matrix engine and a PyTorch loop
that samples ``torch.nn.init.orthogonal_`` per layer, in this run, alternated, medians of
--repeat (JIT warm-up untimed).

    python asv_benchmarks/orthogonal.py [--repeat 5] [--width 1024] [--depth 100] [--batch 16]

width 1024, depth 100, batch 16, relu, gain sqrt(2), float32, forward+backward.
"""
import argparse

import numpy as np

from benchmarks.common import load_torch, sample_times, torch_loop

import winit_sim as ws


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--matrix-repeat", type=int, default=3,
                    help="repeats of the (slow) matrix engine")
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch = load_torch()
    n, d, b = args.width, args.depth, args.batch
    init = "orthogonal:gain=1.4142135623730951"
    cases = {
        "winit_sim conditional": lambda: ws.simulate(n, d, activation="relu", init=init, batch=b,
                                                     dtype="float32", method="conditional"),
        "torch loop (orthogonal_ per layer)": lambda: torch_loop(n, d, b, np.float32,
                                                                  init="orthogonal"),
        "winit_sim matrix": lambda: ws.simulate(n, d, activation="relu", init=init, batch=b,
                                                dtype="float32", method="matrix"),
    }
    ws.simulate(64, 2, init=init, batch=b, dtype="float32", method="conditional")   # JIT
    ws.simulate(64, 2, init=init, batch=b, dtype="float32", method="matrix")
    torch_loop(64, 2, b, np.float32, init="orthogonal")
    times = {k: [] for k in cases}
    for r in range(max(args.repeat, args.matrix_repeat)):   # alternate: drift hits all alike
        for k, fn in cases.items():
            if r < (args.matrix_repeat if "matrix" in k else args.repeat):
                times[k] += sample_times(fn, 1, warmup=0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"width {n}, depth {d}, batch {b}, relu/orthogonal, float32, forward+backward, "
          f"medians (torch {torch.__version__}, 2 threads)")
    for k, v in med.items():
        print(f"  {k:38s} {1e3 * v:10.1f} ms  ({len(times[k])} runs)")
    cond = med["winit_sim conditional"]
    print(f"  conditional is {med['winit_sim matrix'] / cond:.1f}x the matrix engine and "
          f"{med['torch loop (orthogonal_ per layer)'] / cond:.1f}x the torch loop")


if __name__ == "__main__":
    main()
