"""Residual and normalized networks: the kernels against the NumPy reference and PyTorch
autograd on the same weights, bad input, determinism and depth."""
import numpy as np
import pytest

import winit_sim as ws
from winit_sim.activations import resolve_activation, sup_dphi

import naive
from naive import ConditionalDraws, reference_residual
from stats_checks import assert_same_law

ACTS = naive.example_specs()

# (arch, reference keywords): pre-LN, post-LN, RMSNorm, branch 1 and 2, alpha, beta
ARCHS = [
    ("residual", dict()),
    ("residual:branch=2,hidden=9", dict(branch=2)),
    ("residual:norm=layernorm,alpha=0.7", dict(norm="layernorm", alpha=0.7)),
    ("residual:branch=2,hidden=9,norm=rmsnorm", dict(branch=2, norm="rmsnorm")),
    ("residual:branch=2,hidden=9,norm=layernorm,position=post,beta=1.6",
     dict(branch=2, norm="layernorm", post=True, beta=1.6)),
    ("residual:norm=rmsnorm,position=post,eps=0.01", dict(norm="rmsnorm", post=True, eps=0.01)),
]


def _given(arch_kw, rng, width=6, depth=4, batch=5, bias=True):
    branch = arch_kw.get("branch", 1)
    shapes = [(width, width)] if branch == 1 else [(9, width), (width, 9)]
    weights, biases = [], []
    for _ in range(depth):
        for n_out, n_in in shapes:
            weights.append(rng.standard_normal((n_out, n_in)) * 1.2 / np.sqrt(n_in))
            biases.append(0.2 * rng.standard_normal(n_out))
    x = rng.standard_normal((batch, width))
    g = rng.standard_normal((batch, width))
    return weights, x, g, (biases if bias else None)


def _compare(got, ref, what, rtol=1e-10):
    for l, row in enumerate(ref):
        for col, want in row.items():
            np.testing.assert_allclose(got[col].iloc[l], want, rtol=rtol, atol=1e-12,
                                       err_msg=f"{what} block {l + 1} {col}")


@pytest.mark.parametrize("arch,kw", ARCHS)
@pytest.mark.parametrize("act", ACTS)
def test_propagate_matches_reference(arch, kw, act):
    w, x, g, b = _given(kw, np.random.default_rng(3))
    got = ws.propagate(w, x, act, grad_output=g, biases=b, arch=arch)
    ref = reference_residual(w, x, act, g, b, sup=sup_dphi(resolve_activation(act)), **kw)
    assert list(got["layer"]) == [1, 2, 3, 4]
    assert set(got.columns) >= set(ref[0])
    _compare(got, ref, f"{arch} {act}")


def _torch_residual(torch, weights, biases, x, g, act, kw):
    """The same net written in plain PyTorch; autograd gives every gradient."""
    from torch.nn import functional as F
    spec = resolve_activation(act)
    p = spec.params
    phis = {
        "linear": lambda a: a, "relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
        "leaky_relu": lambda a: F.leaky_relu(a, p.get("slope", 0.01)),
        "gelu": F.gelu, "silu": F.silu, "selu": F.selu,
        "elu": lambda a: F.elu(a, p.get("alpha", 1.0)),
        "softplus": lambda a: F.softplus(a, beta=p.get("beta", 1.0), threshold=1e6),
    }
    phi_t = phis[spec.name]
    branch, norm_kind = kw.get("branch", 1), kw.get("norm", "none")
    post, alpha, beta, eps = kw.get("post", False), kw.get("alpha", 1.0), kw.get("beta", 1.0), \
        kw.get("eps", 1e-5)

    def norm(z):
        if norm_kind == "layernorm":
            return F.layer_norm(z, z.shape[-1:], eps=eps)
        if norm_kind == "rmsnorm":
            return F.rms_norm(z, z.shape[-1:], eps=eps)
        return z

    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)
    W = [t(w) for w in weights]
    B = [t(b) for b in biases]
    xs, acts, fs = [], [], []
    h = t(x)
    for l in range(len(W) // branch):
        Wl, Bl = W[l * branch:(l + 1) * branch], B[l * branch:(l + 1) * branch]
        xs.append(h)
        u = h if post else norm(h)
        a = u @ Wl[0].T + Bl[0] if branch == 2 else u.clone()   # the branch's own node
        a.retain_grad()
        y = phi_t(a)
        f = alpha * (y @ Wl[-1].T + Bl[-1])
        z = beta * h + f
        h = norm(z) if post else z
        h.retain_grad()
        acts.append((a, y))
        fs.append((f, h))
    (h * torch.tensor(g)).sum().backward()
    lg = lambda v: float(torch.log10(torch.mean(v.detach() ** 2)))
    rows = []
    for l, ((a, y), (f, hl)) in enumerate(zip(acts, fs)):
        row = {"log10_pre_q": lg(a), "log10_post_q": lg(y), "log10_stream_q": lg(hl),
               "log10_branch_q": lg(f), "log10_grad_q": lg(a.grad),
               "log10_stream_grad_q": lg(hl.grad)}
        mats = W[l * branch:(l + 1) * branch]
        row["log10_wgrad_q"] = lg(mats[0].grad)
        if branch == 2:
            row["log10_wgrad2_q"] = lg(mats[1].grad)
        rows.append(row)
    return rows


@pytest.mark.parametrize("arch,kw", ARCHS)
@pytest.mark.parametrize("act", ACTS)
def test_propagate_matches_torch_autograd(arch, kw, act):
    torch = pytest.importorskip("torch")
    w, x, g, b = _given(kw, np.random.default_rng(5))
    got = ws.propagate(w, x, act, grad_output=g, biases=b, arch=arch)
    _compare(got, _torch_residual(torch, w, b, x, g, act, kw), f"torch {arch} {act}", rtol=1e-9)


@pytest.mark.parametrize("arch,batch", [("residual:branch=2,hidden=20,norm=layernorm", 3),
                                        ("residual:norm=rmsnorm,position=post", 70),
                                        ("gpt2", 3)])
def test_simulate_equals_propagate_on_sampled_weights(arch, batch):
    """simulate's matrix j of block l is sample_weights(layer=l, matrix=j) (times the arch's
    in_scale / out_scale); its input and gradient are N(0, 1)."""
    from winit_sim.kernels import rng as _rng
    width, depth = 12, 5
    sim = ws.simulate(width, depth, activation="gelu", init="he_normal", batch=batch, seed=4,
                      trials=2, arch=arch)
    blocks = ws.layers.resolve_arch(arch, depth, width)
    shapes = [(width, width)] if blocks.branch == 1 else [(blocks.hidden, width),
                                                          (width, blocks.hidden)]
    mult = [blocks.out_scale] if blocks.branch == 1 else [blocks.in_scale, blocks.out_scale]
    for trial in range(2):
        w = [mult[j] * ws.sample_weights("he_normal", n_in, n_out, seed=4, trial=trial,
                                         layer=l + 1, matrix=j)
             for l in range(depth) for j, (n_out, n_in) in enumerate(shapes)]
        x = np.empty((batch, width))
        _rng.fill_normal(np.uint64(_rng.stream_key(4, trial, 0, _rng.STREAM_INPUT)), x, 1.0)
        g = np.empty((batch, width))
        _rng.fill_normal(np.uint64(_rng.stream_key(4, trial, 0, _rng.STREAM_GRAD)), g, 1.0)
        ref = ws.propagate(w, x, "gelu", grad_output=g, arch=arch)
        cols = [c for c in ref.columns if c != "trial"]
        np.testing.assert_allclose(sim[sim.trial == trial][cols].to_numpy(),
                                   ref[cols].to_numpy(), rtol=1e-11)


def test_segments_and_depth_prefix_are_bit_identical():
    from winit_sim import engine
    arch = "residual:branch=2,hidden=10,norm=layernorm,position=post"
    kw = dict(activation="tanh", init="xavier_normal", batch=4, trials=2, bias_std=0.2, arch=arch)
    full = ws.simulate(8, 11, **kw)
    for seg in (1, 3, 20):
        assert full.equals(ws.simulate(8, 11, segment_layers=seg, **kw))
    # one pass with a backward from several tops = separate shallower nets (the
    # depth-prefix property; alpha is a number here, so the blocks do not change)
    widths = np.full(12, 8)
    blocks = ws.layers.resolve_arch(arch, 11, 8)
    run = dict(rows=4, trials=2, seed=0, bias_std=0.2, input_std=1.0, dtype=np.float64)
    fwd, bwd = engine.simulate_arrays(widths, "tanh", "xavier_normal", tops=[3, 7, 11],
                                      segment=2, blocks=blocks, **run)
    for i, d in enumerate([3, 7, 11]):
        f1, b1 = engine.simulate_arrays(widths[:d + 1], "tanh", "xavier_normal", tops=[d],
                                        blocks=blocks, **run)
        assert engine.block_frame(fwd, bwd, blocks, 8, depth=d, top_index=i).equals(
            engine.block_frame(f1, b1, blocks, 8))


def test_threads_do_not_change_results():
    kw = dict(activation="silu", init="lecun_uniform", batch=6, trials=2, arch="gpt2",
              bias_std=0.1)
    assert ws.simulate(16, 6, threads=1, **kw).equals(ws.simulate(16, 6, threads=2, **kw))


@pytest.mark.parametrize("arch,act,init,slope,method", [
    ("residual", "relu", "he_normal", np.log10(2.0), "matrix"),  # q_l = 2 q_{l-1}: 10^3010
    ("residual", "relu", "he_normal", np.log10(2.0), "conditional"),
    ("residual:alpha=0.5", "linear", "lecun_normal", np.log10(1.25), "conditional"),
    ("residual:norm=layernorm", "tanh", "xavier_normal", None, "conditional"),  # linear growth
    ("deepnorm", "gelu", "he_normal", 0.0, "matrix"),        # post-LN: q fixed
])
def test_depth_10000_is_finite(arch, act, init, slope, method):
    df = ws.simulate(32, 10_000, activation=act, init=init, batch=4, arch=arch, seed=2,
                     method=method)
    logs = [c for c in df.columns if c.startswith("log10_")]
    assert np.isfinite(df[logs].to_numpy()).all()
    q = df["log10_stream_q"].to_numpy()
    if slope is not None:
        # mean growth per block against the mean-field rate of E[q]; at width 32 the
        # log of one net's q drifts below it by O(1/width) per block (seen: 9% for relu)
        assert abs((q[-1] - q[99]) / 9_900 - slope) < 0.15 * max(slope, 0.01)
    else:
        # pre-LN: each block adds O(1), so q_l ~ l: log10 q rises by ~1 per decade of depth
        assert 0.7 < q[9_999] - q[999] < 1.3


def test_zero_branches_leave_the_stream_alone():
    fix = ws.simulate(16, 5, activation="relu", init="he_normal", batch=4, arch="fixup")
    skip = ws.simulate(16, 5, activation="relu", init="he_normal", batch=4, arch="skipinit")
    for df in (fix, skip):
        assert np.all(df["log10_branch_q"] == -np.inf)
        assert np.ptp(df["log10_stream_q"]) < 1e-12
        assert np.ptp(df["log10_stream_grad_q"]) < 1e-12
    # fixup: the zero last matrix still gets a gradient; nothing flows to the first
    assert np.isfinite(fix["log10_wgrad2_q"]).all()
    assert np.all(fix["log10_wgrad_q"] == -np.inf)
    assert np.all(skip["log10_wgrad_q"] == -np.inf) and np.all(skip["log10_wgrad2_q"] == -np.inf)
    assert np.isfinite(fix["log10_pre_q"]).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(arch="resnet"), "unknown arch 'resnet'; valid choices: mlp, residual"),
    (dict(arch="residual:depth=3"), "unknown parameter 'depth' for arch 'residual'; valid"),
    (dict(arch="residual:branch=3"), "'branch' must be one of 1, 2"),
    (dict(arch="residual:alpha=-1"), "'alpha' must be >= 0"),
    (dict(arch="mlp:norm=layernorm"), "unknown parameter 'norm' for arch 'mlp'"),
    (dict(arch="mlp:position=post"), "unknown parameter 'position' for arch 'mlp'"),
    (dict(arch="residual:position=post"), "position=post .* needs norm=layernorm or rmsnorm"),
    (dict(arch="residual:norm=batchnorm"), "'norm' must be one of none, layernorm, rmsnorm"),
    (dict(arch="residual:hidden=8"), "hidden is the inner width of branch=2"),
    (dict(arch="residual", widths=[8, 8, 9]), "one stream width"),
    (dict(arch="residual", method="conditional", init="he_uniform"),
     "method='conditional' needs Gaussian weights"),
    (dict(arch="fixup", method="conditional", init="orthogonal"), "needs Gaussian weights"),
])
def test_bad_input(kwargs, match):
    kw = dict(width=8, depth=3)
    if "widths" in kwargs:
        kw = {}
    with pytest.raises(ValueError, match=match):
        ws.simulate(**kw, **kwargs)


def test_propagate_bad_weights():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6))
    w1 = [rng.standard_normal((6, 6)) for _ in range(3)]
    with pytest.raises(ValueError, match="2 matrices per block.*got 3 weights"):
        ws.propagate(w1, x, "relu", arch="residual:branch=2")
    with pytest.raises(ValueError, match=r"weights\[1\] must have shape \(6, 6\)"):
        ws.propagate([w1[0], rng.standard_normal((6, 5))], x, "relu", arch="residual")
    with pytest.raises(ValueError, match=r"weights\[0\] must have shape \(24, 6\)"):
        ws.propagate(w1[:2], x, "relu", arch="gpt2")
    with pytest.raises(ValueError, match="grad_output must have shape"):
        ws.propagate(w1, x, "relu", grad_output=np.ones((3, 5)), arch="residual")
    with pytest.raises(ValueError, match="matrix must be 0"):
        ws.sample_weights("he_normal", 4, 4, matrix=2)


@pytest.mark.parametrize("arch,act,init", [
    ("residual", "relu", "he_normal"),
    ("residual:branch=2,alpha=inv_sqrt_depth", "tanh", "xavier_normal"),
    ("residual:norm=layernorm", "gelu", "he_normal"),
    ("residual:branch=2,norm=rmsnorm,position=post,beta=1.5", "tanh", "xavier_normal"),
    ("gpt2", "gelu", "xavier_normal"),
])
def test_simulation_matches_theory_at_width_1024(arch, act, init):
    """Mean over trials of each q (not of log q) within 4 standard errors plus 1% of the
    mean-field value, at every block; 24 trials, as in test_theory. Depth 10 keeps the
    finite-width drift (O(depth / width)) well inside the 1%."""
    import math
    df = ws.simulate(1024, 10, activation=act, init=init, batch=16, trials=24, seed=2,
                     bias_std=0.1, arch=arch, theory=True)
    cols = [c[len("theory_"):] for c in df.columns if c.startswith("theory_")]
    assert {"log10_stream_q", "log10_branch_q", "log10_stream_grad_q"} <= set(cols)
    for col in cols:
        q = 10 ** df[col]
        stats = q.groupby(df.layer).agg(["mean", "std"])
        th = 10 ** df.groupby("layer")["theory_" + col].first()
        err = np.abs(stats["mean"] - th)
        assert np.all(err <= 4 * stats["std"] / math.sqrt(24) + 0.01 * th), (arch, col, err / th)


@pytest.mark.parametrize("arch,kw,act,std,bias_std", [
    ("residual", dict(), "relu", lambda n_in, n_out: np.sqrt(2.0 / n_in), 0.0),
    ("residual:branch=2,hidden=384,norm=layernorm,alpha=0.6", dict(branch=2, norm="layernorm",
                                                                    alpha=0.6),
     "tanh", lambda n_in, n_out: np.sqrt(2.0 / (n_in + n_out)), 0.1),
    ("residual:norm=rmsnorm,position=post,beta=1.4", dict(norm="rmsnorm", post=True, beta=1.4),
     "gelu", lambda n_in, n_out: np.sqrt(2.0 / n_in), 0.1),
])
def test_theory_matches_a_numpy_monte_carlo(arch, kw, act, std, bias_std):
    """The recursions against nets drawn by NumPy's own generator and run by the plain
    reference (no kernel): mean over 12 nets of each q within 4 standard errors plus 2%
    of theory.predict, width 256, 5 blocks (finite-width drift O(depth / width))."""
    import math
    from winit_sim import theory
    width, depth, batch, trials = 256, 5, 8, 12
    rng = np.random.default_rng(11)
    branch = kw.get("branch", 1)
    shapes = [(width, width)] if branch == 1 else [(384, width), (width, 384)]
    init = "he_normal" if act != "tanh" else "xavier_normal"
    runs = []
    for _ in range(trials):
        w = [rng.standard_normal(s_) * std(s_[1], s_[0]) for _ in range(depth) for s_ in shapes]
        b = [bias_std * rng.standard_normal(s_[0]) for _ in range(depth) for s_ in shapes]
        runs.append(reference_residual(w, rng.standard_normal((batch, width)), act,
                                       rng.standard_normal((batch, width)), b, **kw))
    th = theory.predict(width, depth, activation=act, init=init, bias_std=bias_std, arch=arch,
                        batch=batch).set_index("layer")
    for col in ("log10_pre_q", "log10_post_q", "log10_stream_q", "log10_branch_q",
                "log10_grad_q", "log10_stream_grad_q"):
        for l in range(depth):
            q = np.array([10 ** r[l][col] for r in runs])
            want = 10 ** th["theory_" + col].iloc[l]
            err = abs(q.mean() - want)
            assert err <= 4 * q.std(ddof=1) / math.sqrt(trials) + 0.02 * want, \
                (arch, col, l + 1, q.mean(), want)


def test_sweep_with_archs(tmp_path):
    archs = ["mlp", "residual:branch=2,norm=rmsnorm", "residual:alpha=inv_sqrt_depth", "fixup"]
    kw = dict(trials=2, batch=4, seed=5, progress=False)
    df = ws.sweep([16], [3, 6], ["relu"], ["he_normal"], archs=archs, out=tmp_path / "r", **kw)
    assert list(df["arch"].cat.categories) == archs
    assert len(df) == len(archs) * 2 * (3 + 6)
    # the MLP's cells are those of a sweep without archs (same seeds, same bits)
    plain = ws.sweep([16], [3, 6], ["relu"], ["he_normal"], **kw)
    mlp = df[df.arch == "mlp"].dropna(axis=1, how="all").drop(columns="arch")
    assert mlp.reset_index(drop=True).equals(plain.drop(columns="arch"))
    for arch in archs[1:]:
        seed = ws.seed_of_cell(5, 16, "relu", "he_normal", arch)
        for d in (3, 6):
            # depth-free archs come from one net of depth 6, the others from nets of
            # their own depth: either way the cell is simulate's net of that depth
            cell = df[(df.arch == arch) & (df.depth == d)].dropna(axis=1, how="all")
            sim = ws.simulate(16, d, activation="relu", init="he_normal", batch=4, trials=2,
                              seed=seed, arch=arch)
            cols = list(sim.columns)
            np.testing.assert_array_equal(cell[cols].to_numpy(), sim.to_numpy(), err_msg=arch)
    # resumed from the directory, bit for bit
    again = ws.sweep([16], [3, 6], ["relu"], ["he_normal"], archs=archs, out=tmp_path / "r", **kw)
    assert again.equals(df)
    table = ws.variance_decay_table(df, "stream", theory=True)
    assert table.index.names == ["arch", "activation", "init", "width"]
    assert list(table.index.get_level_values("arch")) == archs[1:]   # the MLP has no stream
    fwd = ws.variance_decay_table(df, "forward", theory=True)
    assert len(fwd) == len(archs) and np.isfinite(fwd["theory@6"]).all()
    # fixup's stream does not move: its branches are zero
    assert table.loc[("fixup", "relu", "he_normal", 16), 6] == pytest.approx(0.0, abs=1e-12)


def test_cli_sweep_and_run_with_archs(tmp_path, capsys):
    from winit_sim.cli import main
    out = tmp_path / "res"
    assert main(["sweep", "--widths", "16", "--depths", "3,6", "--activations", "tanh",
                 "--inits", "xavier_normal", "--archs", "mlp,residual:norm=layernorm,deepnorm",
                 "--batch", "4", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "## stream:" in text and "deepnorm" in text
    for name in ("decay_stream.md", "decay_stream_grad.csv", "layers.png", "decay_stream.png"):
        assert (out / name).exists(), name
    assert main(["run", "--width", "8", "--depth", "3", "--arch", "gpt2", "--batch", "2"]) == 0
    assert "log10_stream_q" in capsys.readouterr().out
    assert main(["run", "--width", "8", "--depth", "3", "--arch", "residual:branch=5"]) == 2
    assert "'branch' must be one of 1, 2" in capsys.readouterr().err


def test_train_residual_archs():
    """Training at depth (CPU scale): the residual stream's scaling decides whether a deep
    net learns. Depth 60, width 16, each arch at its best of three learning rates."""
    from winit_sim.training import summarize
    out = {}
    for arch in ["mlp", "residual", "residual:alpha=inv_sqrt_depth", "fixup", "skipinit"]:
        runs = []
        for lr in (0.01, 0.03, 0.1):
            df = ws.train(16, 60, activation="relu", init="he_normal", steps=60, lr=lr,
                          batch=32, arch=arch, seed=1, optimizer="momentum", data="fixed")
            s = summarize(df)
            runs.append(np.inf if s["diverged"] else s["final_over_initial_loss"])
            if arch == "skipinit" and lr == 0.03:
                alpha = df.attrs["alpha"]
        out[arch] = min(runs)
    assert out["residual"] == np.inf                   # alpha = 1: diverges at every lr
    for arch in ("residual:alpha=inv_sqrt_depth", "fixup", "skipinit"):
        assert out[arch] < 0.7, (arch, out)
    assert np.all(alpha != 0.0)                        # skipinit learned its alphas from 0
    assert out["mlp"] > min(out["residual:alpha=inv_sqrt_depth"], out["fixup"]), out


def test_train_starts_from_simulates_weights():
    """train's residual net at step 0 is simulate's (sample_weights of each block's matrices,
    times in/out_scale): its first loss equals a NumPy forward on those weights, with the
    teacher and the input drawn from their keys."""
    from winit_sim.kernels import rng as _rng
    n, depth, rows, seed = 8, 3, 4, 2
    arch = "residual:branch=2,hidden=6,norm=layernorm,out_scale=0.5"
    df = ws.train(n, depth, activation="tanh", init="xavier_normal", steps=1, lr=0.0,
                  batch=rows, arch=arch, seed=seed)
    x = np.empty((rows, n))
    _rng.fill_normal(np.uint64(_rng.stream_key(seed, 0, 0, _rng.STREAM_INPUT)), x, 1.0)
    teacher = np.empty((n, n))
    _rng.fill_normal(np.uint64(_rng.stream_key(seed, 0, 0, _rng.STREAM_TEACHER)), teacher,
                     1.0 / np.sqrt(n))
    target = np.tanh(x @ teacher.T)
    h = x
    for l in range(depth):
        w = ws.sample_weights("xavier_normal", n, 6, seed=seed, layer=l + 1, matrix=0)
        v = 0.5 * ws.sample_weights("xavier_normal", 6, n, seed=seed, layer=l + 1, matrix=1)
        c = h - h.mean(axis=1, keepdims=True)
        u = c / np.sqrt(np.mean(c ** 2, axis=1, keepdims=True) + 1e-5)
        h = h + np.tanh(u @ w.T) @ v.T
    assert df.loss.iloc[0] == pytest.approx(np.mean((h - target) ** 2), rel=1e-12)
    with pytest.raises(ValueError, match="one stream width"):
        ws.train(widths=[8, 8, 9], arch="residual")
    with pytest.raises(ValueError, match="unknown arch"):
        ws.train(8, 3, arch="resnet")


@pytest.mark.parametrize("arch", ["residual:branch=2,hidden=6,norm=layernorm,out_scale=0.5",
                                  "residual:norm=rmsnorm,position=post,beta=1.3",
                                  "skipinit", "deepnorm"])
def test_train_steps_match_torch_autograd(arch):
    """Two SGD steps on a fixed batch against the same net in PyTorch (autograd, every
    matrix, each norm's gain and LayerNorm's shift, skipinit's alpha): the second loss,
    the gains and shifts, and alpha agree to 1e-10."""
    torch = pytest.importorskip("torch")
    from torch.nn import functional as F
    from winit_sim.kernels import rng as _rng
    n, depth, rows, seed, lr = 8, 3, 4, 2, 0.05
    blocks = ws.layers.resolve_arch(arch, depth, n)
    df = ws.train(n, depth, activation="tanh", init="xavier_normal", steps=2, lr=lr,
                  batch=rows, arch=arch, seed=seed, data="fixed")
    t = lambda a: torch.tensor(np.asarray(a, np.float64), requires_grad=True)
    shapes = [(n, n)] if blocks.branch == 1 else [(blocks.hidden, n), (n, blocks.hidden)]
    mult = [blocks.out_scale] if blocks.branch == 1 else [blocks.in_scale, blocks.out_scale]
    mats = [[t(mult[j] * ws.sample_weights("xavier_normal", n_in, n_out, seed=seed,
                                           layer=l + 1, matrix=j))
             for j, (n_out, n_in) in enumerate(shapes)] for l in range(depth)]
    norm = ws.layers.NORMS.names()[blocks.norm]
    gains = [t(np.ones(n)) for _ in range(depth)]
    shifts = [t(np.zeros(n)) for _ in range(depth)]
    alphas = [t(blocks.alpha) for _ in range(depth)]
    x = np.empty((rows, n))
    _rng.fill_normal(np.uint64(_rng.stream_key(seed, 0, 0, _rng.STREAM_INPUT)), x, 1.0)
    teacher = np.empty((n, n))
    _rng.fill_normal(np.uint64(_rng.stream_key(seed, 0, 0, _rng.STREAM_TEACHER)), teacher,
                     1.0 / np.sqrt(n))
    target = torch.tanh(torch.tensor(x @ teacher.T))

    def N(z, l):
        if norm == "layernorm":
            return F.layer_norm(z, (n,), gains[l], shifts[l], eps=blocks.eps)
        return F.rms_norm(z, (n,), gains[l], eps=blocks.eps) if norm == "rmsnorm" else z

    def loss_fn():
        h = torch.tensor(x)
        for l in range(depth):
            u = h if blocks.post else N(h, l)
            a = u @ mats[l][0].T if blocks.branch == 2 else u
            z = blocks.beta * h + alphas[l] * (torch.tanh(a) @ mats[l][-1].T)
            h = N(z, l) if blocks.post else z
        return torch.mean((h - target) ** 2)

    params = [w for m in mats for w in m] + (gains if norm != "none" else []) \
        + (shifts if norm == "layernorm" else [])
    params += alphas if blocks.train_alpha else []
    loss0 = loss_fn()
    loss0.backward()
    with torch.no_grad():
        for q in params:
            q -= lr * q.grad
    assert df.loss.iloc[0] == pytest.approx(loss0.item(), rel=1e-12)
    assert df.loss.iloc[1] == pytest.approx(loss_fn().item(), rel=1e-10)
    # after the run's last (second) step: take it in torch too
    for q in params:
        q.grad = None
    loss_fn().backward()
    with torch.no_grad():
        for q in params:
            q -= lr * q.grad
    np.testing.assert_allclose(df.attrs["alpha"], [a.item() for a in alphas], rtol=1e-10,
                               atol=1e-14)
    if norm != "none":
        np.testing.assert_allclose(df.attrs["norm_gain"],
                                   np.stack([g.detach().numpy() for g in gains]), rtol=1e-10)
    if norm == "layernorm":
        np.testing.assert_allclose(df.attrs["norm_shift"],
                                   np.stack([b.detach().numpy() for b in shifts]), rtol=1e-10,
                                   atol=1e-14)


# ---- the conditional engine -------------------------------------------------------------

def _conditional_reference(arch, act, init, width, depth, batch, bias_std, seed, trial):
    """reference_residual with matrices drawn as the conditional engine draws them (the
    arch's numbers from its resolved form, the inputs from the engine's streams)."""
    from winit_sim import engine
    from winit_sim.kernels import rng as _rng
    blocks = ws.layers.resolve_arch(arch, depth, width)
    stds = engine.describe_blocks(blocks, width, depth, act, init, bias_std).scale[0]
    x = naive._normals(seed, trial, 0, _rng.STREAM_INPUT, (batch, width))
    g = naive._normals(seed, trial, 0, _rng.STREAM_GRAD, (batch, width))
    ops = ConditionalDraws(stds, bias_std, seed, trial, depth, blocks.hidden)
    return reference_residual(None, x, act, g, ops=ops, sup=sup_dphi(resolve_activation(act)),
                              branch=blocks.branch, norm=ws.layers.NORMS.names()[blocks.norm],
                              post=blocks.post, alpha=blocks.alpha, beta=blocks.beta,
                              eps=blocks.eps)


# ARCHS, and the presets with a zero matrix (fixup), alpha 0 (skipinit), hidden = 4
# width (gpt2) and post-LN with beta (deepnorm)
COND_ARCHS = [a for a, _ in ARCHS] + ["fixup", "skipinit", "gpt2", "deepnorm"]


@pytest.mark.parametrize("arch", COND_ARCHS)
@pytest.mark.parametrize("act", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("bias_std", [0.0, 0.2])
def test_conditional_matches_reference(arch, act, bias_std):
    """Every block's columns against the NumPy reference on the same random streams, to
    1e-9 relative (pseudo-inverses of B x B Grams cost a few digits)."""
    width, depth, batch, seed = 12, 4, 5, 7
    sim = ws.simulate(width, depth, activation=act, init="he_normal", batch=batch, seed=seed,
                      trials=2, bias_std=bias_std, arch=arch, method="conditional")
    for trial in range(2):
        ref = _conditional_reference(arch, act, "he_normal", width, depth, batch, bias_std,
                                     seed, trial)
        _compare(sim[sim.trial == trial].reset_index(drop=True), ref,
                 f"conditional {arch} {act} trial {trial}", rtol=1e-9)


@pytest.mark.parametrize("act", ACTS)
def test_conditional_matches_reference_every_activation(act):
    """Branch 2 with pre-LN and biases, blocks wider than one column block (512) of the
    kernels' sums, a partial last block, and batch above nothing."""
    arch = "residual:branch=2,hidden=530,norm=layernorm"
    sim = ws.simulate(520, 3, activation=act, init="xavier_normal", batch=3, seed=1, trials=1,
                      bias_std=0.1, arch=arch, method="conditional")
    _compare(sim, _conditional_reference(arch, act, "xavier_normal", 520, 3, 3, 0.1, 1, 0),
             f"conditional {act}", rtol=1e-9)


def test_conditional_rank_deficient_blocks_match_the_reference():
    """Batch above the width (every Gram singular) and relu's dead samples."""
    arch = "residual:branch=2,hidden=3"
    sim = ws.simulate(4, 5, activation="relu", init="he_normal", batch=7, seed=3, trials=2,
                      arch=arch, method="conditional")
    assert np.isfinite(sim.filter(like="log10_").to_numpy()).all()
    for trial in range(2):
        ref = _conditional_reference(arch, "relu", "he_normal", 4, 5, 7, 0.0, 3, trial)
        _compare(sim[sim.trial == trial].reset_index(drop=True), ref, f"trial {trial}",
                 rtol=1e-7)


def test_conditional_segments_threads_and_depth_prefix_are_bit_identical():
    from winit_sim import engine
    arch = "residual:branch=2,hidden=10,norm=rmsnorm,position=post"
    kw = dict(activation="tanh", init="xavier_normal", batch=4, trials=2, bias_std=0.2,
              arch=arch, method="conditional")
    full = ws.simulate(16, 11, threads=2, **kw)
    for seg in (1, 3, 20):
        assert full.equals(ws.simulate(16, 11, segment_layers=seg, threads=1, **kw))
    widths = np.full(12, 16)
    blocks = ws.layers.resolve_arch(arch, 11, 16)
    run = dict(rows=4, trials=2, seed=0, bias_std=0.2, input_std=1.0, dtype=np.float64,
               method="conditional")
    fwd, bwd = engine.simulate_arrays(widths, "tanh", "xavier_normal", tops=[3, 11],
                                      segment=2, blocks=blocks, **run)
    for i, d in enumerate([3, 11]):
        f1, b1 = engine.simulate_arrays(widths[:d + 1], "tanh", "xavier_normal", tops=[d],
                                        blocks=blocks, **run)
        assert engine.block_frame(fwd, bwd, blocks, 16, depth=d, top_index=i).equals(
            engine.block_frame(f1, b1, blocks, 16))


def test_conditional_zero_matrices_are_exact_zeros():
    """fixup's zero matrices on the conditional engine write zeros, never 0 x whatever
    their buffer held (which was once inf, and a NaN stream)."""
    for seed in range(4):
        for backward in (False, True):
            df = ws.simulate(64, 300, activation="tanh", init="xavier_normal", batch=8,
                             arch="fixup", method="conditional", seed=seed, backward=backward)
            assert not df.filter(like="log10_").isna().any().any(), (seed, backward)
            assert np.ptp(df["log10_stream_q"]) < 1e-12


def test_conditional_zero_branches_and_float32():
    fix = ws.simulate(16, 5, activation="relu", init="he_normal", batch=4, arch="fixup",
                      method="conditional")
    assert np.all(fix["log10_branch_q"] == -np.inf) and np.ptp(fix["log10_stream_q"]) < 1e-12
    assert np.isfinite(fix["log10_wgrad2_q"]).all() and np.all(fix["log10_wgrad_q"] == -np.inf)
    kw = dict(activation="gelu", init="he_normal", batch=4, trials=2, bias_std=0.1,
              arch="residual:branch=2,norm=layernorm", method="conditional")
    f64 = ws.simulate(600, 30, dtype="float64", **kw)
    f32 = ws.simulate(600, 30, dtype="float32", **kw)
    logs = [c for c in f64.columns if c.startswith("log10_")]
    np.testing.assert_allclose(f32[logs], f64[logs], rtol=0, atol=1e-3)


def test_auto_takes_the_conditional_engine_where_it_fits():
    from winit_sim import engine
    def chosen(width, batch, arch, init="he_normal"):
        blocks = ws.layers.resolve_arch(arch, 4, width)
        net = engine.describe_blocks(blocks, width, 4, "relu", init)
        return engine.plan(net, init, batch, np.float64, "auto").engine
    assert chosen(256, 32, "residual") == "conditional"
    assert chosen(256, 64, "residual") == "matrix"              # 8 x batch > width
    assert chosen(256, 16, "residual:branch=2,hidden=64") == "matrix"   # the narrow side
    assert chosen(256, 16, "fixup") == "conditional"            # zero matrices are exact
    assert chosen(256, 16, "residual", "he_uniform") == "matrix"


@pytest.mark.parametrize("arch,act,init,bias_std", [
    ("residual:branch=2,norm=layernorm", "relu", "he_normal", 0.0),
    ("residual:norm=rmsnorm,position=post,alpha=0.8", "tanh", "xavier_normal", 0.1),
])
def test_conditional_has_the_matrix_engines_distribution(arch, act, init, bias_std):
    """Two-sample tests per column at blocks 1, 4 and 8 of width-64 nets, 800 nets per
    engine (different seeds). Means: Welch's t-test; spreads: Brown-Forsythe. Every
    p-value must exceed 0.01 / (number of tests): a false alarm in at most 1% of runs
    (Bonferroni). With 800 nets each, a shift of 0.25 between-net standard deviations
    is detected with probability 0.9."""
    kw = dict(activation=act, init=init, batch=4, trials=800, bias_std=bias_std, arch=arch)
    a = ws.simulate(64, 8, method="matrix", seed=1, **kw)
    b = ws.simulate(64, 8, method="conditional", seed=2, **kw)
    cols = ["log10_pre_q", "log10_post_q", "log10_stream_q", "log10_branch_q", "log10_grad_q",
            "log10_wgrad_q", "log10_stream_grad_q"] + (["log10_wgrad2_q"] if "branch=2" in arch
                                                        else [])
    assert_same_law(a, b, (1, 4, 8), cols)   # post-norm: the stream's q is fixed, exactly
