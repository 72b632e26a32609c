"""The bit-identity corpus: public results recorded once, compared bit for bit ever after.

Every entry is produced through the public API only (``simulate``, ``propagate``,
``sample_weights``, ``sweep``, ``variance_decay_table``, ``train``, ``theory``), so
any refactor of the internals must reproduce it exactly. ``tests/test_corpus.py``
compares; re-record only for a deliberate change of results, and say so:

    python tests/corpus.py --record

The corpus is computed in a subprocess under :func:`canonical_env`, where the bits
depend on the library versions only, not on the CPU: LLVM compiles for generic
x86-64 (SSE2 vectors, no FMA), OpenBLAS runs one fixed kernel set on one thread,
NumPy its baseline loops, and glibc's libm its non-FMA paths. Any x86-64 machine
with the recorded versions must reproduce every entry bit for bit.
"""
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "data", "corpus.npz")
MACHINE = os.path.join(HERE, "data", "corpus_machine.json")

ACTIVATIONS = ["linear", "relu", "leaky_relu:slope=0.2", "tanh", "sigmoid", "gelu", "silu",
               "elu:alpha=0.7", "selu"]
INITS = ["zeros", "constant:value=0.05", "normal:std=0.1", "uniform:bound=0.2", "small", "large",
         "xavier_uniform", "xavier_normal", "he_uniform", "he_normal:mode=fan_out",
         "lecun_uniform", "lecun_normal", "orthogonal:gain=1.3"]


def canonical_env(threads=2):
    """os.environ with the settings that make the corpus's bits CPU-independent, with
    ``threads`` Numba threads (and the Numba cache NUMBA_CACHE_DIR names, if set)."""
    from numpy._core import _multiarray_umath
    return dict(os.environ,
                NUMBA_CPU_NAME="generic", NUMBA_CPU_FEATURES="", NUMBA_NUM_THREADS=str(threads),
                OPENBLAS_CORETYPE="Prescott", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                NPY_DISABLE_CPU_FEATURES=" ".join(_multiarray_umath.__cpu_dispatch__),
                GLIBC_TUNABLES="glibc.cpu.hwcaps=-AVX,-AVX2,-FMA,-FMA4,-AVX512F")


def machine():
    """What the corpus's bits depend on under canonical_env: the architecture and the
    versions of everything that computes."""
    import llvmlite
    import numba
    import scipy
    import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS, which numba calls)
    from threadpoolctl import threadpool_info
    return {"arch": platform.machine(), "glibc": platform.libc_ver()[1],
            "python": platform.python_version(), "numba": numba.__version__,
            "llvmlite": llvmlite.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "blas": sorted({f"{i['internal_api']} {i['version']} {i.get('architecture')}"
                            for i in threadpool_info() if i["user_api"] == "blas"})}


def start(out_dir, threads=2):
    """Compute the corpus under canonical_env in a subprocess writing into ``out_dir``
    (see :func:`load`)."""
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--compute", out_dir],
                            env=canonical_env(threads), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def load(proc, out_dir):
    """(entries, machine) that the subprocess from :func:`start` computed (waits for it)."""
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the corpus run failed ({proc.returncode}):\n{err}")
    with np.load(os.path.join(out_dir, "corpus.npz")) as data:
        entries = {k: data[k] for k in data.files}
    with open(os.path.join(out_dir, "machine.json"), encoding="utf-8") as fh:
        return entries, json.load(fh)


def _frame(df):
    """A DataFrame as one float64 array (categorical / string columns as codes)."""
    cols = []
    for c in df.columns:
        v = df[c]
        if not pd.api.types.is_numeric_dtype(v) or pd.api.types.is_bool_dtype(v):
            v = pd.Series(pd.factorize(v.astype(str))[0], index=v.index)
        cols.append(v.to_numpy(dtype=np.float64))
    return np.column_stack(cols) if cols else np.empty((len(df), 0))


def compute():
    """name -> float64 array of every corpus entry."""
    import winit_sim as ws
    from winit_sim import theory

    out = {}

    def sim(name, **kw):
        out["simulate/" + name] = _frame(ws.simulate(**kw))

    # the matrix engine: fused (batch <= 64) and BLAS products, every init, every activation
    for i, init in enumerate(INITS):
        sim(f"matrix/init/{init}", width=24, depth=6, activation="tanh", init=init, batch=5,
            trials=2, seed=i, method="matrix")
    for i, act in enumerate(ACTIVATIONS):
        sim(f"matrix/act/{act}", widths=[9, 30, 17, 30, 12], activation=act,
            init="xavier_uniform", batch=6, trials=2, seed=100 + i, bias_std=0.2,
            method="matrix")
        sim(f"matrix/act32/{act}", width=40, depth=5, activation=act, init="he_normal",
            batch=7, dtype="float32", seed=200 + i, method="matrix")
    sim("matrix/blas", width=80, depth=8, activation="gelu", init="he_uniform", batch=96,
        trials=2, seed=3, bias_std=0.1, method="matrix")
    sim("matrix/blas32", widths=[50, 120, 70, 90], activation="tanh", init="orthogonal",
        batch=80, dtype="float32", seed=4, method="matrix")
    sim("matrix/forward_only", width=32, depth=7, activation="silu", init="lecun_normal",
        batch=8, backward=False, method="matrix")
    sim("matrix/checkpointed", width=16, depth=40, activation="tanh", init="xavier_normal",
        batch=4, trials=2, bias_std=0.05, segment_layers=3, seed=9, method="matrix")
    sim("matrix/deep_explode", width=32, depth=300, activation="tanh", init="large", batch=4,
        seed=5, method="matrix")
    sim("matrix/deep_vanish_sigmoid", width=32, depth=300, activation="sigmoid", init="small",
        batch=4, seed=6, method="matrix")
    sim("matrix/deep_vanish_tanh", width=32, depth=300, activation="tanh", init="small",
        batch=4, seed=6, method="matrix")
    sim("matrix/deep_relu", width=32, depth=400, activation="relu", init="normal:std=0.4",
        batch=4, seed=7, method="matrix")
    sim("matrix/gain_auto", width=30, depth=5, activation="selu", init="xavier_normal:gain=auto",
        batch=4, method="matrix")
    sim("matrix/input_var", width=30, depth=5, activation="elu", init="he_normal", batch=4,
        input_var=3.0, method="matrix")
    # the conditional engine: both dtypes, biases, uneven widths, kept and regenerated
    for i, act in enumerate(ACTIVATIONS):
        sim(f"conditional/act/{act}", widths=[30, 45, 20, 60, 25], activation=act,
            init="xavier_normal", batch=5, trials=2, bias_std=0.3, seed=300 + i,
            method="conditional")
    sim("conditional/float32", widths=[20, 5, 300, 7], activation="relu", init="he_normal",
        batch=9, dtype="float32", seed=11, method="conditional")
    sim("conditional/blocks", widths=[1100, 600, 1030, 513], activation="tanh",
        init="xavier_normal", batch=3, bias_std=0.3, method="conditional")
    # BLAS_MIN_ROWS and over: the backward's BLAS block products (the types of
    # test_conditional's NumPy-reference check at batch 130: one compile for both)
    sim("conditional/blas", widths=[300, 200, 260], activation="tanh", init="xavier_normal",
        batch=130, bias_std=0.2, seed=21, method="conditional")
    sim("conditional/regenerated", width=4200, depth=130, activation="tanh",
        init="xavier_normal", batch=8, seed=12, method="conditional")
    sim("conditional/deep", width=64, depth=500, activation="tanh", init="large", batch=4,
        method="conditional")
    sim("conditional/rank_deficient", width=6, depth=10, activation="relu", init="he_normal",
        batch=12, method="conditional")
    sim("auto", width=256, depth=10, activation="tanh", init="he_normal", batch=16, seed=2)
    sim("theory", width=64, depth=12, activation="tanh", init="xavier_normal", batch=8,
        theory=True, bias_std=0.1, method="matrix")
    # residual nets: both branch forms, each norm and position, presets, BLAS and fused
    # products, float32, checkpoints, theory
    for i, arch in enumerate(("residual", "residual:branch=2,hidden=20,norm=layernorm",
                              "residual:norm=rmsnorm,position=post,alpha=0.5",
                              "fixup", "skipinit", "deepnorm", "gpt2")):
        sim(f"residual/{arch}", width=12, depth=9, activation="gelu", init="he_normal",
            batch=5, trials=2, bias_std=0.1, seed=400 + i, segment_layers=4, arch=arch)
    sim("residual/blas32", width=40, depth=6, activation="tanh", init="xavier_uniform",
        batch=70, dtype="float32", arch="residual:branch=2,norm=layernorm,position=post")
    sim("residual/deep", width=16, depth=3000, activation="relu", init="he_normal", batch=4,
        arch="residual")
    sim("residual/theory", width=64, depth=8, activation="tanh", init="xavier_normal", batch=8,
        theory=True, bias_std=0.1, arch="residual:branch=2,alpha=inv_sqrt_depth",
        method="matrix")
    # ... on the conditional engine: biases, both branch forms, norms, a zero matrix,
    # float32, checkpoints, depth
    for i, arch in enumerate(("residual:branch=2,hidden=40,norm=layernorm",
                              "residual:norm=rmsnorm,position=post,alpha=0.5", "fixup")):
        sim(f"residual/conditional/{arch}", width=48, depth=9, activation="gelu",
            init="he_normal", batch=5, trials=2, bias_std=0.1, seed=420 + i, segment_layers=4,
            arch=arch, method="conditional")
    sim("residual/conditional/float32", width=300, depth=6, activation="tanh",
        init="xavier_normal", batch=6, dtype="float32", arch="gpt2", method="conditional")
    sim("residual/conditional/deep", width=32, depth=2000, activation="relu", init="he_normal",
        batch=4, arch="residual", method="conditional")

    # orthogonal layers on the conditional engine: rectangular frames, biases
    sim("conditional/orthogonal", widths=[64, 96, 48, 700], activation="tanh",
        init="orthogonal:gain=1.2", batch=4, trials=2, bias_std=0.1, method="conditional")
    sim("matrix/orthogonal_wide", widths=[70, 40, 100, 33], activation="relu",
        init="orthogonal:gain=1.4", batch=20, trials=2, bias_std=0.1, method="matrix")
    # Jacobian spectra: every depth from one pass, ReLU's exact zeros, theory beside
    for i, (act, init) in enumerate((("tanh", "orthogonal"), ("relu", "he_normal"),
                                     ("linear", "xavier_uniform"))):
        spec = ws.jacobian_spectrum(24, 5, activation=act, init=init,
                                    depths=[1, 3, 5], trials=2, seed=500 + i, bias_std=0.1)
        out[f"spectrum/{act}"] = _frame(spec)
        out[f"spectrum_summary/{act}"] = _frame(ws.spectrum_summary(spec, theory=True))
    out["spectrum/deep"] = _frame(ws.jacobian_spectrum(8, 400, activation="tanh",
                                                       init="xavier_normal", depths=[400]))

    rng = np.random.default_rng(0)
    widths = [7, 40, 3, 25, 9]
    w = [rng.standard_normal((widths[i + 1], widths[i])) / np.sqrt(widths[i])
         for i in range(len(widths) - 1)]
    b = [0.3 * rng.standard_normal(n) for n in widths[1:]]
    x = rng.standard_normal((5, widths[0]))
    g = rng.standard_normal((5, widths[-1]))
    for act in ("relu", "tanh", "gelu"):
        out[f"propagate/{act}"] = _frame(ws.propagate(w, x, act, grad_output=g, biases=b))
    out["propagate/forward_only32"] = _frame(ws.propagate(w, x.astype(np.float32), "sigmoid"))
    wr = [rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
          for _ in range(3) for n_out, n_in in ((11, 6), (6, 11))]
    br = [0.2 * rng.standard_normal(w_.shape[0]) for w_ in wr]
    xr, gr = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    out["propagate/residual"] = _frame(ws.propagate(
        wr, xr, "silu", grad_output=gr, biases=br, arch="residual:branch=2,hidden=11,norm=layernorm"))

    for init in INITS:
        for dtype in ("float64", "float32"):
            out[f"sample_weights/{init}/{dtype}"] = ws.sample_weights(
                init, 13, 7, seed=3, trial=1, layer=2, dtype=dtype).astype(np.float64)
    out["weight_variance"] = np.array([ws.weight_variance(i, 30, 20, "tanh") for i in INITS])
    h = np.linspace(-6.0, 6.0, 61)
    for act in ACTIVATIONS:
        out[f"phi/{act}"] = np.stack([ws.phi(act, h), ws.dphi(act, h)])

    grid = ws.sweep([16, 32], [3, 8], ["tanh", "relu"], ["xavier_normal", "he_uniform"],
                    trials=2, batch=8, seed=5, progress=False)
    out["sweep"] = _frame(grid)
    arch_grid = ws.sweep([16], [3, 8], ["tanh"], ["xavier_normal"], trials=2, batch=4, seed=6,
                         progress=False, archs=["mlp", "residual:norm=layernorm", "gpt2"])
    out["sweep/archs"] = _frame(arch_grid)
    for q in ("forward", "stream", "stream_grad"):
        out[f"table/archs/{q}"] = _frame(ws.variance_decay_table(arch_grid, q, theory=True))
    for q in ("forward", "backward", "weight_grad"):
        out[f"table/{q}"] = _frame(ws.variance_decay_table(grid, q, theory=True))
    out["train"] = _frame(ws.train(12, 4, activation="tanh", init="xavier_normal", steps=15,
                                   lr=0.05, batch=8, seed=2))
    out["train/momentum"] = _frame(ws.train(10, 3, activation="relu", init="he_normal", steps=10,
                                            lr=0.02, optimizer="momentum", data="fixed"))

    for act in ACTIVATIONS:
        out[f"theory/predict/{act}"] = _frame(theory.predict(
            widths=[30, 50, 40, 60], activation=act, init="he_normal", bias_std=0.1, batch=8))
        out[f"theory/log_moments/{act}"] = np.array(
            [theory.log_moments(act, lq) for lq in (-900.0, -3.0, 0.0, 2.5, 900.0)])
    for weights in ("gaussian", "orthogonal"):
        out[f"theory/jacobian_density/{weights}"] = _frame(theory.jacobian_density(
            "tanh", 1.2, 0.05, depth=4, weights=weights))
    out["theory/jacobian_moments"] = _frame(theory.jacobian_moments(
        64, 30, activation="tanh", init="orthogonal", depths=[1, 10, 30], bias_std=0.1))
    out["theory/predict_deep"] = _frame(theory.predict(64, 2000, activation="tanh",
                                                       init="large"))
    out["theory/gain_table"] = _frame(theory.gain_table(
        ["linear", "relu", "leaky_relu", "tanh", "sigmoid", "gelu", "silu", "elu", "selu"]))
    out["theory/depth_scales"] = np.array([
        [v for v in theory.depth_scales(act, sw2, sb2).values() if not isinstance(v, str)]
        for act, sw2, sb2 in (("tanh", 1.5, 0.05), ("tanh", 0.8, 0.1), ("relu", 1.5, 0.2),
                              ("selu", 1.0, 0.0))])
    out["theory/phase"] = _frame(theory.phase_diagram("tanh", [0.5, 1.0, 2.0], [0.0, 0.1]))
    out["theory/critical"] = np.array([theory.critical_sw2("tanh", 0.05),
                                       theory.fixed_point("sigmoid", 1.0, 0.1).q,
                                       theory.chi1("gelu", 2.0, 0.0, q=1.3),
                                       theory.qmap("silu", 1.2, 0.1, 0.7),
                                       theory.correlation_map("tanh", 1.5, 0.05, 0.3)])
    return out


def _compute_into(out_dir):
    np.savez_compressed(os.path.join(out_dir, "corpus.npz"), **compute())
    with open(os.path.join(out_dir, "machine.json"), "w", encoding="utf-8") as fh:
        json.dump(machine(), fh, indent=1, sort_keys=True)


def record():
    """Record with two threads and every kernel cached; the tests compare a run with one
    thread, from the kernels their session compiled cold, to it."""
    with tempfile.TemporaryDirectory() as tmp:
        data, info = load(start(tmp, threads=2), tmp)
        again, _ = load(start(tmp, threads=2), tmp)
    if any(data[k].tobytes() != again[k].tobytes() for k in data):
        sys.exit("two runs of the corpus differ: not recorded")
    os.makedirs(os.path.dirname(CORPUS), exist_ok=True)
    np.savez_compressed(CORPUS, **data)
    with open(MACHINE, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1, sort_keys=True)
    print(f"recorded {len(data)} entries into {CORPUS}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--record"]:
        record()
    elif len(sys.argv) == 3 and sys.argv[1] == "--compute":
        _compute_into(sys.argv[2])
    else:
        sys.exit(__doc__)
