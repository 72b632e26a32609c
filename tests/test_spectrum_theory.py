"""Free-probability theory of the Jacobian's singular values (winit_sim.theory.spectrum).

Closed forms (Fuss-Catalan, Marchenko-Pastur, the arcsine law of two free
projections), the density against the exact moments, the moments against the
mean-field recursions, and a NumPy Monte Carlo of finite nets. Fast: no engine runs.
"""
import math

import numpy as np
import pytest
from scipy.stats import ks_2samp

from winit_sim.inits import variance
from winit_sim.theory.meanfield import critical_sw2, fixed_point, predict
from winit_sim.theory.spectrum import (jacobian_density, jacobian_moments,
                                       sample_jacobian_density)

import naive

LN10 = math.log(10.0)


def _moments(df):
    """(mean, nvar) of lambda over the whole spectrum from a density frame.

    Trapezoid on the grid plus the atoms; the continuous mass the grid leaves out
    (its far lower tail) is counted at lambda ~ 0, where it lies. Computed
    relative to the predicted mean, and nvar from central moments, so that
    narrow (near-isometric) spectra lose no digits.
    """
    scale = df.attrs["theory_log10_mean_sq_sv"]
    y = df["log10_sq_sv"].to_numpy()
    dens = df["density"].to_numpy()
    lam = 10.0 ** (y - scale)
    atoms = [(a / 10.0 ** scale, p) for a, p in df.attrs["atoms"]]
    m1 = np.trapezoid(dens * lam, y) + sum(a * p for a, p in atoms)
    left_out = df.attrs["continuous_mass"] - np.trapezoid(dens, y)
    c2 = (np.trapezoid(dens * (lam - m1) ** 2, y) + sum((a - m1) ** 2 * p for a, p in atoms)
          + (df.attrs["atom_at_zero"] + left_out) * m1 ** 2)
    return m1 * 10.0 ** scale, c2 / m1 ** 2


def _fuss_catalan(k, depth):
    """k-th moment of the product of `depth` free Marchenko-Pastur(1) laws."""
    return math.comb((depth + 1) * k, k) / (depth * k + 1)


# ---------------------------------------------------------------------------
# Closed forms

@pytest.mark.parametrize("depth", [1, 2, 5])
@pytest.mark.parametrize("sw2", [1.0, 1.7])
def test_linear_gaussian_moments_are_fuss_catalan(depth, sw2):
    # m_k = sw2^(kL) binom((L+1)k, k)/(Lk+1). The grid runs 10 decades below the top
    # edge (the part below adds < 1e-10 to m_1..m_3); measured errors <= 1e-4, from the
    # trapezoid across the square-root top edge.
    top = math.log10(sw2 ** depth * (depth + 1) ** (depth + 1) / depth ** depth)
    df = jacobian_density("linear", sw2, depth=depth, points=4000,
                          log10_range=(top - 10.0, top + 1e-3))
    y, dens = df["log10_sq_sv"].to_numpy(), df["density"].to_numpy()
    for k in (1, 2, 3):
        got = np.trapezoid(dens * 10.0 ** (k * y), y)
        want = sw2 ** (k * depth) * _fuss_catalan(k, depth)
        assert got == pytest.approx(want, rel=1e-3), k
    assert df.attrs["atom_at_zero"] == 0.0 and df.attrs["atoms"] == []
    # the default grid holds all but ~1e-4 of the mass
    dflt = jacobian_density("linear", sw2, depth=depth)
    assert abs(dflt.attrs["grid_mass"] - 1.0) < 2e-3


@pytest.mark.parametrize("sw2", [1.0, 2.5])
def test_depth_one_gaussian_is_marchenko_pastur(sw2):
    df = jacobian_density("linear", sw2, depth=1)
    lam = df["lambda"].to_numpy()
    inside = lam < 4 * sw2
    rho = np.zeros_like(lam)
    rho[inside] = np.sqrt((4 * sw2 - lam[inside]) * lam[inside]) / (2 * np.pi * sw2 * lam[inside])
    # density of log10 lambda = rho(lambda) lambda ln 10; measured agreement ~1e-15
    np.testing.assert_allclose(df["density"].to_numpy(), rho * lam * LN10, rtol=0, atol=1e-9)
    assert df["log10_sq_sv"].iloc[-1] > math.log10(4 * sw2)   # the grid covers the top edge
    np.testing.assert_allclose(df["lambda"], 10.0 ** df["log10_sq_sv"], rtol=1e-15)


def test_orthogonal_relu_depth_two_is_the_arcsine_law():
    # J J^T = sw2^2 P Q P with P, Q free projections of trace 1/2: mass 1/2 at 0 and
    # arcsine density 1/(2 pi sqrt(x (1 - x))) in x = lambda / sw2^2 (Voiculescu).
    sw2 = 2.0
    df = jacobian_density("relu", sw2, depth=2, weights="orthogonal")
    assert df.attrs["atom_at_zero"] == pytest.approx(0.5, abs=1e-12)
    x = df["lambda"].to_numpy() / sw2 ** 2
    inside = (x > 0) & (x < 1 - 1e-6)
    want = x[inside] * LN10 / (2 * np.pi * np.sqrt(x[inside] * (1 - x[inside])))
    np.testing.assert_allclose(df["density"].to_numpy()[inside], want, rtol=1e-9)
    assert np.all(df["density"].to_numpy()[x > 1 + 1e-6] < 1e-12)   # above the top edge


def test_atoms():
    # orthogonal linear: W W^T = sw2 I, a single point mass at sw2^L
    df = jacobian_density("linear", 1.3, depth=3, weights="orthogonal")
    assert df.attrs["atom"][0] == pytest.approx(1.3 ** 3, rel=1e-14)
    assert df.attrs["atom"][1] == 1.0 and df.attrs["continuous_mass"] == 0.0
    assert np.all(df["density"] == 0)
    # orthogonal relu, depth 1: sw2 D^2 has atoms at 0 and sw2, half each
    df = jacobian_density("relu", 2.0, depth=1, weights="orthogonal")
    assert df.attrs["atom_at_zero"] == pytest.approx(0.5, abs=1e-12)
    assert df.attrs["atoms"][0][0] == 2.0 and df.attrs["atoms"][0][1] == pytest.approx(0.5)
    # relu, Gaussian weights, any depth: rank J = min_l rank D_l, half the spectrum is 0
    for depth in (1, 7):
        df = jacobian_density("relu", 2.0, depth=depth)
        assert df.attrs["atom_at_zero"] == pytest.approx(0.5, abs=1e-12)
        assert df.attrs["continuous_mass"] == pytest.approx(0.5, abs=1e-12)
        assert df.attrs["grid_mass"] == pytest.approx(0.5, rel=5e-3)


# ---------------------------------------------------------------------------
# The density against the exact moments, at fixed points

# relu: an atom of 1/2 at 0 at every depth (and at sw2 too, orthogonal depth 1); tanh on
# its critical line at q* = 0.046 (near-linear regime) and q* = 1.97. The critical sw2 is
# found in the test, not at collection (a second of bisection in every worker)
CASES = [(act, sb2, weights) for act, sb2 in (("relu", 0.0), ("tanh", 1e-4), ("tanh", 0.5))
         for weights in ("gaussian", "orthogonal")]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-sb2={c[1]}-{c[2]}")
def test_density_moments_match_jacobian_moments(case):
    act, sb2, weights = case
    sw2 = 2.0 if act == "relu" else critical_sw2(act, sb2)
    n = 100
    q = fixed_point(act, sw2, sb2).q
    init = (("orthogonal", {"gain": math.sqrt(sw2)}) if weights == "orthogonal"
            else ("normal", {"std": math.sqrt(sw2 / n)}))
    # input_var puts layer 1 (and so every layer) at q*: q_1 = sw2 input_var + sb2
    pred = jacobian_moments(n, 16, activation=act, init=init, bias_std=math.sqrt(sb2),
                            input_var=(q - sb2) / sw2, depths=[1, 4, 16])
    for depth, row in zip((1, 4, 16), pred.itertuples()):
        df = jacobian_density(act, sw2, sb2, depth, weights=weights, points=3000)
        assert df.attrs["theory_log10_mean_sq_sv"] == pytest.approx(
            row.theory_log10_mean_sq_sv, abs=1e-9)
        assert df.attrs["theory_nvar"] == pytest.approx(row.theory_nvar, rel=1e-9)
        mean, nvar = _moments(df)
        # measured errors <= 2.3e-3 (mean) and 1.5e-3 (nvar): the trapezoid on a
        # uniform grid of 3000 points, coarsest for deep i.i.d. nets (140 decades)
        assert mean == pytest.approx(10.0 ** row.theory_log10_mean_sq_sv, rel=5e-3), depth
        assert nvar == pytest.approx(row.theory_nvar, rel=5e-3), depth
        assert df.attrs["grid_mass"] == pytest.approx(df.attrs["continuous_mass"], rel=5e-3)


# ---------------------------------------------------------------------------
# jacobian_moments on its own

@pytest.mark.parametrize("act,init,bias_std,input_var", [
    ("tanh", "xavier_normal", 0.1, 1.0), ("relu", "he_normal", 0.0, 1.0),
    ("sigmoid", "orthogonal:gain=3", 0.5, 2.0), ("tanh", "normal:std=1.5", 0.0, 1e6),
    ("gelu", "he_uniform", 0.0, 0.0), ("selu", "lecun_uniform:gain=auto", 0.2, 0.5)])
def test_mean_is_the_mean_field_gradient_factor(act, init, bias_std, input_var):
    # mean sigma^2 = prod_l sw2 E[phi'(h_l)^2]: the backward recursion of predict
    # (E[delta_1^2] for a unit top gradient) times the first layer's sw2
    n, depth = 50, 30
    p = predict(n, depth, activation=act, init=init, bias_std=bias_std, input_var=input_var)
    got = jacobian_moments(n, depth, activation=act, init=init, bias_std=bias_std,
                           input_var=input_var, depths=range(1, depth + 1))
    gain = None
    if "auto" in init:
        from winit_sim.theory.moments import auto_gain
        gain = auto_gain(init, act)
    sw2 = n * variance(init, n, n, gain)
    assert got["theory_log10_mean_sq_sv"].iloc[-1] == pytest.approx(
        p["theory_log10_grad_q"].iloc[0] + math.log10(sw2), abs=1e-10)
    nvar = got["theory_nvar"].to_numpy()
    step = np.diff(nvar)   # each layer adds v_W + v_D >= v_W
    assert np.all(step >= (0.0 if "orthogonal" in init else 1.0) - 1e-12)
    assert list(got["depth"]) == list(range(1, depth + 1))


def test_linear_and_deep_moments():
    # linear: D = I, nvar = L v_W exactly; mean = sw2^L
    g = jacobian_moments(10, 5, activation="linear", init="normal:std=0.4",
                         depths=[1, 2, 5])
    np.testing.assert_allclose(g["theory_nvar"], [1, 2, 5], rtol=1e-14)
    np.testing.assert_allclose(g["theory_log10_mean_sq_sv"],
                               np.array([1, 2, 5]) * math.log10(10 * 0.16), rtol=1e-13)
    o = jacobian_moments(10, 5, activation="linear", init="orthogonal", depths=[5])
    assert o["theory_nvar"].iloc[0] == 0.0 and o["theory_log10_mean_sq_sv"].iloc[0] == 0.0
    # uniform sampling is i.i.d. too (Marchenko-Pastur universality): v_W = 1
    u = jacobian_moments(10, 3, activation="linear", init="xavier_uniform")
    assert u["theory_nvar"].iloc[0] == pytest.approx(3.0, rel=1e-14)
    # depth 10,000 stays finite in log space (a mean of 10^-10083 here)
    d = jacobian_moments(100, 10000, activation="sigmoid", init="he_uniform", bias_std=0.3,
                         depths=[1, 10000])
    assert np.all(np.isfinite(d[["theory_log10_mean_sq_sv", "theory_nvar"]].to_numpy()))
    assert d["theory_log10_mean_sq_sv"].iloc[1] < -10000
    # phi' = 0 almost surely (tanh with q beyond float range): mean -inf, nvar NaN
    z = jacobian_moments(10, 3, activation="tanh", init="normal:std=1e150", depths=[1, 3])
    assert np.all(z["theory_log10_mean_sq_sv"] == -np.inf)
    assert np.all(np.isnan(z["theory_nvar"]))


# ---------------------------------------------------------------------------
# NumPy Monte Carlo of finite nets

def _haar(rng, n):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))     # sign fix: Haar-distributed


def _net_spectrum(rng, n, depth, act, sw2, q, weights):
    """Eigenvalues of J J^T, J = D_L W_L ... D_1 W_1, D_l = diag(phi'(h_l)) with
    h_l ~ N(0, q) i.i.d. and independent of W (what freeness means at infinite width).
    Squared singular values of J rather than eigvalsh(J J^T): the small ones keep
    their digits down to ~1e-28 of the top (deep i.i.d. nets reach 1e-33)."""
    jac = np.eye(n)
    for _ in range(depth):
        w = (math.sqrt(sw2) * _haar(rng, n) if weights == "orthogonal"
             else rng.standard_normal((n, n)) * math.sqrt(sw2 / n))
        d = naive.dphi(act, rng.standard_normal(n) * math.sqrt(q))
        jac = (d[:, None] * w) @ jac
    return np.linalg.svd(jac, compute_uv=False) ** 2


@pytest.mark.parametrize("weights", ["gaussian", "orthogonal"])
def test_monte_carlo_nets_match_the_theory(weights):
    act, sb2 = "tanh", 1e-4
    sw2 = critical_sw2(act, sb2)
    q = fixed_point(act, sw2, sb2).q
    n, depth, nets = 400, 8, 16
    rng = np.random.default_rng(20240601 if weights == "gaussian" else 7)
    spectra = [_net_spectrum(rng, n, depth, act, sw2, q, weights) for _ in range(nets)]
    init = (("orthogonal", {"gain": math.sqrt(sw2)}) if weights == "orthogonal"
            else ("normal", {"std": math.sqrt(sw2 / n)}))
    th = jacobian_moments(n, depth, activation=act, init=init, bias_std=math.sqrt(sb2),
                          input_var=(q - sb2) / sw2).iloc[0]
    mean_th, nvar_th = 10.0 ** th.theory_log10_mean_sq_sv, th.theory_nvar

    # mean sigma^2 = tr(J J^T)/n is unbiased at any width (E[W M W^T] = sw2 tr(M)/n I
    # for both kinds), so only its spread across nets counts: 5 standard errors,
    # a two-sided false-alarm rate ~ 2e-4 (t with 15 degrees of freedom). Measured:
    # mean = 0.991 +- 0.007 (Gaussian), 0.996 +- 0.003 (orthogonal), theory 1.000.
    means = np.array([s.mean() for s in spectra])
    se = means.std(ddof=1) / math.sqrt(nets)
    assert abs(means.mean() - mean_th) < 5 * se
    # nvar: 5 standard errors plus its finite-width bias, O(nvar^2 / n) (measured
    # +0.07 at nvar 8.1 here, halving from n = 400 to 800; allowed nvar^2/n = 0.16).
    # Measured: 8.19 +- 0.05 vs 8.09 (Gaussian), 0.0927 +- 0.0008 vs 0.0917 (orthogonal)
    nvars = np.array([s.var() / s.mean() ** 2 for s in spectra])
    se = nvars.std(ddof=1) / math.sqrt(nets)
    assert abs(nvars.mean() - nvar_th) < 5 * se + nvar_th ** 2 / n
    # and the two kinds are far apart: dynamical isometry needs orthogonal weights
    assert (nvar_th < 0.1) == (weights == "orthogonal")

    # The whole law: two-sample Kolmogorov-Smirnov distance between the 6400
    # empirical log10 eigenvalues and 20000 draws from the predicted density.
    # Threshold: the i.i.d. critical value at false-alarm rate 1e-3,
    # 1.949 sqrt(1/6400 + 1/20000) = 0.028; eigenvalues of one matrix repel, so
    # their empirical CDF fluctuates less than i.i.d. draws and the rate is lower
    # still. Measured D = 0.004-0.014 over seeds; with the wrong weight kind
    # D = 0.75, with q* off by 2x (orthogonal) 0.45, with sw2 off by 1%
    # (orthogonal) 0.055-0.064, with the depth off by one 0.03-0.05 (caught only
    # marginally); sw2 off by 1% with Gaussian weights (D ~ 0.01) is not caught.
    df = jacobian_density(act, sw2, sb2, depth, weights=weights)
    assert df.attrs["theory_nvar"] == pytest.approx(nvar_th, rel=1e-9)
    y_emp = np.log10(np.concatenate(spectra))
    y_th = sample_jacobian_density(df, 20000, seed=1)
    stat = ks_2samp(y_emp, y_th).statistic
    assert stat < 1.949 * math.sqrt(1 / y_emp.size + 1 / y_th.size)


def test_sampling_follows_the_grid_cdf():
    df = jacobian_density("tanh", 1.5, 0.1, 3, weights="orthogonal")
    a = sample_jacobian_density(df, 50000, seed=3)
    np.testing.assert_array_equal(a, sample_jacobian_density(df, 50000, seed=3))
    y, dens = df["log10_sq_sv"].to_numpy(), df["density"].to_numpy()
    assert a.min() >= y[0] and a.max() <= y[-1]
    cdf = np.concatenate([[0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(y))])
    cdf /= cdf[-1]
    emp = np.searchsorted(np.sort(a), y, side="right") / a.size
    assert np.max(np.abs(emp - cdf)) < 1.95 / math.sqrt(a.size)   # KS, rate ~ 1e-3
    with pytest.raises(ValueError, match="columns"):
        sample_jacobian_density(df[["lambda"]], 10)
    with pytest.raises(ValueError, match="no continuous density"):
        sample_jacobian_density(jacobian_density("linear", 1.0, depth=2,
                                                 weights="orthogonal"), 10)


# ---------------------------------------------------------------------------
# Errors

def test_errors():
    with pytest.raises(ValueError, match="gaussian, orthogonal"):
        jacobian_density("tanh", 1.0, 0.1, 2, weights="haar")
    with pytest.raises(ValueError, match="sw2 must be > 0"):
        jacobian_density("tanh", 0.0, 0.1, 2)
    with pytest.raises(ValueError, match="collapses to 0; pass q"):
        jacobian_density("tanh", 0.8, 0.0, 2)
    with pytest.raises(ValueError, match="log10_range"):
        jacobian_density("tanh", 1.0, 0.1, 2, log10_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="unknown activation"):
        jacobian_density("tanhh", 1.0, 0.1, 2)
    kw = dict(activation="tanh", init="xavier_normal")
    for bad in ([0], [7], [1, 7], []):
        with pytest.raises(ValueError, match=r"depths"):
            jacobian_moments(8, 6, depths=bad, **kw)
    with pytest.raises(ValueError, match="uniform widths only"):
        jacobian_moments(widths=[8, 8, 16, 8], **kw)
    with pytest.raises(ValueError, match="uniform widths only"):
        jacobian_moments(widths=[4, 8, 8], **kw)
    for init in ("zeros", "constant:value=0.3"):
        with pytest.raises(ValueError, match="needs random weights.*he_normal.*orthogonal"):
            jacobian_moments(8, 3, activation="tanh", init=init)
