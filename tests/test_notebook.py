"""The notebooks re-execute headless (small sizes) from their jupytext sources, so they can never
rot, and each committed .ipynb holds exactly the cells of its paired .py source."""
import os

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

HERE = os.path.join(os.path.dirname(__file__), "..", "notebooks")
NAMES = ["seed_tour", "finite_width", "depth", "dynamical_isometry", "diagnose_a_model"]


def _source(name):
    """The notebook built from its text source notebooks/NAME.py."""
    return jupytext.read(os.path.join(HERE, name + ".py"))


def _execute(name, monkeypatch):
    """Build NAME from its .py source and run it at small sizes; returns what its code printed."""
    monkeypatch.setenv("WINIT_TOUR_QUICK", "1")
    nb = _source(name)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": HERE}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_matches_source(name):
    committed = nbformat.read(os.path.join(HERE, name + ".ipynb"), as_version=4)
    cells = lambda nb: [(c.cell_type, c.source) for c in nb.cells]
    assert cells(committed) == cells(_source(name)), \
        f"{name}.ipynb drifted from {name}.py: run python notebooks/build.py {name}"
    assert any(c.cell_type == "code" and c.outputs for c in committed.cells), \
        "commit it with outputs"


def test_seed_tour_executes(monkeypatch):
    text = _execute("seed_tour", monkeypatch)
    assert "hidden weight gradients all exactly 0: True" in text
    assert "training with large weights diverged: True" in text
    assert "slow decay" in text and "vanishing" in text


def test_finite_width_notebook_executes(monkeypatch):
    text = _execute("finite_width", monkeypatch)
    assert "every width within 3 standard errors of the exact law: True" in text


def test_depth_notebook_executes(monkeypatch):
    text = _execute("depth", monkeypatch)
    assert "residual alpha=1 stream grows by about log10(2) per block: True" in text
    assert "residual with alpha = 1 diverged at every learning rate: True" in text
    assert "| arch | activation | init | width |" in text


def test_dynamical_isometry_notebook_executes(monkeypatch):
    text = _execute("dynamical_isometry", monkeypatch)
    assert "orthogonal tanh (q* small) stays near isometric at depth 16 : True" in text
    assert "relu's spread grows linearly with depth either way: True" in text
    assert "tanh, q* small  gaussian" in text


def test_diagnose_a_model_notebook_executes(monkeypatch):
    pytest.importorskip("torch")
    text = _execute("diagnose_a_model", monkeypatch)
    for claim in ("below the output's, more than 1: True", "more than 1 decade: True",
                  "within 0.2 decade of the first: True", "reaches the input within 1 decade: True",
                  "0.2 to 0.35: True", "within a factor e of the first block: True",
                  "above 1 after every step: True", "flat band at every step: True"):
        assert claim in text, claim
