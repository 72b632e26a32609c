"""Session hooks: the corpus run (corpus.py) starts in the background when collection
finishes, if its tests were collected, so its cold compile (minutes, on one core)
overlaps the other tests. It computes the corpus under its CPU-independent settings
(corpus.canonical_env) with one thread and an empty Numba cache, to be compared with a
record made with two threads and every kernel cached.
"""
import shutil
import tempfile

import pytest

import corpus

CORPUS_MODULE = "test_corpus.py"
_RUN = {}


def _launch():
    tmp = tempfile.mkdtemp(prefix="winit-corpus-")
    _RUN["corpus"] = (corpus.start(tmp, threads=1, cache_dir=tmp + "/numba-cache"), tmp)
    return _RUN["corpus"]


def pytest_collection_finish(session):
    if any(item.path.name == CORPUS_MODULE for item in session.items):
        _launch()


def pytest_sessionfinish(session, exitstatus):
    for proc, tmp in _RUN.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def canonical_corpus():
    """(entries, machine) of the corpus computed under corpus.canonical_env."""
    proc, tmp = _RUN.get("corpus") or _launch()
    return corpus.load(proc, tmp)
