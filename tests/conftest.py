"""Session hooks: the subprocess runs start in the background when collection finishes,
if their tests were collected, so their cold compiles (minutes, on one core) overlap
the other tests:

* the determinism check's first uncached run (determinism_runs), on this machine's CPU;
* the corpus (corpus.py), computed under its CPU-independent settings
  (corpus.canonical_env) with one thread and an empty Numba cache, to be compared with
  a record made with two threads and every kernel cached.
"""
import shutil
import tempfile

import pytest

import corpus
import determinism_runs

UNCACHED_TEST = "test_bit_identical_for_1_and_2_threads_and_a_first_uncached_run"
CORPUS_MODULE = "test_corpus.py"
_RUNS = {}


def _launch(name):
    tmp = tempfile.mkdtemp(prefix=f"winit-{name}-")
    if name == "uncached":
        proc = determinism_runs.start(1, tmp + "/numba-cache")
    else:
        proc = corpus.start(tmp, threads=1, cache_dir=tmp + "/numba-cache")
    _RUNS[name] = (proc, tmp)
    return _RUNS[name]


def pytest_collection_finish(session):
    if any(item.path.name == CORPUS_MODULE for item in session.items):
        _launch("corpus")
    if any(item.name == UNCACHED_TEST for item in session.items):
        _launch("uncached")


def pytest_sessionfinish(session, exitstatus):
    for proc, tmp in _RUNS.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def uncached_digest():
    """The digest of the one-thread run with an empty Numba cache."""
    proc, _ = _RUNS.get("uncached") or _launch("uncached")
    return determinism_runs.digest(proc)


@pytest.fixture(scope="session")
def canonical_corpus():
    """(entries, machine) of the corpus computed under corpus.canonical_env."""
    proc, tmp = _RUNS.get("corpus") or _launch("corpus")
    return corpus.load(proc, tmp)
