"""Initialise a torch model with winit_sim's keyed schemes, and the gains in torch's terms."""
from collections import namedtuple
import math
import warnings

import numpy as np
import pandas as pd
import torch

from ..activations import ACTIVATIONS, resolve_activation
from ..checks import check_seed
from ..inits import SAMPLINGS, layer_sampler, needs_gain, resolve_init
from ..simulate import sample_biases, sample_weights
from ..theory.meanfield import gain_table
from ..theory.moments import auto_gain, gain
from .dataflow import UNKNOWN, parameter_names, trace
from .modules import check_model, weighted_layers

BIAS_CHOICES = ("zeros", "keep", "a float std >= 0")


TIED_CHOICES = ("keep", "init")
# a weight matrix init_ writes: ``part`` is the row block of a packed q/k/v (else None)
_Target = namedtuple("_Target", ["name", "module", "weight", "layout", "fan_in", "fan_out",
                                 "receptive_field", "activation", "part", "tied"])


def init_(model, init="he_normal", *, activation=None, seed=0, bias="zeros", inputs=None,
          tied="keep"):
    """Initialise every weight matrix of a model in place, as winit_sim samples its layers.

    The l-th nn.Linear or nn.Conv1d/2d/3d in registration order (``model.named_modules()``,
    l = 1, 2, ...) gets exactly ``winit_sim.sample_weights(init, fan_in, out_features,
    seed=seed, layer=l, activation=..., receptive_field=k)``, reshaped to the weight's shape
    and cast to its dtype and device. A convolution's ``fan_in`` is in_channels / groups x
    k, with k the kernel's number of elements, and its scheme uses torch's fan_out,
    out_channels x k. nn.MultiheadAttention's ``out_proj`` is an nn.Linear and is covered.

    With ``inputs``, one forward pass (:func:`.dataflow.trace`, the model left as it was)
    also finds the matrices that are not an nn.Linear's or Conv's, whatever their
    module's class: HuggingFace's ``Conv1D`` (weight stored (in, out): sampled
    (out, in) and written transposed), parameters used through ``F.linear`` or a matmul,
    and nn.MultiheadAttention's packed q/k/v (three (E, E) matrices, each with its own
    fans). They get l = L + 1, L + 2, ... after the L nn.Linear / Conv layers, in the
    order the forward first uses them, so adding ``inputs`` never changes the others.
    Embeddings are not weight layers here and are left as they are.

    Parameters
    ----------
    model : torch.nn.Module
    init : str or tuple
        A winit_sim init spec, e.g. ``"he_normal"``, ``"orthogonal:gain=auto"``.
    activation : str, tuple or dict, optional
        For ``gain=auto``: the activation whose computed gain each layer gets. One spec
        for every layer, or ``{layer name: spec}``. A layer not given uses, with
        ``inputs``, the activation its output reaches in the forward pass (through views,
        dropout, norms and a bias); without, the first activation module registered after
        it (before the next weighted layer); and linear when there is none. An
        activation winit_sim does not know is an error for ``gain=auto`` (name it here).
    seed : int
        The run's seed (trial 0).
    bias : "zeros", "keep" or float
        Biases set to 0, left as they are, or drawn as simulate draws them with
        ``bias_std`` = this float (:func:`winit_sim.sample_biases`).
    inputs : tensor or tuple of tensors, optional
        The forward's positional arguments (token ids for a language model).
    tied : "keep" or "init"
        A matrix registered under several names (an LM head tied to the input embedding)
        is left as it is (``keep``: its row says so) or initialised (``init``).

    Returns
    -------
    pandas.DataFrame
        One row per matrix: ``layer``, ``module``, ``type``, ``shape``, ``fan_in``,
        ``fan_out`` (torch's), ``scheme``, ``activation`` (used for ``gain=auto``, else
        the one found), ``gain`` (NaN for schemes without one), ``std`` (the scheme's
        std of an entry) and ``note`` (the layout or q/k/v part written, a tied matrix
        left alone, how an activation was read; "" when there is nothing to say).
    """
    check_model(model)
    spec = resolve_init(init)
    seed = check_seed(seed)
    if not (bias in ("zeros", "keep") or (isinstance(bias, (int, float))
                                           and not isinstance(bias, bool) and bias >= 0)):
        raise ValueError(f"bias must be one of {BIAS_CHOICES}, got {bias!r}")
    if tied not in TIED_CHOICES:
        raise ValueError(f"tied must be one of {TIED_CHOICES}, got {tied!r}")
    if activation is not None and not isinstance(activation, dict):
        resolve_activation(activation)
    flow = trace(model, inputs) if inputs is not None else None
    targets = _targets(model, flow)
    if not targets:
        raise ValueError(f"{type(model).__name__} has no weight matrix init_ can find: no "
                         f"nn.Linear or nn.Conv1d/2d/3d"
                         + ("" if flow is not None else ", and no inputs= to find the others "
                            "by a forward pass"))
    if flow is None:
        _warn_unseen(model, targets)
    acts = _activations(targets, activation)
    for t, (act, act_note) in zip(targets, acts):   # before any weight is written
        if act is None and needs_gain(spec):
            raise ValueError(f"init {spec.canonical()!r} needs the activation of {t.name!r}, "
                             f"but its output reaches {act_note}, which winit_sim does not "
                             f"know: give activation={{{t.name!r}: ...}}")
    rows = []
    for l, (t, (act, act_note)) in enumerate(zip(targets, acts), start=1):
        torch_fan_out = t.fan_out * t.receptive_field
        g = auto_gain(spec, act) if act is not None else None
        notes = [n for n in (_layout_note(t), act_note) if n]
        kind, scale = layer_sampler(spec, t.fan_in, torch_fan_out, g)
        if t.tied and tied == "keep":
            notes.append(f"tied to {', '.join(t.tied)}: left as it is (tied='init' "
                         f"initialises it)")
        else:
            w = sample_weights(spec, t.fan_in, t.fan_out, seed=seed, layer=l, activation=act,
                               receptive_field=t.receptive_field)
            _write(t, w, bias, seed, l)
        g = g if g is not None else spec.params.get("gain", math.nan)
        var = list(SAMPLINGS)[kind].variance(scale, t.fan_in, t.fan_out)
        rows.append({"layer": l, "module": t.name, "type": type(t.module).__name__,
                     "shape": tuple(t.weight.shape), "fan_in": t.fan_in,
                     "fan_out": torch_fan_out, "scheme": spec.canonical(),
                     "activation": act.canonical() if act is not None else "(unknown)",
                     "gain": float(g), "std": math.sqrt(var), "note": "; ".join(notes)})
    return pd.DataFrame(rows)


def _targets(model, flow):
    """Every matrix init_ writes: the nn.Linear / Conv layers (registration order), then
    those only the forward pass finds (order of first use)."""
    names = parameter_names(model)
    # each matrix's first use in the forward
    found = {id(use.weight): i for i, use in reversed(list(enumerate(flow.uses)))} \
        if flow is not None else {}
    targets, seen = [], set()
    for layer in weighted_layers(model):
        w = layer.module.weight
        seen.add(id(w))
        act = layer.activation
        if id(w) in found:
            act = flow.activations.get(found[id(w)])
        targets.append(_Target(layer.name, layer.module, w, "out_in", layer.fan_in,
                               layer.fan_out, layer.receptive_field, act, None,
                               tuple(n for n in names[id(w)] if n != f"{layer.name}.weight")))
    if flow is None:
        return targets
    modules = dict(model.named_modules(remove_duplicate=False))
    for i, use in enumerate(flow.uses):
        if use.kind not in ("linear", "conv", "attention") or id(use.weight) in seen:
            continue
        seen.add(id(use.weight))
        parts = (0, 1, 2) if use.layout == "packed_qkv" else (None,)
        for part in parts:
            suffix = "" if part is None else f"[{'qkv'[part]}]"
            targets.append(_Target(use.module + suffix, modules[use.module], use.weight,
                                   use.layout, use.fan_in, use.fan_out, use.receptive_field,
                                   flow.activations.get(i) if part is None else None, part,
                                   tuple(n for n in names[id(use.weight)]
                                         if n != use.param)))
    return targets


def _activations(targets, activation):
    """(spec or None, note) of each target's activation (see init_)."""
    if activation is not None and not isinstance(activation, dict):
        return [(resolve_activation(activation), "")] * len(targets)
    given = activation or {}
    unknown = sorted(set(given) - {t.name for t in targets})
    if unknown:
        raise ValueError(f"activation names no weighted layer: {unknown}; the layers are "
                         f"{[t.name for t in targets]}")
    out = []
    for t in targets:
        if t.name in given:
            out.append((resolve_activation(given[t.name]), ""))
        elif t.activation is not None and t.activation[0] == UNKNOWN:
            out.append((None, f"an activation module {t.activation[1]['module']}"))
        else:
            out.append((resolve_activation(t.activation or "linear"), ""))
    return out


def _layout_note(t):
    if t.layout == "in_out":
        return "stored (in, out): written transposed"
    if t.part is not None:
        return f"rows {t.part * t.fan_out}..{(t.part + 1) * t.fan_out - 1} ({'qkv'[t.part]}) " \
               f"of the packed in-projection"
    return ""


def _write(t, w, bias, seed, l):
    """Copy the sampled (fan_out, fan_in) matrix into the target's weight, and set the
    matching bias as ``bias`` says."""
    weight = t.weight
    with torch.no_grad():
        if t.layout == "in_out":
            weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)).to(weight.dtype))
        elif t.part is not None:
            rows = slice(t.part * t.fan_out, (t.part + 1) * t.fan_out)
            weight[rows].copy_(torch.from_numpy(w).to(weight.dtype))
        else:
            weight.copy_(torch.from_numpy(w).reshape(weight.shape).to(weight.dtype))
        b = _bias_of(t)
        if b is None or bias == "keep":
            return
        if bias == "zeros":
            b.zero_()
        else:
            b.copy_(torch.from_numpy(sample_biases(float(bias), t.fan_out, seed=seed,
                                                   layer=l)).to(b.dtype))


def _bias_of(t):
    """The bias entries that belong to the target's rows, or None."""
    if t.part is not None:
        b = getattr(t.module, "in_proj_bias", None)
        return None if b is None else b[t.part * t.fan_out:(t.part + 1) * t.fan_out]
    b = getattr(t.module, "bias", None)
    ok = isinstance(b, torch.Tensor) and b.ndim == 1 and b.numel() == t.fan_out
    return b if ok and t.module.weight is t.weight else None


def _warn_unseen(model, targets):
    """Warn about matrices init_ cannot place without a forward pass (see init_)."""
    covered = {id(t.weight) for t in targets}
    embeddings = {id(m.weight) for m in model.modules()
                  if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))}
    unseen = [n for n, p in model.named_parameters()
              if p.ndim >= 2 and id(p) not in covered and id(p) not in embeddings]
    if unseen:
        warnings.warn(f"init_ left {len(unseen)} weight tensors that are not an nn.Linear's "
                      f"or Conv's as they are ({', '.join(unseen[:4])}"
                      f"{', ...' if len(unseen) > 4 else ''}): pass inputs= so that a forward "
                      f"pass shows how the model uses them", stacklevel=3)


def gains_table(activations=None):
    """Every activation's computed gain beside ``torch.nn.init.calculate_gain``, in torch's
    terms.

    Parameters
    ----------
    activations : spec or sequence of specs, optional
        One activation spec (a name such as ``"relu"``, or a ``(name, params)`` tuple) or
        a list of them. Default: every registry entry with its default parameters.

    Returns
    -------
    pandas.DataFrame
        ``activation``, ``torch_module`` (the nn class), ``gain`` (winit_sim's computed
        gain: sigma_w keeping E[h^2] at 1), ``calculate_gain`` (torch's, NaN where torch
        has none), ``kaiming_a`` (the ``a`` that makes ``kaiming_normal_(w, a=a,
        nonlinearity='leaky_relu')`` use the computed gain; NaN when the gain is above
        sqrt 2), ``torch_call`` (a torch line that draws with the computed gain), and
        ``edge_of_chaos_sigma_w`` and ``chi1_at_gain`` from the theory.
    """
    if isinstance(activations, (str, tuple)):   # one spec, not a sequence of names
        activations = [activations]
    names = activations or [e.name for e in ACTIVATIONS]
    base = gain_table(names).set_index("activation")
    rows = []
    for act in names:
        spec = resolve_activation(act)
        entry = spec.entry
        g = gain(spec)
        param = spec.params[entry.kernel_param] if entry.kernel_param else None
        try:
            torch_value = torch.nn.init.calculate_gain(entry.name, param)
        except ValueError:
            torch_value = math.nan
        a = math.sqrt(max(2.0 / (g * g) - 1.0, 0.0)) if g <= math.sqrt(2.0) * (1 + 1e-12) \
            else math.nan
        call = (f"kaiming_normal_(w, a={a:.6g}, nonlinearity='leaky_relu')" if not np.isnan(a)
                else f"normal_(w, std={g:.6g} / fan_in ** 0.5)")
        theory = base.loc[spec.canonical()]
        rows.append({"activation": spec.canonical(), "torch_module": entry.torch_module,
                     "gain": g, "calculate_gain": float(torch_value), "kaiming_a": a,
                     "torch_call": call,
                     "edge_of_chaos_sigma_w": theory["edge_of_chaos_sigma_w"],
                     "chi1_at_gain": theory["chi1_at_gain"]})
    return pd.DataFrame(rows)
