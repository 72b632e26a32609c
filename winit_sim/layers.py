"""Layer kinds and engines: the registries the kernels' network descriptions use.

A network is a table of layers (see :mod:`winit_sim.kernels.layer`); each
layer's ``kind`` is the code of one entry here, and the engines dispatch on it.
A new kind of layer (a residual branch, a normalisation) is a new entry here
plus its forward and backward in the engines' kernels.
"""
from dataclasses import dataclass

from .registry import Entry, Registry


@dataclass(frozen=True)
class LayerKind(Entry):
    """A kind of layer. ``weights``: whether it has a weight matrix (and so an init)."""
    weights: bool = True


LAYER_KINDS = Registry("layer kind", [
    LayerKind("dense", doc="h = x W^T + b, x_next = phi(h)"),
])


@dataclass(frozen=True)
class Engine(Entry):
    """An exact simulation engine. ``gaussian_only``: it needs Gaussian weights."""
    gaussian_only: bool = False


ENGINES = Registry("engine", [
    Engine("matrix", doc="samples every weight matrix (any init)"),
    Engine("conditional", gaussian_only=True,
           doc="samples each layer's units given its input, without weight matrices"),
])
AUTO = "auto"
METHODS = (AUTO,) + tuple(ENGINES.names())


def check_method(method):
    """The simulation engine asked for: one of METHODS (see :func:`winit_sim.simulate`)."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    return method
