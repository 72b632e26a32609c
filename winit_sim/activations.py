"""Activation functions: the registry. Each entry carries its behaviour as data.

The formulas themselves (phi, phi' and their large- and small-signal limits) are
in :mod:`winit_sim.kernels.elementwise`, one branch per entry, selected by the
entry's code (assigned by the registry). Everything else an engine, the theory
or a message needs is an entry field here:

* ``kernel_param``: the parameter passed to the formulas (or none);
* ``phi0``: phi(0), the offset a vanishing signal keeps (sigmoid 1/2);
* ``homogeneous``: phi(c h) = c phi(h) for c > 0, so a log-scale is exact;
* ``sup_dphi``: sup |phi'| over the real line (the reference for saturation);
* ``torch_gain``: ``torch.nn.init.calculate_gain``, written down, or None;
* ``torch_module``: the ``torch.nn`` class computing the same function (or None), and
  ``torch_params``: which of its attributes holds each parameter (``winit_sim.torch``
  reads a model's activations with these).

Each may be a constant or a callable of the parameter dict.
"""
from collections import namedtuple
from dataclasses import dataclass, field
import math

from .registry import Entry, Param, Registry

SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


@dataclass(frozen=True)
class Activation(Entry):
    """An activation: see the module docstring for the fields."""
    kernel_param: str | None = None
    phi0: object = 0.0
    homogeneous: bool = False
    sup_dphi: object = 1.0
    torch_gain: object = None
    torch_module: str | None = None
    torch_params: dict = field(default_factory=dict)


def _sup_dsilu(params):
    """silu' = s (1 + h (1 - s)) peaks where h tanh(h/2) = 2 (Newton from 2.4)."""
    h = 2.4
    for _ in range(50):
        t = math.tanh(0.5 * h)
        h -= (h * t - 2.0) / (t + 0.5 * h * (1.0 - t * t))
    s = 1.0 / (1.0 + math.exp(-h))
    return s * (1.0 + h * (1.0 - s))


ACTIVATIONS = Registry("activation", [
    Activation("linear", doc="identity", homogeneous=True, torch_gain=1.0,
               torch_module="Identity"),
    Activation("relu", doc="max(h, 0)", homogeneous=True, torch_gain=math.sqrt(2.0),
               torch_module="ReLU"),
    Activation("leaky_relu", {"slope": Param(0.01)}, doc="h if h > 0 else slope*h",
               kernel_param="slope", homogeneous=True,
               sup_dphi=lambda p: max(1.0, abs(p["slope"])),
               torch_gain=lambda p: math.sqrt(2.0 / (1.0 + p["slope"] * p["slope"])),
               torch_module="LeakyReLU", torch_params={"slope": "negative_slope"}),
    Activation("tanh", torch_gain=5.0 / 3.0, torch_module="Tanh"),
    Activation("sigmoid", doc="1/(1+exp(-h))", phi0=0.5, sup_dphi=0.25, torch_gain=1.0,
               torch_module="Sigmoid"),
    # gelu' = Phi(h) + h phi(h) peaks at h = sqrt(2)
    Activation("gelu", doc="h*Phi(h) (exact erf form)",
               sup_dphi=0.5 * math.erfc(-1.0) + math.exp(-1.0) / math.sqrt(math.pi),
               torch_module="GELU"),
    Activation("silu", doc="h*sigmoid(h)", sup_dphi=_sup_dsilu, torch_module="SiLU"),
    Activation("elu", {"alpha": Param(1.0, minimum=0.0)}, doc="h if h > 0 else alpha*(exp(h)-1)",
               kernel_param="alpha", sup_dphi=lambda p: max(1.0, p["alpha"]), torch_module="ELU",
               torch_params={"alpha": "alpha"}),
    Activation("selu", doc="lambda*elu_alpha with the self-normalising constants",
               sup_dphi=SELU_LAMBDA * SELU_ALPHA, torch_gain=0.75, torch_module="SELU"),
    Activation("softplus", {"beta": Param(1.0, minimum=0.0, positive=True)},
               doc="log(1+exp(beta*h))/beta", kernel_param="beta",
               phi0=lambda p: math.log(2.0) / p["beta"], torch_module="Softplus",
               torch_params={"beta": "beta"}),
])

# what the kernels receive for an activation (see winit_sim.kernels.elementwise).
# ``scale_dependent`` is None for a homogeneous activation and True otherwise: its type,
# not its value, tells Numba which formulas to compile, so a relu net never compiles
# the smooth activations' (see winit_sim.kernels.layer.activate_block)
ActivationData = namedtuple("ActivationData", ["code", "param", "phi0", "homogeneous",
                                               "sat_thr", "scale_dependent"])
SATURATION_FRACTION = 0.01   # |phi'| below this fraction of sup|phi'| counts as saturated


def resolve_activation(activation):
    """Validate an activation spec and return its Spec."""
    return ACTIVATIONS.resolve(activation)


def kernel_param(spec):
    """The number the formulas get as ``p`` (0 for activations without a parameter)."""
    name = spec.entry.kernel_param
    return float(spec.params[name]) if name else 0.0


def sup_dphi(spec):
    """sup |phi'| over the real line (the reference for ``frac_saturated``)."""
    return float(spec.value("sup_dphi"))


def kernel_data(activation):
    """The :data:`ActivationData` the kernels take for an activation spec."""
    spec = resolve_activation(activation)
    homogeneous = spec.entry.homogeneous
    return ActivationData(spec.entry.code, kernel_param(spec), float(spec.value("phi0")),
                          homogeneous, SATURATION_FRACTION * sup_dphi(spec),
                          None if homogeneous else True)


def torch_gain(activation):
    """``torch.nn.init.calculate_gain`` for this activation, or None where torch has none."""
    spec = resolve_activation(activation)
    g = spec.value("torch_gain")
    return None if g is None else float(g)
