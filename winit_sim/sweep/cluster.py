"""Sweeps on a Dask cluster: one task per (width, activation, init) net.

Optional: needs ``dask[distributed]`` (``pip install -e ".[dask]"``). Nothing
else in winit_sim imports Dask; :func:`winit_sim.sweep` comes here only when it
is given a ``scheduler``, and hands in the task function (no import cycle).

A task is the unit the results directory stores: one net of the grid's deepest
depth, whose single forward pass gives every depth's cells. Its numbers are
those of the in-process run, bit for bit: the net's seed depends only on
(seed, width, activation, init) and the kernels give the same bits for any
thread count. A worker runs one net at a time with as many Numba threads as
Dask gave it (``--nthreads``), so several tasks never share its cores.
"""
import contextlib
import os
import re
import threading
import time
import uuid

import numba

from .. import engine
from ..cache import SOURCE_DIGEST
from ..checks import check_positive_int

LOCAL = "local"
CONNECT_TIMEOUT = "30s"   # reaching a remote scheduler
WORKER_WAIT = 120         # seconds to wait for a first worker to join a remote scheduler
_ADDRESS = re.compile(r"[A-Za-z0-9+]+://\S+|[A-Za-z0-9_.\-]+:\d+|\[[0-9A-Fa-f:]+\]:\d+")
_ONE_NET_AT_A_TIME = threading.Lock()   # per worker process: its threads go to one net


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError("a sweep on a cluster (scheduler=...) needs Dask distributed: "
                          "pip install -e '.[dask]'  (or: pip install 'dask[distributed]')"
                          ) from None
    return distributed


def check_scheduler(scheduler, workers=None, threads=None):
    """Validate ``scheduler`` and ``workers`` before anything runs.

    Returns them normalised: ``(None, None)`` for the in-process run,
    ``("local", n or None)``, ``(address, None)`` or ``(client, None)``.
    """
    if scheduler is None:
        if workers is not None:
            raise ValueError("workers sets the size of scheduler='local' (a Dask LocalCluster "
                             "on this machine); give scheduler='local' too")
        return None, None
    if threads is not None:
        raise ValueError("threads applies to the in-process run; on a cluster every worker "
                         "uses the threads Dask gave it (dask worker --nthreads)")
    if isinstance(scheduler, str):
        if scheduler == LOCAL:
            return LOCAL, None if workers is None else check_positive_int(workers, "workers")
        if not _ADDRESS.fullmatch(scheduler):
            raise ValueError(f"scheduler must be 'local', a scheduler address such as "
                             f"'tcp://host:8786', or a dask.distributed.Client; got {scheduler!r}")
        if workers is not None:
            raise ValueError("workers applies only to scheduler='local'; a running cluster has "
                             "the workers its `dask worker` commands started")
        return scheduler, None
    distributed = _distributed()
    if isinstance(scheduler, distributed.Client):
        if workers is not None:
            raise ValueError("workers applies only to scheduler='local', not to a Client")
        return scheduler, None
    raise TypeError(f"scheduler must be None, 'local', an address such as 'tcp://host:8786', "
                    f"or a dask.distributed.Client; got {type(scheduler).__name__}")


@contextlib.contextmanager
def connect(scheduler, workers=None):
    """A Client for a checked ``scheduler``; closes only what it opened."""
    distributed = _distributed()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if scheduler == LOCAL:
        cores = os.cpu_count() or 1
        n = workers or cores
        with distributed.LocalCluster(n_workers=n, threads_per_worker=max(1, cores // n),
                                      processes=True, dashboard_address=":0") as cluster, \
                distributed.Client(cluster) as client:
            yield client
        return
    try:
        client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); start "
                              f"one with `dask scheduler` and workers with `dask worker "
                              f"{scheduler}`") from None
    with client:
        yield client


def _worker_report(grid, check):
    """On a worker: its winit_sim source digest, and why ``check(grid)`` refuses, if so."""
    try:
        check(grid)
    except ValueError as exc:
        return SOURCE_DIGEST, str(exc)
    return SOURCE_DIGEST, None


def _check_workers(client, grid, check):
    """Refuse workers that run other winit_sim code or cannot hold the grid's nets."""
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT)
    except TimeoutError:
        raise TimeoutError(f"no Dask worker joined the scheduler within {WORKER_WAIT} s; start "
                           f"workers with `dask worker {client.scheduler.address}`") from None
    try:
        reports = client.run(_worker_report, grid, check)
    except Exception as exc:  # noqa: BLE001  (unpickling fails where winit_sim is missing)
        raise RuntimeError(f"the Dask workers cannot run winit_sim ({type(exc).__name__}: "
                           f"{exc}); install this winit_sim on every worker") from None
    other = sorted(addr for addr, (digest, _) in reports.items() if digest != SOURCE_DIGEST)
    if other:
        raise RuntimeError(f"workers {', '.join(other)} run a different winit_sim source "
                           f"than this client; install the same version everywhere (results "
                           f"would not be reproducible)")
    for addr, (_, problem) in sorted(reports.items()):
        if problem:
            raise ValueError(f"on worker {addr}: {problem}")


def _net_task(grid, group, task):
    """Task body: ``task(grid, *group)`` for one net on a worker, with all of its threads."""
    from distributed import get_worker
    worker = get_worker()
    n = min(worker.state.nthreads, numba.config.NUMBA_NUM_THREADS)
    with _ONE_NET_AT_A_TIME, engine.threads(n):
        start = time.perf_counter()
        df = task(grid, *group)
        info = {"seconds": time.perf_counter() - start, "threads": numba.get_num_threads(),
                "worker": worker.address, "pid": os.getpid()}
    return df, info


def run_on_cluster(grid, groups, scheduler, workers=None, *, task, check):
    """Yield ``(group, rows, info)`` for each net as its task finishes.

    ``task(grid, width, activation, init, arch)`` makes a net's rows and ``check(grid)``
    raises ValueError where a worker cannot hold the grid (both module-level
    functions, pickled by reference: the sweep hands them in, so this module
    imports nothing of the sweep's).

    ``info`` says where and how the task ran: ``seconds`` (kernel time),
    ``threads`` (Numba threads used), ``worker`` (address) and ``pid``.

    Widest nets are submitted with the highest priority so that no large net
    starts last. A task whose worker dies is run again by the scheduler on
    another worker; an exception inside a task is raised here. Tasks not yet
    finished are cancelled when the caller stops early.
    """
    distributed = _distributed()
    if not groups:
        return
    with connect(scheduler, workers) as client:
        _check_workers(client, grid, check)
        run = uuid.uuid4().hex[:8]
        futures = {}
        for group in groups:
            width, act, init, arch = group
            key = f"winit_sim-net-w{width}-{act}-{init}-{arch}-{run}"
            fut = client.submit(_net_task, grid, group, task, key=key, priority=width,
                                pure=False)
            futures[fut] = group
        try:
            for fut in distributed.as_completed(list(futures)):
                df, info = fut.result()
                group = futures.pop(fut)
                fut.release()   # the rows live here now, not in the workers' memory
                yield group, df, info
        finally:
            if futures:
                client.cancel(list(futures))
