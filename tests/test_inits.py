"""Sampler checks for every scheme: variance, bounds, symmetry, orthogonality, keys."""
import math

import numpy as np
import pytest

import winit_sim as ws

FI, FO = 300, 200


def _sample(init, fi=FI, fo=FO, **kw):
    return ws.sample_weights(init, fi, fo, **kw)


@pytest.mark.parametrize("init, var", [
    ("normal", 1.0), ("normal:std=0.05", 0.0025), (("normal", {"std": 0.05}), 0.0025),
    ("small", 1e-4), ("large", 1.0), ("uniform:bound=0.5", 0.25 / 3),
    ("xavier_uniform", 2 / (FI + FO)), ("glorot_uniform", 2 / (FI + FO)),
    ("xavier_normal", 2 / (FI + FO)), ("glorot_normal:gain=2", 8 / (FI + FO)),
    ("he_uniform", 2 / FI), ("kaiming_uniform:mode=fan_out", 2 / FO),
    ("he_normal", 2 / FI), ("kaiming_normal:mode=fan_out", 2 / FO),
    ("lecun_uniform", 1 / FI), ("lecun_normal", 1 / FI), ("orthogonal", 1 / FI),
])
def test_variance_matches_theory(init, var):
    assert ws.weight_variance(init, FI, FO) == pytest.approx(var, rel=1e-12)
    w = _sample(init)
    assert w.shape == (FO, FI)
    n = w.size
    # sample variance of n draws: relative standard error sqrt(2/n) (normal) or less (uniform)
    assert w.var() == pytest.approx(var, rel=6 * math.sqrt(2 / n))
    assert abs(w.mean()) < 6 * math.sqrt(var / n)


@pytest.mark.parametrize("init, bound", [
    ("uniform:bound=0.5", 0.5), ("xavier_uniform", math.sqrt(6 / (FI + FO))),
    ("he_uniform", math.sqrt(6 / FI)), ("lecun_uniform", math.sqrt(3 / FI)),
])
def test_uniform_bounds_and_symmetry(init, bound):
    w = _sample(init)
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.999 * bound
    # symmetric about 0: as many positive as negative entries, flat histogram
    assert abs(np.mean(w > 0) - 0.5) < 5 * 0.5 / math.sqrt(w.size)
    hist, _ = np.histogram(w, bins=10, range=(-bound, bound))
    assert np.all(np.abs(hist / w.size - 0.1) < 5 * math.sqrt(0.09 / w.size))


def test_normal_shape_of_distribution():
    w = _sample("normal", fi=1000, fo=1000).ravel()
    # kurtosis 3, skew 0, tail mass beyond 3 sigma = 0.0027 (checks the ziggurat's tail)
    assert np.mean(w ** 4) == pytest.approx(3.0, abs=0.05)
    assert abs(np.mean(w ** 3)) < 0.01
    assert np.mean(np.abs(w) > 3) == pytest.approx(0.0026998, rel=0.05)
    assert np.abs(w).max() > 4.5


@pytest.mark.parametrize("fi, fo", [(300, 200), (200, 300), (64, 64)])
def test_orthogonal_like_torch(fi, fo):
    w = ws.sample_weights("orthogonal:gain=2", fi, fo)
    if fo >= fi:  # columns orthonormal
        np.testing.assert_allclose(w.T @ w, 4 * np.eye(fi), atol=1e-10)
    else:         # rows orthonormal
        np.testing.assert_allclose(w @ w.T, 4 * np.eye(fo), atol=1e-10)


@pytest.mark.parametrize("fi, fo", [(5, 5), (3, 6), (6, 3)])
def test_orthogonal_is_haar(fi, fo):
    """The Householder construction against NumPy's QR of a Gaussian with torch's sign
    fix, in law: two-sample KS on four statistics of 3000 matrices each. Bonferroni over
    the 12 tests at 1e-4 each: a family-wise false alarm rate of 1.2e-3."""
    from scipy.stats import ks_2samp
    rng = np.random.default_rng(7)
    rows, cols = max(fi, fo), min(fi, fo)

    def reference():
        q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
        q = q * np.sign(np.diag(r))
        return q if fo >= fi else q.T

    def stats(w):
        m = w[:cols, :cols] if fo >= fi else w[:, :cols]
        return [np.trace(m), np.trace(m @ m), w[0, 0], w[-1, -1] * w[0, -1]]

    ours = np.array([stats(ws.sample_weights("orthogonal", fi, fo, seed=s)) for s in range(3000)])
    theirs = np.array([stats(reference()) for _ in range(3000)])
    for c in range(ours.shape[1]):
        assert ks_2samp(ours[:, c], theirs[:, c]).pvalue > 1e-4, c


def test_constant_and_zeros():
    assert np.all(_sample("zeros") == 0)
    assert np.all(_sample("constant") == 0.1)
    assert np.all(_sample("constant:value=-2") == -2)
    assert ws.weight_variance("constant", 3, 4) == 0.0


def test_keys_and_dtypes():
    a = _sample("he_normal", seed=1, layer=2)
    assert np.array_equal(a, _sample("he_normal", seed=1, layer=2))
    assert not np.array_equal(a, _sample("he_normal", seed=1, layer=3))
    assert not np.array_equal(a, _sample("he_normal", seed=2, layer=2))
    assert not np.array_equal(a, _sample("he_normal", seed=1, layer=2, trial=1))
    f32 = _sample("he_normal", seed=1, layer=2, dtype="float32")
    assert f32.dtype == np.float32 and np.array_equal(f32, a.astype(np.float32))
    # layers and trials are independent streams: no correlation
    b = _sample("normal", seed=1, layer=3).ravel()
    assert abs(np.corrcoef(_sample("normal", seed=1, layer=2).ravel(), b)[0, 1]) < 0.02


def test_canonical_specs():
    spec = ws.INITS.resolve("kaiming_normal:mode=fan_out")
    assert spec.canonical() == "he_normal:mode=fan_out"
    assert ws.INITS.resolve(("normal", {"std": 0.05})).canonical() == "normal:std=0.05"
    assert ws.INITS.resolve("he_normal").canonical() == "he_normal"


@pytest.mark.parametrize("fo, fi, rows", [(70, 40, 9), (40, 70, 1), (100, 100, 70), (1, 5, 3)])
def test_orthogonal_products_equal_the_formed_matrix(fo, fi, rows):
    """The matrix engine applies orthogonal layers as reflectors without forming W; its
    products must equal NumPy's products with the W that sample_weights forms (several
    32-reflector panels, tall, wide, batch 1 and 70)."""
    from winit_sim.kernels import householder, rng as krng
    key = np.uint64(krng.stream_key(2, 0, 3, krng.STREAM_WEIGHT))
    w = ws.sample_weights("orthogonal:gain=1.3", fi, fo, seed=2, layer=3)
    k = min(fi, fo)
    gram = w @ w.T if fo < fi else w.T @ w
    np.testing.assert_allclose(gram, 1.69 * np.eye(k), atol=1e-12)
    g = np.random.default_rng(0)
    x, d = g.standard_normal((rows, fi)), g.standard_normal((rows, fo))
    h, back = np.empty((rows, fo)), np.empty((rows, fi))
    householder.times_w_t(1.3, key, x, h)
    householder.times_w(1.3, key, d, back)
    np.testing.assert_allclose(h, x @ w.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(back, d @ w, rtol=0, atol=1e-12)


def test_sample_biases_are_simulates_biases():
    """propagate on sample_weights and sample_biases, from simulate's own input and top
    gradient, reproduces the matrix engine's simulate with bias_std."""
    from winit_sim.kernels import rng as _rng
    widths, seed = [10, 14, 9], 6
    sim = ws.simulate(widths=widths, activation="tanh", init="he_normal", bias_std=0.3,
                      batch=5, seed=seed, method="matrix")
    w = [ws.sample_weights("he_normal", widths[l], widths[l + 1], seed=seed, layer=l + 1)
         for l in range(2)]
    b = [ws.sample_biases(0.3, widths[l + 1], seed=seed, layer=l + 1) for l in range(2)]
    x, g = np.empty((5, 10)), np.empty((5, 9))
    _rng.fill_normal(np.uint64(_rng.stream_key(seed, 0, 0, _rng.STREAM_INPUT)), x, 1.0)
    _rng.fill_normal(np.uint64(_rng.stream_key(seed, 0, 0, _rng.STREAM_GRAD)), g, 1.0)
    ref = ws.propagate(w, x, "tanh", grad_output=g, biases=b)
    cols = [c for c in ref.columns if c != "trial"]
    np.testing.assert_allclose(sim[cols].to_numpy(), ref[cols].to_numpy(), rtol=1e-11)


def test_serial_normal_fill_draws_the_parallel_ones_bits():
    """Inputs, gradients and biases are drawn on one thread (``fill_normal_serial``):
    the same keyed numbers as the parallel fill, bit for bit, at any shape."""
    from winit_sim.kernels import rng as _rng

    key = np.uint64(_rng.stream_key(5, 2, 1, _rng.STREAM_INPUT))
    for shape in [(1, 1), (3, 517), (64, 1000), (1000, 3)]:
        a, b = np.empty(shape), np.empty(shape)
        _rng.fill_normal(key, a, 0.7)
        _rng.fill_normal_serial(key, b, 0.7)
        assert np.array_equal(a, b)


@pytest.mark.parametrize("fo, fi", [(300, 200), (200, 300), (260, 260)])
def test_formed_orthogonal_matches_reflectors_applied_one_by_one(fo, fi):
    """``sample_weights`` forms W in 128-reflector BLAS panels; NumPy applies the same
    reflectors (v_j, tau_j, the sign fix) one at a time to the identity, as the
    Householder product Q = H_0 ... H_{k-1} defines it (several panels, tall, wide)."""
    from winit_sim.kernels import rng as krng
    from naive import reflector_product
    key = np.uint64(krng.stream_key(4, 0, 2, krng.STREAM_WEIGHT))
    want = reflector_product(fo, fi, 1.3, key)
    w = ws.sample_weights("orthogonal:gain=1.3", fi, fo, seed=4, layer=2)
    np.testing.assert_allclose(w, want, rtol=0, atol=1e-13)
