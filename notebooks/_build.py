"""Shared by the notebook builders: make a notebook from (kind, source) cells and execute it."""
import nbformat
from nbclient import NotebookClient


def build_notebook(cells, path, timeout=1800):
    """Write ``path``: markdown ("md") and code cells, executed in order with their outputs."""
    import os
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md"
                else nbformat.v4.new_code_cell(src) for kind, src in cells]
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    nbformat.write(nb, path)
    return path
