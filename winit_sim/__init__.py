"""winit_sim: measure what weight initialisation does to very deep networks.

Public API
----------
simulate, propagate            run networks, get per-layer statistics
sample_weights, weight_variance the init schemes, exactly as simulated
INITS, ACTIVATIONS             registries (``.names()``, ``.choices()``)
"""
from .activations import ACTIVATIONS, dphi, phi
from .inits import INITS, sample_weights, weight_variance
from .simulate import propagate, simulate

__all__ = ["simulate", "propagate", "sample_weights", "weight_variance", "INITS",
           "ACTIVATIONS", "phi", "dphi"]
__version__ = "0.1.0"
