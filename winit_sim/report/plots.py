"""Figures of sweep results (matplotlib, headless)."""
import numpy as np


class _Figures:
    """The few pyplot calls used here, on matplotlib's object API.

    Figures are built without pyplot, so saving works headless and never switches
    the backend of a notebook or GUI session that imports winit_sim.
    """

    @staticmethod
    def subplots(nrows=1, ncols=1, figsize=None, **kwargs):
        from matplotlib.figure import Figure
        fig = Figure(figsize=figsize)
        return fig, fig.subplots(nrows, ncols, **kwargs)

    @staticmethod
    def get_cmap(name):
        import matplotlib
        return matplotlib.colormaps[name]

    @staticmethod
    def close(fig):
        pass


def _pyplot():
    return _Figures


def plot_layers(results, path, width=None, depth=None, clip=40.0):
    """Per-layer curves: forward log10 mean(h^2) and gradient log10 mean(delta^2).

    One column of panels per activation, one line per init (per arch and init
    when the results hold several archs; mean over trials), for the net of
    ``depth`` (default: the deepest) at ``width`` (default: the largest). The y axis
    stops at +-``clip`` decades so the curves near 0 stay readable; steeper ones
    leave the panel.
    """
    plt = _pyplot()
    width = int(results["width"].max()) if width is None else int(width)
    depth = int(results["depth"].max()) if depth is None else int(depth)
    sub = results[(results.width == width) & (results.depth == depth)]
    if sub.empty:
        raise ValueError(f"no results for width {width}, depth {depth}; widths: "
                         f"{sorted(map(int, results.width.unique()))}, "
                         f"depths: {sorted(map(int, results.depth.unique()))}")
    acts = _levels(sub, "activation")
    inits = _levels(sub, "init")
    archs = _levels(sub, "arch") if "arch" in sub.columns else [None]
    lines = [(arch, init) for arch in archs for init in inits]
    rows = [("log10_pre_q", "forward: log10 mean(h_l^2)")]
    if "log10_grad_q" in sub.columns:
        rows.append(("log10_grad_q", "backward: log10 mean(delta_l^2)"))
    fig, axes = plt.subplots(len(rows), len(acts), figsize=(4.2 * len(acts), 3.4 * len(rows)),
                             squeeze=False, sharex=True)
    colors = plt.get_cmap("tab10")
    for c, act in enumerate(acts):
        for r, (col, label) in enumerate(rows):
            ax = axes[r, c]
            for k, (arch, init) in enumerate(lines):
                g = sub[(sub.activation == act) & (sub.init == init)]
                if arch is not None:
                    g = g[g.arch == arch]
                y = g.groupby("layer")[col].mean()
                y = y[np.isfinite(y)]
                if len(y):
                    label = init if len(archs) == 1 else f"{arch} / {init}"
                    ax.plot(y.index, y.to_numpy(), color=colors(k % 10), lw=1.6, label=label,
                            ls=("-", "--", ":", "-.")[(k // 10) % 4])
            ax.axhline(0.0, color="0.6", lw=0.8, ls=":")
            lo, hi = ax.get_ylim()
            ax.set_ylim(max(lo, -clip), min(hi, clip))
            ax.set_title(f"{act}" if r == 0 else "")
            if c == 0:
                ax.set_ylabel(label)
            if r == len(rows) - 1:
                ax.set_xlabel("layer")
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), frameon=False)
    fig.suptitle(f"Signal and gradient through depth {depth}, width {width} "
                 f"(y clipped at +-{clip:g} decades; a missing line is exactly zero)")
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _levels(df, col):
    """A column's values in their categorical (grid) order, or in order of appearance."""
    present = set(df[col].astype(str))
    if hasattr(df[col], "cat"):
        return [c for c in df[col].cat.categories if c in present]
    return list(dict.fromkeys(df[col].astype(str)))


def plot_decay_heatmap(table, path, width=None, title="forward", clip=20.0):
    """Heatmap of a variance-decay table: init (or arch / init) x depth, one panel per
    activation."""
    plt = _pyplot()
    widths = table.index.get_level_values("width")
    width = int(widths.max()) if width is None else int(width)
    depth_cols = [c for c in table.columns if not isinstance(c, str)]
    sub = table[widths == width]
    acts = list(dict.fromkeys(sub.index.get_level_values("activation")))
    fig, axes = plt.subplots(1, len(acts), figsize=(2.0 + (0.9 * len(depth_cols) + 1.3) * len(acts),
                                                    4.4), squeeze=False,
                             gridspec_kw={"wspace": 0.55})
    image = None
    for c, act in enumerate(acts):
        ax = axes[0, c]
        t = sub.xs(act, level="activation").droplevel("width")
        vals = t[depth_cols].to_numpy(dtype=float)
        image = ax.imshow(np.clip(np.nan_to_num(vals, nan=0.0, posinf=clip, neginf=-clip),
                                  -clip, clip), cmap="RdBu_r", vmin=-clip, vmax=clip,
                          aspect="auto")
        for i in range(vals.shape[0]):
            for j in range(vals.shape[1]):
                v = vals[i, j]
                text = "n/a" if np.isnan(v) else (f"{v:+.0f}" if abs(v) >= 10 else f"{v:+.1f}")
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if np.isfinite(v) and abs(v) > 0.6 * clip else "black")
        for i, verdict in enumerate(t["verdict"]):
            ax.text(len(depth_cols) - 0.4, i, verdict, ha="left", va="center", fontsize=8)
        ax.set_xlim(-0.5, len(depth_cols) - 0.5)
        ax.set_xticks(range(len(depth_cols)), [str(d) for d in depth_cols])
        names = [" / ".join(i) if isinstance(i, tuple) else i for i in t.index]
        ax.set_yticks(range(len(t.index)), names if c == 0 else [], fontsize=8)
        ax.set_xlabel("depth")
        ax.set_title(act)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, pad=0.08,
                 label=f"log10 ratio (decades, colour clipped at +-{clip:g})")
    fig.suptitle(f"{title} variance change with depth, width {width}")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_phase(table, critical, path, activation, clip=100.0):
    """Heatmap of the correlation depth scale xi_c over (sigma_w^2, sigma_b^2), with the edge of chaos."""
    plt = _pyplot()
    sw2 = np.sort(table["sw2"].unique())
    sb2 = np.sort(table["sb2"].unique())
    grid = table.pivot(index="sb2", columns="sw2", values="xi_c").reindex(index=sb2, columns=sw2)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    im = ax.pcolormesh(sw2, sb2, np.clip(grid.to_numpy(dtype=float), 0, clip), shading="nearest",
                       cmap="magma")
    fig.colorbar(im, ax=ax, label=f"xi_c (layers, clipped at {clip:g})")
    cs, cb = zip(*critical)
    ax.plot(cs, cb, color="cyan", lw=2, label="edge of chaos (chi_1 = 1)")
    ax.set_xlim(sw2[0], sw2[-1])
    ax.set_xlabel("sigma_w^2")
    ax.set_ylabel("sigma_b^2")
    ax.set_title(f"{activation}: ordered (left) and chaotic (right) phases")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss_curves(curves, path):
    """Loss curves (log scale), one panel per (activation, depth), one line per init."""
    plt = _pyplot()
    panels = list(dict.fromkeys(zip(curves["activation"], curves["depth"])))
    inits = list(dict.fromkeys(curves["init"]))
    cols = min(4, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False)
    colors = plt.get_cmap("tab10")
    first = curves[curves.step == 0].loss.to_numpy(dtype=float)
    top = 1e3 * np.nanmedian(first[np.isfinite(first)]) if np.isfinite(first).any() else None
    for k, (act, depth) in enumerate(panels):
        ax = axes[k // cols, k % cols]
        for i, init in enumerate(inits):
            c = curves[(curves.activation == act) & (curves.depth == depth) & (curves.init == init)]
            y = c.loss.to_numpy(dtype=float)
            ok = np.isfinite(y) & (y > 0)
            if ok.any():
                ax.semilogy(c.step.to_numpy()[ok], y[ok], color=colors(i % 10), lw=1.3,
                            label=init)
                if top is not None and top > 0:
                    # exploding runs leave the panel instead of flattening the rest
                    ax.set_ylim(top=top)
        ax.set_title(f"{act}, depth {depth}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if k % cols == 0:
            ax.set_ylabel("loss (log)")
    for k in range(len(panels), nrows * cols):
        axes[k // cols, k % cols].axis("off")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), frameon=False)
    fig.suptitle("Training loss by initialisation (a line that stops early diverged)")
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def spectrum_panel(ax, log10_sv, density=None, title=""):
    """One histogram of log10 sigma^2 (the nonzero values; exact zeros counted in the title)
    with a predicted density of log10 sigma^2 (DataFrame with ``log10_sq_sv`` and
    ``density``, scaled to integrate to 1 like the histogram) drawn over it."""
    y = 2.0 * np.asarray(log10_sv, dtype=float)
    finite = y[np.isfinite(y)]
    zeros = y.size - finite.size
    if finite.size:
        lo, hi = finite.min(), finite.max()
        pad = max(0.05 * (hi - lo), 0.05)
        ax.hist(finite, bins=min(60, max(10, finite.size // 8)), range=(lo - pad, hi + pad),
                density=True, color="0.6", label="simulated")
        if density is not None:
            x, p = density["log10_sq_sv"].to_numpy(), density["density"].to_numpy()
            mass = float(np.sum(0.5 * (p[1:] + p[:-1]) * np.diff(x)))
            if mass > 0:
                ax.plot(x, p / mass, color="C3", lw=1.6, label="free probability")
    extra = f", {zeros} of {y.size} exactly 0" if zeros else ""
    ax.set_title(f"{title}{extra}", fontsize=9)
    ax.set_xlabel("log10 sigma^2")
    ax.grid(alpha=0.3)


def plot_spectrum(df, path, densities=None, title=None):
    """Histograms of log10 sigma^2 of a :func:`winit_sim.jacobian_spectrum` frame, one panel
    per depth (trials pooled), with a predicted density beside each (:func:`spectrum_panel`).

    ``densities``: optional {depth: DataFrame with ``log10_sq_sv`` and ``density``} (the
    continuous part, as :func:`winit_sim.theory.jacobian_density` gives it).
    """
    plt = _pyplot()
    depths = sorted(df["depth"].unique())
    cols = min(4, len(depths))
    nrows = -(-len(depths) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False)
    for k, d in enumerate(depths):
        ax = axes[k // cols, k % cols]
        spectrum_panel(ax, df.loc[df.depth == d, "log10_sv"],
                       None if densities is None else densities.get(d), f"depth {d}")
        if k == 0:
            ax.legend(fontsize=8)
    for k in range(len(depths), nrows * cols):
        axes[k // cols, k % cols].axis("off")
    fig.suptitle(title or "Singular values of the input-output Jacobian")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_modules(df, path, title="Signal and gradient per module"):
    """A diagnosis (:func:`winit_sim.torch.diagnose`): log10 mean(y^2) and log10
    mean((dloss/dy)^2) of every module's output against its place in the forward pass,
    one marker per role."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    q = df["log10_pre_q"].fillna(df["log10_out_q"])
    for ax, values, label in ((axes[0], q, "log10 mean(y^2), forward"),
                              (axes[1], df["log10_grad_q"], "log10 mean((dloss/dy)^2), backward")):
        ax.plot(df["depth_index"], values, color="0.7", lw=1, zorder=1)
        for k, (kind, grp) in enumerate(df.assign(v=values).groupby("role", sort=False)):
            ax.scatter(grp["depth_index"], grp["v"], s=18, color=f"C{k}", label=kind, zorder=2)
        ax.set_xlabel("module, in forward order (depth_index)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_audit(df, path, title="What the initialization is"):
    """An audit (:func:`winit_sim.torch.audit`): log10 std of every weight tensor (two or
    more dimensions) in registration order, beside the std of the scheme it matches best;
    tensors with findings (copies, zeros, siblings, an unmet intent) in red."""
    plt = _pyplot()
    w = df[df["fan_in"].notna()].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.12 * len(w) + 4), 4.2))
    x = np.arange(len(w))
    with np.errstate(divide="ignore", invalid="ignore"):
        std = np.log10(w["std"].to_numpy(dtype=float))
        scheme = std - np.log10(1.0 + w["scheme_error"].to_numpy(dtype=float))
    ax.plot(x, scheme, "_", color="0.4", ms=12, label="best-matching scheme's std")
    flagged = (w["findings"] != "").to_numpy()
    if "meets_expectation" in w:
        flagged = flagged | (w["meets_expectation"] == False).to_numpy()  # noqa: E712
    ax.scatter(x[~flagged], std[~flagged], s=16, color="C0", label="measured std", zorder=2)
    ax.scatter(x[flagged], std[flagged], s=22, color="C3", label="measured std, with findings",
               zorder=3)
    ax.set_xlabel("weight tensor, in registration order")
    ax.set_ylabel("log10 std")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scaling(stats, path, quantity="log10_q"):
    """A scaling check's figure in the style of mup's coordinate check: one panel per
    optimizer step, ``quantity`` against width (log axis) with a line per module; a second
    row against depth (at the largest width) when several depths were swept."""
    plt = _pyplot()
    steps = sorted(stats["step"].unique())
    depths = sorted(d for d in stats["depth"].unique() if np.isfinite(d))
    rows = []
    if stats["width"].nunique() > 1:
        rows.append(("width", stats["depth"].isna() | (stats["depth"] == (depths[0] if depths
                                                                           else 0))))
    if len(depths) > 1:
        rows.append(("depth", stats["width"] == stats["width"].max()))
    if not rows:
        raise ValueError("a scaling figure needs more than one width or depth")
    fig, axes = plt.subplots(len(rows), len(steps),
                             figsize=(max(6.0, 3.6 * len(steps)), 3.4 * len(rows)), squeeze=False)
    for r, (axis, keep) in enumerate(rows):
        sub = stats[keep]
        for c, step in enumerate(steps):
            ax = axes[r, c]
            for module, grp in sub[sub.step == step].groupby("module", sort=False):
                grp = grp.sort_values(axis)
                if grp[axis].nunique() > 1:
                    ax.plot(grp[axis], grp[quantity], marker="o", ms=3, lw=1, label=module)
            if axis == "width":
                ax.set_xscale("log", base=2)
            ax.set_xlabel(axis)
            ax.set_title(f"step {step}", fontsize=9)
            ax.grid(alpha=0.3)
        axes[r, 0].set_ylabel(quantity)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles and len(handles) <= 16:
        axes[0, -1].legend(handles, labels, fontsize=6, loc="best")
    fig.suptitle("Scaling check (flat lines: the parametrization transfers)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)
