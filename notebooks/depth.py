# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Depth: residual branches, normalisation and the presets, measured
#
# The seed document's advice (Xavier for tanh, He for ReLU) fixes how the variance scales with
# *width*. Very deep nets as people build them are residual and normalised, and then the question
# is how to scale with *depth*: a residual stream `x_l = x_{l-1} + alpha F(x_{l-1})` with He/ReLU
# branches grows by a factor `1 + alpha^2` per block, so `alpha = 1` is exp(depth) growth again,
# while `alpha = 1/sqrt(L)` keeps the stream within a factor e. Every number below comes from
# `winit_sim`'s public API, with mean-field theory beside it.

# %%
import os
import numpy as np
import matplotlib.pyplot as plt
import winit_sim as ws
from winit_sim import theory
from winit_sim.training import summarize

QUICK = os.environ.get("WINIT_TOUR_QUICK") == "1"   # small sizes for the automated check
WIDTH, DEPTH, TRIALS = (32, 50, 2) if QUICK else (128, 1000, 2)
ARCHS = ["mlp", "residual", "residual:alpha=inv_sqrt_depth", "residual:alpha=inv_depth",
         "residual:norm=layernorm", "residual:norm=layernorm,position=post", "fixup",
         "deepnorm", "gpt2"]
print(f"width {WIDTH}, depth {DEPTH}, trials {TRIALS}")

# %% [markdown]
# ## 1. The stream through depth, beside mean-field theory
#
# One net per architecture, He-normal weights and ReLU. For the residual nets `log10_stream_q` is
# the stream's mean square after each block and `log10_stream_grad_q` that of dloss/dx_l; for the
# MLP the same roles are played by the post-activation and the gradient. Dashed: mean-field theory
# (`theory.predict(..., arch=...)`, infinite width).

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
top = {}
for k, arch in enumerate(ARCHS):
    df = ws.simulate(WIDTH, DEPTH, activation="relu", init="he_normal", batch=8, trials=TRIALS,
                     arch=arch, theory=True, seed=1)
    fwd, bwd = ("log10_stream_q", "log10_stream_grad_q") if arch != "mlp" else \
        ("log10_post_q", "log10_grad_q")
    mean = df.groupby("layer")[[fwd, bwd]].mean()
    top[arch] = (mean[fwd].iloc[-1], mean[bwd].iloc[0])
    color = plt.get_cmap("tab10")(k)
    axes[0].plot(mean.index, mean[fwd], color=color, label=arch)
    axes[1].plot(mean.index, mean[bwd], color=color)
    if arch != "mlp":
        th = df.groupby("layer")[["theory_" + fwd, "theory_" + bwd]].first()
        axes[0].plot(th.index, th["theory_" + fwd], color=color, ls="--", lw=0.8)
        axes[1].plot(th.index, th["theory_" + bwd], color=color, ls="--", lw=0.8)
for ax, title in zip(axes, ["forward: log10 mean(x_l^2)", "backward: log10 mean((dloss/dx_l)^2)"]):
    ax.set_xscale("log"); ax.set_xlabel("block"); ax.set_title(title); ax.grid(alpha=0.3)
    ax.set_ylim(-20, 40)
axes[0].legend(fontsize=7, ncol=2)
plt.show()
for arch, (q_top, g_first) in top.items():
    print(f"{arch:42s} stream at the top {q_top:+9.2f} decades, gradient at block 1 "
          f"{g_first:+9.2f}")
print("residual alpha=1 stream grows by about log10(2) per block:",
      abs(top["residual"][0] / DEPTH - np.log10(2)) < 0.05)

# %% [markdown]
# ## 2. Variance-decay tables across depth
#
# `sweep(..., archs=...)` adds the architecture as a grid dimension, and the tables take it as
# their first index. Archs whose blocks depend on the depth (`inv_sqrt_depth`, `inv_depth`, the
# presets) run each depth as a net of its own. `winit-sim sweep --preset depth` is the same at
# width 64 up to depth 10,000.

# %%
depths = [10, 50] if QUICK else [10, 100, 1000]
grid = ws.sweep([WIDTH], depths, ["relu"], ["he_normal"], archs=ARCHS, trials=TRIALS, batch=8,
                progress=False)
from winit_sim.report.tables import to_markdown
print(to_markdown(ws.variance_decay_table(grid, "stream", theory=True)))
print(to_markdown(ws.variance_decay_table(grid, "stream_grad", theory=True)))

# %% [markdown]
# ## 3. Training at depth
#
# The same teacher-student regression as the seed tour, at a depth where the plain MLP does not
# learn well. Each architecture gets its best learning rate (`lr="auto"`: a short search, SGD with
# momentum 0.9, a fixed batch of 32, He-normal, ReLU), so no scheme is judged at a learning rate
# that suits another. A loss ratio is the final loss over the initial one.

# %%
T_DEPTH, T_WIDTH, STEPS = (20, 16, 40) if QUICK else (60, 16, 60)
best = {}
for arch in ["mlp", "residual", "residual:alpha=inv_sqrt_depth", "fixup", "skipinit"]:
    # lr="auto": a short search over 1e-4 ... 3 in half decades, then the run at the best
    df = ws.train(T_WIDTH, T_DEPTH, activation="relu", init="he_normal", steps=STEPS,
                  batch=32, arch=arch, seed=1, optimizer="momentum", data="fixed")
    s = summarize(df)
    ratio = s["final_over_initial_loss"] if not s["diverged"] else np.inf
    best[arch] = (ratio, df.attrs["lr"], df)
    print(f"{arch:32s} best lr {df.attrs['lr']:<8.3g} loss ratio {ratio:.3g}   diverged at "
          f"every lr: {bool(df.attrs['lr_search'].diverged.all())}")
print("residual with alpha = 1 diverged at every learning rate:", best["residual"][0] == np.inf)
print("inv_sqrt_depth, fixup and skipinit each beat the plain MLP:",
      all(best[a][0] < best["mlp"][0] for a in ("residual:alpha=inv_sqrt_depth", "fixup",
                                                "skipinit")))
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for arch, (ratio, lr, df) in best.items():
    ax.semilogy(df.step, df.loss, label=f"{arch} (lr {lr:g})")
ax.set_xlabel("step"); ax.set_ylabel("loss"); ax.legend(fontsize=7)
ax.set_title(f"depth {T_DEPTH}, width {T_WIDTH}: each at its best learning rate")
plt.show()
