"""One forward and backward pass of a torch model with hooks: simulate's statistics per
module, with a verdict from the variance-decay tables' thresholds."""
import math

import numpy as np
import pandas as pd
import torch

from ..activations import kernel_data, resolve_activation
from ..checks import check_positive_int, check_seed
from ..inits import resolve_init
from ..report.tables import STABLE_DECADES, SYMMETRIC_RATIO
from ..simulate import dphi
from .attention import attention_stats, mean_square
from .dataflow import WeightTracer, devices, prepare_inputs, preserved
from .init import init_
from .modules import (activation_of, adds_input, block_group, check_model, first_tensor,
                      repeated_groups, role)

# a module's own weight (a norm's gain, a layer scale, a matrix) at most this large at
# init switches its path off: deliberate (a zero last norm of a branch, a zero head,
# ConvNeXt's layer scale 1e-6) where the rest of the net carries the signal
OFF_AT_INIT = 1e-4
STAT_COLUMNS = ("log10_pre_q", "log10_out_q", "frac_zero", "frac_saturated", "unit_var_ratio",
                "log10_grad_q", "log10_wgrad_q", "weight_max")
# attention rows (:mod:`.attention`): log10 mean squares of q, k, v; entropy; similarity
ATTENTION_COLUMNS = ("log10_q_q", "log10_k_q", "log10_v_q", "attn_entropy",
                     "attn_entropy_ratio", "token_cos_in", "token_cos_out")
KEY_COLUMNS = ("depth_index", "module", "type", "role", "shape")
INPUT, OUTPUT = "(input)", "(output)"
# token ids are no signal: an integer input's row has no forward statistics
_NO_SIGNAL = {"q": math.nan, "frac_zero": math.nan, "unit_var_ratio": math.nan}


def cotangent(output, seed):
    """g ~ N(0, 1) of the output's shape: drawn on the CPU in float64 from
    ``torch.Generator().manual_seed(seed)``, then cast to the output's dtype and device, so
    that every device gets the same g."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(output.shape, generator=gen, dtype=torch.float64)
    return g.to(dtype=output.dtype, device=output.device)


def log10_mean_square(t):
    """log10 mean(t^2) in float64 (-inf for all zeros)."""
    q = mean_square(t)
    return math.log10(q) if q > 0 else -math.inf


def output_stats(y, unit_dim=-1):
    """simulate's forward statistics of a tensor y (units along ``unit_dim``): ``q`` =
    mean(y^2), ``frac_zero`` and ``unit_var_ratio``, in float64."""
    y64 = y.detach().to(torch.float64)
    q = float(y64.square().mean())
    units = y64.movedim(unit_dim, -1).reshape(-1, y64.shape[unit_dim]) if y64.ndim else \
        y64.reshape(1, 1)
    spread = float(units.var(dim=1, unbiased=False).mean())
    return {"q": q, "frac_zero": float((y64 == 0).to(torch.float64).mean()),
            "unit_var_ratio": spread / q if q > 0 else 0.0}


def saturated(activation, h):
    """simulate's frac_saturated of pre-activations h: |phi'(h)| below 1% of sup |phi'|."""
    spec = resolve_activation(activation)
    d = dphi(spec, h.detach().to(torch.float64).cpu().numpy())
    return float(np.mean(np.abs(d) < kernel_data(spec).sat_thr))


def _saturated(module, x):
    spec = activation_of(module)
    return math.nan if spec is None or x is None else saturated(spec, x)


class _Recorder:
    """Forward hooks on every module: a record per call of a module of interest (in the
    order the calls end), tensor hooks for the gradients, and the module being run when
    something fails."""

    def __init__(self, model):
        self.records, self.handles, self.stack = [], [], []
        self.calls = {}   # id(module) -> records made for it (an attention's out_proj)
        self.pending = {}   # id(module) -> its attention's statistics, until its row
        self.residuals = 0   # blocks found so far
        self.conv_context = False
        self.by_name = dict(model.named_modules(remove_duplicate=False))
        names = {}
        for name, module in model.named_modules():
            names.setdefault(id(module), name)
        for name, module in model.named_modules():
            if names[id(module)] != name:
                continue
            self.handles.append(module.register_forward_pre_hook(self._enter(name, module)))
            self.handles.append(module.register_forward_hook(self._leave(name, module,
                                                                         module is model)))

    def _enter(self, name, module):
        def hook(mod, args):
            self.stack.append((name, module, args, self._out_proj_calls(module),
                               self.residuals))
        return hook

    def _out_proj_calls(self, module):
        proj = getattr(module, "out_proj", None) if role(module) == "attention" else None
        return None if proj is None else self.calls.get(id(proj), 0)

    def _leave(self, name, module, is_root):
        kind = role(module)

        def hook(mod, args, output):
            _, _, _, proj_calls, residuals = self.stack.pop() if self.stack else \
                (None, None, None, None, self.residuals)
            y, x = first_tensor(output), first_tensor(args)
            this = kind
            # a block: a container adding its input, with no block inside (a stack of
            # blocks adds its input too)
            if this is None and not is_root and len(list(module.children())) > 0 \
                    and self.residuals == residuals and adds_input(y, x):
                this = "residual"
                self.residuals += 1
            if this is None or y is None or not y.is_floating_point():
                return
            if kind == "conv":
                self.conv_context = True
            elif kind == "linear":
                self.conv_context = False
            if proj_calls is not None and self._out_proj_calls(module) == proj_calls:
                # nn.MultiheadAttention applies out_proj's weights without calling it: its
                # output is the attention's
                self.record(f"{name}.out_proj" if name else "out_proj", module.out_proj,
                            "linear", y)
            self.record(name, module, this, y, x)
        return hook

    def weight_use(self, use, running):
        """A row for a weight use the module hooks do not see (:mod:`.dataflow`): a
        matrix applied by a module of a class torch does not define (HF ``Conv1D``) or
        through ``F.linear`` on another module's parameter, an embedding, and the gain
        of a norm class torch does not define (``LlamaRMSNorm``: a product with a
        vector parameter, in a module whose class name says Norm)."""
        owner = self.by_name.get(use.module)
        if use.op == "multi_head_attention_forward" or use.output is None:
            return   # nn.MultiheadAttention's own row (and out_proj's, see _leave)
        if running and running[-1] is owner and role(owner) is not None:
            return   # the module's own hook records it
        kind = use.kind
        if kind == "scale":   # a norm's gain, or a layer scale (its own row)
            norm = owner is not None and "norm" in type(owner).__name__.lower()
            kind = "norm" if norm else "scale"
        if kind in ("linear", "conv"):
            self.conv_context = kind == "conv"
        # every weight but a norm's gain (the module's own): an embedding's makes the
        # backward reach the layers above it, a layer scale's gives its wgrad
        self.record(use.module if kind != "scale" else use.param, owner, kind, use.output,
                    use.input, weight=use.weight if kind != "norm" else None)

    def attention(self, call):
        """An attention computation (:data:`.dataflow.AttentionCall`): its statistics go to
        its module's row where that module has one (nn.MultiheadAttention), else to a row
        of its own (role ``attention``, named after the module running it, its output
        A V before the output projection)."""
        stats = attention_stats(call.query, call.key, call.value, call.weights, call.output)
        owner = self.by_name.get(call.module)
        if owner is not None and role(owner) == "attention":
            self.pending[id(owner)] = stats
        else:
            self.record(call.module, owner, "attention", call.output).update(stats)

    def record(self, name, module, kind, y, x=None, weight=None):
        unit_dim = 1 if (self.conv_context and y.ndim >= 3) else -1
        rec = {"module": name, "type": type(module).__name__ if module is not None else "",
               "role": kind,
               "shape": tuple(y.shape), **(output_stats(y, unit_dim) if y.is_floating_point()
                                          else _NO_SIGNAL),
               "frac_saturated": _saturated(module, x) if kind == "activation" else math.nan,
               "grad_q": math.nan, "weight": None,
               **dict.fromkeys(("q_q", "k_q", "v_q") + ATTENTION_COLUMNS[3:], math.nan),
               **(self.pending.pop(id(module), {}) if module is not None else {})}
        if weight is not None or kind in ("linear", "conv"):
            rec["weight"] = module.weight if weight is None else weight
        own = rec["weight"] if rec["weight"] is not None else getattr(module, "weight", None)
        rec["weight_max"] = float(own.detach().abs().max()) \
            if isinstance(own, torch.Tensor) and own.numel() > 0 else math.nan
        if module is not None:
            self.calls[id(module)] = self.calls.get(id(module), 0) + 1
        if y.requires_grad:
            y.register_hook(lambda g, rec=rec: rec.__setitem__("grad_q", mean_square(g)))
        self.records.append(rec)
        return rec

    def close(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def _run_failed(rec, err):
    """A ValueError naming the module that failed and the shapes it got."""
    if not rec.stack:
        return ValueError(f"the model's forward failed before any module ran: {err}")
    name, module, args = rec.stack[-1][:3]
    shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
    expects = ""
    for attr in ("in_features", "in_channels", "normalized_shape", "embed_dim"):
        if hasattr(module, attr):
            expects = f" (its {attr} is {getattr(module, attr)})"
            break
    return ValueError(f"the inputs do not fit module {name or '(model)'!r} "
                      f"({type(module).__name__}{expects}): it got input of shape "
                      f"{shapes[0] if len(shapes) == 1 else shapes}; {err}")


def _measure(model, inputs, loss, cotangent_seed):
    """One forward and backward pass: the records of every module of interest, with the
    input's and the output's, in forward order."""
    args = prepare_inputs(inputs)
    rec = _Recorder(model)
    first_weighted = next((role(m) for m in model.modules() if role(m) in ("linear", "conv")),
                          None)
    rec.conv_context = first_weighted == "conv"
    rec.record(INPUT, None, "input", args[0])
    tracer = WeightTracer(model, on_use=lambda use: rec.weight_use(use, tracer.running),
                          on_attention=rec.attention)
    try:
        try:
            with tracer:
                out = model(*args)
        except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as err:
            raise _run_failed(rec, err) from err
        y = first_tensor(out)
        if loss is None:
            if y is None or not y.is_floating_point():
                raise TypeError("the model's output holds no floating-point tensor: give "
                                "loss=, a function of the output that returns a scalar")
            total = (y * cotangent(y, cotangent_seed)).sum()
        else:
            total = loss(out)
            if not isinstance(total, torch.Tensor) or total.numel() != 1:
                raise TypeError("loss must return a scalar tensor")
        if y is not None:
            rec.record(OUTPUT, None, "output", y)
        weights = [r["weight"] for r in rec.records if r["weight"] is not None]
        unique = list({id(w): w for w in weights}.values())
        wanted = [w for w in unique if w.requires_grad]
        if total.requires_grad:
            gw = torch.autograd.grad(total, wanted + [a for a in args if a.requires_grad],
                                     allow_unused=True)
            wq = {id(w): (mean_square(g) if g is not None else 0.0) for w, g in zip(wanted, gw)}
        else:
            wq = {}
        records = rec.records
    finally:
        rec.close()
    for r in records:
        w = r.pop("weight")
        r["wgrad_q"] = wq.get(id(w), math.nan) if w is not None else math.nan
    return records


def _log10(v):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(np.asarray(v, dtype=float))


def _frame(records):
    df = pd.DataFrame(records)
    df.insert(0, "depth_index", np.arange(len(df)))
    q = _log10(df.pop("q"))
    weighted = df.role.isin(["linear", "conv"]).to_numpy()
    df.insert(5, "log10_pre_q", np.where(weighted, q, np.nan))
    df.insert(6, "log10_out_q", np.where(weighted, np.nan, q))
    df["log10_grad_q"] = _log10(df.pop("grad_q"))
    df["log10_wgrad_q"] = _log10(df.pop("wgrad_q"))
    for part in "qkv":
        df[f"log10_{part}_q"] = _log10(df.pop(f"{part}_q"))
    return df[list(KEY_COLUMNS) + list(STAT_COLUMNS) + list(ATTENTION_COLUMNS)]


def fitted_slope(x, y):
    """Least-squares slope of y on x over the finite pairs (NaN with fewer than 2 distinct
    x)."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        return math.nan
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def _verdict(f, b, qq, gg, uvr, units):
    if qq == -np.inf or gg == -np.inf:
        return "dead"
    if units > 1 and uvr < SYMMETRIC_RATIO:
        return "symmetric"
    worst = max((v for v in (f, b) if np.isfinite(v)), key=abs, default=0.0)
    return "stable" if abs(worst) <= STABLE_DECADES else \
        "exploding" if worst > 0 else "vanishing"


def verdicts(df):
    """Add ``block_group``, ``decades_per_block``, ``grad_decades_per_block``,
    ``forward_decades``, ``backward_decades`` and ``verdict`` to a diagnosis.

    Inside repeated blocks (:func:`block_group`: a transformer's ``h.*.attn.c_proj``, a
    ResNet's ``layer1.*.conv2``) depth is the block index, not the place in the block: each
    group of modules with the same pattern and role in two or more blocks is judged by its
    trend across blocks, the least-squares slope of log10 q (``decades_per_block``) and of
    log10 gradient q (``grad_decades_per_block``) against the block index. Its rows'
    ``forward_decades`` is that fitted change from the group's first block and
    ``backward_decades`` from its last, and the group's verdict comes from the fitted change
    over all its blocks.

    Every other module is compared with the modules of its own role, so that a change of
    scale between kinds (a pooling, a normalisation) is not read as depth: its log10 q minus
    that of the first module of its role, and its log10 gradient q minus that of the last
    one (below the read-out: a last Linear or Conv that ends the net, whose gradient is
    the cotangent itself, is not the reference of the layers below it; nor, for the
    forward, a stem: a first weighted module outside the blocks that changes the units per
    sample, pixels to channels, whose output's scale its fans set, and whose gradient the
    norm after it rescales: it is its own reference both ways). Where the two rows hold
    different units per sample (strided stages, pooling to a head, a tapering MLP), the
    change is read per element or per sample, whichever is smaller (:func:`_unit_free`):
    an init keeps one of the two by convention. The ``(output)``
    row compares the output's q with the input's (does the signal reach the output?), the
    ``(input)`` row the input's gradient with the output's (does the gradient reach the
    input?); with a read-out, both judge the path to the read-out's input (its scale is a
    convention: a small head gives small logits on purpose), and the gradient's from the
    stem's output (below the stem's own norm, where one follows it). The verdict: dead (q
    or gradient exactly 0), symmetric (units identical), stable (both changes within the
    tables'
    :data:`~winit_sim.report.tables.STABLE_DECADES`), else exploding or vanishing by the
    larger change; and "off at init" where a small weight switches a path off on purpose
    (:func:`_off_at_init`: inside repeated blocks, or a zero head, below which the rows,
    whose gradient is then exactly 0, are judged by their forward alone; so are the rows of
    a block before its switch, :func:`_behind_switch`, which are no reference either).
    """
    df = df.copy()
    q = df.log10_pre_q.fillna(df.log10_out_q)
    grad = df.log10_grad_q
    found = [block_group(m, r) for m, r in zip(df.module, df.role)]
    pattern = np.array([p for p, _ in found], dtype=object)
    off = _off_at_init(df, pattern, q)
    behind = _behind_switch(df, found, off)
    groups = df.role.where(~df.role.isin(["input", "output"]), "ends")
    # the read-out (the last weighted module, when it ends the net) sees the cotangent
    # itself: the layers below are compared with the last layer below it
    weighted = np.flatnonzero(df.role.isin(["linear", "conv"]).to_numpy())
    readout = weighted.size >= 3 and weighted[-1] == len(df) - 2
    # ... and a stem (the first weighted module, outside the repeated blocks, changing the
    # units per sample) sees the data: its output's scale is set by its fans (3 image
    # channels in, 64 out)
    units = df["shape"].map(lambda s: math.prod(s[1:]))
    stem = weighted[0] if readout and not pattern[weighted[0]] and \
        units.iloc[weighted[0]] != units.iloc[0] else -1
    top = grad.where(~behind)
    bottom = q.where(~behind)
    if readout:
        top.iloc[weighted[-1]] = np.nan
    if stem >= 0:
        bottom.iloc[stem] = np.nan
    log_units = np.log10(units.astype(float))
    with np.errstate(invalid="ignore"):
        fwd = _unit_free(q - bottom.groupby(groups).transform("first"),
                         log_units - log_units.where(bottom.notna()).groupby(groups)
                         .transform("first"))
        bwd = _unit_free(grad - top.groupby(groups).transform("last"),
                         log_units - log_units.where(top.notna()).groupby(groups)
                         .transform("last"))
    if readout:   # the read-out and the stem are their own references
        bwd.iloc[weighted[-1]] = 0.0
    if stem >= 0:
        # (both ways: the norm after it rescales its gradient by the inverse of the output
        # scale its fans set)
        fwd.iloc[stem] = bwd.iloc[stem] = 0.0
    # an embedding's output is an input (tokens, positions, T5's relative-position buckets),
    # its table's scale a convention: each is its own reference
    embedding = (df.role == "embedding").to_numpy()
    fwd[embedding] = 0.0
    bwd[embedding] = 0.0
    fwd = fwd.where(df.role != "input", 0.0).to_numpy(dtype=float, copy=True)
    bwd = bwd.where(df.role != "output", 0.0).to_numpy(dtype=float, copy=True)
    head_in = weighted[-1] - 1 if readout else -1
    if head_in > 0 and df.role.iloc[0] == "input" and df.role.iloc[-1] == "output":
        # the ends judge the body, between the stem and the read-out: their scales are
        # conventions (a small head gives small logits on purpose; a stem's fans set its
        # output's scale, and the gradient's, from pixels to channels). The gradient the
        # body passes down is read below the stem's own norm where it has one (that norm
        # rescales the stem's gradient by the inverse of its output scale)
        body_in = stem + 1 if 0 <= stem < head_in - 1 and df.role.iloc[stem + 1] == "norm" \
            and not pattern[stem + 1] else max(stem, 0)
        with np.errstate(invalid="ignore"):
            fwd[-1] = _unit_free(q.iloc[head_in] - q.iloc[0],
                                 log_units.iloc[head_in] - log_units.iloc[0])
            bwd[0] = _unit_free(grad.iloc[body_in] - grad.iloc[head_in],
                                log_units.iloc[body_in] - log_units.iloc[head_in])
    per_block = np.full(len(df), np.nan)
    grad_per_block = np.full(len(df), np.nan)
    group_total = {}
    repeats = repeated_groups(list(df.module), list(df.role))
    trend_pattern = np.array([p for p, _ in repeats], dtype=object)
    trend_index = np.array([i for _, i in repeats], dtype=float)
    for key, rows in pd.Series(range(len(df))).groupby([trend_pattern, df.role.to_numpy()]):
        rows = rows.to_numpy()
        if not key[0] or np.unique(trend_index[rows]).size < 2:
            continue
        x = trend_index[rows]
        sf, sb = fitted_slope(x, q.to_numpy()[rows]), fitted_slope(x, grad.to_numpy()[rows])
        per_block[rows], grad_per_block[rows] = sf, sb
        fwd[rows] = sf * (x - x.min())
        bwd[rows] = sb * (x - x.max())
        for r in rows:
            group_total[r] = (sf * np.ptp(x), sb * -np.ptp(x))
    df.insert(df.columns.get_loc("role") + 1, "block_group",
              np.where(np.isfinite(per_block), trend_pattern, ""))
    df["decades_per_block"] = per_block
    df["grad_decades_per_block"] = grad_per_block
    df["forward_decades"] = fwd
    df["backward_decades"] = bwd
    judged = grad.where(~behind)
    if len(df) and off[-1]:
        # a zero head passes no gradient down at init (exactly 0): the rows below are
        # judged by their forward alone
        judged[judged == -np.inf] = np.nan
    totals = [group_total.get(i, (fwd[i], bwd[i])) for i in range(len(df))]
    df["verdict"] = [_verdict(f, b if np.isfinite(judged.iloc[i]) else np.nan, q.iloc[i],
                              judged.iloc[i], df.unit_var_ratio.iloc[i], units.iloc[i])
                     for i, (f, b) in enumerate(totals)]
    df.loc[off, "verdict"] = "off at init"
    return df


def _unit_free(change, units_change):
    """Of a change in log10 mean square per element between two rows, and the same change
    per sample (``units_change``: log10 of the ratio of their units per sample), the
    smaller in size. An init that keeps the per-element scale one way (fan_in: the forward)
    keeps the per-sample one the other way (the gradient), so a change that a change of
    units explains (strided stages, pooling to a head, a tapering MLP) is that
    convention, not depth. Equal units: the change itself. Scalars or Series."""
    per_sample = change + units_change
    if np.ndim(change) == 0:
        return per_sample if abs(per_sample) < abs(change) else change
    return change.where(~(per_sample.abs() < change.abs()), per_sample)


def _behind_switch(df, found, off):
    """Rows inside a block before the module that switches the block's branch off at init
    (a boolean mask): their gradient is 0 or scaled by the switch, so they are judged by
    their forward alone and are no reference for other rows."""
    behind = np.zeros(len(df), bool)
    instance = [(p.partition("*")[0], i) if p else None for p, i in found]
    for r in np.flatnonzero(off):
        if instance[r] is None:
            continue
        for j in range(r):
            if instance[j] == instance[r] and df.role.iloc[j] != "residual":
                behind[j] = True
    return behind


def _off_at_init(df, pattern, q):
    """Rows switched off at init on purpose (a boolean mask): a module in a repeated
    block whose own weight is at most OFF_AT_INIT (the zero last norm of a ResNet branch, a
    layer scale of 1e-6), and a read-out whose weight is that small while its input is
    alive (a zero-initialised head), with the ``(output)`` it feeds."""
    small = (df["weight_max"] <= OFF_AT_INIT).to_numpy()
    off = small & (pattern != "")
    weighted = np.flatnonzero(df.role.isin(["linear", "conv"]).to_numpy())
    # the head's input (the row before it) carries a signal
    if weighted.size and small[weighted[-1]] and weighted[-1] == len(df) - 2 and \
            weighted[-1] > 0 and np.isfinite(q.iloc[weighted[-1] - 1]):
        off[weighted[-1]] = True
        off[len(df) - 1] = True
    return off


def _reinit(model, init, trial):
    if init is not None:
        init_(model, init, seed=trial)
        return
    torch.manual_seed(trial)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
            m.reset_parameters()


def diagnose(model, inputs, *, loss=None, cotangent_seed=0, trials=1, init=None):
    """Signal and gradient statistics of a torch model, per module, from one forward and
    backward pass with hooks.

    Parameters
    ----------
    model : torch.nn.Module
        Run as it is (its training mode is not changed; dropout in training mode adds
        its own randomness).
    inputs : tensor or tuple of tensors
        The forward's positional arguments (floating ones get gradients).
    loss : callable, optional
        ``loss(output) -> scalar tensor``. Default: ``sum(output * g)`` with g ~ N(0, 1)
        (:func:`cotangent`, seeded by ``cotangent_seed``), the loss of
        :func:`winit_sim.simulate`.
    cotangent_seed : int
    trials : int
        With more than 1, every trial t = 0..trials-1 re-initialises the model:
        ``init_(model, init, seed=t)``, or with ``init`` None each module's
        ``reset_parameters()`` after ``torch.manual_seed(t)``; the result is the mean
        over trials, with ``*_sd`` columns (the spread across trials).
    init : str or tuple, optional
        A winit_sim init spec to measure the model with (``init_``, seed = trial).

    Returns
    -------
    pandas.DataFrame
        One row per call of a module of interest, in the order the calls end: every
        Linear, Conv, normalisation, activation and nn.MultiheadAttention, every
        container whose output adds its input (role ``residual``: the stream at the
        block's end), and the ``(input)`` and ``(output)``; and one per weight use the
        forward pass makes outside those modules (:mod:`.dataflow`): a matrix applied by
        a module of another class (HF ``Conv1D``: role ``linear``) or through ``F.linear``
        on a parameter, an embedding (role ``embedding``, with its weight's gradient), and
        the gain of a norm class torch does not define (role ``norm``). Columns: ``depth_index``,
        ``module``, ``type``, ``role``, ``shape``, then as :func:`winit_sim.simulate`
        defines them on the module's output y: ``log10_pre_q`` (Linear / Conv: y is a
        pre-activation) or ``log10_out_q`` (the rest), log10 mean(y^2);
        ``frac_zero``; ``frac_saturated`` (activation modules winit_sim knows, on their
        input); ``unit_var_ratio`` (units: the channels, dim 1, after a convolution,
        else the last dimension); ``log10_grad_q`` (log10 mean((dloss/dy)^2)) and
        ``log10_wgrad_q`` (the weight's gradient). For every attention computation
        (:data:`.dataflow.AttentionCall`: ``F.scaled_dot_product_attention``, the explicit
        ``softmax(q k^T) @ v``, nn.MultiheadAttention), on its module's row or a row of its
        own (role ``attention``, its output A V before the output projection):
        ``log10_q_q``, ``log10_k_q``, ``log10_v_q`` (per-head q, k, v as they enter the
        products), ``attn_entropy`` (nats, mean over batch, heads and queries) and
        ``attn_entropy_ratio`` (to the largest entropy each query could have: 1 uniform,
        0 collapsed), ``token_cos_in`` / ``token_cos_out`` (mean cosine similarity of
        distinct tokens among the values and among A V: rank collapse), as
        :mod:`winit_sim.torch.attention` defines them; NaN on other rows. Then
        ``forward_decades``, ``backward_decades`` and ``verdict`` (:func:`verdicts`).

    Notes
    -----
    The model's parameters, buffers, ``.grad``, training flags, hooks and the global
    torch RNG are as they were afterwards: the gradients are taken with
    ``torch.autograd.grad``, and BatchNorm's running statistics are restored.
    nn.MultiheadAttention applies its ``out_proj`` without calling it, so that Linear has
    no row of its own: the attention row is its output.
    """
    check_model(model)
    cotangent_seed = check_seed(cotangent_seed)
    trials = check_positive_int(trials, "trials")
    if init is not None:
        resolve_init(init)
    if loss is not None and not callable(loss):
        raise TypeError("loss must be a function of the model's output")
    if not any(role(m) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no module diagnose reports on "
                         f"(Linear, Conv1d/2d/3d, a normalisation, an activation, "
                         f"MultiheadAttention)")
    prepare_inputs(inputs)
    frames = []
    with torch.random.fork_rng(devices=devices(inputs)), preserved(model):
        for t in range(trials):
            if trials > 1 or init is not None:
                _reinit(model, init, t)
            frames.append(_frame(_measure(model, inputs, loss, cotangent_seed)))
    if trials == 1:
        return verdicts(frames[0])
    stacked = pd.concat(frames, keys=range(trials), names=["trial"]).reset_index("trial")
    keys = list(KEY_COLUMNS)
    grouped = stacked.groupby(keys[:2], sort=False)
    with np.errstate(invalid="ignore"):
        measured = list(STAT_COLUMNS) + list(ATTENTION_COLUMNS)
        mean = grouped[measured].mean()
        sd = grouped[measured].std(ddof=1).add_suffix("_sd")
    meta = grouped[keys[2:]].first()
    df = pd.concat([meta, mean], axis=1).reset_index()
    df = verdicts(df[keys + measured])
    return pd.concat([df, sd.reset_index(drop=True)], axis=1).assign(trials=trials)
