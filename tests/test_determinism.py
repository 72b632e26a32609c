"""Same seed, same bits: across thread counts, processes, and depth prefixes."""
import pytest

import winit_sim as ws

import determinism_runs


def test_bit_identical_for_1_and_2_threads():
    """Two processes on this machine's CPU, one thread and two, with the suite's kernel
    cache. (An empty cache against a full one, where a kernel compiled with its callers
    in view could vectorise a sum differently, is the corpus's check: test_corpus.py.)"""
    one = determinism_runs.digest(determinism_runs.start(1))
    assert one == determinism_runs.digest(determinism_runs.start(2))


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
