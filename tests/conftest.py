"""Session hooks: the corpus (corpus.py) starts in the background when collection
finishes, if its test was collected, so that its cold compile (minutes, on one core)
overlaps the other tests. It is computed under its CPU-independent settings
(corpus.canonical_env) with one thread and an empty Numba cache, to be compared with a
record made with two threads and every kernel cached: that is the check that neither
the thread count nor compiling a kernel with its callers in view changes a bit.
"""
import shutil
import tempfile

import pytest

import corpus

CORPUS_MODULE = "test_corpus.py"
_RUNS = {}


def _launch(name):
    tmp = tempfile.mkdtemp(prefix=f"winit-{name}-")
    proc = corpus.start(tmp, threads=1, cache_dir=tmp + "/numba-cache")
    _RUNS[name] = (proc, tmp)
    return _RUNS[name]


def pytest_collection_finish(session):
    if any(item.path.name == CORPUS_MODULE for item in session.items):
        _launch("corpus")


def pytest_sessionfinish(session, exitstatus):
    for proc, tmp in _RUNS.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def canonical_corpus():
    """(entries, machine) of the corpus computed under corpus.canonical_env."""
    proc, tmp = _RUNS.get("corpus") or _launch("corpus")
    return corpus.load(proc, tmp)
