"""Medians of the matrix engine against NumPy and PyTorch loops doing the same work, one run.

(The conditional engine: asv_benchmarks/conditional.py.)

Usage: python asv_benchmarks/compare.py [--repeat 7] [--no-deep]
Prints a table: case, median seconds per implementation, speed-up of winit_sim.
"""
import argparse
import time

import numpy as np

import winit_sim as ws
from benchmarks.common import load_torch, median_time, numpy_loop, peak_rss_of, torch_loop


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-deep", action="store_true", help="skip the depth-10000 run")
    args = ap.parse_args()
    load_torch()   # 2 threads; ImportError without torch
    print("width 1024, depth 100, relu/he_normal, float32, forward+backward; median of",
          args.repeat)
    print(f"{'batch':>6} {'winit_sim s':>12} {'numpy s':>10} {'torch s':>10} "
          f"{'x numpy':>8} {'x torch':>8}")
    for batch in (16, 256):
        sim = median_time(lambda: ws.simulate(1024, 100, activation="relu", init="he_normal",
                                              method="matrix",
                                              batch=batch, dtype="float32"), args.repeat)
        npy = median_time(lambda: numpy_loop(1024, 100, batch, np.float32), args.repeat)
        trc = median_time(lambda: torch_loop(1024, 100, batch, np.float32), args.repeat)
        print(f"{batch:>6} {sim:>12.3f} {npy:>10.3f} {trc:>10.3f} {npy / sim:>8.2f} "
              f"{trc / sim:>8.2f}")
    if args.no_deep:
        return
    t = time.perf_counter()
    ws.simulate(1024, 10000, activation="relu", init="he_normal", batch=16, method="matrix")
    dt = time.perf_counter() - t
    base = peak_rss_of("import winit_sim as ws; ws.simulate(8, 2)")
    deep = peak_rss_of("import winit_sim as ws; "
                       "ws.simulate(1024, 10000, activation='relu', init='he_normal', batch=16, "
                       "method='matrix')")
    print(f"depth 10000, width 1024, batch 16, float64: {dt:.1f} s, peak RSS {deep:.0f} MiB "
          f"(process after import + tiny run: {base:.0f} MiB)")


if __name__ == "__main__":
    main()
