"""Residual nets: winit_sim's time per block against the MLP's and a PyTorch loop's,
all measured in this run, alternated, medians of --repeat (JIT warm-up untimed).

    python asv_benchmarks/residual.py [--repeat 5] [--width 1024] [--depth 100] [--batch 16]
"""
import argparse

import numpy as np

from benchmarks.common import load_torch, sample_times, torch_residual_loop

import winit_sim as ws


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch = load_torch()
    n, d, b = args.width, args.depth, args.batch
    cases = {
        "winit_sim mlp": lambda: ws.simulate(n, d, batch=b, dtype="float32", method="matrix"),
        "winit_sim residual branch=1 pre-LN": lambda: ws.simulate(
            n, d, batch=b, dtype="float32", arch="residual:norm=layernorm"),
        "winit_sim residual branch=2 pre-LN": lambda: ws.simulate(
            n, d, batch=b, dtype="float32", arch="residual:branch=2,norm=layernorm"),
        "torch residual branch=1 pre-LN": lambda: torch_residual_loop(n, d, b, np.float32, 1),
        "torch residual branch=2 pre-LN": lambda: torch_residual_loop(n, d, b, np.float32, 2),
    }
    for fn in cases.values():
        fn()                                      # JIT and allocator warm-up, untimed
    times = {k: [] for k in cases}
    for _ in range(args.repeat):                  # alternate, so drift hits every case alike
        for k, fn in cases.items():
            times[k] += sample_times(fn, 1, warmup=0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"width {n}, depth {d}, batch {b}, float32, relu/he_normal, forward+backward, "
          f"medians of {args.repeat} (torch {torch.__version__}, 2 threads)")
    for k, v in med.items():
        print(f"  {k:40s} {1e3 * v:9.1f} ms")
    mlp = med["winit_sim mlp"]
    for br in (1, 2):
        ours = med[f"winit_sim residual branch={br} pre-LN"]
        print(f"branch={br}: {ours / mlp:.2f}x the MLP's time (branch x MLP = {br}), "
              f"{med[f'torch residual branch={br} pre-LN'] / ours:.1f}x faster than torch")


if __name__ == "__main__":
    main()
