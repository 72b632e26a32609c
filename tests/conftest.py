"""Session hooks: the determinism check's first uncached run (determinism_runs) starts in
the background when collection finishes, if that test was collected, so its cold compile
overlaps the other tests."""
import shutil
import tempfile

import pytest

import determinism_runs

UNCACHED_TEST = "test_bit_identical_for_1_and_2_threads_and_a_first_uncached_run"
_RUN = {}


def _launch():
    _RUN["dir"] = tempfile.mkdtemp(prefix="winit-uncached-")
    _RUN["proc"] = determinism_runs.start(1, _RUN["dir"] + "/numba-cache")


def pytest_collection_finish(session):
    if any(item.name == UNCACHED_TEST for item in session.items):
        _launch()


def pytest_sessionfinish(session, exitstatus):
    proc = _RUN.get("proc")
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.communicate()
    if "dir" in _RUN:
        shutil.rmtree(_RUN["dir"], ignore_errors=True)


@pytest.fixture
def uncached_digest():
    """The digest of the one-thread run with an empty Numba cache."""
    if "proc" not in _RUN:
        _launch()
    return determinism_runs.digest(_RUN["proc"])
