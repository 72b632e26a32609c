"""Jacobian spectra: winit_sim against PyTorch (jacrev + svdvals on stored weights),
in the same run, alternated, medians of --repeat (JIT warm-up untimed).

    python asv_benchmarks/spectrum.py [--repeat 3] [--width 1024] [--depths 10,100]

PyTorch's float64 SVD keeps only singular values above ~1e-16 of the largest: the
script prints how many decades the spectrum spans and the smallest value torch reports.
"""
import argparse
import math

import numpy as np

from benchmarks.common import load_torch, sample_times, torch_jacobian_svdvals

import winit_sim as ws


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--depths", default="10,100")
    ap.add_argument("--activation", default="tanh")
    args = ap.parse_args()
    torch = load_torch()
    n = args.width
    depths = [int(d) for d in args.depths.split(",")]
    ws.jacobian_spectrum(8, 2, activation=args.activation, init="orthogonal")   # JIT, untimed
    torch_jacobian_svdvals(8, 2, args.activation)
    print(f"width {n}, {args.activation}/orthogonal, float64, medians of {args.repeat} "
          f"(torch {torch.__version__}, 2 threads; winit_sim's BLAS on 1 thread)")
    for d in depths:
        cases = {"winit_sim": lambda d=d: ws.jacobian_spectrum(n, d, activation=args.activation,
                                                             init="orthogonal"),
                 "torch": lambda d=d: torch_jacobian_svdvals(n, d, args.activation)}
        times = {k: [] for k in cases}
        for _ in range(args.repeat):              # alternate, so drift hits both alike
            for k, fn in cases.items():
                times[k] += sample_times(fn, 1, warmup=0)
        med = {k: float(np.median(v)) for k, v in times.items()}
        ours = ws.jacobian_spectrum(n, d, activation=args.activation, init="orthogonal")
        theirs = torch_jacobian_svdvals(n, d, args.activation).numpy()
        spread = ours["log10_sv"].max() - ours["log10_sv"].min()
        print(f"  depth {d:5d}: winit_sim {med['winit_sim']:8.2f} s, torch {med['torch']:8.2f} s, "
              f"torch / winit_sim = {med['torch'] / med['winit_sim']:.2f}; spectrum spans "
              f"{spread:.1f} decades, torch's smallest {math.log10(theirs.min()):.1f}")


if __name__ == "__main__":
    main()
