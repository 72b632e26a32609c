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
    arch = {1: "residual:norm=layernorm", 2: "residual:branch=2,norm=layernorm"}
    cases = {}
    for method in ("matrix", "conditional"):
        cases[f"winit_sim {method} mlp"] = (
            lambda m=method: ws.simulate(n, d, batch=b, dtype="float32", method=m))
        for br in (1, 2):
            cases[f"winit_sim {method} residual branch={br} pre-LN"] = (
                lambda m=method, a=arch[br]: ws.simulate(n, d, batch=b, dtype="float32",
                                                         method=m, arch=a))
    for br in (1, 2):
        cases[f"torch residual branch={br} pre-LN"] = (
            lambda br=br: torch_residual_loop(n, d, b, np.float32, br))
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
        print(f"  {k:48s} {1e3 * v:9.1f} ms")
    for method in ("matrix", "conditional"):
        mlp = med[f"winit_sim {method} mlp"]
        for br in (1, 2):
            ours = med[f"winit_sim {method} residual branch={br} pre-LN"]
            print(f"{method:11s} branch={br}: {ours / mlp:.2f}x the MLP's time (branch x MLP "
                  f"= {br}), {med[f'torch residual branch={br} pre-LN'] / ours:.1f}x faster "
                  f"than torch")

if __name__ == "__main__":
    main()
