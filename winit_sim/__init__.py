"""winit_sim: measure what weight initialisation does to very deep networks.

Public API
----------
simulate, propagate            run networks, get per-layer statistics
sweep, variance_decay_table    grids of networks and their variance-decay tables
train                          does an init let a deep MLP learn? (training probe)
jacobian_spectrum              every singular value of the input-output Jacobian, any depth
spectrum_summary               its moments (mean, normalized variance, isometry), theory beside
sample_weights, sample_biases  one layer's weights and biases, exactly as simulated
weight_variance                the init schemes' variances
phi, dphi                      the activations, exactly as simulated
INITS, ACTIVATIONS             registries (``.names()``, ``.choices()``)
theory                         mean-field theory beside the simulation

Layers (each imports only from those above it in this list; see docs/architecture.md):
registry, checks, cache -> activations, inits, layers -> kernels/ -> theory/ -> engine
-> simulate, training -> spectrum -> sweep/ -> report/ -> torch/ -> cli.

``winit_sim.torch`` (the PyTorch bridge: init_, diagnose, scaling_check, compare)
needs the ``torch`` extra and is imported on its own: ``import winit_sim.torch``.
"""
from .cache import SOURCE_DIGEST, VERSION, configure_numba_cache

configure_numba_cache()   # before any kernel module is imported

from .activations import ACTIVATIONS  # noqa: E402
from .inits import INITS  # noqa: E402
from .layers import ARCHS  # noqa: E402
from . import theory  # noqa: E402
from .simulate import (dphi, phi, propagate, sample_biases, sample_weights, simulate,  # noqa: E402
                       weight_variance)
from .spectrum import jacobian_spectrum, spectrum_summary  # noqa: E402
from .sweep import seed_of_cell, sweep  # noqa: E402
from .report import variance_decay_table  # noqa: E402
from .training import train  # noqa: E402

__all__ = ["simulate", "propagate", "sweep", "variance_decay_table", "seed_of_cell", "train",
           "sample_weights", "sample_biases", "weight_variance", "INITS", "ACTIVATIONS", "ARCHS", "phi", "dphi", "theory",
           "jacobian_spectrum", "spectrum_summary", "SOURCE_DIGEST"]
__version__ = VERSION
