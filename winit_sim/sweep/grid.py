"""Sweep grids: validation, canonical names, and per-cell seeds."""
from dataclasses import asdict, dataclass
import hashlib
import numbers

from ..activations import resolve_activation
from ..checks import check_dtype, check_nonneg_float, check_positive_int, check_seed
from ..inits import resolve_init
from ..layers import ARCHS, check_method, resolve_arch

MLP = "mlp"


@dataclass(frozen=True)
class Grid:
    """A width x depth x activation x init x arch grid and the settings every cell shares.

    Activations, inits and archs are stored as canonical spec strings, so
    ``"kaiming_normal"`` and ``"he_normal"`` name the same cell.
    """
    widths: tuple
    depths: tuple
    activations: tuple
    inits: tuple
    trials: int = 1
    seed: int = 0
    batch: int = 64
    bias_std: float = 0.0
    dtype: str = "float64"
    backward: bool = True
    method: str = "auto"
    archs: tuple = (MLP,)

    @property
    def groups(self):
        """(width, activation, init, arch) tuples; each is one net of the deepest depth
        (or, for an arch whose blocks depend on the depth, one net per depth)."""
        return [(w, a, i, r) for w in self.widths for a in self.activations for i in self.inits
                for r in self.archs]

    @property
    def n_cells(self):
        return len(self.groups) * len(self.depths)

    def to_dict(self):
        d = asdict(self)
        if self.archs == (MLP,):   # a plain grid's manifest is what it was before archs
            del d["archs"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _int_list(values, name):
    values = _as_list(values, name)
    out = sorted({check_positive_int(v, f"{name} entry") for v in values})
    return tuple(out)


def _as_list(values, name):
    if isinstance(values, (str, bytes)) or isinstance(values, numbers.Number):
        values = [values]
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"{name} must be a list, got {values!r}") from None
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values


def _spec_list(values, name, resolve):
    out = []
    for v in _as_list(values, name):
        c = resolve(v).canonical()
        if c not in out:
            out.append(c)
    return tuple(out)


def make_grid(widths, depths, activations, inits, *, trials=1, seed=0, batch=64, bias_std=0.0,
              dtype="float64", backward=True, method="auto", archs=(MLP,)):
    """Validate a grid's axes and settings and return a :class:`Grid`."""
    if not isinstance(backward, bool):
        raise TypeError(f"backward must be true or false, got {backward!r}")
    return Grid(
        widths=_int_list(widths, "widths"),
        depths=_int_list(depths, "depths"),
        activations=_spec_list(activations, "activations", resolve_activation),
        inits=_spec_list(inits, "inits", resolve_init),
        trials=check_positive_int(trials, "trials"),
        seed=check_seed(seed),
        batch=check_positive_int(batch, "batch"),
        bias_std=check_nonneg_float(bias_std, "bias_std"),
        dtype=check_dtype(dtype).name,
        backward=backward,
        method=check_method(method),
        archs=_spec_list(archs, "archs", ARCHS.resolve),
    )


def cell_seed(seed, width, activation, init, arch=MLP):
    """Seed of the (width, activation, init, arch) net: a hash of those alone.

    Depth is left out on purpose (every depth is a prefix of the deepest net), and
    so is everything else in the grid, so a cell's numbers never depend on which
    other cells are in the grid or on their order. The plain MLP's seed is that of
    (seed, width, activation, init), as before archs existed.
    """
    text = f"{seed}|{width}|{activation}|{init}" + ("" if arch == MLP else f"|{arch}")
    text = text.encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def depth_free(arch, width, depths):
    """Whether an arch's blocks are the same at every depth of the grid, so that one net
    of the deepest depth gives every depth (alpha=inv_sqrt_depth and the presets
    scale with the depth: each depth is then a net of its own)."""
    if resolve_arch(arch) is None:
        return True
    first = resolve_arch(arch, depths[0], width)
    return all(resolve_arch(arch, d, width) == first for d in depths[1:])
