"""Comparisons the engine tests share: per-layer rows against a NumPy reference, and
two samples of nets tested for the same law."""
import numpy as np


def assert_rows_match(sim, reference, trials, what, rtol, atol):
    """Every column of reference(trial)'s per-layer dicts equals sim's rows of that trial."""
    for trial in range(trials):
        got = sim[sim.trial == trial].reset_index(drop=True)
        for l, row in enumerate(reference(trial)):
            for col, want in row.items():
                np.testing.assert_allclose(got[col].iloc[l], want, rtol=rtol, atol=atol,
                                           err_msg=f"{what} trial {trial} layer {l + 1} {col}")


def assert_same_law(a, b, layers, cols, family_alarm=0.01):
    """Per (layer, column), Welch's t-test on the means and Brown-Forsythe on the spreads
    of the nets in frames a and b; every p-value must exceed family_alarm / (number of
    tests), so a false alarm comes in at most family_alarm of runs (Bonferroni). Columns
    that are constant in both samples (an exact invariant) must agree to 1e-10."""
    from scipy import stats
    tests = []
    for layer in layers:
        for col in cols:
            u = a.loc[a.layer == layer, col].to_numpy()
            v = b.loc[b.layer == layer, col].to_numpy()
            if np.ptp(u) < 1e-12 and np.ptp(v) < 1e-12:
                np.testing.assert_allclose(u, v, rtol=1e-10)
                continue
            tests.append((layer, col, stats.ttest_ind(u, v, equal_var=False).pvalue,
                          stats.levene(u, v, center="median").pvalue))
    alarm = family_alarm / (2 * len(tests))
    for layer, col, p_mean, p_spread in tests:
        assert p_mean > alarm and p_spread > alarm, (layer, col, p_mean, p_spread)
