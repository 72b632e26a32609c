"""Issue #16's speed cases against a PyTorch loop, and before/after across source trees.

Usage:
    python asv_benchmarks/targets.py [--trees . /tmp/base] [--rounds 3] [--repeat 5]
                                     [--cases u16,x16,c16,n16,n256]

Width 1024, depth 100, relu, float32, forward + backward, ``method="auto"``:

* ``u16``, ``x16``, ``c16``: batch 16 with he_uniform, xavier_uniform, constant (the
  matrix engine: these cannot be drawn given the layer input);
* ``n16``, ``n256``: batch 16 and 256 with he_normal (``auto`` picks the engine);
* ``n256c``, ``n256m``: batch 256 on the conditional and on the matrix engine (the
  ``auto`` crossover).

Every timing runs in a fresh process: each source tree in ``--trees`` (a folder holding
``winit_sim/``; compare a ``git worktree`` of an older commit with this one) and the
PyTorch loop (2 threads, stored weights, ``benchmarks/common.py``) at each batch. A
round runs them all in turn; a case's time in a round is the median of ``--repeat``
calls after a warm-up call (JIT compile excluded). Reported: per case and tree the
median over rounds, and the median over rounds of the per-round ratio
torch / winit_sim, so that load which slows one round slows both sides alike.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

from benchmarks.common import SUITE_DIR

CASES = {"u16": ("he_uniform", 16, "auto"), "x16": ("xavier_uniform", 16, "auto"),
         "c16": ("constant", 16, "auto"), "n16": ("he_normal", 16, "auto"),
         "n256": ("he_normal", 256, "auto"), "n256c": ("he_normal", 256, "conditional"),
         "n256m": ("he_normal", 256, "matrix")}

WINIT = """
import json, sys
sys.path.insert(0, {tree!r})
import numpy as np
import winit_sim as ws
from benchmarks.common import median_time
out = {{}}
for name, (init, batch, method) in {cases!r}.items():
    run = lambda: ws.simulate(1024, 100, activation="relu", init=init, batch=batch,
                              dtype="float32", method=method)
    out[name] = median_time(run, {repeat}, warmup=1)
print(json.dumps(out))
"""

TORCH = """
import json
import numpy as np
from benchmarks.common import load_torch, median_time, torch_loop
load_torch()
print(json.dumps({{str(b): median_time(lambda: torch_loop(1024, 100, b, np.float32), {repeat},
                                       warmup=1) for b in {batches!r}}}))
"""


def child(code):
    """JSON printed by ``python -c code`` run in SUITE_DIR (imports benchmarks.common)."""
    done = subprocess.run([sys.executable, "-c", code], cwd=SUITE_DIR, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", nargs="+", default=[os.path.dirname(SUITE_DIR)])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args(argv)
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}: choose from {', '.join(CASES)}")
    cases = {c: CASES[c] for c in args.cases.split(",")}
    trees = [os.path.abspath(t) for t in args.trees]
    batches = sorted({b for _, b, _ in cases.values()})
    for tree in trees:   # compile each tree's kernels once, outside every round
        child(WINIT.format(tree=tree, cases=cases, repeat=1))
    rounds = []
    for r in range(args.rounds):
        got = {"torch": child(TORCH.format(batches=batches, repeat=args.repeat))}
        for tree in trees:
            got[tree] = child(WINIT.format(tree=tree, cases=cases, repeat=args.repeat))
        rounds.append(got)
        print(f"round {r + 1}: {json.dumps(got)}", file=sys.stderr, flush=True)
    print(f"width 1024, depth 100, relu, float32, forward+backward; medians of "
          f"{args.rounds} rounds x {args.repeat} calls (ms); ratio = torch / winit_sim")
    print(f"{'case':6} {'torch':>9} " + " ".join(f"{os.path.basename(t) or t:>18}"
                                                for t in trees))
    for name, (init, batch, _) in cases.items():
        t_torch = statistics.median(g["torch"][str(batch)] for g in rounds)
        cells = []
        for tree in trees:
            t = statistics.median(g[tree][name] for g in rounds)
            ratio = statistics.median(g["torch"][str(batch)] / g[tree][name] for g in rounds)
            cells.append(f"{t * 1e3:8.1f} ({ratio:5.2f}x)")
        print(f"{name:6} {t_torch * 1e3:9.1f} " + " ".join(f"{c:>18}" for c in cells))


if __name__ == "__main__":
    main()
