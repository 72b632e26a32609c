"""The conditional engine against the matrix engine and PyTorch / NumPy loops, one run.

Usage: python asv_benchmarks/conditional.py [--repeat 7] [--deep-depth 1000] [--skip-deep]

1. width 1024, depth 100, batch 16, relu/he_normal, float32, forward+backward:
   medians of ``--repeat`` runs (after a warm-up) of winit_sim's conditional and
   matrix engines, a PyTorch CPU loop (2 threads) and a NumPy loop on the same
   work; ratios against the conditional engine.
2. width 10^6, depth ``--deep-depth``, batch 8, relu/he_normal, forward+backward,
   float64 and float32, each in a fresh process: wall time (JIT excluded: the
   process compiles on a tiny net first), peak resident memory (VmHWM), and
   whether every log10 statistic is finite.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "benchmarks"))
from baselines import numpy_loop, torch_loop  # noqa: E402
from compare import median_time  # noqa: E402

import winit_sim as ws  # noqa: E402

DEEP = """
import json, time, numpy as np, winit_sim as ws
ws.simulate(64, 2, batch=8, method="conditional", dtype="{dtype}")
t = time.perf_counter()
df = ws.simulate({width}, {depth}, activation="relu", init="he_normal", batch=8,
                 method="conditional", dtype="{dtype}")
wall = time.perf_counter() - t
cols = ["log10_pre_q", "log10_post_q", "log10_grad_q", "log10_wgrad_q"]
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps(dict(wall=wall, peak_mib=int(peak) / 1024,
                      finite=bool(np.isfinite(df[cols].to_numpy()).all()),
                      top_pre_q=float(df.log10_pre_q.iloc[-1]),
                      bottom_grad_q=float(df.log10_grad_q.iloc[0]))))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--deep-depth", type=int, default=1000)
    ap.add_argument("--skip-deep", action="store_true")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    run = {m: (lambda m=m: ws.simulate(1024, 100, activation="relu", init="he_normal", batch=16,
                                       dtype="float32", method=m))
           for m in ("conditional", "matrix")}
    run["torch loop"] = lambda: torch_loop(1024, 100, 16, np.float32)
    run["numpy loop"] = lambda: numpy_loop(1024, 100, 16, np.float32)
    times = {name: median_time(fn, args.repeat) for name, fn in run.items()}
    print(f"width 1024, depth 100, batch 16, relu/he_normal, float32, forward+backward; "
          f"median of {args.repeat}")
    for name, t in times.items():
        print(f"  {name:<12} {1000 * t:9.1f} ms   {t / times['conditional']:7.1f}x conditional")
    if args.skip_deep:
        return
    for dtype in ("float64", "float32"):
        code = DEEP.format(width=10**6, depth=args.deep_depth, dtype=dtype)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"width 10^6, depth {args.deep_depth}, batch 8, {dtype}, forward+backward: "
              f"{r['wall']:.1f} s, peak RSS {r['peak_mib']:.0f} MiB, all finite: {r['finite']} "
              f"(log10 q at the top {r['top_pre_q']:+.3f}, log10 grad q at layer 1 "
              f"{r['bottom_grad_q']:+.3f})")


if __name__ == "__main__":
    main()
