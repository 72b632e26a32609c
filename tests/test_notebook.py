"""The notebooks re-execute headless (small sizes), so they can never rot."""
import os

import nbformat
from nbclient import NotebookClient

HERE = os.path.join(os.path.dirname(__file__), "..", "notebooks")


def _execute(name, monkeypatch):
    """Run a committed notebook at small sizes; returns the text its code cells printed."""
    monkeypatch.setenv("WINIT_TOUR_QUICK", "1")
    nb = nbformat.read(os.path.join(HERE, name), as_version=4)
    assert any(c.cell_type == "code" and c.outputs for c in nb.cells), "commit it with outputs"
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": HERE}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)


def test_seed_tour_executes(monkeypatch):
    text = _execute("seed_tour.ipynb", monkeypatch)
    assert "hidden weight gradients all exactly 0: True" in text
    assert "training with large weights diverged: True" in text
    assert "slow decay" in text and "vanishing" in text


def test_finite_width_notebook_executes(monkeypatch):
    text = _execute("finite_width.ipynb", monkeypatch)
    assert "every width within 3 standard errors of the exact law: True" in text
