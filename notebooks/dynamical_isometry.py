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
# # Dynamical isometry: the Jacobian's singular values, measured and predicted
#
# Variance statistics cannot tell an orthogonal init from a Gaussian one: at the same sigma_w^2
# both have the same q-map and the same chi_1, so the same mean squared singular value of the
# input-output Jacobian J = D_L W_L ... D_1 W_1. What separates them is the *spread* of those
# singular values. Pennington, Schoenholz & Ganguli (2017, "Resurrecting the sigmoid") showed with
# free probability that at criticality (chi_1 = 1)
#
# * the normalized variance of sigma^2, var/mean^2, is `sum_l (v_W + v_D,l)`, with v_W = 1 for
#   i.i.d. weights and 0 for orthogonal ones, and v_D = E[phi'^4]/E[phi'^2]^2 - 1;
# * for tanh, v_D -> 0 as q* -> 0, so orthogonal tanh nets can stay isometric at any depth;
# * for ReLU, v_D = 1 whatever q*: the spread grows linearly with depth, orthogonal or not.
#
# Below, every singular value of J is computed by `ws.jacobian_spectrum` (in log space, exact at
# any depth) and set beside `theory.jacobian_moments` and the predicted density.

# %%
import math
import os

import matplotlib.pyplot as plt
import pandas as pd
import winit_sim as ws
from winit_sim import theory

QUICK = os.environ.get("WINIT_TOUR_QUICK") == "1"   # small sizes for the automated check
WIDTH, DEPTHS, TRIALS = (48, [1, 4, 16], 2) if QUICK else (256, [1, 10, 100, 1000], 2)
print(f"width {WIDTH}, depths {DEPTHS}, trials {TRIALS}")

# %% [markdown]
# ## 1. The cases, each at criticality
#
# sigma_w^2 and sigma_b^2 with chi_1 = 1: linear (sigma_w^2 = 1), ReLU (2), and tanh at a small
# and an O(1) fixed point q*, where `theory.critical_sw2` solves chi_1 = 1 for the given
# sigma_b^2. The input variance is set so the first layer already sits at q*.

# %%
CASES = {"linear": ("linear", 1.0, 0.0), "relu": ("relu", 2.0, 0.0)}
for label, sb2 in (("tanh, q* small", 1e-8), ("tanh, q* = O(1)", 0.3)):
    CASES[label] = ("tanh", theory.critical_sw2("tanh", sb2), sb2)
rows = []
for label, (act, sw2, sb2) in CASES.items():
    fp = theory.fixed_point(act, sw2, sb2)
    q = fp.q if act == "tanh" else 1.0
    rows.append(dict(case=label, sw2=sw2, sb2=sb2, q_star=q,
                     chi1=theory.chi1(act, sw2, sb2, q=q)))
print(pd.DataFrame(rows).to_string(index=False, float_format="%.4g"))

# %% [markdown]
# ## 2. Normalized variance of sigma^2 against depth: Gaussian vs orthogonal
#
# One pass of each depth-L net gives the spectrum at every depth in `DEPTHS`. Each cell is the
# measured var(sigma^2)/mean(sigma^2)^2 (mean over trials), with the free-probability prediction in
# brackets.

# %%
summaries = {}
for label, (act, sw2, sb2) in CASES.items():
    q = rows[list(CASES).index(label)]["q_star"]
    input_var = (q - sb2) / sw2
    for weights, init in (("gaussian", f"lecun_normal:gain={math.sqrt(sw2)!r}"),
                          ("orthogonal", f"orthogonal:gain={math.sqrt(sw2)!r}")):
        df = ws.jacobian_spectrum(WIDTH, max(DEPTHS), activation=act, init=init, depths=DEPTHS,
                                  trials=TRIALS, bias_std=math.sqrt(sb2), input_var=input_var,
                                  theory=True, seed=1)
        summaries[label, weights] = (df, ws.spectrum_summary(df, theory=True))

cells = {}
for (label, weights), (_, s) in summaries.items():
    mean = s.groupby("depth")[["nvar", "theory_nvar"]].mean()
    cells[label, weights] = {d: f"{mean.nvar[d]:.3g} ({mean.theory_nvar[d]:.3g})" for d in DEPTHS}
table = pd.DataFrame(cells).T
table.index.names = ["case", "weights"]
table.columns = [f"D={d}" for d in DEPTHS]
print(table.to_string())

# %% [markdown]
# Orthogonal tanh near q* -> 0 stays close to isometry through the deepest net, while the same
# tanh with Gaussian weights accumulates v_W = 1 per layer. ReLU's spread grows linearly with
# depth with either kind of weights (v_D = 1 per layer). The prediction is for infinite width:
# where the depth is no longer small against the width, the finite net's spectrum departs from it
# (the product's Lyapunov exponents separate, a few singular values dominate), and the normalized
# variance of n values cannot exceed n - 1 (255 at width 256), which the deepest column of the
# spread-out cases reaches.

# %%
deep = max(DEPTHS)
mid = [d for d in DEPTHS if d <= WIDTH / 2][-1]   # where finite-width corrections are small


def nvar(label, weights, d):
    s = summaries[label, weights][1]
    return float(s[s.depth == d].nvar.mean())


print("orthogonal tanh (q* small) stays near isometric at depth", deep, ":",
      nvar("tanh, q* small", "orthogonal", deep) < 0.5)
print("gaussian tanh (q* small) spreads at depth", mid, ":",
      nvar("tanh, q* small", "gaussian", mid) > 0.5 * mid)
grow = [nvar("relu", w, mid) / nvar("relu", w, DEPTHS[1]) for w in ("gaussian", "orthogonal")]
print("relu's spread grows linearly with depth either way:",
      all(0.5 < g / (mid / DEPTHS[1]) < 2.0 for g in grow))

# %% [markdown]
# ## 3. The whole spectrum beside the free-probability density
#
# Histograms of log10 sigma^2 at one depth, trials pooled, with the density predicted from the
# S-transform (`theory.jacobian_density`, at the fixed point) drawn over them. ReLU's exact zeros
# (the rank the inactive units remove) are counted in each title.

# %%
from winit_sim.report.plots import spectrum_panel  # noqa: E402

show = mid
fig, axes = plt.subplots(3, 2, figsize=(10, 9))
for r, label in enumerate(("tanh, q* small", "tanh, q* = O(1)", "relu")):
    act, sw2, sb2 = CASES[label]
    for c, weights in enumerate(("gaussian", "orthogonal")):
        df = summaries[label, weights][0]
        dens = theory.jacobian_density(act, sw2, sb2, show, weights=weights)
        spectrum_panel(axes[r, c], df.loc[df.depth == show, "log10_sv"], dens,
                       f"{label}, {weights}, depth {show}")
axes[0, 0].legend(fontsize=8)
fig.tight_layout()
plt.show()
