"""The conditional engine: NumPy reference, the conditioning identity, equivalence, errors."""
import math

import numpy as np
import pytest

import winit_sim as ws
from winit_sim import engine
from winit_sim.activations import resolve_activation, sup_dphi

import naive
from naive import reference_conditional
from stats_checks import assert_rows_match

ACTS = naive.example_specs()   # one per registry entry, parameters off their defaults


def _compare(widths, act, init, bias_std, batch, seed=4, rtol=1e-9, atol=1e-12):
    sim = ws.simulate(widths=widths, activation=act, init=init, batch=batch, bias_std=bias_std,
                      seed=seed, trials=2, method="conditional")
    stds = list(engine.describe(np.array(widths), act, init).scale)
    sup = sup_dphi(resolve_activation(act))
    assert_rows_match(sim, lambda trial: reference_conditional(
        widths, act, stds, bias_std, seed, trial, batch, sup), 2, act, rtol, atol)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias_std", [0.0, 0.3])
def test_kernel_matches_numpy_reference(act, bias_std):
    """Non-uniform widths, with and without biases, every activation."""
    _compare([30, 45, 20, 60, 25, 33], act, "xavier_normal", bias_std, batch=5)


@pytest.mark.parametrize("act, bias_std", [("relu", 0.0), ("tanh", 0.3), ("gelu", 0.0)])
def test_layers_wider_than_one_block_match_the_reference(act, bias_std):
    """Widths over the kernels' column block (512), with a partial last block: the
    per-block sums, their combination (Chan) and the per-block Gram scaling."""
    _compare([1100, 600, 1030, 513], act, "xavier_normal", bias_std, batch=3)


def test_large_batches_match_the_reference():
    """From blocks.BLAS_MIN_ROWS samples the backward's full block products are BLAS
    calls; batch 130 takes that path (and 130 > 60: rank-deficient Grams too)."""
    from winit_sim.kernels.blocks import BLAS_MIN_ROWS
    assert 130 >= BLAS_MIN_ROWS
    _compare([200, 150, 60, 170], "tanh", "xavier_normal", 0.3, batch=130)


def test_tiny_float32_signals_keep_their_gram():
    """tanh under a tiny init: the signal shrinks by ~e^-2.5 per layer, below float32's
    range (1e-38) long before the small-signal limit (e^-200) takes over. The float32
    run must follow the float64 one (the next layer's Gram is formed from y scaled by a
    power of two per block, so nothing underflows)."""
    kw = dict(width=700, depth=70, activation="tanh", init="normal:std=0.003", batch=4,
              trials=2, method="conditional")
    f64 = ws.simulate(dtype="float64", **kw)
    f32 = ws.simulate(dtype="float32", **kw)
    assert f64.log10_pre_q.iloc[69] < -60   # e^-150: float32 alone would hold 0
    assert np.isfinite(f32.log10_pre_q).all() and np.isfinite(f32.log10_grad_q).all()
    for col in ("log10_pre_q", "log10_post_q", "log10_grad_q", "log10_wgrad_q"):
        np.testing.assert_allclose(f32[col], f64[col], rtol=0, atol=1e-4, err_msg=col)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_rank_deficient_layers_match_the_reference(act):
    """Batch above some widths (G singular), width 1 layers, and relu rows of zeros.

    (Singular Grams amplify rounding: 1e-8 in log10 units here, 1e-9 relative for
    full-rank layers.)
    """
    _compare([3, 12, 2, 40, 1, 9], act, "he_normal", 0.0, batch=7, rtol=1e-7, atol=1e-8)
    _compare([3, 12, 2, 40, 1, 9], act, "he_normal", 0.2, batch=7, rtol=1e-7, atol=1e-8)


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
        rest = sw * rng.standard_normal((n_out, n_in + 1)) @ (np.eye(n_in + 1) - proj)
        w = h.T @ ginv @ xt + rest
        samples.append(w.ravel())
    np.testing.assert_allclose(xt @ w.T, h, atol=1e-12)
    s = np.array(samples)
    cov = np.cov(s[:, :2 * (n_in + 1)].T)   # two units' weights, bias column included
    assert np.abs(s.mean(axis=0)).max() < 5 * sw / math.sqrt(len(s))
    np.testing.assert_allclose(cov, sw ** 2 * np.eye(2 * (n_in + 1)), atol=6 * sw ** 2 *
                               math.sqrt(2 / len(s)))


STAT_COLS = ["pre_mean", "pre_var", "log10_pre_q", "log10_post_q", "frac_zero", "frac_saturated",
             "unit_var_ratio", "log10_grad_q", "log10_wgrad_q"]


@pytest.mark.parametrize("act, init, bias_std", [("relu", "he_normal", 0.0),
                                                 ("tanh", "xavier_normal", 0.1)])
def test_same_distribution_as_the_matrix_engine(act, init, bias_std):
    """Two-sample tests per column at layers 1, 10 and 20 of width-256 nets.

    1000 independent nets per engine (different seeds). Means: Welch's t-test;
    spreads: Brown-Forsythe (Levene about the median). Every p-value must
    exceed 0.01 / (number of tests) (Bonferroni: a false alarm in at most 1%
    of runs). Power: with 1000 nets each, a mean shift of 0.23 between-net
    standard deviations is detected with probability 0.9 at that threshold.
    """
    from scipy import stats
    kw = dict(activation=act, init=init, batch=8, trials=1000, bias_std=bias_std)
    a = ws.simulate(256, 20, method="matrix", seed=1, **kw)
    b = ws.simulate(256, 20, method="conditional", seed=2, **kw)
    pvalues = {}
    for layer in (1, 10, 20):
        for col in STAT_COLS:
            x = a.loc[a.layer == layer, col].to_numpy()
            y = b.loc[b.layer == layer, col].to_numpy()
            if np.ptp(x) == 0 and np.ptp(y) == 0:
                assert x[0] == y[0], (layer, col)   # e.g. frac_zero of tanh: always 0
                continue
            pvalues[(layer, col, "mean")] = stats.ttest_ind(x, y, equal_var=False).pvalue
            pvalues[(layer, col, "spread")] = stats.levene(x, y, center="median").pvalue
    worst = min(pvalues, key=pvalues.get)
    assert pvalues[worst] > 0.01 / len(pvalues), (worst, pvalues[worst])


@pytest.mark.parametrize("act, init, trials", [("relu", "he_normal", 128),
                                               ("tanh", "xavier_normal", 32)])
def test_width_100000_matches_mean_field(act, init, trials):
    """Mean over nets of q at depth 50 within 4 standard errors of mean field; SE < 0.5%.

    Two inputs per net: the spread of q over nets is nearly all between nets (their
    weights), so a batch of 8 measured the same SE for relu (0.377% against 0.380%) at
    four times the cost.
    """
    from winit_sim import theory
    df = ws.simulate(100_000, 50, activation=act, init=init, batch=2, trials=trials, seed=5,
                     backward=False, method="conditional")
    q = 10 ** df.loc[df.layer == 50, "log10_pre_q"].to_numpy()
    pred = theory.predict(100_000, 50, activation=act, init=init)
    want = 10 ** pred["theory_log10_pre_q"].iloc[-1]
    se = q.std(ddof=1) / math.sqrt(trials)
    assert se < 0.005 * want
    assert abs(q.mean() - want) < 4 * se, (q.mean(), want, se)


def test_auto_picks_conditional_only_where_it_is_exact_and_faster():
    widths = np.array([256, 256])

    def choose(init, rows):
        return engine.choose_method("auto", init, engine.describe(widths, "relu", init), rows)
    assert choose("he_normal", 32) == "conditional"
    assert choose("he_normal", 33) == "matrix"
    # large batches: the conditional engine from width / batch = 4 (Gaussian MLPs only)
    wide = np.array([1024, 1024, 512])
    assert engine.choose_method("auto", "he_normal", engine.describe(wide, "relu", "he_normal"),
                                128) == "conditional"
    assert engine.choose_method("auto", "he_normal", engine.describe(wide, "relu", "he_normal"),
                                129) == "matrix"
    assert engine.choose_method("auto", "orthogonal", engine.describe(wide, "relu", "orthogonal"),
                                128) == "matrix"
    assert choose("he_normal", 64) == "matrix"   # width / batch = 4 below the large batches
    assert choose("he_uniform", 8) == "matrix"
    assert choose("normal:std=0", 8) == "matrix"
    # a conditional sweep cell equals simulate with the cell's seed and the same engine
    # (relu's cell runs the sweep's general variant, simulate's the pruned one)
    df = ws.sweep([64], [5], ["tanh", "relu"], ["xavier_normal"], batch=4, trials=2, seed=3,
                  method="conditional", progress=False)
    for act in ("tanh", "relu"):
        ref = ws.simulate(64, 5, activation=act, init="xavier_normal", batch=4, trials=2,
                          seed=ws.seed_of_cell(3, 64, act, "xavier_normal"),
                          method="conditional")
        got = df[df.activation == act].drop(columns=["width", "depth", "activation", "init",
                                                     "arch"]).reset_index(drop=True)
        assert got.equals(ref)


@pytest.mark.parametrize("init", ["he_uniform", "constant", "zeros", "normal:std=0",
                                  "orthogonal:gain=0"])
def test_conditional_refuses_other_schemes(init):
    with pytest.raises(ValueError, match="method='conditional' needs Gaussian or orthogonal "
                                         "weights"):
        ws.simulate(64, 3, init=init, batch=4, method="conditional")


def test_conditional_orthogonal_needs_a_wide_enough_frame():
    with pytest.raises(ValueError, match="2 x batch <= the narrowest layer"):
        ws.simulate(widths=[64, 64, 12, 64], init="orthogonal", batch=8, method="conditional")


def test_bad_method_is_named():
    with pytest.raises(ValueError, match="method must be one of auto, matrix, conditional"):
        ws.simulate(64, 3, method="fast")
    with pytest.raises(ValueError, match="method must be one of"):
        ws.sweep([8], [2], ["relu"], ["he_normal"], method="exact", progress=False)
    from winit_sim.cli import main
    assert main(["run", "--width", "8", "--depth", "2", "--method", "conditional",
                 "--init", "he_uniform"]) == 2


@pytest.mark.parametrize("act, bias_std, widths", [
    ("tanh", 0.2, [20, 33, 7, 41, 33, 16]), ("relu", 0.0, [20, 33, 7, 41, 33, 16]),
    ("gelu", 0.1, [700, 1030, 9, 513, 1100, 40])])   # several column blocks, partial ones
def test_kept_and_regenerated_layers_give_the_same_bits(act, bias_std, widths):
    """Small nets keep pre-activations for the backward pass, large ones regenerate them."""
    widths = np.array(widths, dtype=np.int64)
    net = engine.describe(widths, act, "lecun_normal", bias_std)
    plan = engine.plan(net, "lecun_normal", 6, "float64", method="conditional")
    runs = [engine.execute(plan._replace(keep=keep), act, 9, 2, [2, 5]) for keep in (True, False)]
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def _crout(g, pivot):
    """The textbook (Crout) Cholesky loop in plain Python floats; None below the pivot."""
    n = g.shape[0]
    top = max(g[i, i] for i in range(n))
    f = [[0.0] * n for _ in range(n)]
    for j in range(n):
        s = float(g[j, j])
        for k in range(j):
            s -= f[j][k] * f[j][k]
        if not s > pivot * top:
            return None
        f[j][j] = math.sqrt(s)
        for i in range(j + 1, n):
            v = float(g[i, j])
            for k in range(j):
                v -= f[i][k] * f[j][k]
            f[i][j] = v / f[j][j]
    return np.array(f)


@pytest.mark.parametrize("rows", [1, 4, 5, 40, 130])
def test_cholesky_is_the_crout_loop_bit_for_bit(rows):
    """The kernel's right-looking Cholesky performs the Crout loop's operations in the same
    order: the same bits; a Gram below the pivot threshold is refused by both."""
    from winit_sim.kernels import blocks
    rng = np.random.default_rng(rows)
    a = rng.standard_normal((rows, rows + 3))
    g = a @ a.T / rows
    f = np.empty((rows, rows))
    assert blocks._cholesky(g, f)
    assert f.tobytes() == _crout(g, blocks.CHOL_PIVOT).tobytes()
    if rows > 1:
        low = a[:, :rows - 1]
        singular = low @ low.T
        assert _crout(singular, blocks.CHOL_PIVOT) is None
        assert not blocks._cholesky(singular, f)


def _forward_substitution(f):
    """L^-1 of a lower-triangular f, one earlier row at a time, in plain Python floats."""
    n = f.shape[0]
    inv = [[0.0] * n for _ in range(n)]
    for i in range(n):
        inv[i][i] = 1.0
        for k in range(i):
            c = float(f[i, k])
            if c != 0.0:
                for j in range(k + 1):
                    inv[i][j] -= c * inv[k][j]
        for j in range(i + 1):
            inv[i][j] /= float(f[i, i])
    return np.array(inv)


@pytest.mark.parametrize("rows", [1, 3, 4, 9, 130])
def test_lower_inverse_is_forward_substitution_bit_for_bit(rows):
    """The kernel's four-rows-at-a-time inverse performs forward substitution's operations
    in the same order, zero coefficients included: the same bits, and L L^-1 = I."""
    from winit_sim.kernels import blocks
    rng = np.random.default_rng(rows)
    a = rng.standard_normal((rows, rows + 3))
    f = np.linalg.cholesky(a @ a.T)
    if rows > 8:
        f[7, 2:6] = 0.0   # a skipped group of four
        f[8, 1] = 0.0
    inv = blocks.lower_inverse(f)
    assert inv.tobytes() == _forward_substitution(f).tobytes()
    np.testing.assert_allclose(f @ inv, np.eye(rows), atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mix_block_is_mix_row_bit_for_bit(dtype):
    """The four-rows-at-a-time product gives every entry _mix_row's bits: every block width
    up to 79 (both sides of MIX_MIN_COLUMNS, with vector remainders), row counts that
    leave 1 to 3 rows over, offsets into wider sources, a triangular factor (skipped
    groups) and a dead sample's zero row; and every entry is coef @ src (NumPy, float64)
    added to what was there, columns outside the block untouched."""
    from winit_sim.kernels import blocks
    rng = np.random.default_rng(7)
    for rows in (4, 7, 13):
        coef = np.tril(rng.standard_normal((rows, rows)))
        coef[2] = 0.0
        for m in range(1, 80):
            src = rng.standard_normal((rows, m + 9)).astype(dtype)
            row_by_row = rng.standard_normal((rows, m + 5)).astype(dtype)
            four_rows = row_by_row.copy()
            for i in range(rows):
                blocks._mix_row(row_by_row[i, 3:3 + m], coef[i], src, 9)
            start = four_rows.astype(np.float64)
            blocks._mix_block(four_rows, 3, 3 + m, coef, src, 9)
            assert four_rows.tobytes() == row_by_row.tobytes(), (rows, m)
            # and it is the product: NumPy in float64 on the same inputs
            want = start[:, 3:3 + m] + coef @ src[:, 9:9 + m].astype(np.float64)
            tol = 1e-12 if dtype == np.float64 else 2e-5
            np.testing.assert_allclose(four_rows[:, 3:3 + m], want, rtol=tol, atol=tol * 10)
            np.testing.assert_array_equal(four_rows[:, :3], start[:, :3].astype(dtype))
