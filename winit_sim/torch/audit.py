"""What a model's initialization actually is: a row per parameter tensor, its measured
moments and shape, the scheme it matches best, and the flags users ask about (cloned
layers, tied tensors, all-zero tensors, blocks scaled unlike their siblings)."""
import fnmatch
import math

import numpy as np
import pandas as pd
import torch

from ..inits import resolve_init
from ..simulate import weight_variance
from .dataflow import parameter_names
from .modules import check_model, repeated_groups

# the common fixed-std conventions beside the registry's schemes
GPT2_STD = 0.02
TORCH_DEFAULT = "he_uniform:gain=0.5773502691896258"   # kaiming_uniform_(a=sqrt(5))
_SCHEMES = {
    "xavier_uniform": "xavier_uniform", "xavier_normal": "xavier_normal",
    "he_uniform": "he_uniform", "he_normal": "he_normal",
    "lecun_uniform": "lecun_uniform", "lecun_normal": "lecun_normal",
    "torch default (kaiming_uniform a=sqrt(5))": TORCH_DEFAULT,
}
UNIFORM_KURTOSIS = -1.2   # excess kurtosis of a uniform law (a normal's is 0)
ORTHOGONAL_TOL = 1e-4     # max |W W^T / g^2 - I| of an orthogonal matrix, float32 included
SIBLING_TOL = 0.2         # std off the median of its siblings by more than this: flagged
NO_MATCH = 0.2            # a std more than this far from every scheme's matches none


def torch_fans(shape):
    """torch's (fan_in, fan_out) of a weight of ``shape`` (x the receptive field), or
    (NaN, NaN) below two dimensions."""
    if len(shape) < 2:
        return math.nan, math.nan
    k = math.prod(shape[2:])
    return shape[1] * k, shape[0] * k


def _orthogonal_gain(w):
    """g where w (2-D) is g times a (semi-)orthogonal matrix to ORTHOGONAL_TOL, else None."""
    m = w if w.shape[0] <= w.shape[1] else w.T
    gram = m @ m.T
    g2 = float(torch.diagonal(gram).mean())
    if g2 <= 0:
        return None
    err = float((gram / g2 - torch.eye(m.shape[0], dtype=gram.dtype)).abs().max())
    return math.sqrt(g2) if err <= ORTHOGONAL_TOL else None


def distribution(w):
    """(shape name, excess kurtosis) of a float64 tensor's entries: zeros, constant,
    orthogonal (2-D, g times a semi-orthogonal matrix), uniform (bounded at sqrt 3 std,
    kurtosis -1.2), normal (kurtosis 0 within 4 standard errors), truncated normal
    (bounded below 3.5 std, kurtosis between), or other (also where too few entries
    leave both uniform and normal possible)."""
    flat = w.reshape(-1)
    if not bool(flat.any()):
        return "zeros", math.nan
    sd = float(flat.std(unbiased=False))
    if sd == 0.0:
        return "constant", math.nan
    z = (flat - flat.mean()) / sd
    kurt = float((z ** 4).mean()) - 3.0
    n = flat.numel()
    se = math.sqrt(24.0 / n)
    reach = float(z.abs().max())
    if w.ndim == 2 and min(w.shape) > 1 and _orthogonal_gain(w) is not None:
        return "orthogonal", kurt
    # a uniform sample reaches sqrt 3 of its population std (its own std is a little off)
    uniform = reach <= math.sqrt(3.0) * (1 + 3 / math.sqrt(n)) and \
        abs(kurt - UNIFORM_KURTOSIS) < 4 * se + 0.05
    normal = abs(kurt) < 4 * se
    if uniform and normal:   # under ~1000 entries the kurtosis cannot tell them apart
        return "other (too few entries to tell)", kurt
    if uniform:
        return "uniform", kurt
    if normal:
        return "normal", kurt
    if reach < 3.5 and UNIFORM_KURTOSIS < kurt < 0:
        return f"truncated normal (at {_truncation(reach):.2f} std)", kurt
    return "other", kurt


def _kept_variance(c):
    """Var of N(0, 1) truncated to [-c, c]."""
    return 1.0 - 2.0 * c * math.exp(-0.5 * c * c) / math.sqrt(2 * math.pi) / math.erf(
        c / math.sqrt(2.0))


def _truncation(reach):
    """c, in units of the normal's own std, of a normal truncated at +-c whose sample
    reaches ``reach`` of its sample std: c = reach sqrt(kept variance(c))."""
    c = reach
    for _ in range(100):
        c = reach * math.sqrt(_kept_variance(c))
    return c


def _candidates(fan_in, fan_out, n_layer):
    """{label: std} of the schemes a matrix with these (torch) fans could come from."""
    out = {label: math.sqrt(weight_variance(spec, fan_in, fan_out))
           for label, spec in _SCHEMES.items()}
    out["normal std=0.02"] = GPT2_STD
    out["normal std=1 (nn.Embedding's default)"] = 1.0
    if n_layer:
        out[f"0.02/sqrt(2 n_layer) (n_layer={n_layer})"] = GPT2_STD / math.sqrt(2 * n_layer)
    return out


def _family(label):
    return "uniform" if "uniform" in label or label.startswith("torch default") else "normal"


def _best(std, shape_name, fan_in, fan_out, n_layer):
    """(scheme, relative error of the std) closest to ``std`` among the schemes of the
    tensor's shape family (uniform or normal-like), or ("", NaN)."""
    if not math.isfinite(fan_in) or shape_name in ("zeros", "constant") or \
            shape_name.startswith("other"):
        return "", math.nan
    if shape_name == "orthogonal":
        g = std * math.sqrt(max(fan_in, fan_out))
        return f"orthogonal (gain {g:.4g})", 0.0
    family = "uniform" if shape_name == "uniform" else "normal"
    if shape_name.startswith("truncated"):   # torch's std= is the normal's before truncating
        std /= math.sqrt(_kept_variance(float(shape_name.split("at ")[1].split()[0])))
    cands = {k: v for k, v in _candidates(fan_in, fan_out, n_layer).items()
             if _family(k) == family}
    label = min(cands, key=lambda k: abs(math.log(std / cands[k])))
    err = std / cands[label] - 1.0
    return (label if abs(err) <= NO_MATCH else f"none close (nearest: {label})"), err


def _expected_std(spec, fan_in, fan_out):
    """The std an ``expect`` entry asks for: a number, or an init spec for these fans."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        if spec < 0:
            raise ValueError(f"an expected std must be >= 0, got {spec}")
        return float(spec)
    resolve_init(spec)
    return math.sqrt(weight_variance(spec, fan_in, fan_out))


def audit(model, *, n_layer=None, expect=None):
    """What the initialization of a torch model is, tensor by tensor.

    Parameters
    ----------
    model : torch.nn.Module
    n_layer : int, optional
        The number of blocks, to test GPT-2's 0.02/sqrt(2 n_layer) convention too.
    expect : dict, optional
        ``{name pattern: std or init spec}``: the declared intent for the parameters whose
        names match the pattern (``fnmatch``, e.g. ``"*.c_proj.weight"``), such as
        ``{"*.c_proj.weight": 0.02 / math.sqrt(2 * 12)}`` or ``{"*.weight": "he_normal"}``
        (a spec's std is computed for each tensor's fans).

    Returns
    -------
    pandas.DataFrame
        One row per parameter tensor (a tied tensor once): ``name``, ``shape``,
        ``fan_in`` / ``fan_out`` (torch's), ``mean``, ``std``, ``excess_kurtosis``,
        ``distribution`` (:func:`distribution`), ``scheme`` and ``scheme_error`` (the
        best-matching scheme of its shape family among the registry's, torch's default and
        the 0.02 conventions, and std / that scheme's std - 1; "none close" beyond 20%),
        ``block_group``, ``findings``
        (tied to, exact copy of, all zero, scaled unlike its siblings: a tensor in repeated
        blocks whose std is more than 20%, and four standard errors, off the median of the
        same tensor in the other blocks; a query at its key's std / sqrt(d), the
        attention's scale folded into its init as T5 does), and with ``expect``
        ``expected_std`` and ``meets_expectation`` (the std within 5% or four standard
        errors of it; NaN where no pattern matched).
    """
    check_model(model)
    if n_layer is not None and (isinstance(n_layer, bool) or not isinstance(n_layer, int)
                                or n_layer < 1):
        raise ValueError(f"n_layer must be a positive int, got {n_layer!r}")
    if expect is not None and not isinstance(expect, dict):
        raise TypeError("expect must be a dict {name pattern: std or init spec}")
    names = parameter_names(model)
    rows, first_of = [], {}
    for name, p in model.named_parameters():
        w = p.detach().to("cpu", torch.float64)
        shape_name, kurt = distribution(w)
        fan_in, fan_out = torch_fans(tuple(p.shape))
        std = float(w.std(unbiased=False)) if w.numel() > 1 else 0.0
        scheme, err = _best(std, shape_name, fan_in, fan_out, n_layer)
        flags = []
        tied = [n for n in names[id(p)] if n != name]
        if tied:
            flags.append(f"tied to {', '.join(tied)}")
        digest = (tuple(p.shape), hash(w.numpy().tobytes()))
        if shape_name in ("zeros", "constant"):
            pass   # zero biases and unit norm gains are alike by design
        elif digest in first_of and torch.equal(first_of[digest][1], w):
            flags.append(f"exact copy of {first_of[digest][0]}")
        else:
            first_of.setdefault(digest, (name, w))
        if shape_name == "zeros" and not name.endswith("bias"):   # zero biases are usual
            flags.append("all zero")
        rows.append({"name": name, "shape": tuple(p.shape), "fan_in": fan_in,
                     "fan_out": fan_out, "mean": float(w.mean()), "std": std,
                     "excess_kurtosis": kurt, "distribution": shape_name, "scheme": scheme,
                     "scheme_error": err,
                     "findings": flags, "n": w.numel()})
    df = pd.DataFrame(rows)
    owners = [n.rpartition(".") for n in df["name"]]
    groups = repeated_groups([o for o, _, _ in owners], ["linear"] * len(owners))
    df.insert(df.columns.get_loc("findings"), "block_group",
              [f"{g}.{leaf}" if g else "" for (g, _), (_, _, leaf) in zip(groups, owners)])
    _flag_siblings(df)
    _flag_folded_queries(df)
    if expect is not None:
        _check_expectations(df, expect)
    df["findings"] = df["findings"].map("; ".join)
    return df.drop(columns="n")


def _relative_se(kurtosis, n):
    """The relative standard error of a std from n entries: sqrt((kurtosis + 2) / (4 n))."""
    k = kurtosis if np.isfinite(kurtosis) else 0.0
    return math.sqrt(max(k, -2.0) + 2.0) / (2.0 * math.sqrt(n))


def _flag_siblings(df):
    """Flag a tensor whose std is off the median of its block siblings (see audit)."""
    for group, rows in df[df.block_group != ""].groupby("block_group"):
        if len(rows) < 3:
            continue
        median = float(rows["std"].median())
        for i in rows.index:
            s = df.at[i, "std"]
            # beyond SIBLING_TOL and four standard errors of a std from n entries
            if median > 0 and abs(s / median - 1.0) > max(
                    SIBLING_TOL, 4 * _relative_se(df.at[i, "excess_kurtosis"], df.at[i, "n"])):
                df.at[i, "findings"] = df.at[i, "findings"] + [
                    f"scaled unlike its siblings ({group}: std {s:.3g} against a median "
                    f"{median:.3g})"]


# a query projection and its key beside it (the last part of their module's name)
_QUERY_KEY = {"q": "k", "query": "key", "q_proj": "k_proj", "q_lin": "k_lin"}


def _flag_folded_queries(df):
    """Label a query matrix whose std is its key's / sqrt(d), d an integer >= 2 dividing
    its rows: the attention's 1/sqrt(d_head) folded into the query's init (T5 draws q at
    (d_model d_kv)^-1/2 and k at d_model^-1/2, and scales no scores). Deliberate."""
    by_name = {n: i for i, n in enumerate(df["name"])}
    for i, name in enumerate(df["name"]):
        owner, _, leaf = name.rpartition(".")
        parent, _, last = owner.rpartition(".")
        if last not in _QUERY_KEY:
            continue
        j = by_name.get(f"{parent}.{_QUERY_KEY[last]}.{leaf}" if parent else
                        f"{_QUERY_KEY[last]}.{leaf}")
        sq, sk = df.at[i, "std"], df.at[j, "std"] if j is not None else math.nan
        if not (sq > 0 and sk > 0) or df.at[i, "shape"] != df.at[j, "shape"]:
            continue
        ratio = (sk / sq) ** 2
        rows = df.at[i, "shape"][0]
        d = min((d for d in range(2, rows + 1) if rows % d == 0),
                key=lambda d: abs(math.log(ratio / d)), default=0)
        # within 10%, or four standard errors of the ratio of two stds from n entries each
        se = 2.0 * math.hypot(_relative_se(df.at[i, "excess_kurtosis"], df.at[i, "n"]),
                              _relative_se(df.at[j, "excess_kurtosis"], df.at[j, "n"]))
        if d and abs(math.log(ratio / d)) < max(math.log(1.1), 4.0 * se):
            df.at[i, "findings"] = df.at[i, "findings"] + [
                f"the key's std / sqrt({d}): the attention's 1/sqrt(d_head) folded into the "
                f"query's init (T5's convention), deliberate"]


def _check_expectations(df, expect):
    """Add expected_std and meets_expectation (see audit)."""
    expected = np.full(len(df), np.nan)
    for pattern, spec in expect.items():
        hits = [i for i, n in enumerate(df.name) if fnmatch.fnmatch(n, pattern)]
        if not hits:
            raise ValueError(f"expect pattern {pattern!r} matches no parameter; they are "
                             f"named like {list(df.name[:5])}")
        for i in hits:
            expected[i] = _expected_std(spec, df.fan_in.iloc[i], df.fan_out.iloc[i])
    df["expected_std"] = expected
    meets = []
    for s, e, n, k in zip(df["std"], expected, df.n, df.excess_kurtosis):
        if not np.isfinite(e):
            meets.append(math.nan)   # no intent declared for it
            continue
        se = s * _relative_se(k, n)
        meets.append(bool(abs(s - e) <= max(0.05 * e, 4 * se)))
    df["meets_expectation"] = meets
