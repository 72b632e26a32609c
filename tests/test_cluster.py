"""Sweeps on a real Dask LocalCluster (loopback): identical results, faults, resume."""
import os
import signal
import subprocess
import sys
import threading
import time

import distributed
import numba
import pandas as pd
import pytest

import winit_sim
import winit_sim as ws
from winit_sim.sweep import cells, cluster
from winit_sim.sweep.grid import make_grid
from winit_sim.sweep.cells import run_sweep

GRID = dict(widths=[24, 40], depths=[3, 9], activations=["tanh", "relu"],
            inits=["xavier_normal", "he_uniform", "small"], trials=2, batch=4, seed=11,
            bias_std=0.1)
# nets of about a second each on one thread, so a worker can be killed mid-task
SLOW = dict(widths=[384], depths=[100, 400], activations=["relu", "tanh"],
            inits=["he_normal", "xavier_normal", "small"], trials=2, batch=16, seed=5)


def _cluster(n_workers, threads_per_worker=1):
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                    processes=True, dashboard_address=":0")


@pytest.fixture(scope="module")
def client():
    with _cluster(2) as lc, distributed.Client(lc) as c:
        yield c


@pytest.fixture(scope="module")
def slow_reference():
    """The SLOW grid swept here, undisturbed: what every interrupted run must end equal to."""
    return ws.sweep(**SLOW, progress=False)


def _cell_stamps(out):
    cells = os.path.join(out, "cells")
    return {f: os.stat(os.path.join(cells, f)).st_mtime_ns for f in os.listdir(cells)
            if f.endswith(".parquet")}


def test_cluster_run_is_bit_identical_to_the_local_run(client, tmp_path):
    local = ws.sweep(**GRID, progress=False, out=tmp_path / "here")
    remote = ws.sweep(**GRID, progress=False, out=tmp_path / "there", scheduler=client)
    pd.testing.assert_frame_equal(local, remote, check_exact=True)
    here, there = tmp_path / "here" / "cells", tmp_path / "there" / "cells"
    assert sorted(os.listdir(here)) == sorted(os.listdir(there))
    for name in os.listdir(here):
        pd.testing.assert_frame_equal(pd.read_parquet(here / name), pd.read_parquet(there / name),
                                      check_exact=True)
    assert client.status == "running"   # a Client passed in is left open


def test_tasks_use_the_workers_threads_and_spread_over_workers(client, tmp_path):
    grid = make_grid(**GRID)
    with _cluster(1, threads_per_worker=2) as lc, distributed.Client(lc) as c:
        infos = [info for _, _, info in cluster.run_on_cluster(grid, grid.groups, c, task=cells.run_group,
                                                            check=cells.check_grid_memory)]
        assert {i["threads"] for i in infos} == {min(2, numba.config.NUMBA_NUM_THREADS)}
        # a worker's thread count is restored after each task
        assert set(c.run(numba.get_num_threads).values()) == {numba.config.NUMBA_NUM_THREADS}
    # two one-thread workers (the module's cluster)
    infos = [info for _, _, info in cluster.run_on_cluster(grid, grid.groups, client,
                                                        task=cells.run_group,
                                                        check=cells.check_grid_memory)]
    assert {i["threads"] for i in infos} == {1}
    assert len({i["pid"] for i in infos}) == 2 and len(infos) == len(grid.groups)


def test_killed_worker_loses_only_its_task_in_flight(slow_reference, tmp_path):
    """SIGKILL a worker that is running a net; the sweep still ends equal to an undisturbed run."""
    out = str(tmp_path / "res")
    killed, before = {}, {}
    with _cluster(2) as lc, distributed.Client(lc) as c:
        pids = c.run(os.getpid)

        def kill_one_busy_worker():
            deadline = time.time() + 120
            while time.time() < deadline and not killed:
                stamps = _cell_stamps(out) if os.path.isdir(os.path.join(out, "cells")) else {}
                busy = [a for a, keys in c.processing().items() if keys]
                if stamps and busy:
                    before.update(stamps)
                    killed["pid"] = pids[busy[0]]
                    os.kill(killed["pid"], signal.SIGKILL)
                time.sleep(0.02)

        killer = threading.Thread(target=kill_one_busy_worker)
        killer.start()
        results = ws.sweep(**SLOW, progress=False, out=out, scheduler=c)
        killer.join()
        assert killed, "no worker was killed: the cells finished too fast to test this"
        assert killed["pid"] not in c.run(os.getpid).values()
    pd.testing.assert_frame_equal(results, slow_reference, check_exact=True)
    after = _cell_stamps(out)
    assert len(after) == 6
    assert all(after[f] == t for f, t in before.items())   # finished cells were not redone


def test_interrupted_cluster_sweep_resumes_locally(slow_reference, tmp_path):
    """Kill the whole `winit-sim sweep --scheduler local` process group mid-run, resume here."""
    out = str(tmp_path / "res")
    cmd = [sys.executable, "-m", "winit_sim", "sweep", "--widths", "384", "--depths", "100,400",
           "--activations", "relu,tanh", "--inits", "he_normal,xavier_normal,small",
           "--trials", "2", "--batch", "16", "--seed", "5", "--out", out, "--quiet",
           "--scheduler", "local", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if os.path.isdir(os.path.join(out, "cells")) and _cell_stamps(out):
                break
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    before = _cell_stamps(out)
    assert 1 <= len(before) < 6, "the sweep was not interrupted mid-run"
    results = run_sweep(make_grid(**SLOW), progress=False, out=out)
    pd.testing.assert_frame_equal(results, slow_reference, check_exact=True)
    after = _cell_stamps(out)
    assert all(after[f] == t for f, t in before.items())


def test_partial_local_results_resume_on_the_cluster(client, tmp_path):
    out = tmp_path / "res"
    full = ws.sweep(**GRID, progress=False, out=out)
    stamps = _cell_stamps(out)
    dropped = sorted(stamps)[::2]
    for name in dropped:
        os.remove(out / "cells" / name)
    kept = {f: t for f, t in stamps.items() if f not in dropped}
    resumed = ws.sweep(**GRID, progress=False, out=out, scheduler=client)
    pd.testing.assert_frame_equal(resumed, full, check_exact=True)
    after = _cell_stamps(out)
    assert set(after) == set(stamps)
    assert all(after[f] == t for f, t in kept.items())


def test_cli_sweep_on_a_local_cluster(tmp_path):
    out = tmp_path / "res"
    args = ["sweep", "--widths", "16", "--depths", "4,8", "--activations", "relu",
            "--inits", "he_normal,zeros", "--batch", "4", "--out", str(out), "--quiet"]
    from winit_sim.cli import main
    assert main(args + ["--scheduler", "local", "--workers", "2"]) == 0
    assert 'scheduler = "local"' in (out / "config.toml").read_text()
    remote = pd.read_parquet(out / "results.parquet")
    assert main(args + ["--out", str(tmp_path / "here")]) == 0
    pd.testing.assert_frame_equal(remote, pd.read_parquet(tmp_path / "here" / "results.parquet"),
                                  check_exact=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(workers=2), "give scheduler='local' too"),
    (dict(scheduler="nowhere"), "scheduler must be 'local', a scheduler address"),
    (dict(scheduler="tcp://10.0.0.1:8786", workers=2), "workers applies only to"),
    (dict(scheduler="local", workers=0), "workers must be >= 1"),
])
def test_bad_scheduler_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ws.sweep(**GRID, progress=False, **kwargs)


def test_bad_scheduler_type_and_threads():
    with pytest.raises(TypeError, match="dask.distributed.Client; got int"):
        ws.sweep(**GRID, progress=False, scheduler=8786)
    with pytest.raises(ValueError, match="threads applies to the in-process run"):
        run_sweep(make_grid(**GRID), progress=False, scheduler="local", threads=2)


def test_unreachable_scheduler_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(ConnectionError,
                       match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        ws.sweep(**GRID, progress=False, scheduler="tcp://127.0.0.1:9", out=tmp_path / "r")


def test_workers_with_other_code_or_too_little_memory_are_refused(client, monkeypatch):
    monkeypatch.setattr(cluster, "SOURCE_DIGEST", "0" * 16)   # this process only
    with pytest.raises(RuntimeError, match="run a different winit_sim source"):
        ws.sweep(**GRID, progress=False, scheduler=client)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="on worker tcp://.*GiB of buffers"):
        ws.sweep([2_000_000], [3000], ["relu"], ["he_normal"], batch=4096, progress=False,
                 scheduler=client)


def test_cli_bad_cluster_flags(capsys, tmp_path):
    from winit_sim.cli import main
    base = ["sweep", "--widths", "8", "--depths", "2", "--activations", "relu", "--inits",
            "he_normal", "--quiet", "--out", str(tmp_path / "r")]
    assert main(base + ["--workers", "2"]) == 2
    assert "give scheduler='local' too" in capsys.readouterr().err
    assert main(base + ["--scheduler", "somewhere"]) == 2
    assert "scheduler must be 'local'" in capsys.readouterr().err
