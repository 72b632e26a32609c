"""Initialise a torch model with winit_sim's keyed schemes, and the gains in torch's terms."""
import math

import numpy as np
import pandas as pd
import torch

from ..activations import ACTIVATIONS, resolve_activation
from ..checks import check_seed
from ..inits import SAMPLINGS, layer_sampler, resolve_init
from ..simulate import sample_biases, sample_weights
from ..theory.meanfield import gain_table
from ..theory.moments import auto_gain, gain
from .modules import check_model, layer_activations, weighted_layers

BIAS_CHOICES = ("zeros", "keep", "a float std >= 0")


def init_(model, init="he_normal", *, activation=None, seed=0, bias="zeros"):
    """Initialise every nn.Linear and nn.Conv1d/2d/3d of a model in place, as winit_sim
    samples its layers.

    The l-th such layer in registration order (``model.named_modules()``, l = 1, 2, ...)
    gets exactly ``winit_sim.sample_weights(init, fan_in, out_features, seed=seed,
    layer=l, activation=..., receptive_field=k)``, reshaped to the weight's shape and cast
    to its dtype and device. A convolution's ``fan_in`` is in_channels / groups x k, with
    k the kernel's number of elements, and its scheme uses torch's fan_out,
    out_channels x k. Other parameters (embeddings, nn.MultiheadAttention's packed
    in-projection) are left as they are; its ``out_proj`` is an nn.Linear and is covered.

    Parameters
    ----------
    model : torch.nn.Module
    init : str or tuple
        A winit_sim init spec, e.g. ``"he_normal"``, ``"orthogonal:gain=auto"``.
    activation : str, tuple or dict, optional
        For ``gain=auto``: the activation whose computed gain each layer gets. One spec
        for every layer, or ``{layer name: spec}``; a layer not given uses the first
        activation module registered after it (before the next weighted layer), and
        linear when there is none. Activations applied as functions inside ``forward``
        are not seen: give them here.
    seed : int
        The run's seed (trial 0).
    bias : "zeros", "keep" or float
        Biases set to 0, left as they are, or drawn as simulate draws them with
        ``bias_std`` = this float (:func:`winit_sim.sample_biases`).

    Returns
    -------
    pandas.DataFrame
        One row per layer: ``layer``, ``module``, ``type``, ``shape``, ``fan_in``,
        ``fan_out`` (torch's), ``scheme``, ``activation`` (used for ``gain=auto``, else
        the one found), ``gain`` (NaN for schemes without one) and ``std`` (the scheme's
        std of an entry).
    """
    check_model(model)
    spec = resolve_init(init)
    seed = check_seed(seed)
    if not (bias in ("zeros", "keep") or (isinstance(bias, (int, float))
                                           and not isinstance(bias, bool) and bias >= 0)):
        raise ValueError(f"bias must be one of {BIAS_CHOICES}, got {bias!r}")
    layers = weighted_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Linear or nn.Conv1d/2d/3d layer: "
                         f"init_ initialises those")
    acts = layer_activations(layers, activation)
    rows = []
    for l, (layer, act) in enumerate(zip(layers, acts), start=1):
        torch_fan_out = layer.fan_out * layer.receptive_field
        w = sample_weights(spec, layer.fan_in, layer.fan_out, seed=seed, layer=l,
                           activation=act, receptive_field=layer.receptive_field)
        weight = layer.module.weight
        with torch.no_grad():
            weight.copy_(torch.from_numpy(w).reshape(weight.shape).to(weight.dtype))
            b = layer.module.bias
            if b is not None and bias == "zeros":
                b.zero_()
            elif b is not None and bias != "keep":
                b.copy_(torch.from_numpy(sample_biases(float(bias), layer.fan_out, seed=seed,
                                                       layer=l)).to(b.dtype))
        g = auto_gain(spec, act)
        kind, scale = layer_sampler(spec, layer.fan_in, torch_fan_out, g)
        g = g if g is not None else spec.params.get("gain", math.nan)
        var = list(SAMPLINGS)[kind].variance(scale, layer.fan_in, layer.fan_out)
        rows.append({"layer": l, "module": layer.name, "type": type(layer.module).__name__,
                     "shape": tuple(weight.shape), "fan_in": layer.fan_in,
                     "fan_out": torch_fan_out, "scheme": spec.canonical(),
                     "activation": act.canonical(), "gain": float(g),
                     "std": math.sqrt(var)})
    return pd.DataFrame(rows)


def gains_table(activations=None):
    """Every activation's computed gain beside ``torch.nn.init.calculate_gain``, in torch's
    terms.

    Parameters
    ----------
    activations : sequence of specs, optional
        Default: every registry entry with its default parameters.

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
