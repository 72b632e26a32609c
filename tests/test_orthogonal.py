"""Haar orthogonal layers on the conditional engine (kernels/orthogonal.py).

* exact: the kernel against naive.reference_orthogonal (explicit N-dimensional frames and
  projections on the same random streams), square and rectangular both ways, with and
  without biases, to 1e-9;
* in distribution: against the matrix engine's QR-sampled orthogonal matrices, by
  two-sample tests over many nets with a family-wise false-alarm rate of 1%;
* the engine's contracts: thread counts, the depth prefix, auto's choice, bad input.
"""
import numpy as np
import pytest

import winit_sim as ws
from winit_sim import engine
from winit_sim.activations import resolve_activation, sup_dphi

import naive
from stats_checks import assert_rows_match, assert_same_law

ACTS = ["linear", "relu", "tanh", "gelu", "sigmoid"]


def _compare(widths, act, init, bias_std, batch, seed=4, rtol=1e-9, atol=1e-12):
    sim = ws.simulate(widths=widths, activation=act, init=init, batch=batch, bias_std=bias_std,
                      seed=seed, trials=2, method="conditional")
    gains = list(engine.describe(np.array(widths), act, init).scale)
    sup = sup_dphi(resolve_activation(act))
    assert_rows_match(sim, lambda trial: naive.reference_orthogonal(
        widths, act, gains, bias_std, seed, trial, batch, sup), 2, act, rtol, atol)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias_std", [0.0, 0.3])
def test_kernel_matches_numpy_reference(act, bias_std):
    """Widths growing and shrinking (both rectangular conventions), gain 1.3."""
    _compare([30, 45, 20, 60, 25, 33], act, "orthogonal:gain=1.3", bias_std, batch=5)


def test_square_and_wide_layers_match_the_reference():
    _compare([40] * 6, "tanh", "orthogonal", 0.1, batch=6)
    _compare([1100, 600, 1030, 513], "relu", "orthogonal:gain=1.4142135623730951", 0.0,
             batch=3, rtol=1e-8)


@pytest.mark.parametrize("widths,act,init,bias_std", [
    ([48] * 9, "linear", "orthogonal", 0.0),
    ([48] * 9, "tanh", "orthogonal:gain=1.2", 0.2),
    ([40, 64, 32, 56, 40, 48, 40, 64, 40], "relu", "orthogonal:gain=1.4142135623730951", 0.0),
])
def test_conditional_has_the_matrix_engines_distribution(widths, act, init, bias_std):
    """Two-sample tests per column at layers 1, 4 and 8, 600 nets per engine (different
    seeds). Means: Welch's t-test; spreads: Brown-Forsythe. Every p-value must exceed
    0.01 / (number of tests): a false alarm in at most 1% of runs (Bonferroni). With 600
    nets each, a shift of 0.25 between-net standard deviations is detected with
    probability about 0.8; Gaussian weights of the same variance differ from orthogonal
    ones by far more (see the next test)."""
    kw = dict(widths=widths, activation=act, init=init, batch=4, trials=600, bias_std=bias_std)
    a = ws.simulate(method="matrix", seed=1, **kw)
    b = ws.simulate(method="conditional", seed=2, **kw)
    assert_same_law(a, b, (1, 4, 8), ["log10_pre_q", "log10_post_q", "unit_var_ratio",
                                      "log10_grad_q", "log10_wgrad_q"])


def test_orthogonal_is_not_gaussian_of_the_same_variance():
    """What the distribution test can see: at depth 8, the gradient's spread across nets
    under orthogonal weights is far below that under Gaussian weights of the same
    variance (tanh), and a linear orthogonal net preserves |x| exactly."""
    kw = dict(width=48, depth=8, batch=4, trials=300, method="conditional", seed=3)
    orth = ws.simulate(activation="tanh", init="orthogonal", **kw)
    gauss = ws.simulate(activation="tanh", init="lecun_normal", **kw)
    spread = lambda df: df.loc[df.layer == 1, "log10_grad_q"].std()
    assert spread(orth) < 0.7 * spread(gauss)
    lin = ws.simulate(activation="linear", init="orthogonal:gain=1", **kw)
    q = lin.groupby("trial")["log10_post_q"].agg(np.ptp)
    assert np.all(q < 1e-12)   # every layer's mean square equals the input's


def test_threads_and_depth_prefix_are_bit_identical():
    kw = dict(activation="tanh", init="orthogonal:gain=1.1", batch=4, trials=2, bias_std=0.1,
              method="conditional")
    deep = ws.simulate(64, 30, threads=1, **kw)
    again = ws.simulate(64, 30, threads=2, **kw)
    assert deep.equals(again)
    short = ws.simulate(64, 12, threads=2, **kw)
    fwd = ["pre_mean", "pre_var", "log10_pre_q", "log10_post_q"]
    assert deep[deep.layer <= 12][fwd].reset_index(drop=True).equals(short[fwd])


def test_auto_takes_the_conditional_engine_for_orthogonal_where_it_fits():
    def chosen(width, batch):
        net = engine.describe(np.full(4, width), "relu", "orthogonal")
        return engine.choose_method("auto", "orthogonal", net, batch)
    assert chosen(256, 16) == "conditional"
    assert chosen(256, 64) == "matrix"


def test_depth_10000_is_finite():
    df = ws.simulate(64, 10_000, activation="tanh", init="orthogonal:gain=1.05", batch=4,
                     method="conditional")
    assert np.all(np.isfinite(df[["log10_pre_q", "log10_grad_q", "log10_wgrad_q"]]))
