"""The conditional engine against the matrix engine and PyTorch / NumPy loops, one run.

Usage: python asv_benchmarks/conditional.py [--rounds 9] [--repeat 15] [--deep-depth 1000]
                                            [--skip-deep]

1. width 1024, depth 100, batch 16, relu/he_normal, float32, forward+backward.
   The PyTorch CPU loop (2 threads, stored weights, asv_benchmarks/benchmarks/
   common.py) runs in its own process, as a user would run it: in one
   process its OpenMP threads keep spinning after each call and take the cores
   from Numba's. The two alternate in ``--rounds`` rounds; each round times the
   loop 3 times and the conditional engine ``--repeat`` times (after a warm-up,
   with the loop's process idle) and keeps the medians. Reported: the median
   over rounds of the per-round ratio (noise that slows one round slows both
   of its timings less than it slows two separate runs), its range, and the
   medians of each. The matrix engine and a NumPy loop are timed once, in
   process, for context.
2. width 10^6, depth ``--deep-depth``, batch 8, relu/he_normal, forward+backward,
   float64 and float32, each in a fresh process: wall time (JIT excluded: the
   process compiles on a tiny net first), peak resident memory (VmHWM), and
   whether every log10 statistic is finite.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

import winit_sim as ws
from benchmarks.common import SUITE_DIR, median_time, numpy_loop

# The child processes run ``python -c`` in SUITE_DIR (asv_benchmarks/), their first
# import directory as it is this script's: they import benchmarks.common as this
# script does, and winit_sim from where this script finds it.
TORCH_WORKER = """
import sys
import numpy as np
from benchmarks.common import load_torch, median_time, torch_loop
load_torch()   # 2 threads
torch_loop(1024, 100, 16, np.float32)
for line in sys.stdin:
    print(median_time(lambda: torch_loop(1024, 100, 16, np.float32), int(line), warmup=0),
          flush=True)
"""

DEEP = """
import json, time, numpy as np, winit_sim as ws
from benchmarks.common import peak_rss_mib
ws.simulate(64, 2, batch=8, method="conditional", dtype="{dtype}")
t = time.perf_counter()
df = ws.simulate({width}, {depth}, activation="relu", init="he_normal", batch=8,
                 method="conditional", dtype="{dtype}")
wall = time.perf_counter() - t
cols = ["log10_pre_q", "log10_post_q", "log10_grad_q", "log10_wgrad_q"]
print(json.dumps(dict(wall=wall, peak_mib=peak_rss_mib(),
                      finite=bool(np.isfinite(df[cols].to_numpy()).all()),
                      top_pre_q=float(df.log10_pre_q.iloc[-1]),
                      bottom_grad_q=float(df.log10_grad_q.iloc[0]))))
"""


def conditional():
    return ws.simulate(1024, 100, activation="relu", init="he_normal", batch=16,
                       dtype="float32", method="conditional")


def paired_rounds(rounds, repeat):
    """Per round: (PyTorch loop median, conditional median), alternating."""
    worker = subprocess.Popen([sys.executable, "-c", TORCH_WORKER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=SUITE_DIR)
    try:
        out = []
        for _ in range(rounds):
            worker.stdin.write("3\n")
            worker.stdin.flush()
            t_torch = float(worker.stdout.readline())
            time.sleep(0.2)   # the worker's OpenMP threads stop spinning
            out.append((t_torch, median_time(conditional, repeat, warmup=3)))
        return out
    finally:
        worker.stdin.close()
        worker.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--deep-depth", type=int, default=1000)
    ap.add_argument("--skip-deep", action="store_true")
    args = ap.parse_args()
    conditional()   # compile / load the cache
    pairs = paired_rounds(args.rounds, args.repeat)
    ratios = [t / c for t, c in pairs]
    t_torch = statistics.median(t for t, _ in pairs)
    t_cond = statistics.median(c for _, c in pairs)
    print(f"width 1024, depth 100, batch 16, relu/he_normal, float32, forward+backward; "
          f"{args.rounds} rounds")
    print(f"  conditional  {1000 * t_cond:9.1f} ms   (median of the round medians of "
          f"{args.repeat})")
    print(f"  torch loop   {1000 * t_torch:9.1f} ms   (own process, 2 threads; median of the "
          f"round medians of 3)")
    print(f"  torch loop / conditional: median {statistics.median(ratios):.1f}x, rounds "
          f"{min(ratios):.1f}x .. {max(ratios):.1f}x: "
          + " ".join(f"{r:.1f}" for r in ratios))
    matrix = median_time(lambda: ws.simulate(1024, 100, activation="relu", init="he_normal",
                                             batch=16, dtype="float32", method="matrix"), 5)
    loop = median_time(lambda: numpy_loop(1024, 100, 16, np.float32), 5)
    for name, t in (("matrix", matrix), ("numpy loop", loop)):
        print(f"  {name:<12} {1000 * t:9.1f} ms   {t / t_cond:7.1f}x conditional")
    if args.skip_deep:
        return
    for dtype in ("float64", "float32"):
        code = DEEP.format(width=10**6, depth=args.deep_depth, dtype=dtype)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=SUITE_DIR)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"width 10^6, depth {args.deep_depth}, batch 8, {dtype}, forward+backward: "
              f"{r['wall']:.1f} s, peak RSS {r['peak_mib']:.0f} MiB, all finite: {r['finite']} "
              f"(log10 q at the top {r['top_pre_q']:+.3f}, log10 grad q at layer 1 "
              f"{r['bottom_grad_q']:+.3f})")


if __name__ == "__main__":
    main()
