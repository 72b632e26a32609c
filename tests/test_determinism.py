"""Same seed, same bits: across thread counts, processes, and depth prefixes."""
import hashlib
import os
import subprocess
import sys

import winit_sim as ws

SCRIPT = """
import hashlib, winit_sim as ws
parts = []
for kw in (dict(width=96, depth=12, activation="tanh", init="xavier_uniform", bias_std=0.1),
           dict(widths=[40, 300, 17, 64], activation="relu", init="orthogonal", dtype="float32"),
           dict(width=512, depth=3, activation="gelu", init="he_normal", batch=64)):
    df = ws.simulate(**kw, trials=2, seed=11, segment_layers=5)
    parts.append(df.to_numpy().tobytes())
print(hashlib.sha256(b"".join(parts)).hexdigest())
"""


def _digest(threads):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_bit_identical_for_1_and_2_threads():
    assert _digest(1) == _digest(2)


def test_threads_argument_does_not_change_results():
    a = ws.simulate(128, 5, activation="silu", init="lecun_uniform", threads=1)
    b = ws.simulate(128, 5, activation="silu", init="lecun_uniform", threads=2)
    assert a.equals(b)


def test_depth_prefix_property():
    short = ws.simulate(64, 10, activation="tanh", init="he_uniform", trials=2, seed=5,
                        bias_std=0.2)
    deep = ws.simulate(64, 25, activation="tanh", init="he_uniform", trials=2, seed=5,
                       bias_std=0.2)
    fwd = list(ws.simulate.__globals__["FORWARD_COLUMNS"])
    head = deep[deep.layer <= 10].reset_index(drop=True)
    assert short[["trial", "layer"] + fwd].equals(head[["trial", "layer"] + fwd])


def test_backward_false_same_forward_and_no_grad_columns():
    a = ws.simulate(32, 6, activation="relu", backward=False)
    b = ws.simulate(32, 6, activation="relu")
    assert "log10_grad_q" not in a.columns
    assert a.equals(b[a.columns])
