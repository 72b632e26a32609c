"""``python -m winit_sim``: the seed document's cases as a variance table.

Runs every (activation, init) pair of the seed document at one width over a
depth grid, prints log10 of the forward second moment q_l = mean(h_l^2) relative
to layer 1 and of the gradient second moment at layer 1 relative to the top,
and writes the per-layer rows to ``results/seed_layers.csv``. (The full sweep
command line, with resumable result directories and plots, is issue #3.)
"""
import argparse
import os
import sys

import numpy as np
import pandas as pd

from .simulate import simulate

SEED_INITS = ["zeros", "constant", "small", "large", "xavier_uniform", "xavier_normal",
              "he_uniform", "he_normal"]
SEED_ACTIVATIONS = ["sigmoid", "tanh", "relu", "leaky_relu"]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m winit_sim", description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    try:
        frames = []
        for act in SEED_ACTIVATIONS:
            for init in SEED_INITS:
                df = simulate(args.width, args.depth, activation=act, init=init,
                              batch=args.batch, seed=args.seed)
                frames.append(df.assign(activation=act, init=init))
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = pd.concat(frames, ignore_index=True)
    marks = sorted({d for d in (1, 10, 30, 100, 300, 1000, args.depth) if d <= args.depth})
    table = []
    with np.errstate(invalid="ignore"):  # -inf - -inf: no signal at either end -> NaN
        table = _ratios(rows, marks, args.depth)
    print(f"log10 variance ratios, width {args.width}, batch {args.batch}, seed {args.seed}")
    print("fwd@d: log10 q_d/q_1 (forward);  grad 1/top: log10 E[delta_1^2]/E[delta_L^2];"
          "  NaN: no signal at both ends")
    print(table.to_string(index=False, float_format=lambda v: f"{v:8.2f}"))
    os.makedirs(args.out, exist_ok=True)
    tmp = os.path.join(args.out, "seed_layers.csv.tmp")
    rows.to_csv(tmp, index=False)
    os.replace(tmp, os.path.join(args.out, "seed_layers.csv"))  # atomic: never a half file
    print(f"wrote {os.path.join(args.out, 'seed_layers.csv')} ({len(rows)} rows)")
    return 0


def _ratios(rows, marks, depth):
    table = []
    for (act, init), g in rows.groupby(["activation", "init"], sort=False):
        g = g.set_index("layer")
        entry = {"activation": act, "init": init}
        for d in marks:
            entry[f"fwd@{d}"] = g.log10_pre_q[d] - g.log10_pre_q[1]
        entry["grad 1/top"] = g.log10_grad_q[1] - g.log10_grad_q[depth]
        table.append(entry)
    return pd.DataFrame(table)


if __name__ == "__main__":
    sys.exit(main())
