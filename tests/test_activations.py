"""Every activation of the registry: formulas vs NumPy/SciPy, phi' vs finite differences,
the large/small-signal limits, metadata, and coverage by kernel, theory and reference.

The parametrization is the registry itself (``naive.example_specs``): a new entry is
tested here at once, and fails loudly where any piece is missing.
"""
import math

import numpy as np
import pytest

import winit_sim as ws
from winit_sim import theory
from winit_sim.activations import ACTIVATIONS, kernel_data, resolve_activation, sup_dphi
from winit_sim.kernels import elementwise

import naive

SPECS = naive.example_specs()
H = np.concatenate([np.linspace(-30.0, 30.0, 1201), [-1e-9, 1e-12, 3e-7]])


def _limits(spec, z):
    data = kernel_data(spec)
    large, small = np.empty((z.size, 3)), np.empty((z.size, 2))
    elementwise.eval_limits(data.code, data.param, z, large, small)
    return large, small


def test_every_entry_is_covered_by_kernel_theory_and_reference():
    z = np.linspace(-3.0, 3.0, 13)
    for spec in SPECS:
        name = resolve_activation(spec).name
        assert name in naive.NAIVE, f"{name}: no NumPy reference formula in tests/naive.py"
        assert np.all(np.isfinite(ws.phi(spec, z))), f"{name}: no phi branch in the kernel"
        assert np.all(np.isfinite(ws.dphi(spec, z))), f"{name}: no phi' branch in the kernel"
        large, small = _limits(spec, z)
        assert np.all(np.isfinite(large)), f"{name}: no large-signal limit in the kernel"
        assert np.all(np.isfinite(small)), f"{name}: no small-signal limit in the kernel"
        for log_q in (-900.0, -5.0, 0.0, 5.0, 900.0):
            assert not any(math.isnan(v) for v in theory.log_moments(spec, log_q)), \
                f"{name}: theory log_moments at log q = {log_q}"
    assert sorted(naive.NAIVE) == sorted(ACTIVATIONS.names())


def test_an_unknown_code_is_an_error_never_another_activation():
    out = np.empty(3)
    with pytest.raises(ValueError, match="unknown activation code"):
        elementwise.eval_phi(len(ACTIVATIONS.names()), 0.0, np.zeros(3), out)
    with pytest.raises(ValueError, match="unknown activation"):
        ws.phi("softsign", np.zeros(3))


@pytest.mark.parametrize("spec", SPECS)
def test_phi_and_dphi_match_numpy_and_scipy(spec):
    np.testing.assert_allclose(ws.phi(spec, H), naive.phi(spec, H), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(ws.dphi(spec, H), naive.dphi(spec, H), rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("spec", SPECS)
def test_dphi_is_the_derivative_of_phi(spec):
    """Central differences of the kernel's phi, away from the kink at 0 (error O(e^2))."""
    h = H[np.abs(H) > 1e-3]
    e = 1e-5
    fd = (ws.phi(spec, h + e) - ws.phi(spec, h - e)) / (2 * e)
    np.testing.assert_allclose(ws.dphi(spec, h), fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("spec", SPECS)
def test_large_and_small_signal_limits_match_phi_at_the_range_ends(spec):
    """phi(c h) = c * growing + bounded (+ o(1)) and phi'(c h) -> its limit as c -> inf;
    (phi(c h) - phi(0)) / c -> value and phi'(c h) -> its limit as c -> 0."""
    z = np.array([-2.5, -1.0, -0.3, 0.4, 1.0, 3.0])
    large, small = _limits(spec, z)
    c = 1e4
    np.testing.assert_allclose(naive.phi(spec, c * z), c * large[:, 0] + large[:, 1],
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(naive.dphi(spec, c * z), large[:, 2], atol=1e-9)
    c = 1e-7
    phi0 = naive.phi(spec, np.zeros(1))[0]
    np.testing.assert_allclose((naive.phi(spec, c * z) - phi0) / c, small[:, 0], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(naive.dphi(spec, c * z), small[:, 1], rtol=1e-5, atol=1e-6)
    # at h = 0 the large-signal limit keeps phi(0) as its bounded part
    large0, _ = _limits(spec, np.zeros(1))
    assert large0[0, 0] == 0.0 and large0[0, 1] == pytest.approx(phi0, abs=1e-15)


@pytest.mark.parametrize("spec", SPECS)
def test_metadata_phi0_homogeneity_and_sup_dphi(spec):
    s = resolve_activation(spec)
    data = kernel_data(s)
    assert data.phi0 == pytest.approx(naive.phi(s, np.zeros(1))[0], abs=1e-15)
    h = np.linspace(-5, 5, 101)
    homog = np.allclose(naive.phi(s, 3.7 * h), 3.7 * naive.phi(s, h), rtol=1e-13, atol=1e-13)
    assert data.homogeneous == homog
    grid = np.linspace(-20.0, 20.0, 400001)
    dense = np.max(np.abs(naive.dphi(s, grid)))
    assert sup_dphi(s) == pytest.approx(dense, rel=1e-9)
    assert data.sat_thr == pytest.approx(0.01 * dense, rel=1e-9)


def test_softplus():
    """The entry added through the seam: its values, its parameter, and theory beside."""
    assert ws.phi("softplus", [0.0])[0] == pytest.approx(math.log(2.0), rel=1e-15)
    assert ws.phi("softplus:beta=2", [1.0])[0] == pytest.approx(math.log1p(math.e ** 2) / 2)
    assert ws.phi("softplus", [800.0])[0] == 800.0 and ws.phi("softplus", [-800.0])[0] == 0.0
    with pytest.raises(ValueError, match="beta"):
        resolve_activation("softplus:beta=0")
    # deep, through both ends of the log-scale (the limits carry phi(0) = log 2 / beta)
    for init in ("large", "small"):
        df = ws.simulate(64, 2000, activation="softplus:beta=1.5", init=init, batch=4)
        assert np.all(np.isfinite(df[["log10_pre_q", "log10_post_q", "log10_grad_q"]]))
    # (simulation vs mean field: tests/test_theory.py, with the other activations)


@pytest.mark.parametrize("spec", SPECS)
def test_homogeneous_kernels_compile_their_formulas_only_at_the_same_bits(spec):
    """A homogeneous activation's kernels (``scale_dependent`` None) compile only the
    homogeneous formulas. They give the general kernel's bits, and the NumPy reference's
    values; every homogeneous entry has its branch there (no NaN)."""
    from winit_sim.kernels import layer

    data = kernel_data(spec)
    assert (data.scale_dependent is None) == data.homogeneous
    if not data.homogeneous:
        return
    h = np.concatenate([H, [0.0, -0.0, 5e-324, -5e-324, 1e300, -1e300]])
    outs = []
    for scale_dependent in (None, True):
        y, d = np.empty_like(h), np.empty_like(h)
        layer._activate_block(data, scale_dependent, h, 0.0, layer.HOMOG, y, d)
        outs.append((y, d))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    s = resolve_activation(spec)
    np.testing.assert_allclose(outs[0][0], naive.phi(s, h), rtol=1e-15, atol=0)
    np.testing.assert_allclose(outs[0][1], naive.dphi(s, h), rtol=1e-15, atol=0)
