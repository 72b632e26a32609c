"""Layer kinds, normalisations, architectures and engines: the registries the
kernels' network descriptions use.

A plain network is a table of layers (see :mod:`winit_sim.kernels.layer`); each
layer's ``kind`` is the code of one entry of :data:`LAYER_KINDS`. A residual
network is a stack of blocks (see :mod:`winit_sim.kernels.residual`) whose
normalisation is a :data:`NORMS` code. :data:`ARCHS` holds the architecture
specs users write (``arch="residual:branch=2,norm=layernorm"``) and the named
presets, each an expansion into the residual entry's parameters;
:func:`resolve_arch` turns a spec and a depth into the numbers the kernels take.
"""
from dataclasses import dataclass
import math

from .registry import Entry, Param, Registry


@dataclass(frozen=True)
class LayerKind(Entry):
    """A kind of layer. ``weights``: whether it has a weight matrix (and so an init)."""
    weights: bool = True


LAYER_KINDS = Registry("layer kind", [
    LayerKind("dense", doc="h = x W^T + b, x_next = phi(h)"),
    LayerKind("residual", doc="x_l = beta x_{l-1} + alpha F(x_{l-1}), F one or two dense maps "
              "around phi, with an optional normalisation before F or after the sum"),
])


@dataclass(frozen=True)
class Norm(Entry):
    """A normalisation over the units of each sample (no learned gain or bias at init).

    ``centered``: it subtracts the sample's mean over units first.
    """
    centered: bool = False


NORMS = Registry("norm", [
    Norm("none", doc="identity"),
    Norm("layernorm", centered=True, doc="(x - mean(x)) / sqrt(var(x) + eps)"),
    Norm("rmsnorm", doc="x / sqrt(mean(x^2) + eps)"),
])
NO_NORM = NORMS.code("none")

ALPHA_WORDS = {"inv_sqrt_depth": lambda depth: 1.0 / math.sqrt(depth),
               "inv_depth": lambda depth: 1.0 / depth}


@dataclass(frozen=True)
class Arch(Entry):
    """An architecture spec. ``expand(params, depth)``: the residual parameters it
    stands for (None for the plain MLP; the residual entry itself is the identity)."""
    expand: object = None


_RESIDUAL_PARAMS = {
    "branch": Param("1", choices=("1", "2")),
    "hidden": Param(None, minimum=1.0, integer=True),
    "norm": Param("none", choices=tuple(NORMS.names())),
    "position": Param("pre", choices=("pre", "post")),
    "alpha": Param(1.0, minimum=0.0, words=tuple(ALPHA_WORDS)),
    "beta": Param(1.0, minimum=0.0, positive=True),
    "in_scale": Param(1.0, minimum=0.0),
    "out_scale": Param(1.0, minimum=0.0),
    "eps": Param(1e-5, minimum=0.0, positive=True),
    "train_alpha": Param("no", choices=("no", "yes")),   # train() learns alpha per block
}


def _preset(**fixed):
    """A named expansion: the residual defaults, with ``fixed`` (values, or callables
    of the depth L) in place."""
    def expand(params, depth):
        out = {k: p.default for k, p in _RESIDUAL_PARAMS.items()}
        for k, v in fixed.items():
            out[k] = v(depth) if callable(v) else v
        return out
    return expand


ARCHS = Registry("arch", [
    Arch("mlp", doc="h_l = x_{l-1} W_l^T + b_l, x_l = phi(h_l): the plain network"),
    Arch("residual", _RESIDUAL_PARAMS, expand=lambda params, depth: dict(params),
         doc="branch=1: x_l = x_{l-1} + alpha (W phi(N(x_{l-1})) + b); branch=2: "
             "x_l = x_{l-1} + alpha (V phi(W N(x_{l-1}) + b) + c), W of width hidden "
             "(default the stream's); position=post: x_l = N(beta x_{l-1} + alpha F(x_{l-1})); "
             "in_scale / out_scale multiply the init's scale of the branch's first / last "
             "matrix (0: a zero matrix); train_alpha=yes: train() learns alpha per block"),
    Arch("fixup", expand=_preset(branch="2", in_scale=lambda L: L ** -0.5, out_scale=0.0),
         doc="Zhang et al. 2019 with m=2: branch=2, no norm, the branch's last matrix "
             "zero and its first scaled by L^(-1/2)"),
    Arch("skipinit", expand=_preset(branch="2", alpha=0.0, train_alpha="yes"),
         doc="De & Smith 2020 (ReZero is the same at init): branch=2, no norm, alpha=0, "
             "a trainable scalar"),
    Arch("deepnorm", expand=_preset(branch="2", norm="layernorm", position="post",
                                    beta=lambda L: (2.0 * L) ** 0.25,
                                    in_scale=lambda L: (8.0 * L) ** -0.25,
                                    out_scale=lambda L: (8.0 * L) ** -0.25),
         doc="Wang et al. 2022: post-LN, x_l = LN(beta x_{l-1} + F(x_{l-1})) with "
             "beta = (2L)^(1/4) and both branch matrices scaled by (8L)^(-1/4)"),
    Arch("gpt2", expand=_preset(branch="2", norm="layernorm", hidden="4n",
                                out_scale=lambda L: (2.0 * L) ** -0.5),
         doc="Radford et al. 2019: pre-LN, branch=2 with hidden = 4n, the branch's output "
             "matrix scaled by 1/sqrt(2L)"),
])


@dataclass(frozen=True)
class Blocks:
    """A resolved residual architecture: the numbers the kernels take."""
    name: str
    branch: int
    hidden: int
    norm: int
    post: bool
    alpha: float
    beta: float
    in_scale: float
    out_scale: float
    eps: float
    train_alpha: bool = False


def resolve_arch(arch, depth=None, width=None):
    """Validate an arch spec; with ``depth`` and ``width``, resolve it.

    Returns None for the plain MLP, else (given depth and width) a
    :class:`Blocks`. Raises ValueError naming the problem and the valid
    choices for an unknown arch or key, a bad value, or a contradiction.
    """
    spec = ARCHS.resolve(arch)
    if spec.entry.expand is None:
        return None
    probe = spec.entry.expand(spec.params, 1)
    if probe["position"] == "post" and probe["norm"] == "none":
        raise ValueError(f"arch {spec.canonical()!r}: position=post puts the norm after the "
                         f"sum, so it needs norm=layernorm or rmsnorm (got norm=none)")
    if depth is None or width is None:
        return spec
    p = spec.entry.expand(spec.params, depth)
    branch = int(p["branch"])
    hidden = p["hidden"]
    if hidden == "4n":
        hidden = 4 * width
    if hidden is not None and branch == 1:
        raise ValueError(f"arch {spec.canonical()!r}: hidden is the inner width of branch=2; "
                         f"branch=1 has none")
    if branch == 1 and p["in_scale"] != 1.0:
        raise ValueError(f"arch {spec.canonical()!r}: in_scale scales the first of two branch "
                         f"matrices; branch=1 has one (use out_scale)")
    alpha = p["alpha"]
    alpha = ALPHA_WORDS[alpha](depth) if isinstance(alpha, str) else float(alpha)
    return Blocks(spec.canonical(), branch, int(width if hidden is None else hidden),
                  NORMS.code(p["norm"]), p["position"] == "post", alpha, float(p["beta"]),
                  float(p["in_scale"]), float(p["out_scale"]), float(p["eps"]),
                  p["train_alpha"] == "yes")


def stream_blocks(arch, widths):
    """The resolved arch of a net of layer sizes ``widths`` (depth = len - 1), or None for
    the plain MLP; ValueError for a bad arch, or a residual one with uneven widths."""
    if resolve_arch(arch) is None:
        return None
    widths = [int(w) for w in widths]
    if any(w != widths[0] for w in widths):
        raise ValueError(f"arch {arch!r} has one stream width; got widths {widths} "
                         f"(give width and depth, the number of blocks)")
    return resolve_arch(arch, len(widths) - 1, widths[0])


@dataclass(frozen=True)
class Engine(Entry):
    """An exact simulation engine. ``conditional_only``: it needs weights whose units are
    drawn given the layer input (Gaussian; Haar orthogonal in an MLP)."""
    conditional_only: bool = False


ENGINES = Registry("engine", [
    Engine("matrix", doc="samples every weight matrix (any init)"),
    Engine("conditional", conditional_only=True,
           doc="samples each layer's units given its input, without weight matrices"),
])
AUTO = "auto"
METHODS = (AUTO,) + tuple(ENGINES.names())


def check_method(method):
    """The simulation engine asked for: one of METHODS (see :func:`winit_sim.simulate`)."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    return method
