"""Users' recorded results reproduce: the corpus (see corpus.py) bit for bit.

The corpus is computed under settings that make its bits independent of the CPU
(corpus.canonical_env), so on any machine with the recorded architecture and
library versions every entry must be identical, bit for bit. With other versions
(a newer numba or NumPy) the same code still has to agree to rounding (rtol 1e-6),
which is all that can be asked; re-record then, and say so.
"""
import json

import numpy as np
import pytest

import corpus


@pytest.fixture(scope="module")
def recorded():
    with np.load(corpus.CORPUS) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def recorded_machine():
    with open(corpus.MACHINE, encoding="utf-8") as fh:
        return json.load(fh)


def test_corpus_has_every_entry(canonical_corpus, recorded):
    assert sorted(canonical_corpus[0]) == sorted(recorded)


def test_corpus_reproduces(canonical_corpus, recorded, recorded_machine):
    fresh, info = canonical_corpus
    exact = info == recorded_machine
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
