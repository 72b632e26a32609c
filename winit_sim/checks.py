"""Argument checks shared by the public functions (clear errors before any kernel runs)."""
import numbers

import numpy as np

DTYPES = ("float64", "float32")


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


def resolve_widths(width=None, depth=None, widths=None):
    """Return the layer sizes [n_0, ..., n_L] from either width+depth or widths."""
    if widths is not None:
        if width is not None or depth is not None:
            raise ValueError("give either width and depth, or widths, not both")
        if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__"):
            raise TypeError(f"widths must be a list of layer sizes [n_0, ..., n_L], got {widths!r}")
        if len(widths) < 2:
            raise ValueError(f"widths must list at least 2 sizes (input and one layer), "
                             f"got {len(widths)}")
        return np.array([check_positive_int(w, f"widths[{i}]") for i, w in enumerate(widths)],
                        dtype=np.int64)
    if width is None or depth is None:
        raise ValueError("give width and depth, or widths=[n_0, ..., n_L]")
    width = check_positive_int(width, "width")
    depth = check_positive_int(depth, "depth")
    return np.full(depth + 1, width, dtype=np.int64)


def check_depths(depths, depth):
    """Sorted distinct depths in 1..depth at which to report (default [depth])."""
    if depths is None:
        return [depth]
    if isinstance(depths, (str, bytes)) or not hasattr(depths, "__iter__"):
        raise TypeError(f"depths must be a list of depths in 1..{depth}, got {depths!r}")
    out = sorted({check_positive_int(d, "depths entry") for d in depths})
    if not out:
        raise ValueError(f"depths must list at least one depth in 1..{depth}")
    if out[-1] > depth:
        raise ValueError(f"depths must lie in 1..{depth} (the net's depth), got {out[-1]}")
    return out
