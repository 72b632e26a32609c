"""Weight initialisation schemes: the public registry, variances and sampling.

Weights use torch's layout, shape ``(fan_out, fan_in)``, applied as
``h = x @ W.T + b``. Every scheme reduces, for a given layer, to one of five
sampling kinds with one scale number, so the kernels only need (kind, scale).
"""
import math

import numpy as np
from numba import njit

from . import _rng
from ._spec import Entry, Param, Registry
from ._validate import check_dtype, check_positive_int, check_seed

# sampling kinds understood by the kernels
KIND_CONSTANT = 0    # every entry = scale (zeros is constant 0)
KIND_NORMAL = 1      # N(0, scale^2)
KIND_UNIFORM = 2     # U[-scale, scale]
KIND_ORTHOGONAL = 3  # scale * (semi-)orthogonal matrix, like torch.nn.init.orthogonal_

_SQRT2 = math.sqrt(2.0)
_MODE = Param("fan_in", choices=("fan_in", "fan_out"))
_GAIN1 = Param(1.0, minimum=0.0, auto=True)

INITS = Registry("init", [
    Entry("zeros", doc="all weights 0"),
    Entry("constant", {"value": Param(0.1)}, doc="all weights = value"),
    Entry("normal", {"std": Param(1.0, minimum=0.0)}, doc="N(0, std^2)"),
    Entry("uniform", {"bound": Param(1.0, minimum=0.0)}, doc="U[-bound, bound]"),
    Entry("small", {"std": Param(0.01, minimum=0.0)}, doc="N(0, std^2), std 0.01"),
    Entry("large", {"std": Param(1.0, minimum=0.0)}, doc="N(0, std^2), std 1.0"),
    Entry("xavier_uniform", {"gain": _GAIN1}, ("glorot_uniform",),
          doc="U[-b, b], b = gain*sqrt(6/(fan_in+fan_out))"),
    Entry("xavier_normal", {"gain": _GAIN1}, ("glorot_normal",),
          doc="N(0, gain^2*2/(fan_in+fan_out))"),
    Entry("he_uniform", {"gain": Param(_SQRT2, minimum=0.0, auto=True), "mode": _MODE}, ("kaiming_uniform",),
          doc="U[-b, b], b = gain*sqrt(3/fan)"),
    Entry("he_normal", {"gain": Param(_SQRT2, minimum=0.0, auto=True), "mode": _MODE}, ("kaiming_normal",),
          doc="N(0, gain^2/fan)"),
    Entry("lecun_uniform", {"gain": _GAIN1}, doc="U[-b, b], b = gain*sqrt(3/fan_in)"),
    Entry("lecun_normal", {"gain": _GAIN1}, doc="N(0, gain^2/fan_in)"),
    Entry("orthogonal", {"gain": _GAIN1}, doc="gain * (semi-)orthogonal matrix"),
])


def resolve_init(init):
    """Validate an init spec (string or ``(name, params)``) and return its Spec."""
    return INITS.resolve(init)


def _gain(spec, activation):
    """The scheme's gain; ``"auto"`` is the computed gain of ``activation``."""
    g = spec.params["gain"]
    if g != "auto":
        return g
    if activation is None:
        raise ValueError(f"init {spec.canonical()!r} needs the activation to compute its gain")
    from .theory import gain  # theory builds on this module
    return gain(activation)


def layer_sampler(init, fan_in, fan_out, activation=None):
    """(kind, scale) of one layer: the two numbers the kernels sample from.

    ``activation`` is needed only for ``gain=auto``.
    """
    spec = resolve_init(init)
    p, name = spec.params, spec.name
    if name == "zeros":
        return KIND_CONSTANT, 0.0
    if name == "constant":
        return KIND_CONSTANT, p["value"]
    if name in ("normal", "small", "large"):
        return KIND_NORMAL, p["std"]
    if name == "uniform":
        return KIND_UNIFORM, p["bound"]
    if name == "orthogonal":
        return KIND_ORTHOGONAL, _gain(spec, activation)
    if name.startswith("xavier"):
        var = 2.0 / (fan_in + fan_out)
    else:
        fan = fan_out if p.get("mode") == "fan_out" else fan_in
        var = 1.0 / fan
    std = _gain(spec, activation) * math.sqrt(var)
    if name.endswith("_uniform"):
        return KIND_UNIFORM, std * math.sqrt(3.0)
    return KIND_NORMAL, std


def weight_variance(init, fan_in, fan_out, activation=None):
    """Theoretical variance of one weight entry under a scheme.

    Parameters
    ----------
    init : str or tuple
        Init spec, e.g. ``"he_normal"``, ``"xavier_uniform:gain=2"`` or
        ``("normal", {"std": 0.05})``.
    fan_in, fan_out : int
        Layer sizes (weights have shape ``(fan_out, fan_in)``).
    activation : str or tuple, optional
        Needed only for ``gain=auto`` (the gain computed for this activation).

    Returns
    -------
    float
        ``Var(W_ij)``: std^2 for normal kinds, bound^2/3 for uniform kinds,
        0 for constant and zeros, gain^2/max(fan_in, fan_out) for orthogonal
        (the mean square of a semi-orthogonal matrix's entries).
    """
    fan_in = check_positive_int(fan_in, "fan_in")
    fan_out = check_positive_int(fan_out, "fan_out")
    kind, scale = layer_sampler(init, fan_in, fan_out, activation)
    if kind == KIND_CONSTANT:
        return 0.0
    if kind == KIND_NORMAL:
        return scale * scale
    if kind == KIND_UNIFORM:
        return scale * scale / 3.0
    return scale * scale / max(fan_in, fan_out)


@njit(cache=True)
def fill_weights(kind, scale, key, out):
    """Sample one layer's weights into ``out`` (fan_out, fan_in) from its stream key.

    Values are drawn in float64 and rounded once to ``out``'s dtype, so a
    float32 net uses the float64 net's weights, rounded.
    """
    fan_out, fan_in = out.shape
    if kind == KIND_CONSTANT:
        v = out.dtype.type(scale)
        for i in range(fan_out):
            for j in range(fan_in):
                out[i, j] = v
    elif kind == KIND_NORMAL:
        _rng.fill_normal(key, out, scale)
    elif kind == KIND_UNIFORM:
        _rng.fill_uniform(key, out, scale)
    else:
        # torch's orthogonal_: QR of a Gaussian (max x min) matrix, signs fixed by diag(R)
        rows, cols = max(fan_out, fan_in), min(fan_out, fan_in)
        a = np.empty((rows, cols), np.float64)
        _rng.fill_normal(key, a, 1.0)
        q, r = np.linalg.qr(a)
        for j in range(cols):
            s = np.sign(r[j, j])
            for i in range(rows):
                q[i, j] *= s
        if fan_out >= fan_in:
            for i in range(fan_out):
                for j in range(fan_in):
                    out[i, j] = scale * q[i, j]
        else:
            for i in range(fan_out):
                for j in range(fan_in):
                    out[i, j] = scale * q[j, i]


def sample_weights(init, fan_in, fan_out, *, seed=0, trial=0, layer=1, dtype="float64",
                   activation=None):
    """The weight matrix that :func:`winit_sim.simulate` uses for one layer of one trial.

    Parameters
    ----------
    init : str or tuple
        Init spec, e.g. ``"he_normal:mode=fan_out"`` or ``("normal", {"std": 0.05})``.
    fan_in, fan_out : int
        Layer sizes.
    seed, trial : int
        The run's seed and the trial index (0-based).
    layer : int
        1-based layer index.
    dtype : {"float64", "float32"}
    activation : str or tuple, optional
        Needed only for ``gain=auto``.

    Returns
    -------
    numpy.ndarray
        Shape ``(fan_out, fan_in)``, bit-identical to the simulated layer.
    """
    fan_in = check_positive_int(fan_in, "fan_in")
    fan_out = check_positive_int(fan_out, "fan_out")
    seed = check_seed(seed)
    trial = check_positive_int(trial, "trial", minimum=0)
    layer = check_positive_int(layer, "layer")
    dt = check_dtype(dtype)
    kind, scale = layer_sampler(init, fan_in, fan_out, activation)
    out = np.empty((fan_out, fan_in), dt)
    fill_weights(kind, scale, np.uint64(_rng.stream_key(seed, trial, layer, _rng.STREAM_WEIGHT)),
                 out)
    return out
