"""The determinism check's runs in subprocesses: one digest of many simulate() results.

:func:`start` launches one, :func:`digest` waits for it.
"""
import os
import subprocess
import sys

SCRIPT = """
import hashlib, winit_sim as ws
parts = []
for kw in (dict(width=96, depth=12, activation="tanh", init="xavier_uniform", bias_std=0.1),
           dict(widths=[40, 300, 17, 64], activation="relu", init="orthogonal", dtype="float32"),
           dict(width=512, depth=3, activation="gelu", init="he_normal", batch=64),
           dict(width=3000, depth=5, activation="tanh", init="xavier_normal", batch=8,
                bias_std=0.1, method="conditional"),
           dict(widths=[20, 5, 300, 7], activation="relu", init="he_normal", batch=9,
                dtype="float32", method="conditional"),
           dict(width=24, depth=9, activation="gelu", init="he_normal", batch=70, bias_std=0.1,
                arch="residual:branch=2,hidden=40,norm=layernorm"),
           dict(width=16, depth=7, activation="tanh", init="xavier_uniform", batch=5,
                dtype="float32", arch="deepnorm"),
           dict(width=600, depth=6, activation="gelu", init="he_normal", batch=4, bias_std=0.1,
                arch="residual:branch=2,norm=rmsnorm", method="conditional"),
           dict(widths=[64, 96, 48, 700], activation="tanh", init="orthogonal:gain=1.2",
                batch=4, bias_std=0.1, method="conditional")):
    df = ws.simulate(**{"segment_layers": 5, **kw}, trials=2, seed=11)
    parts.append(df.to_numpy().tobytes())
print(hashlib.sha256(b"".join(parts)).hexdigest())
"""


def start(threads, cache_dir=None):
    """Launch the script with ``threads`` threads (and an empty Numba cache in
    ``cache_dir``, if given)."""
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads))
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    return subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def digest(proc):
    """The launched run's digest (waits for it); its stderr if it failed."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"determinism run failed ({proc.returncode}):\n{err}")
    return out.strip()
