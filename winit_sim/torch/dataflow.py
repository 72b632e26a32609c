"""What a forward pass does with a model's parameters, whatever the modules' classes.

A :class:`torch.overrides.TorchFunctionMode` sees every torch function the forward calls,
at the outermost level (a functional such as ``F.layer_norm`` is seen once, not the
operators inside it). A call that takes one of the model's parameters as a weight is a
:data:`WeightUse`: ``F.linear`` (nn.Linear, and any module that calls it on a
parameter, such as timm Eva's fused q/k/v), ``addmm`` / ``matmul`` with a parameter
operand (HuggingFace's ``Conv1D``, whose weight is (in, out), the transpose of
nn.Linear's), convolutions, embeddings, the normalisation functionals, a product with a
one-dimensional parameter (the gain of a norm torch does not define, such as
``LlamaRMSNorm``, or a layer scale), and ``F.multi_head_attention_forward`` (the packed
q/k/v projection of nn.MultiheadAttention, three matrices with their own fans).

Each attention computation is an :data:`AttentionCall`, whatever its implementation:
``F.scaled_dot_product_attention`` (its weights recomputed from q, k and the mask),
nn.MultiheadAttention (run once more asking for its per-head weights, dropout off), and
the explicit form ``softmax(q k^T ...) @ v`` (a product of two activations whose result,
through scaling, masking and casts, reaches a softmax over its last axis, whose output,
through dropout, multiplies the values).

Each use names its parameter as the model registers it, the module that owns it, the
matrix's layout and fans (torch's definitions: fan_in = in_features x receptive field),
and the output tensor of the call, so that a diagnosis can measure it.
"""
from collections import namedtuple
import contextlib
import math
import weakref

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .attention import softmax_weights
from .modules import PASS_THROUGH, activation_of, first_tensor

WeightUse = namedtuple("WeightUse", ["op", "kind", "param", "module", "tied", "layout",
                                     "fan_in", "fan_out", "receptive_field", "weight",
                                     "output", "input"])
WeightUse.__doc__ = """One use of a parameter as a weight in a forward pass.

``op``: the torch function's name; ``kind``: linear, conv, embedding, norm, scale or
attention; ``param``: the parameter's registered name (the first, where it is tied);
``module``: the name of the module that owns it; ``tied``: its other names;
``layout``: "out_in" (nn.Linear's (fan_out, fan_in)), "in_out" (the transpose, as HF
Conv1D stores it), "conv", "vector" or "packed_qkv"; ``fan_in``, ``fan_out``: the
matrix's (a convolution's unfolded kernel: fan_in = in_channels / groups x k,
fan_out = out_channels; for packed_qkv, of each of the three), ``receptive_field``: k;
``weight``: the parameter; ``output`` / ``input``: the call's first output and input
tensors."""

AttentionCall = namedtuple("AttentionCall", ["op", "module", "query", "key", "value",
                                             "weights", "output"])
AttentionCall.__doc__ = """One attention computation in a forward pass.

``op``: the torch function that ran it (``scaled_dot_product_attention``,
``multi_head_attention_forward``, or ``softmax`` for the explicit form); ``module``: the
name of the innermost module running it; ``query``, ``key``, ``value``: the per-head
tensors (..., T, d), the heads before T (the key may be None: not seen); ``weights``: the
attention weights (..., T_q, T_k), each row a softmax; ``output``: weights @ value
(..., T_q, d), before any output projection. nn.MultiheadAttention's are
(batch, heads, T, d)."""

# function -> (kind, argument position of the weight, its keyword, layout)
_LINEAR = {F.linear: ("linear", 1, "weight", "out_in")}
_CONV = {f: ("conv", 1, "weight", "conv") for f in (F.conv1d, F.conv2d, F.conv3d)}
_NORMS = {F.layer_norm: ("norm", 2, "weight", "vector"),
          F.group_norm: ("norm", 2, "weight", "vector"),
          F.batch_norm: ("norm", 3, "weight", "vector"),
          F.instance_norm: ("norm", 3, "weight", "vector")}
if hasattr(F, "rms_norm"):
    _NORMS[F.rms_norm] = ("norm", 2, "weight", "vector")
_EMBEDDING = {F.embedding: ("embedding", 1, "weight", "out_in")}
_BY_POSITION = {**_LINEAR, **_CONV, **_NORMS, **_EMBEDDING}
# products whose operand may be a parameter matrix (x @ W: W is (in, out))
_MATMULS = {torch.matmul, torch.mm, torch.Tensor.matmul, torch.Tensor.mm,
            torch.Tensor.__matmul__, torch.Tensor.__rmatmul__}
_MULS = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__}
_SOFTMAXES = {F.softmax, torch.softmax, torch.Tensor.softmax}
_ADDS = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__}
# what a layer's output may pass through before its activation: views, copies, dropout,
# normalisations (and adding a bias parameter, see WeightTracer._passes)
_PASS_FUNCS = {torch.Tensor.view, torch.Tensor.view_as, torch.Tensor.reshape,
               torch.Tensor.reshape_as, torch.reshape, torch.Tensor.transpose,
               torch.transpose, torch.Tensor.permute, torch.permute, torch.Tensor.contiguous,
               torch.Tensor.__getitem__, torch.Tensor.split, torch.split, torch.Tensor.chunk,
               torch.chunk, torch.Tensor.flatten, torch.flatten, torch.Tensor.unflatten,
               torch.Tensor.squeeze, torch.Tensor.unsqueeze, torch.Tensor.clone,
               torch.Tensor.to, torch.Tensor.float, torch.Tensor.type_as, F.dropout,
               F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, *_NORMS}


def _param(args, kwargs, position, keyword, default):
    value = _argument(args, kwargs, position, keyword)
    return float(default if value is None else value)


# functional activations: function -> its registry spec from the call's arguments
_ACTIVATION_FUNCS = {
    **{f: (lambda a, k: ("relu", {})) for f in (F.relu, torch.relu, torch.Tensor.relu)},
    **{f: (lambda a, k: ("tanh", {})) for f in (torch.tanh, torch.Tensor.tanh, F.tanh)},
    **{f: (lambda a, k: ("sigmoid", {}))
       for f in (torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid)},
    F.gelu: lambda a, k: ("gelu", {}),
    F.silu: lambda a, k: ("silu", {}),
    F.selu: lambda a, k: ("selu", {}),
    F.leaky_relu: lambda a, k: ("leaky_relu",
                                {"slope": _param(a, k, 1, "negative_slope", 0.01)}),
    F.elu: lambda a, k: ("elu", {"alpha": _param(a, k, 1, "alpha", 1.0)}),
    F.softplus: lambda a, k: ("softplus", {"beta": _param(a, k, 1, "beta", 1.0)}),
}
UNKNOWN = "unknown"   # an activation winit_sim does not know: (UNKNOWN, {"module": name})


def parameter_names(model):
    """{id(parameter): [every name it is registered under]} (tied weights have several)."""
    names = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return names


def _argument(args, kwargs, position, keyword):
    if len(args) > position:
        return args[position]
    return kwargs.get(keyword)


class _TensorMarks:
    """A value attached to tensors by identity, held weakly: a tensor freed and its id
    reused by another reads as unmarked."""

    def __init__(self):
        self._by_id = {}

    def __bool__(self):
        return bool(self._by_id)

    def get(self, t):
        if not isinstance(t, torch.Tensor):
            return None
        ref, value = self._by_id.get(id(t), (None, None))
        return value if ref is not None and ref() is t else None

    def put(self, t, value):
        self._by_id[id(t)] = (weakref.ref(t), value)


class WeightTracer(TorchFunctionMode):
    """Records every :data:`WeightUse` of ``model``'s parameters while active; each is
    passed to ``on_use`` as it happens (in forward order), and kept in ``uses``.

    A tied parameter (one tensor under several names) is named, at each use, by the name
    whose module is running (the innermost one): an LM head that shares the embedding's
    matrix is the head where the head uses it.
    """

    def __init__(self, model, on_use=None, on_attention=None):
        super().__init__()
        self.names = parameter_names(model)
        self.modules = dict(model.named_modules(remove_duplicate=False))
        self.module_names = {}
        for name, module in model.named_modules():
            self.module_names.setdefault(id(module), name)
        self.on_use = on_use
        self.on_attention = on_attention   # called with each AttentionCall
        # the explicit form's intermediate tensors -> (query, key, weights) (weights None:
        # the scores, before their softmax)
        self._attention_parts = _TensorMarks()
        self._views = _TensorMarks()   # a view of a vector parameter -> the parameter
        self.uses = []
        # uses[i]'s activation: the first one its output reaches through views, dropout,
        # norms and bias additions (a registry spec, or (UNKNOWN, {"module": class}))
        self.activations = {}
        self.running = []   # the modules being called, outermost first
        self._hooks = []
        self._sources = _TensorMarks()   # tensor -> index of the use it comes from

    def _source(self, t):
        return self._sources.get(t)

    def _mark(self, out, index):
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self._sources.put(t, index)

    def _reach(self, index, spec):
        """The activation of use ``index`` is ``spec``, unless it has one already."""
        if index is not None and index not in self.activations:
            self.activations[index] = spec

    def __enter__(self):
        def push(module, args):
            self.running.append(module)
            # an activation module takes one tensor (a rotary embedding takes several)
            index = self._source(args[0]) if len(args) == 1 else None
            if index is None or isinstance(module, PASS_THROUGH) or \
                    any(True for _ in module.children()):
                return
            spec = activation_of(module)
            if spec is not None:
                self._reach(index, spec)
            elif type(module).__module__ == "torch.nn.modules.activation" or (
                    not type(module).__module__.startswith("torch.nn")
                    and not any(True for _ in module.parameters())):
                self._reach(index, (UNKNOWN, {"module": type(module).__name__}))

        def pop(module, args, output):   # returns None: the output stays as it is
            if self.running:
                self.running.pop()

        self._hooks = [torch.nn.modules.module.register_module_forward_pre_hook(push),
                       torch.nn.modules.module.register_module_forward_hook(pop)]
        return super().__enter__()

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self.running = []
        return super().__exit__(*exc)

    def _name(self, t):
        return self.names.get(id(t)) if isinstance(t, torch.nn.Parameter) else None

    def _ordered(self, names):
        """``names`` with the one whose module runs innermost first."""
        if len(names) == 1:
            return names
        for m in reversed(self.running):
            for i, n in enumerate(names):
                if self.modules.get(n.rpartition(".")[0]) is m:
                    return [n] + names[:i] + names[i + 1:]
        return names

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.on_attention is not None:
            with torch.no_grad():
                self._attention(func, args, kwargs, out)
        for use in self._uses(func, args, kwargs, out):
            self.uses.append(use)
            if use.kind in ("linear", "conv", "attention"):
                self._mark(out, len(self.uses) - 1)
            if self.on_use is not None:
                self.on_use(use)
        first = first_tensor(args)
        if func in _PASS_FUNCS and isinstance(out, torch.Tensor):
            param = self._vector_param(first)
            if param is not None:   # gamma.reshape(1, -1, 1, 1)
                self._views.put(out, param)
        index = self._source(first)
        if index is not None:
            if func in _ACTIVATION_FUNCS:
                self._reach(index, _ACTIVATION_FUNCS[func](args, kwargs))
            elif func in _PASS_FUNCS or self._adds_bias(func, args):
                self._mark(out, index)
        return out

    def _emit(self, op, query, key, value, weights, output):
        running = self.module_names.get(id(self.running[-1]), "") if self.running else ""
        self.on_attention(AttentionCall(op, running, query, key, value, weights, output))

    def _attention(self, func, args, kwargs, out):
        """Find attention computations (module docstring) and pass each on."""
        if func is F.scaled_dot_product_attention:
            q, k, v = (_argument(args, kwargs, i, n) for i, n in
                       enumerate(("query", "key", "value")))
            weights = softmax_weights(q, k, _argument(args, kwargs, 3, "attn_mask"),
                                      bool(_argument(args, kwargs, 5, "is_causal")),
                                      kwargs.get("scale"))
            self._emit("scaled_dot_product_attention", q, k, v, weights, out)
        elif func is F.multi_head_attention_forward:
            self._multi_head(args, kwargs)
        elif func in _MATMULS or func is torch.bmm:
            a, b = (args + (None, None))[:2]
            if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or \
                    a.ndim < 3 or b.ndim < 3 or self._name(a) or self._name(b):
                return
            part = self._attention_parts.get(a)
            if part is not None and part[2] is not None:    # weights @ values
                self._emit("softmax", part[0], part[1], b, part[2], out)
            else:                                            # q @ k^T: scores
                self._attention_parts.put(out, (a, b.transpose(-1, -2), None))
        elif func in _SOFTMAXES:
            part = self._attention_parts.get(first_tensor(args))
            dim = _argument(args, kwargs, 1, "dim")
            if part is not None and part[2] is None and dim in (-1, out.ndim - 1):
                self._attention_parts.put(out, (part[0], part[1], out))
        elif self._attention_parts and isinstance(out, torch.Tensor):
            # scaling, masking, casts and dropout carry the mark when the shape stays
            for t in list(args) + list(kwargs.values()):
                part = self._attention_parts.get(t)
                if part is not None and t.shape == out.shape:
                    self._attention_parts.put(out, part)
                    break

    def _multi_head(self, args, kwargs):
        """nn.MultiheadAttention's per-head q, k, v, weights and A V: its functional run
        once more with the weights asked for, dropout off and an identity output
        projection."""
        names = ("query", "key", "value", "embed_dim_to_check", "num_heads",
                 "in_proj_weight", "in_proj_bias", "bias_k", "bias_v", "add_zero_attn",
                 "dropout_p", "out_proj_weight", "out_proj_bias")
        call = {n: _argument(args, kwargs, i, n) for i, n in enumerate(names)}
        call.update({k: v for k, v in kwargs.items() if k not in call})
        query = call["query"]
        e, heads = query.shape[-1], int(call["num_heads"])
        call.update(training=False, need_weights=True, average_attn_weights=False,
                    out_proj_weight=torch.eye(e, dtype=query.dtype, device=query.device),
                    out_proj_bias=None)
        mixed, weights = F.multi_head_attention_forward(**call)
        packed, bias = call["in_proj_weight"], call["in_proj_bias"]
        if call.get("use_separate_proj_weight"):
            mats = [call.get(f"{n}_proj_weight") for n in "qkv"]
        else:
            mats = list(packed.chunk(3))
        biases = list(bias.chunk(3)) if bias is not None else [None] * 3
        per_head = []
        for x, w, b in zip((query, call["key"], call["value"]), mats, biases):
            y = F.linear(x, w, b)    # (T, B, E) or (T, E)
            y = y.unsqueeze(1) if y.ndim == 2 else y
            per_head.append(y.reshape(y.shape[0], y.shape[1], heads, -1).permute(1, 2, 0, 3))
        mixed = mixed.unsqueeze(1) if mixed.ndim == 2 else mixed
        mixed = mixed.reshape(mixed.shape[0], mixed.shape[1], heads, -1).permute(1, 2, 0, 3)
        weights = weights.unsqueeze(0) if weights.ndim == 3 else weights
        self._emit("multi_head_attention_forward", *per_head, weights, mixed)

    def _vector_param(self, t):
        """The one-dimensional parameter that ``t`` is, or is a view of, or None."""
        if self._name(t) is not None:
            return t if t.ndim == 1 else None
        return self._views.get(t)

    def _adds_bias(self, func, args):
        """x + b with b a one-dimensional parameter (a bias added outside the product)."""
        return func in _ADDS and len(args) >= 2 and any(
            self._name(a) is not None and a.ndim == 1 for a in args[:2])

    def _use(self, func, kind, layout, w, out, x):
        names = self._ordered(self._name(w))
        shape = tuple(w.shape)
        if layout == "in_out":
            fan_in, fan_out, k = shape[0], shape[1], 1
        elif layout == "conv":   # the unfolded kernel's matrix (torch's fan_out is x k)
            k = math.prod(shape[2:])
            fan_in, fan_out = math.prod(shape[1:]), shape[0]
        elif layout == "packed_qkv":
            fan_in, fan_out, k = shape[1], shape[0] // 3, 1
        elif layout == "vector":
            fan_in, fan_out, k = shape[0], shape[0], 1
        else:
            fan_in, fan_out, k = shape[1], shape[0], 1
        return WeightUse(getattr(func, "__name__", str(func)), kind, names[0],
                         names[0].rpartition(".")[0], tuple(names[1:]), layout, fan_in,
                         fan_out, k, w, first_tensor(out), x)

    def _uses(self, func, args, kwargs, out):
        x = first_tensor(args)
        if func in _BY_POSITION:
            kind, pos, key, layout = _BY_POSITION[func]
            w = _argument(args, kwargs, pos, key)
            if self._name(w) is not None:
                yield self._use(func, kind, layout, w, out,
                                _argument(args, kwargs, 0, "input"))
        elif func is torch.addmm:   # addmm(bias, x, W): HF Conv1D, W (in, out)
            w = _argument(args, kwargs, 2, "mat2")
            if self._name(w) is not None and w.ndim == 2:
                yield self._use(func, "linear", "in_out", w, out,
                                _argument(args, kwargs, 1, "mat1"))
        elif func in _MATMULS and len(args) >= 2:
            a, b = args[0], args[1]
            if func is torch.Tensor.__rmatmul__:
                a, b = b, a
            if self._name(b) is not None and b.ndim == 2:
                yield self._use(func, "linear", "in_out", b, out, a)
            elif self._name(a) is not None and a.ndim == 2:
                yield self._use(func, "linear", "out_in", a, out, b)
        elif func in _MULS and len(args) >= 2:
            for w, other in ((args[0], args[1]), (args[1], args[0])):
                param = self._vector_param(w)
                if param is not None and _scales_one_axis(w, other, param.shape[0]):
                    yield self._use(func, "scale", "vector", param, out, other)
                    break
        elif func is F.multi_head_attention_forward:
            # (query, key, value, embed_dim, num_heads, in_proj_weight, in_proj_bias,
            #  bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, ...)
            packed = _argument(args, kwargs, 5, "in_proj_weight")
            if self._name(packed) is not None:
                yield self._use(func, "attention", "packed_qkv", packed, out, x)
            proj = _argument(args, kwargs, 11, "out_proj_weight")
            if self._name(proj) is not None:
                yield self._use(func, "linear", "out_in", proj, out, None)


def _scales_one_axis(w, other, size):
    """``w`` (a vector of ``size``, or a view of it with ones elsewhere) multiplies one
    axis of ``other``: its single non-one axis, aligned from the right, is that axis."""
    if not isinstance(other, torch.Tensor) or other.ndim < w.ndim or w.numel() != size:
        return False
    axes = [i for i, n in enumerate(w.shape) if n != 1]
    return len(axes) == 1 and other.shape[other.ndim - w.ndim + axes[0]] == size


def prepare_inputs(inputs):
    """The model's positional inputs as a tuple; floating ones are cloned and require
    grad (so the gradient reaches the input and every module's output)."""
    args = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise TypeError("inputs must be a tensor or a tuple of tensors, got "
                        f"{type(inputs).__name__}")
    return tuple(a.detach().clone().requires_grad_(True) if a.is_floating_point() else a
                 for a in args)


def devices(inputs):
    """The CUDA devices the inputs are on (for torch.random.fork_rng)."""
    args = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    return sorted({a.device.index or 0 for a in args
                   if isinstance(a, torch.Tensor) and a.device.type == "cuda"})


@contextlib.contextmanager
def preserved(model):
    """Restore a model's parameters and buffers (values), ``.grad``, and every module's
    training flag on exit."""
    tensors = list(model.parameters()) + list(model.buffers())
    saved = [t.detach().clone() for t in tensors]
    grads = [p.grad for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for t, s in zip(tensors, saved):
                t.copy_(s)
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        for m, mode in modes:
            m.training = mode


def trace(model, inputs):
    """The :class:`WeightTracer` of one forward pass of ``model`` on ``inputs`` (a tensor
    or a tuple of positional tensors), without gradients; the model's parameters,
    buffers, training flags and the global torch RNG are as they were afterwards."""
    args = prepare_inputs(inputs)
    tracer = WeightTracer(model)
    with torch.random.fork_rng(devices=devices(inputs)), preserved(model), \
            torch.no_grad(), tracer:
        model(*args)
    return tracer
