"""Command line: ``winit-sim`` (also ``python -m winit_sim``).

Exit codes: 0 success, 2 bad usage or bad config (the message names the flag
or key), 1 any other failure.
"""
import argparse
import json
import os
import platform
import sys
import tomllib

import pandas as pd

from .activations import ACTIVATIONS
from .checks import DTYPES
from .inits import INITS
from .layers import ARCHS, METHODS, resolve_arch
from .report.tables import QUANTITIES, to_markdown, variance_decay_table
from .simulate import simulate
from .sweep.cells import SweepTimer, run_sweep
from .sweep.grid import make_grid
from .sweep.store import GridMismatch, atomic_write, atomic_write_text

PRESETS = {
    # the source document's cases: zero, constant, small, large, Xavier and He
    # weights under sigmoid, tanh, relu and leaky relu, up to depth 1000
    "seed": dict(widths=[64, 256, 1024], depths=[10, 30, 100, 300, 1000],
                 activations=["sigmoid", "tanh", "relu", "leaky_relu"],
                 inits=["zeros", "constant", "small", "large", "xavier_uniform",
                        "xavier_normal", "he_uniform", "he_normal"],
                 trials=2, batch=16),
    # how to scale a deep net's init with depth: residual branch scalings,
    # normalisation and the named presets against the plain MLP, to depth 10,000
    "depth": dict(widths=[64], depths=[10, 100, 1000, 10000], activations=["relu", "tanh"],
                  inits=["he_normal", "xavier_normal"],
                  archs=["mlp", "residual", "residual:alpha=inv_sqrt_depth",
                         "residual:alpha=inv_depth", "residual:norm=layernorm",
                         "residual:norm=layernorm,position=post", "fixup", "deepnorm", "gpt2"],
                  trials=2, batch=8),
}
ACT_HELP = f"activation spec (e.g. leaky_relu:slope=0.2): {ACTIVATIONS.choices()}"
INIT_HELP = f"init spec (e.g. he_normal:mode=fan_out): {INITS.choices()}"
ARCH_HELP = (f"architecture spec (e.g. residual:branch=2,norm=layernorm,alpha=inv_sqrt_depth): "
             f"{ARCHS.choices()}")
GRID_KEYS = ("widths", "depths", "activations", "inits", "trials", "seed", "batch", "bias_std",
             "dtype", "backward", "method", "archs")


class UsageError(Exception):
    """Bad flags or config: exit code 2."""


def _split(text, cast, flag):
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise UsageError(f"{flag}: expected a comma-separated list, got {text!r}") from None


def _spec_split(text):
    """Split 'a,b:k=1,c' into specs, keeping 'name:k=v,k2=v2' parameter lists together."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" in part and ":" not in part and out:
            out[-1] += "," + part  # a further parameter of the previous spec
        else:
            out.append(part)
    return out


def _load_config(path):
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"--config: no such file {path!r}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not valid TOML: {exc}") from None
    if "sweep" in data and isinstance(data["sweep"], dict):
        data = data["sweep"]
    unknown = sorted(set(data) - set(GRID_KEYS))
    if unknown:
        raise UsageError(f"--config {path}: unknown key(s) {', '.join(unknown)}; "
                         f"valid keys: {', '.join(GRID_KEYS)}")
    return data


def _grid_from_args(args):
    spec = {}
    if args.preset:
        spec.update(PRESETS[args.preset])
    if args.config:
        spec.update(_load_config(args.config))
    for key, flag, cast in (("widths", "--widths", int), ("depths", "--depths", int)):
        value = getattr(args, key)
        if value is not None:
            spec[key] = _split(value, cast, flag)
    for key in ("activations", "inits", "archs"):
        value = getattr(args, key)
        if value is not None:
            spec[key] = _spec_split(value)
    for key in ("trials", "seed", "batch", "bias_std", "dtype", "method"):
        value = getattr(args, key)
        if value is not None:
            spec[key] = value
    if args.forward_only:
        spec["backward"] = False
    missing = [k for k in ("widths", "depths", "activations", "inits") if k not in spec]
    if missing:
        raise UsageError(f"sweep needs {', '.join('--' + m for m in missing)} "
                         f"(or --config FILE, or --preset seed)")
    try:
        return make_grid(spec["widths"], spec["depths"], spec["activations"], spec["inits"],
                         **{k: spec[k] for k in GRID_KEYS[4:] if k in spec})
    except (TypeError, ValueError) as exc:
        where = f" (in {args.config})" if args.config else ""
        raise UsageError(f"{exc}{where}") from None


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def _config_toml(grid, wall, kernel, scheduler=None):
    import numba
    import numpy

    from .cache import VERSION as __version__
    lines = ["# written by winit-sim sweep: exactly what ran", "", "[sweep]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in grid.to_dict().items()]
    lines += ["", "[versions]", f"winit_sim = {_toml_value(__version__)}",
              f"numba = {_toml_value(numba.__version__)}",
              f"numpy = {_toml_value(numpy.__version__)}",
              f"pandas = {_toml_value(pd.__version__)}",
              f"python = {_toml_value(platform.python_version())}",
              "", "[timing]", f"wall_seconds = {wall:.3f}", f"kernel_seconds = {kernel:.3f}",
              f"scheduler = {_toml_value(scheduler or 'in-process')}", ""]
    return "\n".join(lines)


def write_outputs(results, out, plot_width=None, plot_depth=None):
    """Tables (CSV, Markdown) and figures for saved results; returns the forward table."""
    tables = {}
    for q in QUANTITIES:
        try:
            table = variance_decay_table(results, q)
        except ValueError:  # no backward columns
            continue
        tables[q] = table
        atomic_write(os.path.join(out, f"decay_{q}.csv"), lambda tmp: table.to_csv(tmp))
        atomic_write_text(os.path.join(out, f"decay_{q}.md"), to_markdown(table))
    from .report.plots import plot_decay_heatmap, plot_layers
    atomic_write(os.path.join(out, "layers.png"),
                 lambda tmp: plot_layers(results, tmp + ".png", width=plot_width, depth=plot_depth)
                 or os.replace(tmp + ".png", tmp))
    for q, table in tables.items():
        atomic_write(os.path.join(out, f"decay_{q}.png"),
                     lambda tmp: plot_decay_heatmap(table, tmp + ".png", width=plot_width,
                                                    title=q) or os.replace(tmp + ".png", tmp))
    return tables


def _print_tables(tables, quantities=("forward", "backward", "stream", "stream_grad")):
    for q in quantities:
        if q in tables:
            forward = QUANTITIES[q][1] == "forward"
            print(f"\n## {q}: log10 ratio of trial-mean second moments "
                  f"({'layer D / layer 1' if forward else 'layer 1 / top layer D'})\n")
            print(to_markdown(tables[q]), end="")


def _read_results(directory):
    path = os.path.join(directory, "results.parquet")
    if not os.path.exists(path):
        raise UsageError(f"{directory}: no results.parquet (run `winit-sim sweep --out "
                         f"{directory}` first, and let it finish)")
    return pd.read_parquet(path)


def cmd_sweep(args):
    grid = _grid_from_args(args)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out}: exists and is not a directory")
    timer = SweepTimer()
    try:
        results = run_sweep(grid, progress=not args.quiet, out=args.out, force=args.force,
                            timer=timer, scheduler=args.scheduler, workers=args.workers)
    except (GridMismatch, ValueError) as exc:  # input problems found before or while running
        raise UsageError(str(exc)) from None
    atomic_write(os.path.join(args.out, "results.parquet"),
                 lambda tmp: results.to_parquet(tmp, index=False))
    tables = write_outputs(results, args.out, args.plot_width, args.plot_depth)
    wall = timer.wall
    atomic_write_text(os.path.join(args.out, "config.toml"),
                      _config_toml(grid, wall, timer.kernel, args.scheduler))
    print(f"# winit-sim sweep: {grid.n_cells} cells ({len(grid.groups)} nets), "
          f"{len(results)} rows in {args.out}/")
    _print_tables(tables)
    if args.scheduler:
        print(f"\nwall {wall:.1f} s on Dask ({args.scheduler}); kernel {timer.kernel:.1f} s "
              f"summed over the workers' tasks")
    else:
        print(f"\nwall {wall:.1f} s, kernel {timer.kernel:.1f} s "
              f"({100 * timer.kernel / max(wall, 1e-9):.0f}% of wall; the rest is loading, "
              f"pandas, files and figures)")
    return 0


def cmd_run(args):
    try:
        df = simulate(args.width, args.depth, activation=args.activation, init=args.init,
                      batch=args.batch, trials=args.trials, seed=args.seed,
                      bias_std=args.bias_std, dtype=args.dtype, backward=not args.forward_only,
                      method=args.method, arch=args.arch)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.out:
        if args.out.endswith(".parquet"):
            atomic_write(args.out, lambda tmp: df.to_parquet(tmp, index=False))
        else:
            atomic_write(args.out, lambda tmp: df.to_csv(tmp, index=False))
    return 0


def _saved_bias_std(directory):
    try:
        with open(os.path.join(directory, "grid.json"), encoding="utf-8") as fh:
            return float(json.load(fh).get("bias_std", 0.0))
    except (OSError, ValueError):
        return 0.0


def cmd_table(args):
    results = _read_results(args.dir)
    try:
        table = variance_decay_table(results, args.quantity, theory=args.theory,
                                     bias_std=_saved_bias_std(args.dir))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _print_tables({args.quantity: table}, (args.quantity,))
    return 0


def cmd_plot(args):
    results = _read_results(args.dir)
    try:
        write_outputs(results, args.dir, args.plot_width, args.plot_depth)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote figures and tables to {args.dir}/")
    return 0


def cmd_theory(args):
    from . import theory
    try:
        fp = theory.fixed_point(args.activation, args.sw2, args.sb2)
        print(f"activation {args.activation}, sigma_w^2 = {args.sw2:g}, sigma_b^2 = {args.sb2:g}")
        if fp.status != "converged":
            print(f"fixed point q*: none ({fp.status})")
            return 0
        d = theory.depth_scales(args.activation, args.sw2, args.sb2)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(f"fixed point q* = {d['q_star']:.6g}")
    print(f"chi_1 = {d['chi1']:.6g}  ({d['phase']} phase)")
    print(f"chi_q = {d['chi_q']:.6g}, depth scale xi_q = {d['xi_q']:.4g} layers")
    print(f"c* = {d['c_star']:.6g}, chi_c = {d['chi_c']:.6g}, "
          f"depth scale xi_c = {d['xi_c']:.4g} layers")
    print(f"edge of chaos at this sigma_b^2: sigma_w^2 = "
          f"{theory.critical_sw2(args.activation, args.sb2):.6g}")
    return 0


def cmd_gains(args):
    from . import theory
    table = theory.gain_table()
    print("gain: sigma_w keeping E[h^2] = 1 with no bias (computed from the activation);")
    print("edge_of_chaos_sigma_w: chi_1 = 1 at sigma_b = 0; torch_gain: "
          "torch.nn.init.calculate_gain (n/a: none)\n")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="n/a"))
    return 0


def _import_factory(path):
    """The callable at ``package.module:attribute`` (attributes may be dotted)."""
    import importlib
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"factory must be package.module:function, got {path!r}")
    if os.getcwd() not in sys.path:   # a module in the current directory, as python -m finds
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001  (any import failure is the user's path)
        raise UsageError(f"cannot import {module_name!r} (from {path!r}): "
                         f"{type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{module_name!r} has no attribute {attr!r} (from {path!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{path!r} is not callable: it must return a torch.nn.Module")
    return obj


def _torch_bridge():
    try:
        import torch
        from . import torch as bridge
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    return torch, bridge


def _model_and_inputs(torch, args, need_inputs):
    """The factory's model and the forward's inputs: the factory's own when it returns
    ``(model, inputs)``, else drawn from --input-shape (N(0, 1), or token ids below
    --tokens), seeded by --seed."""
    shape = None
    if args.input_shape is not None:
        shape = _split(args.input_shape, int, "--input-shape")
        if not shape or any(n < 1 for n in shape):
            raise UsageError(f"--input-shape must be positive sizes such as 64,784; got "
                             f"{args.input_shape!r}")
    tokens = getattr(args, "tokens", None)
    if tokens is not None and tokens < 1:
        raise UsageError(f"--tokens must be a vocabulary size >= 1, got {tokens}")
    made = _import_factory(args.factory)()
    model, inputs = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"{args.factory} returned {type(model).__name__}, not a "
                         f"torch.nn.Module (or a (model, inputs) pair)")
    if inputs is not None or not need_inputs:
        return model, inputs
    if shape is None:
        raise UsageError("--input-shape is needed unless the factory returns (model, inputs)")
    gen = torch.Generator().manual_seed(args.seed)
    if tokens is not None:
        return model, torch.randint(0, tokens, shape, generator=gen)
    x = torch.randn(shape, generator=gen)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), x.dtype)
    return model, x.to(dtype)


def cmd_diagnose(args):
    torch, bridge = _torch_bridge()
    from .report.plots import plot_modules
    if args.init is not None:
        try:
            INITS.resolve(args.init)
        except ValueError as exc:
            raise UsageError(f"--init: {exc}") from None
    if args.trials < 1:
        raise UsageError(f"--trials must be >= 1, got {args.trials}")
    model, x = _model_and_inputs(torch, args, need_inputs=True)
    try:
        df = bridge.diagnose(model, x, trials=args.trials, init=args.init,
                             cotangent_seed=args.seed)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    os.makedirs(args.out, exist_ok=True)
    table = df.assign(shape=df["shape"].map(lambda s: "x".join(map(str, s))))
    atomic_write(os.path.join(args.out, "diagnose.csv"), lambda tmp: table.to_csv(tmp, index=False))
    shown = table[["depth_index", "module", "type", "role", "shape", "log10_pre_q",
                   "log10_out_q", "frac_zero", "log10_grad_q", "log10_wgrad_q", "verdict"]]
    atomic_write_text(os.path.join(args.out, "diagnose.md"), to_markdown(shown.set_index(
        "depth_index")))
    title = f"{args.factory}, input {args.input_shape or 'from the factory'}" + (
        f", init {args.init}" if args.init else "")
    atomic_write(os.path.join(args.out, "diagnose.png"),
                 lambda tmp: plot_modules(df, tmp + ".png", title=title)
                 or os.replace(tmp + ".png", tmp))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    counts = df.verdict.value_counts().to_dict()
    print(f"\nverdicts: {counts}; wrote {args.out}/diagnose.csv, .md and .png")
    return 0


def _expectations(items):
    """{pattern: std or scheme} from --expect PATTERN=VALUE entries."""
    out = {}
    for item in items or []:
        pattern, sep, value = item.partition("=")
        if not sep or not pattern or not value:
            raise UsageError(f"--expect takes PATTERN=STD or PATTERN=SCHEME, got {item!r}")
        try:
            out[pattern] = float(value)
        except ValueError:
            out[pattern] = value
    return out


def cmd_audit(args):
    torch, bridge = _torch_bridge()
    from .report.plots import plot_audit
    model, _ = _model_and_inputs(torch, args, need_inputs=False)
    try:
        df = bridge.audit(model, n_layer=args.n_layer, expect=_expectations(args.expect))
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    os.makedirs(args.out, exist_ok=True)
    table = df.assign(shape=df["shape"].map(lambda s: "x".join(map(str, s))))
    atomic_write(os.path.join(args.out, "audit.csv"), lambda tmp: table.to_csv(tmp, index=False))
    cols = ["name", "shape", "std", "distribution", "scheme", "scheme_error", "findings"] + \
        (["expected_std", "meets_expectation"] if args.expect else [])
    atomic_write_text(os.path.join(args.out, "audit.md"), to_markdown(table[cols].set_index(
        "name")))
    atomic_write(os.path.join(args.out, "audit.png"),
                 lambda tmp: plot_audit(df, tmp + ".png", title=f"{args.factory}: audit")
                 or os.replace(tmp + ".png", tmp))
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    found = int((df.findings != "").sum())
    unmet = int((df.get("meets_expectation") == False).sum())  # noqa: E712
    print(f"\n{len(df)} tensors, {found} with findings" +
          (f", {unmet} not as expected" if args.expect else "") +
          f"; wrote {args.out}/audit.csv, .md and .png")
    return 0


def cmd_phase(args):
    import numpy as np

    from . import theory
    from .report.plots import plot_phase
    sw2 = np.linspace(args.sw2_min, args.sw2_max, args.points)
    sb2 = np.linspace(0.0, args.sb2_max, args.points)
    try:
        table = theory.phase_diagram(args.activation, sw2, sb2)
        crit = [(theory.critical_sw2(args.activation, b), b) for b in sb2]
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"phase_{args.activation.replace(':', '_')}")
    atomic_write(stem + ".csv", lambda tmp: table.to_csv(tmp, index=False))
    atomic_write(stem + ".png", lambda tmp: plot_phase(table, crit, tmp + ".png",
                                                       args.activation)
                 or os.replace(tmp + ".png", tmp))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {stem}.csv and {stem}.png")
    return 0


def _spectrum_densities(args, depths):
    """The free-probability density of log10 sigma^2 at each depth, at the q-map's fixed
    point; {} (with a note) where the theory does not apply."""
    from . import theory
    from .inits import resolve_init
    from .simulate import weight_variance
    sampling = resolve_init(args.init).entry.sampling
    if sampling == "constant":
        print("no theory density: constant weights are not random")
        return {}
    sw2 = args.width * weight_variance(args.init, args.width, args.width, args.activation)
    kind = "orthogonal" if sampling == "orthogonal" else "gaussian"
    out = {}
    for d in depths:
        try:
            out[d] = theory.jacobian_density(args.activation, sw2, args.bias_std ** 2, d,
                                             weights=kind)
        except ValueError as exc:   # no fixed point: say so, keep the measurement
            print(f"no theory density at depth {d}: {exc}")
            return {}
    return out


def cmd_spectrum(args):
    from .report.plots import plot_spectrum
    from .spectrum import jacobian_spectrum, spectrum_summary
    depths = _split(args.depths, int, "--depths") if args.depths else [args.depth]
    depth = args.depth if args.depth is not None else max(depths)
    try:
        mlp = resolve_arch(args.arch) is None
        df = jacobian_spectrum(args.width, depth, activation=args.activation, init=args.init,
                               depths=depths, trials=args.trials, seed=args.seed,
                               bias_std=args.bias_std, arch=args.arch)
        summary = spectrum_summary(df, theory=mlp and _has_theory(args.init))
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "spectrum")
    atomic_write(stem + ".csv", lambda tmp: df.to_csv(tmp, index=False))
    atomic_write(stem + "_summary.csv", lambda tmp: summary.to_csv(tmp, index=False))
    atomic_write_text(stem + "_summary.md", to_markdown(summary.set_index(["trial", "depth"]), 4)
                      + "\n")
    if mlp:
        densities = _spectrum_densities(args, sorted(set(df["depth"])))
    else:
        print(f"no theory density: the free-probability theory is that of MLPs, not of "
              f"arch {args.arch}")
        densities = {}
    title = (f"{args.activation}, {args.init}, width {args.width}"
             f"{'' if mlp else ', ' + args.arch}: Jacobian singular values (trials pooled)")
    atomic_write(stem + ".png", lambda tmp: plot_spectrum(df, tmp + ".png", densities, title)
                 or os.replace(tmp + ".png", tmp))
    with pd.option_context("display.width", 200):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {stem}.csv, {stem}_summary.csv, {stem}_summary.md and {stem}.png")
    return 0


def _has_theory(init):
    from .inits import resolve_init
    try:
        return resolve_init(init).entry.sampling != "constant"
    except ValueError:
        return False


TRAIN_PRESETS = {
    "seed": dict(activations=["sigmoid", "tanh", "relu", "leaky_relu"],
                 inits=["zeros", "constant", "small", "large", "xavier_uniform", "xavier_normal",
                        "he_uniform", "he_normal"], width=128, depths=[10, 30]),
}


def _learning_rate(text):
    """--lr: a number or 'auto'."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number or auto, got {text!r}") from None


def cmd_train(args):
    from .report.plots import plot_loss_curves
    from .training import summarize, train, train_grid
    try:
        if args.preset:
            p = TRAIN_PRESETS[args.preset]
            table, curves = train_grid(p["activations"], p["inits"], width=p["width"],
                                       depths=p["depths"], steps=args.steps, lr=args.lr,
                                       batch=args.batch, seed=args.seed,
                                       optimizer=args.optimizer)
        else:
            df = train(args.width, args.depth, activation=args.activation, init=args.init,
                       steps=args.steps, lr=args.lr, batch=args.batch, seed=args.seed,
                       optimizer=args.optimizer)
            table = pd.DataFrame([{"activation": args.activation, "init": args.init,
                                   "depth": args.depth, **summarize(df)}])
            curves = df[["step", "loss"]].assign(activation=args.activation, init=args.init,
                                                 depth=args.depth)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    os.makedirs(args.out, exist_ok=True)
    atomic_write(os.path.join(args.out, "train_summary.csv"),
                 lambda tmp: table.to_csv(tmp, index=False))
    atomic_write_text(os.path.join(args.out, "train_summary.md"),
                      table.to_markdown(index=False) if _has_tabulate() else table.to_string())
    atomic_write(os.path.join(args.out, "train_curves.csv"),
                 lambda tmp: curves.to_csv(tmp, index=False))
    atomic_write(os.path.join(args.out, "train_loss.png"),
                 lambda tmp: plot_loss_curves(curves, tmp + ".png") or os.replace(tmp + ".png", tmp))
    with pd.option_context("display.width", 200, "display.max_rows", None):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote train_summary.csv/.md, train_curves.csv and train_loss.png to {args.out}/")
    return 0


def _has_tabulate():
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


def build_parser():
    ap = argparse.ArgumentParser(prog="winit-sim", description="Measure what weight "
                                 "initialisation does to very deep networks.")
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--batch", type=int)
        p.add_argument("--trials", type=int)
        p.add_argument("--seed", type=int)
        p.add_argument("--bias-std", dest="bias_std", type=float)
        p.add_argument("--dtype", choices=list(DTYPES))
        p.add_argument("--forward-only", action="store_true", help="skip the backward pass")
        p.add_argument("--method", choices=list(METHODS),
                       help="engine: conditional never forms W (Gaussian inits); auto picks "
                            "the faster exact one (default)")

    run = sub.add_parser("run", help="one network: print its per-layer table")
    run.add_argument("--width", type=int, required=True)
    run.add_argument("--depth", type=int, required=True)
    run.add_argument("--activation", default="relu", help=ACT_HELP)
    run.add_argument("--init", default="he_normal", help=INIT_HELP)
    run.add_argument("--arch", default="mlp", help=ARCH_HELP)
    run.add_argument("--out", help="save the table (.csv or .parquet)")
    common(run)
    run.set_defaults(func=cmd_run, batch=64, trials=1, seed=0, bias_std=0.0, dtype="float64",
                     method="auto")

    sw = sub.add_parser("sweep", help="a grid of networks: decay tables, files and figures")
    sw.add_argument("--widths", help="comma-separated, e.g. 64,256,1024")
    sw.add_argument("--depths", help="comma-separated, e.g. 10,100,1000")
    sw.add_argument("--activations", help="e.g. relu,tanh,leaky_relu:slope=0.2")
    sw.add_argument("--inits", help="e.g. xavier_normal,he_normal:mode=fan_out")
    sw.add_argument("--archs", help="e.g. mlp,residual:alpha=inv_sqrt_depth,fixup "
                    "(default mlp): " + ARCHS.choices())
    sw.add_argument("--config", help="TOML file with the same keys (flags override it)")
    sw.add_argument("--preset", choices=sorted(PRESETS),
                    help="a built-in grid: seed (the source document's cases) or depth "
                         "(residual and normalized nets against the MLP, to depth 10,000)")
    sw.add_argument("--out", default="winit_results", help="results directory")
    sw.add_argument("--force", action="store_true",
                    help="discard another grid's results in --out")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.add_argument("--scheduler", help="run the nets as Dask tasks: 'local' (a LocalCluster "
                    "here) or a scheduler address such as tcp://host:8786 (needs .[dask])")
    sw.add_argument("--workers", type=int,
                    help="worker processes of --scheduler local (default: one per core)")
    sw.add_argument("--plot-width", dest="plot_width", type=int,
                    help="width shown in the figures (default: largest)")
    sw.add_argument("--plot-depth", dest="plot_depth", type=int,
                    help="net depth of the per-layer figure (default: deepest)")
    common(sw)
    sw.set_defaults(func=cmd_sweep)

    tr = sub.add_parser("train", help="training probe: loss curves and a summary table")
    tr.add_argument("--width", type=int, default=128)
    tr.add_argument("--depth", type=int, default=10)
    tr.add_argument("--activation", default="relu", help=ACT_HELP)
    tr.add_argument("--init", default="he_normal", help=INIT_HELP)
    tr.add_argument("--steps", type=int, default=200)
    tr.add_argument("--lr", type=_learning_rate, default="auto",
                    help="a number, or auto (default): each run at the best rate of a short "
                         "search")
    tr.add_argument("--batch", type=int, default=64)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--optimizer", default="sgd")
    tr.add_argument("--preset", choices=sorted(TRAIN_PRESETS),
                    help="every seed-document init x activation at depths 10 and 30")
    tr.add_argument("--out", default="winit_train")
    tr.set_defaults(func=cmd_train)

    sp = sub.add_parser("spectrum", help="singular values of the input-output Jacobian: "
                        "summary table, CSVs and histograms with the theory density")
    sp.add_argument("--width", type=int, required=True)
    sp.add_argument("--depth", type=int, help="net depth (default: the largest of --depths)")
    sp.add_argument("--depths", help="comma-separated depths to report, e.g. 1,10,100 "
                    "(default: --depth)")
    sp.add_argument("--activation", default="tanh", help=ACT_HELP)
    sp.add_argument("--init", default="orthogonal", help=INIT_HELP)
    sp.add_argument("--trials", type=int, default=1)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--bias-std", dest="bias_std", type=float, default=0.0)
    sp.add_argument("--arch", default="mlp", help=ARCH_HELP)
    sp.add_argument("--out", default="winit_spectrum")
    sp.set_defaults(func=cmd_spectrum)

    th = sub.add_parser("theory", help="mean-field fixed point, chi_1 and depth scales")
    th.add_argument("--activation", default="tanh", help=ACT_HELP)
    th.add_argument("--sw2", type=float, default=1.0, help="sigma_w^2")
    th.add_argument("--sb2", type=float, default=0.0, help="sigma_b^2")
    th.set_defaults(func=cmd_theory)
    dg = sub.add_parser("diagnose", help="a PyTorch model's per-module signal and gradient "
                        "at init (needs the torch extra)")
    dg.add_argument("factory", help="package.module:function returning the torch.nn.Module, "
                    "or (model, inputs)")
    dg.add_argument("--input-shape", dest="input_shape",
                    help="comma-separated input shape, e.g. 64,784 (x ~ N(0, 1)); needed "
                    "unless the factory returns inputs")
    dg.add_argument("--tokens", type=int, help="vocabulary size: the input is token ids "
                    "drawn below it (a language model), not N(0, 1) floats")
    dg.add_argument("--init", help=f"re-initialise with a winit_sim scheme first: {INIT_HELP}")
    dg.add_argument("--trials", type=int, default=1,
                    help="re-initialise this many times (seeds 0..) and report means and spreads")
    dg.add_argument("--seed", type=int, default=0, help="seed of the input and the cotangent")
    dg.add_argument("--out", default="winit_diagnose")
    dg.set_defaults(func=cmd_diagnose)
    au = sub.add_parser("audit", help="what a PyTorch model's initialization is, tensor by "
                        "tensor (needs the torch extra)")
    au.add_argument("factory", help="package.module:function returning the torch.nn.Module, "
                    "or (model, inputs)")
    au.add_argument("--n-layer", dest="n_layer", type=int,
                    help="blocks, to test GPT-2's 0.02/sqrt(2 n_layer) convention too")
    au.add_argument("--expect", action="append", metavar="PATTERN=STD_OR_SCHEME",
                    help="a declared intent, e.g. '*.c_proj.weight=0.0041' or "
                    "'*.weight=he_normal' (repeatable)")
    au.add_argument("--input-shape", dest="input_shape", help=argparse.SUPPRESS)
    au.add_argument("--out", default="winit_audit")
    au.set_defaults(func=cmd_audit)
    gn = sub.add_parser("gains", help="computed gains of every activation beside torch's")
    gn.set_defaults(func=cmd_gains)
    ph = sub.add_parser("phase", help="order/chaos phase diagram: table and PNG of xi_c")
    ph.add_argument("--activation", default="tanh", help=ACT_HELP)
    ph.add_argument("--sw2-min", dest="sw2_min", type=float, default=0.5)
    ph.add_argument("--sw2-max", dest="sw2_max", type=float, default=4.0)
    ph.add_argument("--sb2-max", dest="sb2_max", type=float, default=0.3)
    ph.add_argument("--points", type=int, default=12)
    ph.add_argument("--out", default="winit_phase")
    ph.set_defaults(func=cmd_phase)

    for name, helptext, func in (("table", "print a decay table from saved results", cmd_table),
                                 ("plot", "redraw tables and figures from saved results",
                                  cmd_plot)):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("dir")
        if name == "table":
            p.add_argument("--quantity", choices=list(QUANTITIES), default="forward")
            p.add_argument("--theory", action="store_true",
                           help="add the mean-field prediction beside each depth")
        else:
            p.add_argument("--plot-width", dest="plot_width", type=int)
            p.add_argument("--plot-depth", dest="plot_depth", type=int)
        p.set_defaults(func=func)
    return ap


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the message
        return int(exc.code or 0)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"winit-sim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished cells are saved, rerun the same command to resume",
              file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001  (exit code 1 with the reason, not a traceback)
        print(f"winit-sim {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
