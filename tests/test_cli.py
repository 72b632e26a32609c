"""winit-sim end to end: files, tables, exit codes, resume after kill, corrupt cells."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from winit_sim.cli import main

TINY = ["--widths", "16,24", "--depths", "3,6", "--activations", "relu,tanh",
        "--inits", "he_normal,zeros", "--batch", "4", "--trials", "2", "--quiet"]


def test_sweep_writes_everything_and_rerenders(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["sweep", *TINY, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "| relu | zeros | 24 |" in printed and "dead" in printed
    for name in ("results.parquet", "config.toml", "grid.json", "layers.png", "decay_forward.csv",
                 "decay_forward.md", "decay_forward.png", "decay_backward.md"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    df = pd.read_parquet(os.path.join(out, "results.parquet"))
    assert len(df) == 2 * 2 * 2 * 2 * (3 + 6)
    config = open(os.path.join(out, "config.toml")).read()
    assert "widths = [16, 24]" in config and "numba = " in config
    assert main(["table", out, "--quantity", "backward"]) == 0
    assert "| tanh | he_normal | 16 |" in capsys.readouterr().out
    os.remove(os.path.join(out, "layers.png"))
    assert main(["plot", out]) == 0
    assert os.path.exists(os.path.join(out, "layers.png"))


def test_other_grid_refused_then_forced(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["sweep", *TINY, "--out", out]) == 0
    other = [a if a != "3,6" else "3,7" for a in TINY]
    assert main(["sweep", *other, "--out", out]) == 2
    assert "different grid" in capsys.readouterr().err
    assert main(["sweep", *other, "--out", out, "--force"]) == 0
    assert len(pd.read_parquet(os.path.join(out, "results.parquet"))) == 2 * 2 * 2 * 2 * 10


def test_corrupt_cell_is_recomputed(tmp_path):
    out = str(tmp_path / "r")
    assert main(["sweep", *TINY, "--out", out]) == 0
    first = pd.read_parquet(os.path.join(out, "results.parquet"))
    cells = sorted(os.listdir(os.path.join(out, "cells")))
    with open(os.path.join(out, "cells", cells[0]), "r+b") as fh:
        fh.truncate(100)
    assert main(["sweep", *TINY, "--out", out]) == 0
    assert pd.read_parquet(os.path.join(out, "results.parquet")).equals(first)


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--widths", "8", "--depths", "3", "--activations", "relu"], "--inits"),
    (["sweep", "--widths", "8,x", "--depths", "3", "--activations", "relu", "--inits", "zeros"],
     "--widths"),
    (["sweep", "--widths", "8", "--depths", "0", "--activations", "relu", "--inits", "zeros"],
     "depths entry must be >= 1"),
    (["sweep", "--widths", "8", "--depths", "3", "--activations", "swish", "--inits", "zeros"],
     "valid choices"),
    (["run", "--width", "8", "--depth", "2", "--init", "bogus"], "unknown init"),
    (["table", "/nonexistent/dir"], "no results.parquet"),
    (["sweep", "--widths", "300000", "--depths", "2", "--activations", "relu", "--inits",
      "orthogonal", "--method", "matrix", "--out", "/nonexistent/never-created"],
     "GiB of buffers"),
])
def test_bad_usage_exits_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_out_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("keep me")
    assert main(["sweep", *TINY, "--out", str(target)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_bad_flag_and_bad_toml(tmp_path, capsys):
    assert main(["sweep", "--no-such-flag"]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("widths = [8\n")
    assert main(["sweep", "--config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('widths = [8]\ndepths = [2]\nactivations = ["relu"]\ninits = ["zeros"]\n'
                       'colour = "red"\n')
    assert main(["sweep", "--config", str(unknown)]) == 2
    assert "unknown key(s) colour; valid keys: widths" in capsys.readouterr().err
    typed = tmp_path / "typed.toml"
    typed.write_text('widths = [8]\ndepths = [2]\nactivations = ["relu"]\ninits = ["zeros"]\n'
                     'trials = "many"\n')
    assert main(["sweep", "--config", str(typed)]) == 2
    assert "trials must be an integer" in capsys.readouterr().err


def test_config_file_runs(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('[sweep]\nwidths = [8]\ndepths = [2, 4]\nactivations = ["relu"]\n'
                   'inits = ["he_normal:mode=fan_out"]\ntrials = 2\nbatch = 4\n')
    out = str(tmp_path / "r")
    assert main(["sweep", "--config", str(cfg), "--out", out, "--quiet"]) == 0
    assert "he_normal:mode=fan_out" in open(os.path.join(out, "config.toml")).read()


def test_run_command(tmp_path, capsys):
    out = str(tmp_path / "net.csv")
    assert main(["run", "--width", "8", "--depth", "3", "--activation", "leaky_relu:slope=0.2",
                 "--out", out]) == 0
    assert "log10_grad_q" in capsys.readouterr().out
    assert len(pd.read_csv(out)) == 3


def test_resume_after_kill(tmp_path):
    """Kill a real sweep mid-run (SIGKILL), rerun: identical to an uninterrupted run."""
    grid = ["--widths", "96,128", "--depths", "50,400", "--activations", "relu,tanh,gelu",
            "--inits", "he_normal,xavier_uniform", "--batch", "8", "--trials", "2", "--quiet"]
    cmd = [sys.executable, "-m", "winit_sim", "sweep", *grid]
    killed = str(tmp_path / "killed")
    proc = subprocess.Popen(cmd + ["--out", killed])
    cells = os.path.join(killed, "cells")
    deadline = time.time() + 300
    while time.time() < deadline:
        if os.path.isdir(cells) and len([f for f in os.listdir(cells)
                                         if f.endswith(".parquet")]) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [f for f in os.listdir(cells) if f.endswith(".parquet")]
    assert 2 <= len(done) < 12, "the kill should land mid-sweep"
    assert not os.path.exists(os.path.join(killed, "results.parquet"))
    assert subprocess.run(cmd + ["--out", killed]).returncode == 0
    clean = str(tmp_path / "clean")
    assert main(["sweep", *grid, "--out", clean]) == 0   # here: no interpreter to start
    a = pd.read_parquet(os.path.join(killed, "results.parquet"))
    b = pd.read_parquet(os.path.join(clean, "results.parquet"))
    assert a.equals(b)


def test_spectrum_writes_table_csvs_and_figure(tmp_path, capsys):
    out = str(tmp_path / "s")
    assert main(["spectrum", "--width", "32", "--depths", "2,8", "--activation", "tanh",
                 "--init", "orthogonal", "--trials", "2", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "theory_nvar" in printed and "frac_isometric" in printed
    for name in ("spectrum.csv", "spectrum_summary.csv", "spectrum_summary.md", "spectrum.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    summary = pd.read_csv(os.path.join(out, "spectrum_summary.csv"))
    assert sorted(summary.depth.unique()) == [2, 8] and len(summary) == 4
    spectrum = pd.read_csv(os.path.join(out, "spectrum.csv"))
    assert len(spectrum) == 2 * 2 * 32


def test_spectrum_of_a_residual_arch(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["spectrum", "--width", "16", "--depths", "2,8", "--activation", "relu",
                 "--init", "he_normal", "--arch", "residual:norm=layernorm", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "no theory density" in printed and "theory_nvar" not in printed
    assert os.path.getsize(os.path.join(out, "spectrum.png")) > 0
    assert len(pd.read_csv(os.path.join(out, "spectrum.csv"))) == 2 * 16


@pytest.mark.parametrize("args,match", [
    (["--width", "8", "--depths", "0,3"], "depths entry"),
    (["--width", "8", "--depth", "3", "--depths", "5"], r"1\.\.3"),
    (["--width", "8", "--depth", "3", "--init", "nope"], "init"),
    (["--width", "8", "--depth", "3", "--arch", "nope"], "arch"),
])
def test_spectrum_bad_input_exits_2(tmp_path, capsys, args, match):
    assert main(["spectrum", *args, "--out", str(tmp_path / "s")]) == 2
    assert pytest.importorskip("re").search(match, capsys.readouterr().err)
