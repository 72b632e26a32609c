"""Reports of sweep results: variance-decay tables with verdicts, and figures.

* :mod:`.tables` variance-decay tables, verdicts, theory beside, Markdown
* :mod:`.plots`  figures (matplotlib, headless)
"""
from .plots import plot_decay_heatmap, plot_layers, plot_loss_curves, plot_phase, plot_spectrum
from .tables import QUANTITIES, VERDICTS, to_markdown, variance_decay_table

__all__ = ["QUANTITIES", "VERDICTS", "plot_decay_heatmap", "plot_layers", "plot_loss_curves",
           "plot_phase", "plot_spectrum", "to_markdown", "variance_decay_table"]
