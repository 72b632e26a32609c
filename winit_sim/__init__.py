"""winit_sim: measure what weight initialisation does to very deep networks.

Public API
----------
simulate, propagate            run networks, get per-layer statistics
sweep, variance_decay_table    grids of networks and their variance-decay tables
train                          does an init let a deep MLP learn? (training probe)
sample_weights, weight_variance the init schemes, exactly as simulated
INITS, ACTIVATIONS             registries (``.names()``, ``.choices()``)
"""
import hashlib as _hashlib
import os as _os


def _source_digest():
    """Hash of every source file of this package (names and contents)."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    digest = _hashlib.blake2b(digest_size=8)
    for name in sorted(_os.listdir(here)):
        if name.endswith(".py"):
            with open(_os.path.join(here, name), "rb") as fh:
                digest.update(name.encode() + fh.read())
    return digest.hexdigest()


SOURCE_DIGEST = _source_digest()


def _configure_numba_cache():
    """Cache compiled kernels in a directory keyed by this package's source.

    Numba's own cache only notices edits to the file that defines a function, not
    to the functions it inlines from other files; a key over all sources never
    serves a stale kernel. An explicit NUMBA_CACHE_DIR is left alone.
    """
    if _os.environ.get("NUMBA_CACHE_DIR"):
        return
    import numba
    root = _os.environ.get("XDG_CACHE_HOME") or _os.path.join(_os.path.expanduser("~"), ".cache")
    numba.config.CACHE_DIR = _os.path.join(root, "winit_sim", "numba-" + SOURCE_DIGEST)


_configure_numba_cache()

from .activations import ACTIVATIONS, dphi, phi  # noqa: E402
from .inits import INITS, sample_weights, weight_variance  # noqa: E402
from .simulate import propagate, simulate  # noqa: E402
from .sweeps import seed_of_cell, sweep  # noqa: E402
from .tables import variance_decay_table  # noqa: E402
from .training import train  # noqa: E402

__all__ = ["simulate", "propagate", "sweep", "variance_decay_table", "seed_of_cell", "train",
           "sample_weights", "weight_variance", "INITS", "ACTIVATIONS", "phi", "dphi"]
__version__ = "0.1.0"
