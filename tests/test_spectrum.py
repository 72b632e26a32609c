"""Jacobian spectra: every singular value at any depth, against independent references.

* a direct float64 SVD of the explicit product (NumPy forward with naive formulas),
  where that is accurate (singular values within 1e-7 of the largest);
* an mpmath product at small width and large depth, where float64 products fail;
* exact cases: orthogonal linear nets are isometries times gain^D, ReLU's rank loss
  is exact, zero weights give a zero Jacobian;
* the contracts of the package: same net as simulate (given weights agree bit for
  bit), the depth prefix, thread counts, depth 10,000 finite.
"""
import math

import numpy as np
import pytest

import winit_sim as ws
from winit_sim.kernels import rng as _rng

import naive
from test_residual import _given as residual_given

LN10 = math.log(10.0)


def _first_input(seed, trial, n0, input_var=1.0):
    """Row 0 of the input simulate draws (the key of naive.reference_conditional)."""
    x = np.empty((1, n0))
    _rng.fill_normal(np.uint64(_rng.stream_key(seed, trial, 0, _rng.STREAM_INPUT)), x, 1.0)
    return x[0] * math.sqrt(input_var)


def _bias(seed, trial, layer, n, std):
    b = np.empty((1, n))
    _rng.fill_normal(np.uint64(_rng.stream_key(seed, trial, layer, _rng.STREAM_BIAS)), b, 1.0)
    return b[0] * std


def _explicit_jacobians(widths, activation, init, depths, seed=0, trial=0, bias_std=0.0):
    """J at each depth as an explicit float64 product: NumPy forward, naive phi'."""
    phi, dphi = naive.NAIVE[activation]
    x = _first_input(seed, trial, widths[0])
    jac = np.eye(widths[0])
    out = {}
    for l in range(1, max(depths) + 1):
        w = ws.sample_weights(init, widths[l - 1], widths[l], seed=seed, trial=trial, layer=l)
        h = w @ x + (_bias(seed, trial, l, widths[l], bias_std) if bias_std else 0.0)
        jac = (dphi(h, {})[:, None] * w) @ jac
        x = phi(h, {})
        if l in depths:
            out[l] = jac.copy()
    return out


def _sv(df, depth, trial=0):
    g = df[(df.depth == depth) & (df.trial == trial)].sort_values("index")
    return g["log10_sv"].to_numpy()


CASES = [("tanh", "xavier_normal", 0.0), ("tanh", "orthogonal", 0.3), ("relu", "he_normal", 0.0),
         ("relu", "he_uniform", 0.2), ("linear", "orthogonal:gain=1.1", 0.0),
         ("linear", "lecun_normal", 0.0), ("sigmoid", "xavier_uniform", 0.1),
         ("gelu", "he_normal", 0.0)]


@pytest.mark.parametrize("activation,init,bias_std", CASES)
def test_direct_svd(activation, init, bias_std):
    widths = [20, 28, 20, 16, 24, 20, 20, 20, 20, 20, 20, 20, 20]
    depths = [1, 4, 12]
    df = ws.jacobian_spectrum(widths=widths, activation=activation, init=init, depths=depths,
                              bias_std=bias_std)
    for d, jac in _explicit_jacobians(widths, activation, init, depths, bias_std=bias_std).items():
        ref = np.linalg.svd(jac, compute_uv=False)
        ours = 10.0 ** _sv(df, d)
        assert ours.size == min(widths[0], widths[d])
        # a direct SVD is accurate to ~1e-16 sigma_max absolutely: compare where that is
        # below 1e-9 relative, and require the rest to be tiny or exactly zero
        sure = ref >= 1e-7 * ref[0]
        np.testing.assert_allclose(ours[sure], ref[sure], rtol=1e-8, atol=0)
        assert np.all(ours[~sure] < 1e-6 * ref[0])
        if activation == "relu":   # exact rank loss: the zeros are zeros, the rest are not
            rank = np.linalg.matrix_rank(jac)
            assert np.count_nonzero(ours) == rank


def _mp_log_sv(widths, activation, init, depth, digits, bias_std=0.0):
    """ln of the singular values of the depth-D Jacobian: mpmath product at ``digits``."""
    mpmath = pytest.importorskip("mpmath")
    phi, dphi = naive.NAIVE[activation]
    n = widths[0]
    x = _first_input(0, 0, n)
    with mpmath.workdps(digits):
        jac = mpmath.eye(n)
        for l in range(1, depth + 1):
            w = ws.sample_weights(init, n, n, layer=l)
            h = w @ x + (_bias(0, 0, l, n, bias_std) if bias_std else 0.0)
            d = dphi(h, {})
            m = mpmath.matrix([[mpmath.mpf(float(d[i])) * mpmath.mpf(float(w[i, j]))
                                for j in range(n)] for i in range(n)])
            jac = m * jac
            x = phi(h, {})
        sv = mpmath.svd_r(jac, compute_uv=False)
        logs = [float(mpmath.log(v)) for v in sv]
    return np.sort(logs)[::-1]


@pytest.mark.parametrize("activation,init,bias_std,depth", [
    ("linear", "he_normal:gain=1", 0.0, 2000),
    ("tanh", "xavier_normal", 0.1, 2000),
    ("tanh", "orthogonal", 1.0, 2000),
    ("relu", "he_normal", 0.0, 300)])
def test_arbitrary_precision(activation, init, bias_std, depth):
    """Width 8, depth 2000: the singular values span over a thousand decades, so float64
    products keep only the largest; mpmath keeps them all. Orthogonal layers exercise
    the products that wait for their QR (isometric layers)."""
    widths = [8] * (depth + 1)
    df = ws.jacobian_spectrum(widths=widths, activation=activation, init=init, bias_std=bias_std)
    ours = _sv(df, depth) * LN10
    finite = ours[np.isfinite(ours)]
    spread = (finite[0] - finite[-1]) / LN10
    if activation != "relu":
        assert spread > 1000.0, spread   # what the test is about: beyond any float64 product
    ref = _mp_log_sv(widths, activation, init, depth, int(spread) + 60, bias_std)
    # mpmath resolves exact zeros only to its working precision: compare the nonzero ones
    real = ref > ref[0] - (spread + 30) * LN10
    assert np.count_nonzero(np.isfinite(ours)) == np.count_nonzero(real)
    np.testing.assert_allclose(ours[real], ref[real], rtol=0, atol=1e-9)   # 1e-9 relative in sigma


def test_orthogonal_linear_is_isometry():
    df = ws.jacobian_spectrum(64, 50, activation="linear", init="orthogonal:gain=1.05",
                              depths=[1, 50])
    for d in (1, 50):
        np.testing.assert_allclose(_sv(df, d), d * math.log10(1.05), rtol=0, atol=1e-12)
    summary = ws.spectrum_summary(df)
    assert np.all(summary["frac_isometric"] == 1.0)
    assert np.all(summary["nvar"] < 1e-20)


def test_zero_and_constant_weights():
    zero = ws.jacobian_spectrum(10, 5, activation="tanh", init="zeros")
    assert np.all(zero["log10_sv"] == -np.inf)
    const = ws.jacobian_spectrum(10, 5, activation="tanh", init="constant:value=0.1")
    sv = _sv(const, 5)
    assert np.isfinite(sv[0]) and np.all(sv[1:] == -np.inf)   # rank 1, exactly


def test_same_net_as_given_weights():
    """The sampled net is simulate's: its weights and first input row through the
    given-weights path give the same spectrum, bit for bit."""
    widths = [12, 16, 12, 12, 10]
    df = ws.jacobian_spectrum(widths=widths, activation="tanh", init="he_uniform", seed=3,
                              trials=2, depths=[2, 4])
    for trial in (0, 1):
        weights = [ws.sample_weights("he_uniform", widths[l], widths[l + 1], seed=3, trial=trial,
                                     layer=l + 1) for l in range(4)]
        given = ws.jacobian_spectrum(weights=weights, x=_first_input(3, trial, 12),
                                     activation="tanh", depths=[2, 4])
        for d in (2, 4):
            assert np.array_equal(_sv(df, d, trial), _sv(given, d))


@pytest.mark.parametrize("activation,init", [("relu", "he_normal"),
                                             ("tanh", "orthogonal:gain=1.1")])
def test_depth_prefix_and_threads(activation, init):
    kw = dict(activation=activation, init=init, bias_std=0.1, trials=2)
    deep = ws.jacobian_spectrum(16, 40, depths=[10, 40], threads=1, **kw)
    short = ws.jacobian_spectrum(16, 10, threads=2, **kw)
    for trial in (0, 1):
        assert np.array_equal(_sv(deep, 10, trial), _sv(short, 10, trial))
    again = ws.jacobian_spectrum(16, 40, depths=[10, 40], threads=2, **kw)
    assert np.array_equal(deep["log10_sv"].to_numpy(), again["log10_sv"].to_numpy())


@pytest.mark.parametrize("decades", [0.5, 2.0, 9.0])
def test_lapack_and_jacobi_paths_match_mpmath(decades):
    """The last step's two paths: LAPACK where the values span under 1e4 (sweeps 0),
    Jacobi beyond; both against an mpmath SVD of diag(e^s) T."""
    mpmath = pytest.importorskip("mpmath")
    from winit_sim.kernels.spectrum import spectrum_at
    rng = np.random.default_rng(11)
    k, n = 24, 30
    t = rng.standard_normal((k, n)) / np.sqrt(n)
    s = -np.linspace(0.0, decades * LN10, k)
    out = np.empty(k)
    sweeps = spectrum_at(t, s, out)
    with mpmath.workdps(60):
        a = mpmath.matrix([[mpmath.exp(mpmath.mpf(float(s[i]))) * mpmath.mpf(float(t[i, j]))
                            for j in range(n)] for i in range(k)])
        ref = np.sort([float(mpmath.log(v)) for v in mpmath.svd_r(a, compute_uv=False)])[::-1]
    spread = (ref[0] - ref[-1]) / LN10
    assert (sweeps == 0) == (spread < 4.0), (sweeps, spread)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-11)


@pytest.mark.parametrize("activation,init", [("relu", "he_normal"), ("linear", "lecun_normal"),
                                             ("tanh", "orthogonal")])
def test_depth_10000_finite(activation, init):
    df = ws.jacobian_spectrum(16, 10_000, activation=activation, init=init, depths=[100, 10_000])
    sv = df["log10_sv"].to_numpy()
    assert not np.any(np.isnan(sv)) and not np.any(sv == np.inf)
    summary = ws.spectrum_summary(df)
    assert np.all(np.isfinite(summary["log10_mean_sq_sv"]))
    if activation == "linear":   # thousands of decades between sigma_max and sigma_min, all finite
        assert np.all(np.isfinite(sv))
        last = summary.iloc[-1]
        assert last["log10_sv_max"] - last["log10_sv_min"] > 1000


def test_summary_moments_by_hand():
    df = ws.jacobian_spectrum(8, 3, activation="tanh", init="xavier_normal", depths=[3])
    s2 = 10.0 ** (2 * _sv(df, 3))
    row = ws.spectrum_summary(df).iloc[0]
    assert row["log10_mean_sq_sv"] == pytest.approx(math.log10(s2.mean()), abs=1e-12)
    assert row["nvar"] == pytest.approx(s2.var() / s2.mean() ** 2, rel=1e-10)
    assert row["log10_sv_max"] == pytest.approx(math.log10(math.sqrt(s2.max())), abs=1e-12)
    assert row["frac_isometric"] == pytest.approx(np.mean(np.abs(np.log(s2 / s2.mean()))
                                                          <= math.log(2)))


@pytest.mark.parametrize("kwargs,match", [
    (dict(width=8, depth=5, depths=[0, 5]), "depths entry"),
    (dict(width=8, depth=5, depths=[6]), r"1\.\.5"),
    (dict(width=8, depth=5, init="nope"), "init"),
    (dict(width=8, depth=5, activation="nope"), "activation"),
    (dict(width=10**6, depth=2), "GiB"),
    (dict(weights=[np.eye(3), np.ones((2, 4))], x=np.ones(3)), "fan_in"),
    (dict(weights=[np.eye(3)], x=np.ones((2, 3))), "shape"),
    (dict(weights=[np.eye(3)]), "input x"),
])
def test_bad_input(kwargs, match):
    kwargs.setdefault("activation", "relu")
    with pytest.raises((ValueError, TypeError), match=match):
        ws.jacobian_spectrum(**kwargs)


def test_summary_needs_a_spectrum_frame():
    with pytest.raises(ValueError, match="jacobian_spectrum"):
        ws.spectrum_summary(ws.simulate(4, 2, backward=False))


def _critical(act, weights, sb2=0.0):
    """(init spec, bias_std, input_var) of a net at criticality, starting at q*."""
    from winit_sim import theory
    kind = "lecun_normal" if weights == "gaussian" else "orthogonal"
    if act != "tanh":
        sw2 = {"linear": 1.0, "relu": 2.0}[act]
        return f"{kind}:gain={math.sqrt(sw2)!r}", 0.0, 1.0, sw2
    sw2 = theory.critical_sw2("tanh", sb2)
    q = theory.fixed_point("tanh", sw2, sb2).q
    return f"{kind}:gain={math.sqrt(sw2)!r}", math.sqrt(sb2), (q - sb2) / sw2, sw2


THEORY_CASES = [(act, w, sb2) for w in ("gaussian", "orthogonal")
                for act, sb2 in (("linear", 0.0), ("relu", 0.0), ("tanh", 1e-8), ("tanh", 0.3))]


@pytest.mark.parametrize("act,weights,sb2", THEORY_CASES)
def test_moments_match_free_probability_at_width_1024(act, weights, sb2):
    """One net of width 1024 at criticality, depths 4 and 16: the mean of sigma^2 and its
    normalized variance against theory.jacobian_moments (infinite width). Sampling error
    of one net at this width: a few percent in the mean, about 1/sqrt(1024) relative in the
    normalized variance times its excess kurtosis; the tolerances are 3x the largest
    deviation seen over these cases (log10 0.033, 3.7%), with fixed seeds."""
    init, bias_std, input_var, _ = _critical(act, weights, sb2)
    df = ws.jacobian_spectrum(1024, 16, activation=act, init=init, depths=[4, 16],
                              bias_std=bias_std, input_var=input_var, theory=True)
    s = ws.spectrum_summary(df, theory=True)
    assert np.all(np.abs(s["dev_log10_mean_sq_sv"]) < 0.1)
    for _, row in s.iterrows():
        if row["theory_nvar"] == 0.0:   # orthogonal linear: an exact isometry
            assert row["nvar"] < 1e-20
        else:
            assert row["nvar"] == pytest.approx(row["theory_nvar"], rel=0.12), row.to_dict()


@pytest.mark.parametrize("act,weights,sb2", [("tanh", "gaussian", 0.3),
                                             ("tanh", "orthogonal", 0.3),
                                             ("relu", "gaussian", 0.0)])
def test_density_matches_free_probability(act, weights, sb2):
    """The 1024 squared singular values of a width-1024, depth-4 net against 20,000 draws
    from theory.jacobian_density (the S-transform's density at the fixed point): the
    Kolmogorov-Smirnov distance of the nonzero ones must stay below its 0.1% critical
    value for independent samples (eigenvalues repel, so they sit closer to their law
    than independent draws: the false-alarm rate is below 0.1%). ReLU's exact zeros are
    the density's atom at 0 (1/2), within binomial error of the smallest of 4 layers'
    active counts."""
    from scipy import stats
    from winit_sim.theory import jacobian_density, sample_jacobian_density
    init, bias_std, input_var, sw2 = _critical(act, weights, sb2)
    df = ws.jacobian_spectrum(1024, 4, activation=act, init=init, bias_std=bias_std,
                              input_var=input_var)
    y = 2.0 * df["log10_sv"].to_numpy()
    dens = jacobian_density(act, sw2, sb2, 4, weights=weights)
    nonzero = y[np.isfinite(y)]
    ks = stats.ks_2samp(nonzero, sample_jacobian_density(dens, 20_000, seed=1))
    n, m = nonzero.size, 20_000
    assert ks.statistic < 1.95 * math.sqrt((n + m) / (n * m)), ks
    zero_share = 1.0 - nonzero.size / y.size
    assert zero_share == pytest.approx(dens.attrs["atom_at_zero"], abs=0.06)


# ---------------------------------------------------------------- residual nets

RESIDUAL = [  # (arch, keywords of the reference below)
    ("residual", dict()),
    ("residual:branch=2,hidden=9,alpha=0.7", dict(branch=2, alpha=0.7)),
    ("residual:norm=layernorm", dict(norm="layernorm")),
    ("residual:branch=2,hidden=9,norm=rmsnorm", dict(branch=2, norm="rmsnorm")),
    ("residual:branch=2,hidden=9,norm=layernorm,position=post,beta=1.6",
     dict(branch=2, norm="layernorm", post=True, beta=1.6)),
    ("residual:norm=rmsnorm,position=post,eps=0.01", dict(norm="rmsnorm", post=True, eps=0.01)),
]


def _residual_given(kw, rng, width, depth):
    """test_residual's given weights and biases, with one input row."""
    w, x, _, b = residual_given(kw, rng, width=width, depth=depth, batch=1)
    return w, b, x[0]


def _residual_jacobians(weights, biases, x, act, branch=1, norm="none", post=False, alpha=1.0,
                        beta=1.0, eps=1e-5):
    """dx_D/dx_0 at every depth D, from explicit per-block Jacobians: a NumPy forward with
    naive.phi / naive.dphi, and each norm's Jacobian written out from its definition."""
    def normed(z):
        n = z.size
        mu = z.mean() if norm == "layernorm" else 0.0
        c = z - mu
        sd = math.sqrt(np.mean(c * c) + eps)
        y = c / sd
        center = np.eye(n) - (np.ones((n, n)) / n if norm == "layernorm" else 0.0)
        return y, (center - np.outer(y, y) / n) / sd

    n = x.size
    jac, out = np.eye(n), []
    for l in range(len(weights) // branch):
        mats = weights[l * branch:(l + 1) * branch]
        bs = biases[l * branch:(l + 1) * branch]
        u, j_in = (x, np.eye(n)) if post or norm == "none" else normed(x)
        a = mats[0] @ u + bs[0] if branch == 2 else u
        d = naive.dphi(act, a[None, :])[0]
        inner = (mats[0] if branch == 2 else np.eye(n)) @ j_in
        z = beta * x + alpha * (mats[-1] @ naive.phi(act, a[None, :])[0] + bs[-1])
        j = beta * np.eye(n) + alpha * mats[-1] @ (d[:, None] * inner)
        if post and norm != "none":
            z, j_out = normed(z)
            j = j_out @ j
        x = z
        jac = j @ jac
        out.append(jac)
    return out


@pytest.mark.parametrize("arch,kw", RESIDUAL)
@pytest.mark.parametrize("act", ["tanh", "relu", "gelu"])
def test_residual_spectrum_matches_a_direct_svd(arch, kw, act):
    """Given weights of every residual form against the SVD of the explicit product, to
    1e-8 relative where the SVD is accurate; a post-LayerNorm's null direction (1) is an
    exact zero, while N(z) keeps a small singular value (eps > 0)."""
    w, b, x = _residual_given(kw, np.random.default_rng(11), 7, 6)
    df = ws.jacobian_spectrum(weights=w, biases=b, x=x, activation=act, arch=arch,
                              depths=[1, 3, 6])
    jacs = _residual_jacobians(w, b, x, act, **kw)
    for d in (1, 3, 6):
        want = np.linalg.svd(jacs[d - 1], compute_uv=False)
        got = 10.0 ** _sv(df, d)
        zeros = 1 if kw.get("post") and kw.get("norm") == "layernorm" else 0
        assert np.all(got[7 - zeros:] == 0.0)
        ok = want[:7 - zeros] >= 1e-7 * want[0]
        np.testing.assert_allclose(got[:7 - zeros][ok], want[:7 - zeros][ok], rtol=1e-8)


def test_residual_spectrum_matches_torch_jacobian():
    """An independent check of the reference: torch.func.jacrev of the same net."""
    torch = pytest.importorskip("torch")
    from torch.nn import functional as F
    kw = dict(branch=2, norm="layernorm")
    w, b, x = _residual_given(kw, np.random.default_rng(2), 7, 5)
    tw = [torch.tensor(m) for m in w]
    tb = [torch.tensor(v) for v in b]

    def net(h):
        for l in range(5):
            u = F.layer_norm(h, h.shape, eps=1e-5)
            h = h + tw[2 * l + 1] @ torch.tanh(tw[2 * l] @ u + tb[2 * l]) + tb[2 * l + 1]
        return h

    jac = torch.func.jacrev(net)(torch.tensor(x)).numpy()
    np.testing.assert_allclose(_residual_jacobians(w, b, x, "tanh", **kw)[-1], jac, rtol=1e-10,
                               atol=1e-12)
    df = ws.jacobian_spectrum(weights=w, biases=b, x=x, activation="tanh", depths=[5],
                              arch="residual:branch=2,hidden=9,norm=layernorm")
    np.testing.assert_allclose(10.0 ** _sv(df, 5), np.linalg.svd(jac, compute_uv=False),
                               rtol=1e-8)


def test_residual_spectrum_is_simulates_net():
    """Sampled blocks: the weights of sample_weights(layer=block, matrix=j) and simulate's
    first input row give the same spectrum through the given-weights path (to 1e-12: a
    sampled matrix is used on the fly, a given one by BLAS, summing in another order);
    the depth prefix holds bit for bit."""
    arch = "residual:branch=2,hidden=20,norm=layernorm"
    df = ws.jacobian_spectrum(12, 6, activation="gelu", init="he_uniform", arch=arch, seed=4,
                              trials=2, depths=[3, 6], bias_std=0.1)
    short = ws.jacobian_spectrum(12, 3, activation="gelu", init="he_uniform", arch=arch,
                                 seed=4, trials=2, bias_std=0.1)
    assert df.attrs["net"]["arch"] == arch
    for trial in (0, 1):
        assert np.array_equal(_sv(df, 3, trial), _sv(short, 3, trial))
        weights, biases = [], []
        for l in range(1, 7):
            for j, (fo, fi) in enumerate(((20, 12), (12, 20))):
                weights.append(ws.sample_weights("he_uniform", fi, fo, seed=4, trial=trial,
                                                 layer=l, matrix=j))
                stream = _rng.STREAM_BIAS2 if j else _rng.STREAM_BIAS
                bias = np.empty((1, fo))
                _rng.fill_normal(np.uint64(_rng.stream_key(4, trial, l, stream)), bias, 0.1)
                biases.append(bias[0])
        given = ws.jacobian_spectrum(weights=weights, biases=biases, arch=arch,
                                     x=_first_input(4, trial, 12), activation="gelu",
                                     depths=[3, 6])
        for d in (3, 6):
            np.testing.assert_allclose(_sv(df, d, trial), _sv(given, d), rtol=0, atol=1e-12)


@pytest.mark.parametrize("arch", ["residual", "residual:norm=rmsnorm,position=post", "fixup"])
def test_residual_spectrum_at_depth_10000_is_finite(arch):
    df = ws.jacobian_spectrum(8, 10000, activation="relu", init="he_normal", arch=arch,
                              depths=[10, 10000])
    v = df["log10_sv"].to_numpy()
    assert not np.any(np.isnan(v)) and not np.any(v == np.inf)
    if arch == "fixup":   # zero last matrices: J = I exactly
        np.testing.assert_allclose(v, 0.0, atol=1e-12)


def test_residual_spectrum_has_no_theory():
    with pytest.raises(ValueError, match="those of an MLP"):
        ws.jacobian_spectrum(8, 3, arch="residual", theory=True)
    df = ws.jacobian_spectrum(8, 3, arch="residual")
    with pytest.raises(ValueError, match="those of an MLP"):
        ws.spectrum_summary(df, theory=True)
