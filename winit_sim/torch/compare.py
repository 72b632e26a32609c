"""A torch model that winit_sim can express, measured beside winit_sim's kernels on the
model's own weights and beside mean-field theory."""
import numpy as np
import pandas as pd
import torch

from ..activations import resolve_activation
from ..inits import resolve_init
from ..simulate import propagate
from ..theory.meanfield import predict, predict_layers
from .diagnose import (cotangent, diagnose, log10_mean_square, output_stats, saturated)
from .modules import PASS_THROUGH, activation_of, check_model, role
from .residual import ResidualNet

QUANTITIES = ("log10_pre_q", "log10_post_q", "log10_grad_q", "log10_wgrad_q", "frac_zero",
              "frac_saturated", "unit_var_ratio")
THEORY = ("log10_pre_q", "log10_post_q", "log10_grad_q", "log10_wgrad_q")
STREAM = ("log10_stream_q", "log10_branch_q", "log10_stream_grad_q", "log10_wgrad2_q")


def _mlp_layers(model):
    """(linears, activation modules, activation spec, ends with a Linear) of a stack of
    Linear + one elementwise activation; ValueError naming what does not fit."""
    leaves = [(n, m) for n, m in model.named_modules()
              if not list(m.children()) and not isinstance(m, PASS_THROUGH)]
    linears, acts, spec = [], [], None
    for name, module in leaves:
        expect = "linear" if len(linears) == len(acts) else "activation"
        kind = role(module)
        if kind == "linear" and expect == "linear":
            linears.append((name, module))
        elif kind == "activation" and expect == "activation" and activation_of(module):
            this = resolve_activation(activation_of(module)).canonical()
            if spec is not None and this != spec:
                raise ValueError(f"compare needs one activation throughout: module {name!r} "
                                 f"is {this}, earlier ones {spec}")
            spec = this
            acts.append((name, module))
        else:
            raise ValueError(f"compare expresses a stack of nn.Linear, each followed by one "
                             f"elementwise activation winit_sim knows (the last may have "
                             f"none); module {name!r} ({type(module).__name__}) does not fit: "
                             f"expected {'an nn.Linear' if expect == 'linear' else 'an activation'}")
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to compare")
    return linears, acts, spec or "linear", len(acts) < len(linears)


def compare(model, inputs, *, cotangent_seed=0, init=None):
    """Statistics of a torch MLP beside :func:`winit_sim.propagate` on the same weights,
    input and cotangent, and beside the mean-field prediction for its weights' variances.

    Parameters
    ----------
    model : torch.nn.Module
        A stack of nn.Linear (with or without bias), each followed by the same
        elementwise activation, in registration order (an nn.Sequential, possibly
        nested); the last Linear may have no activation (a read-out). Or a residual
        net of winit_sim's architectures, :class:`~winit_sim.torch.residual.ResidualNet`
        (:func:`~winit_sim.torch.residual_net`).
    inputs : tensor, shape (batch, n_0)
    cotangent_seed : int
        As in :func:`diagnose`.
    init : str or tuple, optional
        For a ResidualNet, the scheme its weights were drawn with
        (``residual_net(..., init=...)``): the theory's prediction needs it (without
        it the ``theory_`` columns are NaN). An MLP's theory uses its weights' own
        variances.

    Returns
    -------
    pandas.DataFrame
        One row per layer: ``layer``, ``module``, and for each statistic of
        :func:`winit_sim.simulate` (``log10_pre_q``, ``log10_post_q``,
        ``log10_grad_q``, ``log10_wgrad_q``, ``frac_zero``, ``frac_saturated``,
        ``unit_var_ratio``) its ``torch_`` (measured by hooks), ``winit_sim_``
        (propagate) and, for the four q's, ``theory_`` value
        (:func:`winit_sim.theory.predict_layers` with each layer's Var(W) and Var(b)
        the mean square of its entries). A read-out layer's winit_sim values are those
        of the net below it, whose top gradient is g W_L. A ResidualNet gives one row
        per block with simulate's residual columns besides (``log10_stream_q``,
        ``log10_branch_q``, ``log10_stream_grad_q``, ``log10_wgrad2_q``).
    """
    check_model(model)
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 2:
        raise ValueError("compare needs inputs of shape (batch, n_0)")
    if isinstance(model, ResidualNet):
        return _compare_residual(model, inputs, cotangent_seed, init)
    linears, acts, spec, readout = _mlp_layers(model)
    measured = diagnose(model, inputs, cotangent_seed=cotangent_seed)
    lin_rows = measured[measured.role == "linear"].reset_index(drop=True)
    act_rows = measured[measured.role == "activation"].reset_index(drop=True)
    with torch.no_grad():
        y = model(inputs)
    dt = np.float32 if inputs.dtype == torch.float32 else np.float64
    mats = [m.weight.detach().cpu().to(torch.float64).numpy() for _, m in linears]
    biases = [m.bias.detach().cpu().to(torch.float64).numpy() if m.bias is not None
              else np.zeros(m.out_features) for _, m in linears]
    x = inputs.detach().cpu().numpy().astype(dt)
    g = cotangent(y, cotangent_seed).detach().cpu().to(torch.float64).numpy()
    depth = len(linears)
    inner = depth - 1 if readout else depth
    if readout:
        g = g @ mats[-1]
    sim = propagate(mats[:inner], x, spec, grad_output=g.astype(dt),
                    biases=biases[:inner]) if inner else None
    widths = [mats[0].shape[1]] + [w.shape[0] for w in mats]
    theory = predict_layers(widths, spec, [float(np.mean(w * w)) for w in mats],
                            [float(np.mean(b * b)) for b in biases],
                            input_var=float(np.mean(x.astype(np.float64) ** 2)),
                            batch=x.shape[0], last_activation=not readout)
    rows = []
    for l in range(depth):
        row = {"layer": l + 1, "module": linears[l][0],
               "activation_module": acts[l][0] if l < len(acts) else None}
        lin, act = lin_rows.iloc[l], act_rows.iloc[l] if l < len(acts) else None
        torch_values = {"log10_pre_q": lin.log10_pre_q, "log10_grad_q": lin.log10_grad_q,
                        "log10_wgrad_q": lin.log10_wgrad_q,
                        "unit_var_ratio": lin.unit_var_ratio,
                        "log10_post_q": act.log10_out_q if act is not None else np.nan,
                        "frac_zero": act.frac_zero if act is not None else np.nan,
                        "frac_saturated": act.frac_saturated if act is not None else np.nan}
        for q in QUANTITIES:
            row["torch_" + q] = float(torch_values[q])
            row["winit_sim_" + q] = float(sim[q].iloc[l]) if l < inner else np.nan
            if q in THEORY:
                row["theory_" + q] = float(theory["theory_" + q].iloc[l])
        rows.append(row)
    return pd.DataFrame(rows)


def _measured_blocks(model, x, cotangent_seed):
    """simulate's per-block statistics of a ResidualNet, from torch autograd."""
    h, parts = x.detach().clone().requires_grad_(True), []
    for block in model.blocks:
        a, y, f, h = block.parts(h)
        parts.append((a, y, f, h))
    g = cotangent(h, cotangent_seed)
    weights, _ = model.weights()
    tensors = [p[0] for p in parts] + [p[3] for p in parts]
    grads = torch.autograd.grad((h * g).sum(), weights + tensors, allow_unused=True)
    wgrad, agrad = grads[:len(weights)], grads[len(weights):len(weights) + len(parts)]
    hgrad = grads[len(weights) + len(parts):]
    rows, branch = [], len(weights) // len(parts)
    for l, (a, y, f, out) in enumerate(parts):
        pre, post = output_stats(a), output_stats(y)
        rows.append({
            "log10_pre_q": np.log10(pre["q"]) if pre["q"] > 0 else -np.inf,
            "log10_post_q": np.log10(post["q"]) if post["q"] > 0 else -np.inf,
            "frac_zero": post["frac_zero"], "frac_saturated": saturated(model.activation, a),
            "unit_var_ratio": pre["unit_var_ratio"],
            "log10_grad_q": log10_mean_square(agrad[l]),
            "log10_wgrad_q": log10_mean_square(wgrad[l * branch]),
            "log10_stream_q": log10_mean_square(out), "log10_branch_q": log10_mean_square(f),
            "log10_stream_grad_q": log10_mean_square(hgrad[l]),
            "log10_wgrad2_q": log10_mean_square(wgrad[l * branch + 1]) if branch == 2
            else np.nan})
    return rows, g


def _compare_residual(model, inputs, cotangent_seed, init):
    """compare for a ResidualNet: per block, torch beside propagate(arch=) and predict."""
    if init is not None:
        resolve_init(init)
    measured, g = _measured_blocks(model, inputs, cotangent_seed)
    weights, biases = model.weights()
    to_np = lambda t: t.detach().cpu().to(torch.float64).numpy()
    dt = np.float32 if inputs.dtype == torch.float32 else np.float64
    x = inputs.detach().cpu().numpy().astype(dt)
    sim = propagate([to_np(w) for w in weights], x, model.activation,
                    grad_output=to_np(g).astype(dt),
                    biases=[to_np(b) if b is not None else np.zeros(w.shape[0])
                            for w, b in zip(weights, biases)], arch=model.arch)
    depth = len(model.blocks)
    theory = None
    if init is not None:
        theory = predict(model.width, depth, activation=model.activation, init=init,
                         input_var=float(np.mean(x.astype(np.float64) ** 2)),
                         batch=x.shape[0], arch=model.arch)
    rows = []
    for l in range(depth):
        row = {"layer": l + 1, "module": f"blocks.{l}"}
        for q in QUANTITIES + STREAM:
            row["torch_" + q] = float(measured[l][q])
            row["winit_sim_" + q] = float(sim[q].iloc[l]) if q in sim.columns else np.nan
            if q in THEORY + STREAM:
                col = "theory_" + q
                row[col] = float(theory[col].iloc[l]) if theory is not None and \
                    col in theory.columns else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
