"""Jacobian spectra: winit_sim against PyTorch (jacrev + svdvals on stored weights),
in the same run, alternated, medians of --repeat (JIT warm-up untimed).

    python asv_benchmarks/spectrum.py [--repeat 3] [--width 1024] [--depths 10,100]
                                      [--cases tanh/orthogonal,relu/he_normal]

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
    ap.add_argument("--cases", default="tanh/orthogonal,relu/he_normal",
                    help="activation/init pairs (init: orthogonal or he_normal)")
    args = ap.parse_args()
    torch = load_torch()
    n = args.width
    depths = [int(d) for d in args.depths.split(",")]
    cases = [tuple(c.split("/")) for c in args.cases.split(",")]
    print(f"width {n}, float64, medians of {args.repeat} (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")
    for act, init in cases:
        ws.jacobian_spectrum(8, 2, activation=act, init=init)   # JIT, untimed
        torch_jacobian_svdvals(8, 2, act, init=init)
        for d in depths:
            runs = {"winit_sim": lambda d=d: ws.jacobian_spectrum(n, d, activation=act, init=init),
                    "torch": lambda d=d: torch_jacobian_svdvals(n, d, act, init=init)}
            times = {k: [] for k in runs}
            for _ in range(args.repeat):              # alternate, so drift hits both alike
                for k, fn in runs.items():
                    times[k] += sample_times(fn, 1, warmup=0)
            med = {k: float(np.median(v)) for k, v in times.items()}
            ours = ws.jacobian_spectrum(n, d, activation=act, init=init)["log10_sv"]
            theirs = torch_jacobian_svdvals(n, d, act, init=init).numpy()
            finite = ours[np.isfinite(ours)]
            positive = theirs[theirs > 0]
            print(f"  {act}/{init} depth {d:5d}: winit_sim {med['winit_sim']:8.2f} s, "
                  f"torch {med['torch']:8.2f} s, torch / winit_sim = "
                  f"{med['torch'] / med['winit_sim']:.2f}; {finite.size} nonzero values "
                  f"spanning {finite.max() - finite.min():.1f} decades, torch's smallest "
                  f"{math.log10(positive.min()):.1f}", flush=True)


if __name__ == "__main__":
    main()
