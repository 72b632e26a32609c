"""Same seed, same bits: across thread counts and depth prefixes (across processes and
compilations: test_corpus.py)."""
import pytest

import winit_sim as ws

# one of each engine, arch and dtype path (the corpus holds many more, computed in another
# process from the kernels this session compiled cold, and compared with a record)
PATHS = [
    dict(width=96, depth=12, activation="tanh", init="xavier_uniform", bias_std=0.1),
    dict(widths=[40, 300, 17, 64], activation="relu", init="orthogonal", dtype="float32"),
    dict(width=512, depth=3, activation="gelu", init="he_normal", batch=64),
    dict(width=3000, depth=5, activation="tanh", init="xavier_normal", batch=8, bias_std=0.1,
         method="conditional"),
    dict(widths=[20, 5, 300, 7], activation="relu", init="he_normal", batch=9,
         dtype="float32", method="conditional"),
    dict(width=24, depth=9, activation="gelu", init="he_normal", batch=70, bias_std=0.1,
         arch="residual:branch=2,hidden=40,norm=layernorm"),
    dict(width=16, depth=7, activation="tanh", init="xavier_uniform", batch=5, dtype="float32",
         arch="deepnorm"),
    dict(width=600, depth=6, activation="gelu", init="he_normal", batch=4, bias_std=0.1,
         arch="residual:branch=2,norm=rmsnorm", method="conditional"),
    dict(widths=[64, 96, 48, 700], activation="tanh", init="orthogonal:gain=1.2", batch=4,
         bias_std=0.1, method="conditional"),
]


@pytest.mark.parametrize("kw", PATHS, ids=range(len(PATHS)))
def test_bit_identical_for_1_and_2_threads(kw):
    """One Numba thread against two (BLAS runs on one thread inside the kernels either
    way). That kernels compiled cold give the bits of cached ones (a kernel compiled with
    its callers in view could vectorise a sum differently), and another process the bits
    of this one, is the corpus's check: test_corpus.py."""
    kw = {"segment_layers": 5, "trials": 2, "seed": 11, **kw}
    one = ws.simulate(**kw, threads=1)
    two = ws.simulate(**kw, threads=2)
    assert one.equals(two)


@pytest.mark.parametrize("init, method", [("lecun_uniform", "matrix"),
                                          ("lecun_normal", "conditional")])
def test_threads_argument_does_not_change_results(init, method):
    a = ws.simulate(128, 5, activation="silu", init=init, threads=1, method=method)
    b = ws.simulate(128, 5, activation="silu", init=init, threads=2, method=method)
    assert a.equals(b)


@pytest.mark.parametrize("init, method", [("he_uniform", "matrix"), ("he_normal", "conditional")])
def test_depth_prefix_property(init, method):
    short = ws.simulate(64, 10, activation="tanh", init=init, trials=2, seed=5,
                        bias_std=0.2, method=method)
    deep = ws.simulate(64, 25, activation="tanh", init=init, trials=2, seed=5,
                       bias_std=0.2, method=method)
    fwd = list(ws.simulate.__globals__["FORWARD_COLUMNS"])
    head = deep[deep.layer <= 10].reset_index(drop=True)
    assert short[["trial", "layer"] + fwd].equals(head[["trial", "layer"] + fwd])


def test_backward_false_same_forward_and_no_grad_columns():
    a = ws.simulate(32, 6, activation="relu", backward=False)
    b = ws.simulate(32, 6, activation="relu")
    assert "log10_grad_q" not in a.columns
    assert a.equals(b[a.columns])
