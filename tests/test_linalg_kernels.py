"""The spectra's block linear algebra against NumPy, and its thread-count contract.

Each kernel splits its work into fixed blocks (never by the thread count) and calls
single-threaded BLAS/LAPACK on them; the references here are plain NumPy products,
NumPy's QR and SVD, and Householder reflectors applied one at a time.
"""
import numpy as np
import pytest
from numba import njit

import winit_sim as ws
from winit_sim.kernels import blocks, householder, spectrum
from winit_sim.kernels import rng as krng

from naive import reflector_product
from test_spectrum import _explicit_jacobians, _sv


@njit
def _gemm_into_block(alpha, a, ta, b, tb, beta, c, r0, c0, ncols):
    blocks.gemm(alpha, a, ta, b, tb, beta, c[r0:, c0:c0 + ncols])


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_gemm_on_strided_blocks(ta, tb):
    """c = alpha op(a) op(b) + beta c on blocks of larger arrays (row strides that are
    not the row length), every transpose flag."""
    g = np.random.default_rng(1)
    a = g.standard_normal((5, 7) if ta else (7, 5))
    big = g.standard_normal((20, 30))
    b = big[2:13, 3:8] if tb else big[3:8, 2:13]
    c = g.standard_normal((12, 20))
    want = c.copy()
    op_a, op_b = (a.T if ta else a), (b.T if tb else b)
    want[5:, 4:15] = -1.5 * op_a @ op_b + 0.5 * c[5:, 4:15]
    _gemm_into_block(-1.5, a, ta, b, tb, 0.5, c, 5, 4, 11)
    np.testing.assert_allclose(c, want, rtol=0, atol=1e-13)


@pytest.mark.parametrize("r, k, n", [(1, 1, 3), (3, 5, 2), (7, 7, 7), (300, 450, 130)])
def test_upper_rows_dot(r, k, n):
    """a @ b for an upper-triangular a, on blocks of unequal row counts; the same bits on
    one and two threads."""
    from winit_sim import engine
    g = np.random.default_rng(2)
    a = np.triu(g.standard_normal((r, k)))
    b = g.standard_normal((k, n))
    got = []
    for threads in (1, 2):
        out = np.full((r, n), np.nan)
        with engine.threads(threads):
            blocks.upper_rows_dot(a, b, out)
        got.append(out)
    assert np.array_equal(got[0], got[1])
    np.testing.assert_allclose(got[0], a @ b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fo, fi, r", [(300, 200, 130), (200, 300, 300), (400, 400, 600),
                                       (7, 5, 1)])
def test_times_columns_applies_w(fo, fi, r):
    """W @ cols without forming W (several 128-reflector panels and 256-column blocks,
    tall and wide W), and W itself from the identity marker (no rows)."""
    key = np.uint64(krng.stream_key(4, 0, 2, krng.STREAM_WEIGHT))
    w = reflector_product(fo, fi, 1.3, key)
    cols = np.random.default_rng(3).standard_normal((fi, r))
    wide = householder.wide_panels(key, fo, fi)
    out = np.empty((fo, r))
    householder.times_columns(1.3, wide, cols, out)
    np.testing.assert_allclose(out, w @ cols, rtol=0, atol=1e-12)
    formed = np.empty((fo, fi))
    householder.times_columns(1.3, wide, np.empty((0, fi)), formed)
    np.testing.assert_allclose(formed, w, rtol=0, atol=1e-13)


@pytest.mark.parametrize("m, k", [(600, 450), (450, 600), (300, 300), (3, 5), (70, 1)])
def test_qr_columns_against_numpy(m, k):
    """Q R = A, Q orthonormal, R upper triangular with NumPy's |R|."""
    a = np.random.default_rng(4).standard_normal((m, k))
    q, r = householder.qr_columns(a.T.copy())     # overwritten
    kk = min(m, k)
    assert q.shape == (m, kk) and r.shape == (kk, k)
    np.testing.assert_allclose(q @ r, a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(q.T @ q, np.eye(kk), rtol=0, atol=1e-13)
    assert not np.any(np.tril(r, -1))
    np.testing.assert_allclose(np.abs(r), np.abs(np.linalg.qr(a)[1]), rtol=0, atol=1e-11)


def test_compress_keeps_the_singular_values():
    """T (k x n, k < n) -> L (k x k): diag(e^s) T and diag(e^s) L have the same values."""
    g = np.random.default_rng(5)
    t = g.standard_normal((40, 130))
    s = -np.linspace(0.0, 3.0, 40)
    low = spectrum.compress(t)
    assert low.shape == (40, 40)
    sv = np.linalg.svd(np.exp(s)[:, None] * t, compute_uv=False)
    np.testing.assert_allclose(np.linalg.svd(np.exp(s)[:, None] * low, compute_uv=False), sv,
                               rtol=1e-12)


def test_block_jacobi_meets_every_pair():
    """The circle method pairs every two Jacobi blocks once per sweep, each block once
    per round."""
    nb = spectrum._JACOBI_BLOCKS
    met = set()
    for rnd in range(nb - 1):
        pairs = [spectrum._block_pair(i, rnd) for i in range(nb // 2)]
        assert sorted(b for p in pairs for b in p) == list(range(nb))
        met |= {tuple(sorted(p)) for p in pairs}
    assert len(met) == nb * (nb - 1) // 2


@pytest.mark.parametrize("activation, init", [("relu", "he_normal"), ("tanh", "orthogonal"),
                                              ("relu", "orthogonal:gain=1.4")])
def test_spectrum_bits_do_not_depend_on_threads(activation, init):
    """At width 300 every blocked kernel runs several blocks (QR panels, reflector panels,
    column blocks, Jacobi blocks, the identity's balanced order): one and two threads
    give the same bits, and the values match a direct SVD of the explicit product."""
    kw = dict(activation=activation, init=init, depths=[1, 3], seed=3)
    one = ws.jacobian_spectrum(300, 3, threads=1, **kw)
    two = ws.jacobian_spectrum(300, 3, threads=2, **kw)
    assert np.array_equal(one["log10_sv"].to_numpy(), two["log10_sv"].to_numpy(),
                          equal_nan=True)
    for d, jac in _explicit_jacobians([300] * 4, activation, init, [1, 3], seed=3).items():
        ref = np.linalg.svd(jac, compute_uv=False)
        ours = 10.0 ** _sv(one, d)
        sure = ref >= 1e-7 * ref[0]
        np.testing.assert_allclose(ours[sure], ref[sure], rtol=1e-8, atol=0)


def test_block_jacobi_bits_do_not_depend_on_threads():
    """The block-parallel Jacobi on a graded matrix spanning 12 decades: the same bits on
    one and two threads, and NumPy's values where NumPy is accurate (its top 4 decades)."""
    from winit_sim import engine
    g = np.random.default_rng(6)
    k = 200
    t = g.standard_normal((k, k)) / np.sqrt(k)
    s = -np.linspace(0.0, 12.0 * np.log(10.0), k)
    got = []
    for threads in (1, 2):
        out = np.empty(k)
        with engine.threads(threads):
            sweeps = spectrum.log_singular_values(t, s, out)
        assert 0 < sweeps <= spectrum.JACOBI_MAX_SWEEPS
        got.append(out)
    assert np.array_equal(got[0], got[1])
    ref = np.log(np.linalg.svd(np.exp(s)[:, None] * t, compute_uv=False))
    sure = ref >= ref[0] - 4.0 * np.log(10.0)
    np.testing.assert_allclose(got[0][sure], ref[sure], rtol=0, atol=1e-11)
