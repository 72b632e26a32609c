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
# # Diagnose a real PyTorch model at initialization, fix it, diagnose it again
#
# `winit_sim.torch` runs one forward and backward pass of *your* `nn.Module` with hooks and
# reports, per module, the statistics `winit_sim.simulate` reports for its idealized nets:
# the output's mean square (`log10_pre_q` for Linear/Conv, `log10_out_q` for the rest), the
# gradient's (`log10_grad_q`), the weight gradient's, the fraction of exact zeros and of
# saturated units, and a verdict from the variance-decay tables' thresholds. Here: a deep SELU
# MLP under torch's default init and torch's SELU gain, then a small ResNet-like CNN with He
# weights, each fixed and diagnosed again, and finally mup's coordinate check.

# %%
import os
import numpy as np
import matplotlib.pyplot as plt
import torch
from torch import nn
import winit_sim as ws
import winit_sim.torch as wt

QUICK = os.environ.get("WINIT_TOUR_QUICK") == "1"   # small sizes for the automated check
DEPTH, WIDTH, BLOCKS, CHANNELS = (12, 64, 6, 8) if QUICK else (48, 256, 24, 16)
torch.manual_seed(0)
print(f"MLP depth {DEPTH}, width {WIDTH}; ResNet {BLOCKS} blocks of {CHANNELS} channels")


def show(df, title, ax_pair):
    """Forward and backward mean squares of every module against its place in the pass."""
    q = df.log10_pre_q.fillna(df.log10_out_q)
    for ax, v, label in ((ax_pair[0], q, "log10 mean(y^2)"),
                         (ax_pair[1], df.log10_grad_q, "log10 mean((dloss/dy)^2)")):
        ax.plot(df.depth_index, v, lw=1, color="0.6")
        for role, grp in df.assign(v=v).groupby("role", sort=False):
            ax.scatter(grp.depth_index, grp.v, s=10, label=role)
        ax.set_title(f"{title}: {label}", fontsize=9)
        ax.set_xlabel("module (forward order)")
        ax.grid(alpha=0.3)


def summary(df):
    inner = df[~df.role.isin(["input", "output"])]
    return (f"verdicts {inner.verdict.value_counts().to_dict()}; forward change "
            f"{inner.forward_decades.iloc[-1]:+.1f} decades, gradient at the input "
            f"{df.backward_decades.iloc[0]:+.1f} decades")


# %% [markdown]
# ## 1. A deep SELU MLP: torch's default init, torch's SELU gain, and winit_sim's
#
# SELU self-normalizes only with Var(W) = 1/fan_in (LeCun normal). `nn.Linear` draws
# `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, a variance of `1/(3 fan_in)`, and
# `calculate_gain("selu")` is 3/4, so `kaiming_normal_(w, nonlinearity="selu")` gives
# 0.5625/fan_in: both lose the signal's scale. `init_("lecun_normal:gain=auto")` uses the gain
# winit_sim computes for the activation after each layer (SELU: 1.000, keeping E[h^2] = 1) and
# gain 1 for the read-out. What remains is SELU's own chi_1 = 1.07 (`theory.chi1`): the
# gradient grows slowly downwards, about a decade per 33 layers, and the verdicts far from the
# top say so.

# %%
def selu_mlp():
    layers = []
    for i in range(DEPTH):
        layers += [nn.Linear(WIDTH, WIDTH), nn.SELU()]
    return nn.Sequential(*layers, nn.Linear(WIDTH, 10))


mlp = selu_mlp()
x = torch.randn(64, WIDTH)
runs = {"torch default": wt.diagnose(mlp, x)}
for m in mlp.modules():
    if isinstance(m, nn.Linear):
        nn.init.kaiming_normal_(m.weight, nonlinearity="selu")
        nn.init.zeros_(m.bias)
runs["kaiming_normal_, selu gain 3/4"] = wt.diagnose(mlp, x)
table = wt.init_(mlp, "lecun_normal:gain=auto")
runs["init_(lecun_normal:gain=auto)"] = wt.diagnose(mlp, x)
print(table.head(2).to_string(index=False))
for name, df in runs.items():
    print(f"{name:>30}: " + summary(df))
print("chi_1 of SELU at its gain:", round(ws.theory.chi1("selu", 1.0, 0.0, q=1.0), 4))

lin = lambda df: df[df.role == "linear"]
default, torch_gain, ours = runs.values()
print(f"default init: the gradient reaching the input is {-default.backward_decades.iloc[0]:.1f} "
      f"decades below the output's, more than {DEPTH // 8}:",
      bool(default.backward_decades.iloc[0] < -(DEPTH // 8)))
print("torch's SELU gain: the signal falls by more than 1 decade:",
      bool(lin(torch_gain).forward_decades.iloc[-2] < -1))
print("init_(gain=auto): every Linear's signal within 0.2 decade of the first:",
      bool((lin(ours).forward_decades.abs() < 0.2).all()))
print("init_(gain=auto): the gradient reaches the input within 1 decade:",
      bool(abs(ours.backward_decades.iloc[0]) < 1))

fig, axes = plt.subplots(3, 2, figsize=(12, 9))
for row, (name, df) in enumerate(runs.items()):
    show(df, name, axes[row])
axes[0, 0].legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# ## 2. A ResNet-like CNN: He weights on every branch, without and with depth scaling
#
# He initialization keeps each *branch* at the scale of its input, so a residual block
# `x + F(x)` doubles the stream's mean square: exp(depth) again, now from the skip
# connections. `diagnose` finds the blocks (containers whose output adds their input) and
# reports the stream at the end of each one (role `residual`). Scaling each branch by
# `1/sqrt(blocks)` keeps the stream within a factor e.

# %%
class ConvBlock(nn.Module):
    def __init__(self, channels, alpha):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.alpha = alpha

    def forward(self, x):
        return x + self.alpha * self.conv2(self.act(self.conv1(x)))


def resnet(alpha):
    return nn.Sequential(nn.Conv2d(3, CHANNELS, 3, padding=1, bias=False),
                         *[ConvBlock(CHANNELS, alpha) for _ in range(BLOCKS)],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(CHANNELS, 10))


images = torch.randn(16, 3, 16, 16)
results = {}
for name, alpha in (("alpha = 1", 1.0), ("alpha = 1/sqrt(blocks)", BLOCKS ** -0.5)):
    net = resnet(alpha)
    # ReLU's gain where a ReLU follows, gain 1 after conv2 (the block's sum follows)
    wt.init_(net, "he_normal:gain=auto")
    results[name] = wt.diagnose(net, images)
    stream = results[name][results[name].role == "residual"]
    print(f"{name:>24}: stream {stream.log10_out_q.iloc[0]:+.2f} -> "
          f"{stream.log10_out_q.iloc[-1]:+.2f} decades over {BLOCKS} blocks; "
          + summary(results[name]))

per_block = {name: np.polyfit(np.arange(BLOCKS), df[df.role == "residual"].log10_out_q, 1)[0]
             for name, df in results.items()}
# log10(2) = 0.30 a block, less what zero padding loses at the image's border
print(f"alpha = 1: the stream grows by {per_block['alpha = 1']:.2f} decades a block, "
      f"0.2 to 0.35:", bool(0.2 < per_block["alpha = 1"] < 0.35))
scaled = results["alpha = 1/sqrt(blocks)"]
stream = scaled[scaled.role == "residual"].log10_out_q
print("alpha = 1/sqrt(blocks): the stream stays within a factor e of the first block:",
      bool(stream.max() - stream.min() < np.log10(np.e)))

fig, axes = plt.subplots(2, 2, figsize=(12, 6.5))
for row, (name, df) in enumerate(results.items()):
    show(df, name, axes[row])
axes[0, 0].legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# ## 3. The coordinate check, over width
#
# mup's headline, at small scale: train a standard-parametrization MLP with Adam for three
# steps and the output's mean square grows with width (a log-slope well above 0), because
# Adam's updates are O(lr) per entry whatever the width. Scaling the learning rate as
# 1/width (the muP rule for Adam's hidden and output layers) keeps the slope near 0.

# %%
def readout_mlp(width):
    return nn.Sequential(nn.Linear(32, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))


widths = [64, 128, 256] if QUICK else [64, 128, 256, 512, 1024, 2048]
inputs = torch.randn(32, 32)
checks = {"standard (lr 1e-2)": wt.scaling_check(readout_mlp, widths, inputs=inputs, steps=3,
                                                 lr=1e-2),
          "muP-style (lr 1e-2 x 64/width)": wt.scaling_check(
              readout_mlp, widths, inputs=inputs, steps=3, lr=lambda w, d: 1e-2 * 64 / w)}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for ax, (name, check) in zip(axes, checks.items()):
    out = check.stats[check.stats.module == "(output)"]
    for step, grp in out.groupby("step"):
        ax.plot(grp.width, grp.log10_q, marker="o", label=f"step {step}")
    ax.set_xscale("log", base=2)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("width")
    ax.set_ylabel("log10 mean(output^2)")
    ax.grid(alpha=0.3)
    s = check.slopes
    slopes = s[(s.module == "(output)") & (s.quantity == "log10_q")].set_index("step")
    print(f"{name:>32}: output log-slope per step {np.round(slopes.slope.to_numpy(), 2)}, "
          f"verdicts {list(slopes.verdict)}")
axes[0].legend(fontsize=8)
fig.tight_layout()
out_slopes = {name: c.slopes[(c.slopes.module == "(output)") & (c.slopes.quantity == "log10_q")]
              .set_index("step").slope for name, c in checks.items()}
sp, mup = out_slopes.values()
print("standard: the output's slope is above 1 after every step:", bool((sp[1:] > 1).all()))
print("muP-style: the slope stays within the flat band at every step:",
      bool((mup.abs() < wt.scaling.WIDTH_SLOPE_TOLERANCE).all()))
