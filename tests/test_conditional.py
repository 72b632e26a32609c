"""The conditional engine: NumPy reference, the conditioning identity, equivalence, errors."""
import math

import numpy as np
import pytest

import winit_sim as ws
from winit_sim.activations import resolve_activation, sup_dphi
from winit_sim.inits import layer_sampler

from naive import reference_conditional

ACTS = ["linear", "relu", "leaky_relu:slope=0.2", "tanh", "sigmoid", "gelu", "silu",
        "elu:alpha=0.7", "selu"]


def _compare(widths, act, init, bias_std, batch, seed=4, rtol=1e-9):
    sim = ws.simulate(widths=widths, activation=act, init=init, batch=batch, bias_std=bias_std,
                      seed=seed, trials=2, method="conditional")
    stds = [layer_sampler(init, widths[l], widths[l + 1], act)[1]
            for l in range(len(widths) - 1)]
    for trial in range(2):
        ref = reference_conditional(widths, act, stds, bias_std, seed, trial, batch,
                                    sup_dphi(resolve_activation(act)))
        got = sim[sim.trial == trial].reset_index(drop=True)
        for l, row in enumerate(ref):
            for col, want in row.items():
                np.testing.assert_allclose(got[col].iloc[l], want, rtol=rtol, atol=1e-12,
                                           err_msg=f"{act} trial {trial} layer {l + 1} {col}")


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias_std", [0.0, 0.3])
def test_kernel_matches_numpy_reference(act, bias_std):
    """Non-uniform widths, with and without biases, every activation."""
    _compare([30, 45, 20, 60, 25, 33], act, "xavier_normal", bias_std, batch=5)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_rank_deficient_layers_match_the_reference(act):
    """Batch above some widths (G singular), width 1 layers, and relu rows of zeros."""
    _compare([3, 12, 2, 40, 1, 9], act, "he_normal", 0.0, batch=7)
    _compare([3, 12, 2, 40, 1, 9], act, "he_normal", 0.2, batch=7)


def test_repeated_inputs_and_dead_relu_give_no_nan():
    # many identical rows: x x^T has rank 1 at the first layer
    df = ws.simulate(widths=[1, 50, 50, 50], activation="relu", init="he_normal", batch=16,
                     trials=3, method="conditional")
    assert np.isfinite(df.drop(columns=["pre_mean", "pre_var"]).to_numpy()).all()
    # width-1 layers: relu kills every sample of some trials (an all-zero layer)
    df = ws.simulate(widths=[4, 1, 1, 1, 1, 1, 5], activation="relu", init="he_normal", batch=3,
                     trials=40, method="conditional")
    assert not df.drop(columns=["pre_mean", "pre_var"]).isna().any().any()
    assert (df.log10_pre_q == -np.inf).any()   # some nets carry no signal: exact zeros


def test_conditioned_weights_reproduce_forward_and_backward():
    """An explicit W built from the conditional law gives the engine's H and delta W.

    The reference draws W~ = H^T G^+ X~ + W' (I - X~^T G^+ X~) with W' fresh; then
    X~ W~^T must equal H exactly (up to rounding), and the entries of many such
    W~ (with H drawn as C Z) have mean 0 and covariance sw^2 I: the identity itself.
    """
    rng = np.random.default_rng(0)
    B, n_in, n_out, sw, sb = 4, 9, 6, 0.7, 0.4
    x = rng.standard_normal((B, n_in))
    xt = np.hstack([x, np.full((B, 1), sb / sw)])
    gram = xt @ xt.T
    ginv = np.linalg.pinv(gram)
    proj = xt.T @ ginv @ xt
    lam, v = np.linalg.eigh(sw ** 2 * gram)
    c = v * np.sqrt(np.maximum(lam, 0))
    samples = []
    for _ in range(20000):
        h = c @ rng.standard_normal((B, n_out))
        w = h.T @ ginv @ xt + sw * rng.standard_normal((n_out, n_in + 1)) @ (np.eye(n_in + 1) - proj)
        samples.append(w.ravel())
    np.testing.assert_allclose(xt @ w.T, h, atol=1e-12)
    s = np.array(samples)
    cov = np.cov(s[:, :2 * (n_in + 1)].T)   # two units' weights, bias column included
    assert np.abs(s.mean(axis=0)).max() < 5 * sw / math.sqrt(len(s))
    np.testing.assert_allclose(cov, sw ** 2 * np.eye(2 * (n_in + 1)), atol=6 * sw ** 2 *
                               math.sqrt(2 / len(s)))
