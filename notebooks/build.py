"""Build notebooks/NAME.ipynb from its paired jupytext source notebooks/NAME.py, executed.

    python notebooks/build.py                  # every notebook, full sizes (several minutes)
    python notebooks/build.py seed_tour        # or finite_width, depth, dynamical_isometry,
                                               # diagnose_a_model
    WINIT_TOUR_QUICK=1 python notebooks/build.py seed_tour   # small sizes (what the test runs)

NAME.py (jupytext "percent" format) is the source to edit; NAME.ipynb is generated from it and
committed with its outputs. tests/test_notebook.py checks that the two hold the same cells.
"""
import os
import sys

import jupytext
import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = ("seed_tour", "finite_width", "depth", "dynamical_isometry", "diagnose_a_model")


def build(name, timeout=1800):
    """Read ``NAME.py``, execute it (cwd = notebooks/, kernel python3), write ``NAME.ipynb``."""
    nb = jupytext.read(os.path.join(HERE, name + ".py"))
    nb.metadata.pop("jupytext", None)      # text-format bookkeeping; the .ipynb does not need it
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": HERE}}).execute()
    path = os.path.join(HERE, name + ".ipynb")
    nbformat.write(nb, path)
    return path


def main(argv):
    names = argv or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        sys.exit(f"unknown notebook(s) {unknown}; choose from {list(NAMES)}")
    for name in names:
        print(build(name), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
