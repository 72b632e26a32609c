"""Session settings and hooks: one cold compile of every kernel for the whole suite.

Nearly all of a cold run's time is Numba compiling kernels, so the suite compiles each
kernel once and shares it:

* Every test process (pytest-xdist's two workers, and the notebook kernels, CLI runs and
  Dask workers they start, which inherit this environment) compiles for LLVM's generic
  x86-64 CPU, as the corpus must (``corpus.canonical_env``), into one Numba cache of the
  session's own, made empty here (unless NUMBA_CACHE_DIR is set: then that one, for a
  warm rerun of a few tests). Numba's cache keys a kernel by the CPU it was compiled
  for, so the corpus and every test process load each other's kernels instead of
  compiling them twice, for this machine's CPU and for the generic one. A user's run
  compiles the same kernels for the host CPU; only the vector width LLVM picks differs.
* The corpus runs once the modules that compile most have run (:data:`ORDER`), from the
  kernels this session compiled cold, with one thread, and must give the bits of the
  record (two threads, every kernel cached). Kernels it needs that are not compiled yet,
  it compiles itself.
* Two workers share two cores, so a test runs with one Numba and one BLAS thread unless it
  asks for more (``threads=2``), and OpenMP threads sleep while they wait
  (``OMP_WAIT_POLICY=PASSIVE``). Spinning, a parallel kernel's threads wait at every
  barrier for a thread of theirs that another process holds off the core: a notebook
  took 138 s beside a CLI sweep instead of 12 s alone.
* Whole modules run per worker (``--dist loadscope``), so that a module's kernels are
  compiled by one worker, in :data:`ORDER`: those that compile most first; then the
  corpus and the modules whose subprocesses (notebook kernels, CLI runs, Dask workers)
  would each compile what they call, once the cache holds it; the short modules last, so
  that the two workers finish together.
"""
import os
import shutil
import tempfile

# before NumPy, Numba or torch is imported (here, in the workers, and in every process
# the tests start)
os.environ.setdefault("NUMBA_CPU_NAME", "generic")
os.environ.setdefault("NUMBA_CPU_FEATURES", "")
if "NUMBA_CACHE_DIR" not in os.environ:   # the first process of the session: make it
    _OWN_CACHE = os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="winit-tests-numba-")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

import corpus  # noqa: E402

CORPUS_MODULE = "test_corpus.py"
# the modules in the order they are handed to the workers; any other module runs last
ORDER = ("test_residual.py", "test_spectrum.py", "test_conditional.py", "test_determinism.py",
         "test_orthogonal.py", "test_reference.py", "test_sweep.py", "test_theory.py",
         "test_train.py", "test_spectrum_theory.py", "test_torch_bridge.py", CORPUS_MODULE,
         "test_notebook.py", "test_cli.py", "test_cluster.py")
_RUNS = {}


def pytest_configure(config):
    import numba
    numba.set_num_threads(1)


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = item.path.name
        return ORDER.index(name) if name in ORDER else len(ORDER)
    items.sort(key=rank)   # stable: collection order within a module and among the rest


def pytest_sessionfinish(session, exitstatus):
    for proc, tmp in _RUNS.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        shutil.rmtree(tmp, ignore_errors=True)


def pytest_unconfigure(config):
    if "_OWN_CACHE" in globals():   # only the process that made it (xdist's controller)
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def canonical_corpus():
    """(entries, machine) of the corpus computed under corpus.canonical_env, one thread."""
    if "corpus" not in _RUNS:
        tmp = tempfile.mkdtemp(prefix="winit-corpus-")
        _RUNS["corpus"] = (corpus.start(tmp, threads=1), tmp)
    proc, tmp = _RUNS["corpus"]
    return corpus.load(proc, tmp)
