"""winit_sim's residual architectures as torch modules, so that a residual net can be
trained, diagnosed and compared with winit_sim's kernels on the same weights."""
import torch
from torch import nn

from ..activations import ACTIVATIONS, resolve_activation
from ..checks import check_positive_int
from ..layers import NORMS, resolve_arch
from ..simulate import sample_weights


def _activation_module(spec):
    """The torch module of an activation spec (its registry entry's ``torch_module``)."""
    entry = spec.entry
    if not entry.torch_module:
        raise ValueError(f"activation {spec.canonical()!r} has no torch module; those with "
                         f"one: {[e.name for e in ACTIVATIONS if e.torch_module]}")
    kwargs = {attr: spec.params[k] for k, attr in entry.torch_params.items()}
    return getattr(nn, entry.torch_module)(**kwargs)


def _norm_module(code, width, eps):
    name = list(NORMS)[code].name
    if name == "layernorm":
        return nn.LayerNorm(width, eps=eps, elementwise_affine=False)
    if name == "rmsnorm":
        return nn.RMSNorm(width, eps=eps, elementwise_affine=False)
    return nn.Identity()


class ResidualBlock(nn.Module):
    """One block of :data:`winit_sim.layers.ARCHS`: u = x (post) or N(x) (pre); the branch
    a = u (branch=1) or w(u) (branch=2), y = phi(a), f = alpha (w(y) or v(y)); z = beta x +
    f; out = N(z) (post) or z."""

    def __init__(self, blocks, width, activation, bias):
        super().__init__()
        self.w = nn.Linear(width, blocks.hidden if blocks.branch == 2 else width, bias=bias)
        self.act = _activation_module(activation)
        if blocks.branch == 2:
            self.v = nn.Linear(blocks.hidden, width, bias=bias)
        self.norm = _norm_module(blocks.norm, width, blocks.eps)
        self.branch, self.post = blocks.branch, blocks.post
        self.alpha, self.beta = blocks.alpha, blocks.beta

    def parts(self, x):
        """(a, y, f, out): the branch's pre-activation and activation, the scaled branch
        output and the block's output."""
        u = x if self.post else self.norm(x)
        # branch=1 without a pre-norm: a is the stream itself; a node of its own, so that
        # its gradient is the branch's (simulate's log10_grad_q), not the stream's
        a = self.w(u) if self.branch == 2 else (u.clone() if u is x else u)
        y = self.act(a)
        f = self.alpha * (self.v(y) if self.branch == 2 else self.w(y))
        z = self.beta * x + f
        return a, y, f, (self.norm(z) if self.post else z)

    def forward(self, x):
        return self.parts(x)[3]


class ResidualNet(nn.Module):
    """A stack of :class:`ResidualBlock` of one resolved architecture (``self.arch``, the
    spec; ``self.activation``). The weights are torch's defaults until initialised (as
    with :func:`winit_sim.torch.init_`)."""

    def __init__(self, arch, width, depth, activation="relu", bias=True):
        super().__init__()
        width = check_positive_int(width, "width")
        depth = check_positive_int(depth, "depth")
        blocks = resolve_arch(arch, depth, width)
        if blocks is None:
            raise ValueError("ResidualNet needs a residual arch, not the plain MLP "
                             "(build that as an nn.Sequential of Linear and activations)")
        spec = resolve_activation(activation)
        self.arch, self.activation, self.width = blocks.name, spec.canonical(), width
        self.blocks = nn.Sequential(*[ResidualBlock(blocks, width, spec, bias)
                                      for _ in range(depth)])

    def forward(self, x):
        return self.blocks(x)

    def weights(self):
        """The matrices in winit_sim's forward order (W_1[, V_1], W_2, ...) and their
        biases (None where a Linear has none)."""
        mods = [m for b in self.blocks for m in ((b.w, b.v) if b.branch == 2 else (b.w,))]
        return [m.weight for m in mods], [m.bias for m in mods]


def residual_net(arch, width, depth, activation="relu", *, bias=True, init=None, seed=0,
                 dtype=torch.float64):
    """A winit_sim residual architecture as a torch module.

    Parameters
    ----------
    arch : str or tuple
        A residual arch of :data:`winit_sim.layers.ARCHS` (``"residual:branch=2,
        norm=layernorm"``, ``"gpt2"``, ...), resolved at this width and depth.
    width, depth : int
        The stream's width and the number of blocks.
    activation : str or tuple
        Any activation with a torch module (the registry's ``torch_module``).
    bias : bool
    init : str or tuple, optional
        Draw the weights as :func:`winit_sim.simulate` does for this arch: matrix j of
        block l is ``sample_weights(init, ..., seed=seed, layer=l, matrix=j)`` times the
        arch's in_scale / out_scale; biases 0. Default: torch's own init.
    seed : int
    dtype : torch.dtype

    Returns
    -------
    ResidualNet
    """
    model = ResidualNet(arch, width, depth, activation, bias).to(dtype)
    if init is not None:
        blocks = resolve_arch(arch, depth, width)
        scales = [blocks.out_scale] if blocks.branch == 1 else [blocks.in_scale,
                                                                blocks.out_scale]
        weights, biases = model.weights()
        with torch.no_grad():
            for i, (w, b) in enumerate(zip(weights, biases)):
                layer, j = i // blocks.branch + 1, i % blocks.branch
                drawn = sample_weights(init, w.shape[1], w.shape[0], seed=seed, layer=layer,
                                       matrix=j, activation=activation)
                w.copy_(scales[j] * torch.from_numpy(drawn).to(dtype))
                if b is not None:
                    b.zero_()
    return model
