"""Weight initialisation schemes: the registry. Each entry declares how it samples.

Weights use torch's layout, shape ``(fan_out, fan_in)``, applied as
``h = x @ W.T + b``. Every scheme reduces, for a given layer, to one of the
sampling kinds of :data:`SAMPLINGS` with one scale number, so the kernels only
need (kind code, scale). An :class:`Init` entry names its sampling kind and its
scale rule; a sampling kind carries its variance rule and whether its weights
are Gaussian (what the conditional engine needs). Everything is a lookup:
:func:`layer_sampler`, :func:`variance` and every message.
"""
from dataclasses import dataclass
import math

from .registry import Entry, Param, Registry


@dataclass(frozen=True)
class Sampling(Entry):
    """A sampling kind the kernels implement (:mod:`winit_sim.kernels.weights`).

    ``variance(scale, fan_in, fan_out)`` is Var(W_ij); ``gaussian``: entries are
    i.i.d. N(0, scale^2); ``conditional``: the conditional engine draws an MLP layer's
    units given its input exactly (Gaussian and Haar orthogonal weights).
    """
    variance: object = None
    gaussian: bool = False
    conditional: bool = False


SAMPLINGS = Registry("sampling kind", [
    Sampling("constant", doc="every entry = scale (zeros is constant 0)",
             variance=lambda s, fi, fo: 0.0),
    Sampling("normal", doc="N(0, scale^2)", variance=lambda s, fi, fo: s * s, gaussian=True,
             conditional=True),
    Sampling("uniform", doc="U[-scale, scale]", variance=lambda s, fi, fo: s * s / 3.0),
    Sampling("orthogonal", doc="scale * (semi-)orthogonal matrix, like torch's orthogonal_",
             variance=lambda s, fi, fo: s * s / max(fi, fo), conditional=True),
])


@dataclass(frozen=True)
class Init(Entry):
    """An init scheme: ``sampling`` (a :data:`SAMPLINGS` name) and
    ``scale(params, fan_in, fan_out, gain)``, the number that sampling kind takes."""
    sampling: str = "normal"
    scale: object = None


def _given(key):
    """The scale is a parameter of the spec (std, bound, value)."""
    return lambda p, fan_in, fan_out, gain: p[key]


def _fan_scaled(fan_variance, uniform):
    """std = gain * sqrt(fan_variance); a uniform's bound is std * sqrt(3)."""
    def scale(p, fan_in, fan_out, gain):
        std = gain * math.sqrt(fan_variance(p, fan_in, fan_out))
        return std * math.sqrt(3.0) if uniform else std
    return scale


def _xavier(p, fan_in, fan_out):
    return 2.0 / (fan_in + fan_out)


def _he(p, fan_in, fan_out):
    return 1.0 / (fan_out if p["mode"] == "fan_out" else fan_in)


def _lecun(p, fan_in, fan_out):
    return 1.0 / fan_in


_SQRT2 = math.sqrt(2.0)
_MODE = Param("fan_in", choices=("fan_in", "fan_out"))
_GAIN1 = Param(1.0, minimum=0.0, auto=True)
_GAIN2 = Param(_SQRT2, minimum=0.0, auto=True)

INITS = Registry("init", [
    Init("zeros", doc="all weights 0", sampling="constant", scale=lambda p, fi, fo, g: 0.0),
    Init("constant", {"value": Param(0.1)}, doc="all weights = value", sampling="constant",
         scale=_given("value")),
    Init("normal", {"std": Param(1.0, minimum=0.0)}, doc="N(0, std^2)", scale=_given("std")),
    Init("uniform", {"bound": Param(1.0, minimum=0.0)}, doc="U[-bound, bound]",
         sampling="uniform", scale=_given("bound")),
    Init("small", {"std": Param(0.01, minimum=0.0)}, doc="N(0, std^2), std 0.01",
         scale=_given("std")),
    Init("large", {"std": Param(1.0, minimum=0.0)}, doc="N(0, std^2), std 1.0",
         scale=_given("std")),
    Init("xavier_uniform", {"gain": _GAIN1}, ("glorot_uniform",),
         doc="U[-b, b], b = gain*sqrt(6/(fan_in+fan_out))", sampling="uniform",
         scale=_fan_scaled(_xavier, uniform=True)),
    Init("xavier_normal", {"gain": _GAIN1}, ("glorot_normal",),
         doc="N(0, gain^2*2/(fan_in+fan_out))", scale=_fan_scaled(_xavier, uniform=False)),
    Init("he_uniform", {"gain": _GAIN2, "mode": _MODE}, ("kaiming_uniform",),
         doc="U[-b, b], b = gain*sqrt(3/fan)", sampling="uniform",
         scale=_fan_scaled(_he, uniform=True)),
    Init("he_normal", {"gain": _GAIN2, "mode": _MODE}, ("kaiming_normal",),
         doc="N(0, gain^2/fan)", scale=_fan_scaled(_he, uniform=False)),
    Init("lecun_uniform", {"gain": _GAIN1}, doc="U[-b, b], b = gain*sqrt(3/fan_in)",
         sampling="uniform", scale=_fan_scaled(_lecun, uniform=True)),
    Init("lecun_normal", {"gain": _GAIN1}, doc="N(0, gain^2/fan_in)",
         scale=_fan_scaled(_lecun, uniform=False)),
    Init("orthogonal", {"gain": _GAIN1}, doc="gain * (semi-)orthogonal matrix",
         sampling="orthogonal", scale=lambda p, fi, fo, g: g),
])
GAUSSIAN_INITS = tuple(INITS.select(lambda e: SAMPLINGS[e.sampling].gaussian))
CONDITIONAL_INITS = tuple(INITS.select(lambda e: SAMPLINGS[e.sampling].conditional))


def resolve_init(init):
    """Validate an init spec (string or ``(name, params)``) and return its Spec."""
    return INITS.resolve(init)


def needs_gain(init):
    """Whether the spec says ``gain=auto`` (the gain computed for the activation)."""
    return resolve_init(init).params.get("gain") == "auto"


def _gain(spec, gain):
    g = spec.params.get("gain", 1.0)
    if g != "auto":
        return g
    if gain is None:
        raise ValueError(f"init {spec.canonical()!r} needs the activation to compute its gain")
    return gain


def layer_sampler(init, fan_in, fan_out, gain=None):
    """(sampling code, scale) of one layer: the two numbers the kernels sample from.

    ``gain`` is the computed gain used for ``gain=auto`` (see
    :func:`winit_sim.theory.auto_gain`); it is ignored otherwise.
    """
    spec = resolve_init(init)
    entry = spec.entry
    return SAMPLINGS.code(entry.sampling), entry.scale(spec.params, fan_in, fan_out,
                                                       _gain(spec, gain))


def variance(init, fan_in, fan_out, gain=None):
    """Var(W_ij) of one layer under a scheme (``gain`` as in :func:`layer_sampler`)."""
    spec = resolve_init(init)
    sampling = SAMPLINGS[spec.entry.sampling]
    return sampling.variance(layer_sampler(spec, fan_in, fan_out, gain)[1], fan_in, fan_out)


def is_gaussian(sampling_code):
    """Whether a sampling code draws i.i.d. Gaussian weights."""
    return list(SAMPLINGS)[sampling_code].gaussian


def on_conditional(sampling_code):
    """Whether the conditional engine draws an MLP layer of this sampling code exactly."""
    return list(SAMPLINGS)[sampling_code].conditional
