"""Argument checks shared by the public functions (clear errors before any kernel runs)."""
import numbers

import numpy as np

DTYPES = ("float64", "float32")
METHODS = ("auto", "matrix", "conditional")


def check_positive_int(value, name, minimum=1):
    """Return ``value`` as int; TypeError if not an integer, ValueError if below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_seed(seed):
    """Seeds are integers in [0, 2**64)."""
    seed = check_positive_int(seed, "seed", minimum=0)
    if seed >= 2**64:
        raise ValueError(f"seed must be < 2**64, got {seed}")
    return seed


def check_dtype(dtype):
    """Return the numpy dtype for 'float64' / 'float32' (or their numpy types)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return dt


def check_nonneg_float(value, name):
    """Return a finite float >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def check_method(method):
    """The simulation engine: one of METHODS (see :func:`winit_sim.simulate`)."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    return method
