"""Kernels against the slow NumPy reference, to ~1e-10 relative, float64."""
import numpy as np
import pytest

import winit_sim as ws
from winit_sim.activations import resolve_activation, sup_dphi
from winit_sim.kernels import rng as _rng

import naive
from naive import reference_stats

ACTS = naive.example_specs()   # one per registry entry, parameters off their defaults


def _net(widths, rng, bias=True, batch=5):
    ws_ = [rng.standard_normal((widths[i + 1], widths[i])) * 1.3 / np.sqrt(widths[i])
           for i in range(len(widths) - 1)]
    bs = [0.3 * rng.standard_normal(n) for n in widths[1:]] if bias else None
    x = rng.standard_normal((batch, widths[0]))
    g = rng.standard_normal((batch, widths[-1]))
    return ws_, x, g, bs


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias", [False, True])
def test_propagate_matches_reference(act, bias):
    rng = np.random.default_rng(1)
    # non-uniform widths; batch 5 vs widths 3..40 exercises both weight-grad routes
    widths = [7, 40, 3, 25, 25, 9]
    w, x, g, b = _net(widths, rng, bias)
    got = ws.propagate(w, x, act, grad_output=g, biases=b)
    ref = reference_stats(w, x, act, g, b, sup_dphi(resolve_activation(act)))
    assert list(got["layer"]) == [1, 2, 3, 4, 5]
    assert list(got["fan_in"]) == widths[:-1] and list(got["fan_out"]) == widths[1:]
    for l, row in enumerate(ref):
        for col, want in row.items():
            np.testing.assert_allclose(got[col].iloc[l], want, rtol=1e-10, atol=1e-13,
                                       err_msg=f"{act} layer {l + 1} {col}")


@pytest.mark.parametrize("seg", [1, 2, 5])
def test_checkpoint_segments_are_bit_identical(seg):
    full = ws.simulate(16, 12, activation="tanh", init="xavier_normal", batch=4, trials=2,
                       bias_std=0.1, method="matrix")
    part = ws.simulate(16, 12, activation="tanh", init="xavier_normal", batch=4, trials=2,
                       bias_std=0.1, segment_layers=seg, method="matrix")
    assert full.equals(part)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_kept_weights_give_the_same_bits(monkeypatch, dtype):
    """Formed weights kept from the forward (engine.WEIGHT_STORE_BYTES) or sampled again
    for each recomputed segment and the backward: the same bits, two trials (each its
    own weights), several segments."""
    from winit_sim import engine
    kw = dict(activation="tanh", init="he_normal", batch=80, trials=2, bias_std=0.1,
              dtype=dtype, method="matrix", segment_layers=3)
    kept = ws.simulate(40, 10, **kw)
    assert engine.weight_store_entries(engine.describe(np.full(11, 40), "tanh", "he_normal"),
                                       80, None, 8) == (10, 1600)
    monkeypatch.setattr(engine, "WEIGHT_STORE_BYTES", 0)
    assert kept.equals(ws.simulate(40, 10, **kw))


@pytest.mark.parametrize("act", ["relu", "tanh", "gelu"])
def test_simulate_equals_propagate_on_sampled_weights(act):
    """simulate's weights are exactly sample_weights(...); its input and gradient are N(0, 1).

    simulate samples the weights inside its products at this batch size (see
    test_fused_products) and propagate uses BLAS, so they agree to rounding.
    """
    widths = [6, 11, 8, 5]
    sim = ws.simulate(widths=widths, activation=act, init="lecun_normal", batch=3, seed=7,
                      trials=2, method="matrix")
    for trial in range(2):
        w = [ws.sample_weights("lecun_normal", widths[i], widths[i + 1], seed=7, trial=trial,
                               layer=i + 1) for i in range(3)]
        forward = sim[sim.trial == trial]
        x = np.empty((3, 6))
        _rng.fill_normal(np.uint64(_rng.stream_key(7, trial, 0, _rng.STREAM_INPUT)), x, 1.0)
        g = np.empty((3, 5))
        _rng.fill_normal(np.uint64(_rng.stream_key(7, trial, 0, _rng.STREAM_GRAD)), g, 1.0)
        ref = ws.propagate(w, x, act, grad_output=g)
        cols = [c for c in ref.columns if c != "trial"]
        np.testing.assert_allclose(forward[cols].to_numpy(), ref[cols].to_numpy(), rtol=1e-12)


def test_float32_close_to_float64():
    a = ws.simulate(64, 6, activation="tanh", init="xavier_uniform", batch=8)
    b = ws.simulate(64, 6, activation="tanh", init="xavier_uniform", batch=8, dtype="float32")
    for col in ["log10_pre_q", "log10_post_q", "log10_grad_q", "log10_wgrad_q"]:
        np.testing.assert_allclose(b[col], a[col], atol=1e-4)


@pytest.mark.parametrize("init", ["he_normal", "xavier_uniform", "constant:value=0.03", "zeros"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n_in, n_out", [(37, 300), (300, 37), (129, 129)])
def test_fused_products(init, dtype, n_in, n_out):
    """Products with on-the-fly weights equal x @ W.T and delta @ W for W = sample_weights
    (constant ones as the constant times row sums)."""
    from winit_sim.inits import layer_sampler
    from winit_sim.kernels import weights as _fused

    kind, scale = layer_sampler(init, n_in, n_out)
    key = np.uint64(_rng.stream_key(3, 1, 4, _rng.STREAM_WEIGHT))
    w = ws.sample_weights(init, n_in, n_out, seed=3, trial=1, layer=4, dtype=dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, n_in)).astype(dtype)
    d = rng.standard_normal((5, n_out)).astype(dtype)
    h = np.empty((5, n_out), dtype)
    p = np.empty((5, n_in), dtype)
    _fused.times_weights_t(kind, scale, key, x, h, None, True)
    _fused.times_weights(kind, scale, key, d, p, None, True)
    tol = 1e-12 if dtype == "float64" else 1e-4
    w64 = w.astype(np.float64)
    np.testing.assert_allclose(h, x.astype(np.float64) @ w64.T, rtol=tol, atol=tol)
    np.testing.assert_allclose(p, d.astype(np.float64) @ w64, rtol=tol, atol=tol)
    if init == "zeros":   # +0 exactly, as a product with zeros gives
        assert not np.signbit(h).any() and not np.signbit(p).any() and not h.any()


def test_uniform_kind_needs_uniform_layers():
    """Told that the net has no uniform layer, the kernels compile no uniform sampling
    and refuse a uniform layer; a normal layer gives the same bits either way."""
    from winit_sim.inits import layer_sampler
    from winit_sim.kernels import weights as _fused

    key = np.uint64(_rng.stream_key(3, 1, 4, _rng.STREAM_WEIGHT))
    x = np.random.default_rng(1).standard_normal((3, 40))
    kind, scale = layer_sampler("he_uniform", 40, 40)
    h = np.empty((3, 40))
    for call in (lambda u: _fused.times_weights_t(kind, scale, key, x, h, None, u),
                 lambda u: _fused.times_weights(kind, scale, key, x, h, None, u),
                 lambda u: _fused.fill_weights(kind, scale, key, h, None, u)):
        with pytest.raises(ValueError, match="uniform_layers"):
            call(None)
    kind, scale = layer_sampler("he_normal", 40, 40)
    for fn in (_fused.times_weights_t, _fused.times_weights):
        outs = []
        for uniform_layers in (None, True):
            outs.append(np.empty((3, 40)))
            fn(kind, scale, key, x, outs[-1], None, uniform_layers)
        assert np.array_equal(outs[0], outs[1])


def test_orthogonal_kind_needs_orthogonal_layers():
    """A kernel told that the net has no orthogonal layer refuses one (it never falls
    through to another kind's code)."""
    from winit_sim.inits import layer_sampler
    from winit_sim.kernels import weights as _fused

    kind, scale = layer_sampler("orthogonal", 8, 8)
    key = np.uint64(_rng.stream_key(3, 1, 4, _rng.STREAM_WEIGHT))
    x = np.ones((2, 8))
    h = np.empty((2, 8))
    with pytest.raises(ValueError, match="orthogonal_layers"):
        _fused.times_weights_t(kind, scale, key, x, h, None, True)
    with pytest.raises(ValueError, match="orthogonal_layers"):
        _fused.fill_weights(kind, scale, key, h, None, True)
    _fused.times_weights_t(kind, scale, key, x, h, True, True)
    np.testing.assert_allclose(h, x @ ws.sample_weights("orthogonal", 8, 8, seed=3, trial=1,
                                                        layer=4).T, rtol=1e-12)
