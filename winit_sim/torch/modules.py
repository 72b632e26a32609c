"""What winit_sim sees in a torch model: its weighted layers, the role of each module, the
activation after each layer, and which containers are residual blocks.

Every torch activation winit_sim knows is read from the activation registry
(:data:`winit_sim.activations.ACTIVATIONS`: each entry's ``torch_module`` and
``torch_params``), so a new entry there is recognised here with nothing to add.
"""
from collections import namedtuple
import math
import weakref

import numpy as np
import torch
from torch import nn

from ..activations import ACTIVATIONS, resolve_activation
from ..simulate import phi

# roles of the modules diagnose reports on, in the order of the docs
ROLES = ("linear", "conv", "norm", "activation", "attention", "residual", "embedding")
WEIGHTED_ROLES = ("linear", "conv")
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_TYPES = tuple(t for t in (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
                               getattr(nn, "RMSNorm", None),
                               nn.modules.batchnorm._BatchNorm,
                               nn.modules.instancenorm._InstanceNorm) if t is not None)
# placeholders: no row, and an activation slot they fill is the identity
PASS_THROUGH = (nn.Identity,)

Layer = namedtuple("Layer", ["name", "module", "fan_in", "fan_out", "receptive_field",
                             "activation"])
Layer.__doc__ = """A weighted layer: its ``weight`` is the (fan_out, fan_in) matrix of the
unfolded kernel; torch's fan_out is fan_out x receptive_field. ``activation``: the
winit_sim spec of the first activation module registered after it (before the next
weighted layer), or None."""


def check_model(model):
    """TypeError unless ``model`` is a torch.nn.Module."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def role(module):
    """The module's role in a diagnosis (one of :data:`ROLES` but residual and embedding,
    which come from the container and the dataflow), or None."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, CONV_TYPES):
        return "conv"
    if isinstance(module, NORM_TYPES):
        return "norm"
    if isinstance(module, nn.MultiheadAttention):
        return "attention"
    if isinstance(module, PASS_THROUGH):
        return None
    if type(module).__module__ == "torch.nn.modules.activation" or activation_of(module):
        return "activation"
    return None


def activation_of(module):
    """The winit_sim activation spec ``(name, params)`` computing the same function as a
    torch module, or None. A torch.nn class of the registry is read by its class; any
    other module without parameters or children (HuggingFace's ``NewGELUActivation``,
    timm's ``GELU``, ...) by what it computes (:func:`identify_activation`). GELU's tanh
    approximation reads as the exact gelu (:data:`APPROXIMATE_GELU` says how close)."""
    for entry in ACTIVATIONS:
        cls = getattr(nn, entry.torch_module, None) if entry.torch_module else None
        if cls is not None and type(module) is cls:
            return entry.name, {k: float(getattr(module, attr))
                                for k, attr in entry.torch_params.items()}
    if type(module).__module__.startswith("torch.nn") or isinstance(module, PASS_THROUGH):
        return None
    found = identify_activation(module)
    return None if found is None else found[0]


# where an unknown module is evaluated: h in [-6, 6], 0 and the kinks included
_GRID = np.linspace(-6.0, 6.0, 241)
EXACT_TOL = 1e-6   # max |module(h) - phi(h)| / (1 + |phi(h)|) for an exact match
# the tanh form of gelu differs from the exact one by at most 4.8e-4 on the grid
APPROXIMATE_GELU = 1e-3
_IDENTIFIED = weakref.WeakKeyDictionary()   # module -> identify_activation's result


def _fitted_params(name, y):
    """The parameter of a one-parameter registry entry that fits y = module(_GRID)."""
    at = {v: float(y[np.argmin(np.abs(_GRID - v))]) for v in (-1.0, 0.0, -6.0)}
    if name == "leaky_relu":
        return {"slope": -at[-1.0]}
    if name == "elu":
        return {"alpha": at[-6.0] / math.expm1(-6.0)}
    if name == "softplus":
        return {"beta": math.log(2.0) / at[0.0]} if at[0.0] > 0 else None
    return {}


def identify_activation(module):
    """``(spec, note)``: the registry activation (name, params) that ``module`` computes,
    found by evaluating it on h in [-6, 6] in float64, or None.

    Each entry is tried with its parameter fitted from the values (leaky_relu's slope,
    elu's alpha, softplus's beta) and must then agree to ``EXACT_TOL`` at every point;
    ``note`` is "" for such a match. A module within ``APPROXIMATE_GELU`` of gelu (its
    tanh approximation, as HF's ``NewGELUActivation`` and ``nn.GELU(approximate='tanh')``
    compute) is read as gelu, with a note saying so. Modules with parameters or children,
    or that fail on a 1-D float64 tensor, are not activations here.
    """
    if module not in _IDENTIFIED:
        _IDENTIFIED[module] = _identify(module)
    return _IDENTIFIED[module]


def _identify(module):
    if any(True for _ in module.parameters()) or any(True for _ in module.children()):
        return None
    try:
        with torch.no_grad():
            y = module(torch.from_numpy(_GRID.copy()))
    except Exception:   # noqa: BLE001 (anything a foreign forward raises: not an activation)
        return None
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != _GRID.shape:
        return None
    y = y.detach().to(torch.float64).numpy()
    if not np.all(np.isfinite(y)):
        return None
    gelu_gap = math.inf
    for entry in ACTIVATIONS:
        params = _fitted_params(entry.name, y)
        if params is None:
            continue
        try:
            spec = resolve_activation((entry.name, params))
        except ValueError:
            continue
        ref = phi(spec, _GRID)
        gap = float(np.max(np.abs(y - ref) / (1.0 + np.abs(ref))))
        if gap <= EXACT_TOL:
            return (entry.name, params), ""
        if entry.name == "gelu":
            gelu_gap = gap
    if gelu_gap <= APPROXIMATE_GELU:
        return ("gelu", {}), (f"{type(module).__name__} is gelu's tanh approximation "
                              f"(within {gelu_gap:.1e} of the exact gelu): read as gelu")
    return None


def torch_activations():
    """{torch.nn class name: winit_sim activation name} for every entry with one."""
    return {e.torch_module: e.name for e in ACTIVATIONS if e.torch_module}


def weighted_layers(model):
    """Every nn.Linear and nn.Conv1d/2d/3d of ``model`` in registration order, as
    :data:`Layer` rows (a module registered twice counts once)."""
    layers, seen = [], set()
    for name, module in model.named_modules():
        kind = role(module)
        if kind in WEIGHTED_ROLES:
            if id(module) in seen:
                continue
            seen.add(id(module))
            w = module.weight
            k = math.prod(w.shape[2:]) if kind == "conv" else 1
            layers.append(Layer(name, module, math.prod(w.shape[1:]), w.shape[0], k, None))
        elif layers and layers[-1].activation is None:
            act = activation_of(module) if kind == "activation" or \
                isinstance(module, PASS_THROUGH) else None
            if act is not None:
                layers[-1] = layers[-1]._replace(activation=act)
    return layers


def block_group(name, role):
    """``(pattern, index)`` of a module inside repeated blocks, or ``("", -1)``.

    The last numeric part of the name that more parts follow (a block's submodule:
    ``transformer.h.3.mlp.c_proj`` is ``("transformer.h.*.mlp.c_proj", 3)``), or the last
    numeric part of a residual block's own name (``transformer.h.3``). A part that ends in
    ``_<number>`` counts too (torchvision's ``encoder.layers.encoder_layer_3``: the pattern
    is ``encoder.layers.encoder_layer_*``). A plain stack's layers (``0``, ``2``, ...) are
    not in blocks.
    """
    found = _numbered_parts(name, role)
    return found[0] if found else ("", -1)


def _numbered_parts(name, role):
    """Every ``(pattern, index)`` :func:`block_group` could take, the rightmost first."""
    parts = str(name).split(".")
    found = []
    for i in range(len(parts) - 1, -1, -1):
        if i == len(parts) - 1 and role != "residual":
            continue
        stem, sep, number = parts[i].rpartition("_")
        if parts[i].isdigit():
            stem, sep, number = "", "", parts[i]
        if number.isdigit() and (sep or not stem):
            found.append((".".join(parts[:i] + [stem + sep + "*"] + parts[i + 1:]),
                          int(number)))
    return found


def repeated_groups(names, roles):
    """``(pattern, index)`` of each module (``names``, ``roles``) in the blocks that repeat:
    :func:`block_group`'s, or where that pattern has a single index among these modules,
    the next numbered part to its left (T5's ``decoder.block.3.layer.0.SelfAttention.q``:
    ``layer.0`` is the sublayer, ``block.3`` the block); ``("", -1)`` where none repeats."""
    candidates = [_numbered_parts(n, r) for n, r in zip(names, roles)]
    chosen = [("", -1)] * len(candidates)
    pending = list(range(len(candidates)))
    level = 0
    while pending:
        indices = {}
        for i in pending:
            if level < len(candidates[i]):
                pattern, index = candidates[i][level]
                indices.setdefault((pattern, roles[i]), set()).add(index)
        left = []
        for i in pending:
            if level < len(candidates[i]):
                pattern, index = candidates[i][level]
                if len(indices[(pattern, roles[i])]) >= 2:
                    chosen[i] = (pattern, index)
                else:
                    left.append(i)
        pending, level = left, level + 1
    return chosen


def first_tensor(value):
    """The first tensor in a module's input or output (a tensor, or a tuple / list /
    dict holding one), or None."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for v in value:
            t = first_tensor(v)
            if t is not None:
                return t
    return None


_ACTIVATION_NODES = ("ReluBackward", "ThresholdBackward", "GeluBackward", "SiluBackward",
                     "TanhBackward", "SigmoidBackward", "EluBackward", "LeakyReluBackward")


def adds_input(output, inp, max_nodes=64):
    """Whether ``output`` is ``inp`` plus something: its autograd graph reaches ``inp``'s
    node through an addition, with only additions, scalings and normalisations (a
    post-norm block) on the way, after at most one activation on the sum (a ResNet
    BasicBlock)."""
    if output is None or inp is None or output.shape != inp.shape or output.grad_fn is None:
        return False
    target = inp.grad_fn
    start = output.grad_fn
    # an activation after the sum (ResNet's BasicBlock: relu(x + f(x)))
    if type(start).__name__.startswith(_ACTIVATION_NODES) and start.next_functions:
        start = start.next_functions[0][0]
    stack, seen = [(start, False)], set()
    while stack and len(seen) < max_nodes:
        node, added = stack.pop()
        if node is None or (id(node), added) in seen:
            continue
        seen.add((id(node), added))
        name = type(node).__name__
        if not (name.startswith(("AddBackward", "MulBackward")) or "Norm" in name):
            continue
        added = added or name.startswith("AddBackward")
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            if nxt is target or (target is None and getattr(nxt, "variable", None) is inp):
                if added:
                    return True
                continue
            stack.append((nxt, added))
    return False
