"""Users' recorded results reproduce: the corpus (see corpus.py) bit for bit.

The bits depend on the CPU LLVM compiles for (SIMD width changes how the fastmath
sums are vectorised) and on the BLAS kernel. On the machine kind the corpus was
recorded on, every entry must be identical, bit for bit. On another CPU the same
code still has to agree to rounding (rtol 1e-6), which is all that can be asked.
"""
import json

import numpy as np
import pytest

import corpus


@pytest.fixture(scope="module")
def fresh():
    return corpus.compute()


@pytest.fixture(scope="module")
def recorded():
    with np.load(corpus.CORPUS) as data:
        return {k: data[k] for k in data.files}


def _same_machine():
    with open(corpus.MACHINE, encoding="utf-8") as fh:
        return json.load(fh) == corpus.machine()


def test_corpus_has_every_entry(fresh, recorded):
    assert sorted(fresh) == sorted(recorded)


def test_corpus_reproduces(fresh, recorded):
    exact = _same_machine()
    bad = []
    for name, want in recorded.items():
        got = fresh[name]
        if got.shape != want.shape:
            bad.append(f"{name}: shape {got.shape} != {want.shape}")
        elif exact and got.tobytes() != want.tobytes():
            diff = np.nanmax(np.abs(got - want)) if got.size else 0.0
            bad.append(f"{name}: bits differ (max abs diff {diff:.3g})")
        elif not exact and not np.allclose(got, want, rtol=1e-6, atol=1e-9, equal_nan=True):
            bad.append(f"{name}: differs beyond rounding")
    assert not bad, "\n".join(bad)
