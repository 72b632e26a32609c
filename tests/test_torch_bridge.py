"""winit_sim.torch on real torch modules (CPU): init_ against sample_weights bit for bit,
diagnose against propagate on the same weights, the scaling check's headlines, compare,
the CLI, and the errors."""
import copy
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import winit_sim as ws
from winit_sim.cli import main

torch = pytest.importorskip("torch")
nn = torch.nn
wt = pytest.importorskip("winit_sim.torch")


class Block(nn.Module):
    """x + alpha * f(x): a residual block as users write one."""

    def __init__(self, width, alpha=1.0, hidden=None):
        super().__init__()
        hidden = hidden or width
        self.f = nn.Sequential(nn.Linear(width, hidden, bias=False), nn.ReLU(),
                               nn.Linear(hidden, width, bias=False))
        self.alpha = alpha

    def forward(self, x):
        return x + self.alpha * self.f(x)


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(12, 20), nn.GELU())
        self.body = nn.ModuleDict({"a": nn.Sequential(nn.Linear(20, 20), nn.Tanh()),
                                   "b": nn.Linear(20, 7)})

    def forward(self, x):
        return self.body["b"](self.body["a"](self.stem(x)))


def cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
                         nn.Conv2d(8, 8, (3, 2), groups=2), nn.LeakyReLU(0.2), nn.Flatten(),
                         nn.Linear(8 * 6 * 7, 5))


def _expected(init, layer, weight, fan_in, receptive_field=1, activation=None, seed=0):
    w = ws.sample_weights(init, fan_in, weight.shape[0], seed=seed, layer=layer,
                          activation=activation, receptive_field=receptive_field)
    return torch.from_numpy(w).reshape(weight.shape).to(weight.dtype)


# ---------------------------------------------------------------------------- init_

@pytest.mark.parametrize("init", ["he_normal", "xavier_uniform", "orthogonal:gain=auto",
                                  "lecun_normal:gain=auto"])
def test_init_reproduces_sample_weights_on_an_mlp(init):
    model = nn.Sequential(nn.Linear(10, 16), nn.SELU(), nn.Linear(16, 9), nn.SiLU(),
                          nn.Linear(9, 4)).to(torch.float32)
    table = wt.init_(model, init, seed=7)
    acts = ["selu", "silu", "linear"]
    for l, (i, fan_in) in enumerate(((0, 10), (2, 16), (4, 9)), start=1):
        w = model[i].weight
        assert torch.equal(w, _expected(init, l, w, fan_in, activation=acts[l - 1], seed=7))
        assert torch.equal(model[i].bias, torch.zeros_like(model[i].bias))
    assert list(table.activation) == acts
    assert list(table.module) == ["0", "2", "4"]
    if init.endswith("gain=auto"):
        assert table.gain.tolist() == [ws.theory.gain(a) for a in acts]


def test_init_covers_convolutions_with_torch_fans():
    model = cnn()
    table = wt.init_(model, "xavier_normal", seed=3, bias=0.1)
    conv1, conv2, lin = model[0], model[3], model[6]
    # torch's fans: fan_in = in/groups x k, fan_out = out x k
    assert (table.fan_in.tolist(), table.fan_out.tolist()) == ([27, 24, 336], [72, 48, 5])
    assert torch.equal(conv1.weight, _expected("xavier_normal", 1, conv1.weight, 27, 9, seed=3))
    assert torch.equal(conv2.weight, _expected("xavier_normal", 2, conv2.weight, 24, 6, seed=3))
    assert torch.equal(lin.weight, _expected("xavier_normal", 3, lin.weight, 336, seed=3))
    assert torch.equal(conv2.bias, torch.from_numpy(
        ws.sample_biases(0.1, 8, seed=3, layer=2)).to(torch.float32))
    # the scheme's std is torch's xavier_normal_ std with torch's fans
    for row, m in zip(table.itertuples(), (conv1, conv2, lin)):
        fi, fo = nn.init._calculate_fan_in_and_fan_out(m.weight)
        assert row.std == pytest.approx(math.sqrt(2.0 / (fi + fo)), rel=1e-15)
        assert float(m.weight.detach().double().std()) == pytest.approx(row.std, rel=0.25)


def test_init_walks_nested_containers_in_registration_order():
    model = Nested()
    table = wt.init_(model, "he_uniform:gain=auto", seed=1, bias="keep")
    assert list(table.module) == ["stem.0", "body.a.0", "body.b"]
    assert list(table.activation) == ["gelu", "tanh", "linear"]
    for l, (m, fan_in, act) in enumerate(((model.stem[0], 12, "gelu"),
                                          (model.body["a"][0], 20, "tanh"),
                                          (model.body["b"], 20, "linear")), start=1):
        assert torch.equal(m.weight, _expected("he_uniform:gain=auto", l, m.weight, fan_in,
                                               activation=act, seed=1))


def test_init_activation_override_and_bias_choices():
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6))
    table = wt.init_(model, "xavier_normal:gain=auto", activation={"1": "tanh"})
    assert list(table.activation) == ["linear", "tanh"]
    with pytest.raises(ValueError, match="names no weighted layer"):
        wt.init_(model, "he_normal", activation={"7": "relu"})
    with pytest.raises(ValueError, match="bias must be one of"):
        wt.init_(model, "he_normal", bias="random")


# ---------------------------------------------------------------------------- gains

def test_gains_table_in_torch_terms():
    table = wt.gains_table().set_index("activation")
    for act in ws.ACTIVATIONS.names():
        row = table.loc[act]
        assert row.gain == pytest.approx(ws.theory.gain(act), rel=1e-14)
        written = ws.theory.gain_table([act]).torch_gain.iloc[0]
        if np.isfinite(row.calculate_gain) or np.isfinite(written):
            assert row.calculate_gain == pytest.approx(written, rel=1e-12)
        if np.isfinite(row.kaiming_a):   # torch's kaiming gain with this a is ours
            assert nn.init.calculate_gain("leaky_relu", row.kaiming_a) == \
                pytest.approx(row.gain, rel=1e-12)
    assert np.isnan(table.loc["gelu", "calculate_gain"])   # torch has none for gelu
    assert table.loc["relu", "kaiming_a"] == 0.0
    # one spec, a name or a (name, params) tuple, is one row (not a list of letters)
    one = wt.gains_table("relu")
    assert list(one.activation) == ["relu"] and one.gain.iloc[0] == table.loc["relu", "gain"]
    leaky = wt.gains_table(("leaky_relu", {"slope": 0.2}))
    assert len(leaky) == 1 and leaky.gain.iloc[0] == pytest.approx(math.sqrt(2 / 1.04))


# ---------------------------------------------------------------------------- diagnose

def _mlp(widths, act=nn.ReLU, bias=False, final_act=True):
    layers = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
        if i < len(widths) - 2 or final_act:
            layers.append(act())
    return nn.Sequential(*layers)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-11), (torch.float32, 2e-5)])
@pytest.mark.parametrize("act, name", [(nn.ReLU, "relu"), (nn.Tanh, "tanh"), (nn.GELU, "gelu")])
def test_diagnose_matches_propagate_on_the_same_weights(dtype, rtol, act, name):
    widths = [20, 48, 48, 30, 16]
    model = _mlp(widths, act, bias=True).to(dtype)
    wt.init_(model, "he_normal", bias=0.1)
    x = torch.randn(12, 20, generator=torch.Generator().manual_seed(4), dtype=dtype)
    df = wt.diagnose(model, x, cotangent_seed=9)
    lin, acts = df[df.role == "linear"], df[df.role == "activation"]
    y = model(x)
    g = wt.cotangent(y, 9)
    sim = ws.propagate([m.weight.detach().numpy() for m in model[::2]], x.numpy(), name,
                       grad_output=g.detach().numpy(),
                       biases=[m.bias.detach().double().numpy() for m in model[::2]])
    for ours, theirs in (("log10_pre_q", "log10_pre_q"), ("log10_grad_q", "log10_grad_q"),
                         ("log10_wgrad_q", "log10_wgrad_q"),
                         ("unit_var_ratio", "unit_var_ratio")):
        np.testing.assert_allclose(lin[ours], sim[theirs], rtol=rtol, atol=rtol, err_msg=ours)
    np.testing.assert_allclose(acts.log10_out_q, sim.log10_post_q, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(acts.frac_zero, sim.frac_zero)
    np.testing.assert_allclose(acts.frac_saturated, sim.frac_saturated, atol=1e-12)
    # the top: the output's gradient is g itself
    out = df[df.role == "output"].iloc[0]
    assert out.log10_grad_q == pytest.approx(math.log10(float(g.double().square().mean())))


def _snapshot(model):
    return ({n: p.detach().clone() for n, p in model.named_parameters()},
            {n: b.detach().clone() for n, b in model.named_buffers()},
            {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
            {n: m.training for n, m in model.named_modules()},
            {n: (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
             for n, m in model.named_modules()})


def _assert_unchanged(model, before):
    after = _snapshot(model)
    for b, a in zip(before[:3], after[:3]):
        assert b.keys() == a.keys()
        for k in b:
            assert (b[k] is None and a[k] is None) or torch.equal(b[k], a[k]), k
    assert before[3] == after[3]
    assert {k: tuple(map(len, v)) for k, v in before[4].items()} == \
        {k: tuple(map(len, v)) for k, v in after[4].items()}


def _models():
    torch.manual_seed(0)
    enc = lambda first: nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0, batch_first=True,
                                   norm_first=first), num_layers=2, enable_nested_tensor=False)
    return {
        "cnn": (cnn(), torch.randn(4, 3, 8, 8)),
        "encoder_pre": (enc(True), torch.randn(3, 5, 16)),
        "encoder_post": (enc(False), torch.randn(3, 5, 16)),
        "residual_mlp": (nn.Sequential(nn.Linear(10, 24), Block(24, 0.5), nn.LayerNorm(24),
                                       Block(24, 0.5, hidden=40), nn.Linear(24, 3)),
                         torch.randn(6, 10)),
    }


@pytest.mark.parametrize("name", ["cnn", "encoder_pre", "encoder_post", "residual_mlp"])
def test_diagnose_real_models_and_leave_them_unchanged(name):
    model, x = _models()[name]
    model.train()                # BatchNorm in training mode updates its buffers
    model(x).sum().backward()    # a .grad the diagnosis must leave as it is
    before = _snapshot(model)
    rng_before = torch.get_rng_state()
    df = wt.diagnose(model, x)
    _assert_unchanged(model, before)
    assert torch.equal(rng_before, torch.get_rng_state())
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.LayerNorm, nn.BatchNorm2d)
    wanted = {n for n, m in model.named_modules() if isinstance(m, kinds)}
    assert wanted <= set(df.module), wanted - set(df.module)
    rows = df[df.module.isin(wanted)]
    stats = ["frac_zero", "unit_var_ratio", "log10_grad_q"]
    assert np.isfinite(rows[stats].to_numpy()).all()
    q = rows.log10_pre_q.fillna(rows.log10_out_q)
    assert np.isfinite(q).all()
    weighted = rows[rows.role.isin(["linear", "conv"])]
    assert np.isfinite(weighted.log10_wgrad_q).all()
    assert set(df.verdict) <= {"stable", "vanishing", "exploding", "dead", "symmetric"}
    if name.startswith("encoder"):
        assert (df.role == "attention").sum() == 2
        assert (df.role == "residual").sum() >= 2   # each encoder layer adds its input
    if name == "residual_mlp":
        assert list(df[df.role == "residual"].module) == ["1", "3"]


def test_diagnose_trials_reinitialise_and_report_spreads():
    model = _mlp([16, 32, 32, 8], nn.Tanh)
    before = _snapshot(model)
    x = torch.randn(10, 16)
    df = wt.diagnose(model, x, trials=3, init="xavier_normal")
    _assert_unchanged(model, before)
    assert (df.trials == 3).all() and "log10_pre_q_sd" in df.columns
    one = [wt.diagnose(_initialised_copy(model, t), x) for t in range(3)]
    mean = np.mean([d.log10_pre_q.to_numpy() for d in one], axis=0)
    np.testing.assert_allclose(df.log10_pre_q, mean, rtol=1e-12, equal_nan=True)
    assert (df[df.role == "linear"].log10_pre_q_sd > 0).all()
    # init None: each module's reset_parameters after torch.manual_seed(t)
    a = wt.diagnose(model, x, trials=2)
    b = wt.diagnose(model, x, trials=2)
    pd.testing.assert_frame_equal(a, b)
    _assert_unchanged(model, before)


def _initialised_copy(model, seed):
    m = copy.deepcopy(model)
    wt.init_(m, "xavier_normal", seed=seed)
    return m


def test_diagnose_sees_symmetry_and_dead_layers():
    model = _mlp([8, 16, 16, 4])
    wt.init_(model, "constant:value=0.1")
    df = wt.diagnose(model, torch.randn(5, 8))
    assert (df[df.role == "linear"].iloc[1:].verdict == "symmetric").all()
    wt.init_(model, "zeros")
    df = wt.diagnose(model, torch.randn(5, 8))
    assert (df[df.role == "linear"].verdict == "dead").all()


def test_diagnose_verdicts_follow_the_tables_thresholds():
    deep = _mlp([64] * 41, nn.Tanh)
    wt.init_(deep, "small")
    df = wt.diagnose(deep, torch.randn(16, 64))
    assert df[df.role == "linear"].verdict.iloc[-1] == "vanishing"
    # tanh at its computed gain keeps q but has chi_1 = 1.18: gradients grow downwards
    wt.init_(deep, "xavier_normal:gain=auto")
    df = wt.diagnose(deep, torch.randn(16, 64))
    assert df[df.role == "linear"].verdict.iloc[0] == "exploding"
    assert df[df.role == "linear"].forward_decades.abs().max() < 0.5
    relu = _mlp([64] * 41)
    wt.init_(relu, "he_normal")
    df = wt.diagnose(relu, torch.randn(16, 64))
    assert (df[df.role == "linear"].verdict == "stable").all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_diagnose_on_cuda_matches_cpu():
    model = _mlp([20, 32, 32, 8], nn.Tanh).double()
    x = torch.randn(6, 20, dtype=torch.float64)
    cpu = wt.diagnose(model, x)
    gpu = wt.diagnose(model.cuda(), x.cuda())
    cols = ["log10_pre_q", "log10_out_q", "log10_grad_q", "log10_wgrad_q"]
    np.testing.assert_allclose(gpu[cols], cpu[cols], rtol=1e-9, equal_nan=True)


# ---------------------------------------------------------------------------- scaling

def _readout_mlp(width, depth=3):
    return _mlp([32] + [width] * (depth - 1) + [10], bias=True, final_act=False)


def test_scaling_check_reproduces_mups_headline():
    x = torch.randn(32, 32, generator=torch.Generator().manual_seed(0))
    widths = [64, 128, 256, 512, 1024]
    sp = wt.scaling_check(_readout_mlp, widths, inputs=x, steps=3, lr=1e-2)
    mup = wt.scaling_check(_readout_mlp, widths, inputs=x, steps=3,
                           lr=lambda width, depth: 1e-2 * 64 / width)
    out = lambda r: r.slopes[(r.slopes.module == "(output)") & (r.slopes.quantity == "log10_q")
                             ].set_index("step")
    s, m = out(sp), out(mup)
    assert abs(s.slope[0]) < 0.1 and s.verdict[0] == "flat"   # at init SP is fine
    assert (s.slope[1:] > 1.0).all() and (s.verdict[1:] == "grows").all()
    assert s.slope[3] > s.slope[1]                             # and it grows away from 0
    assert (m.slope.abs() < wt.scaling.WIDTH_SLOPE_TOLERANCE).all() and (m.verdict == "flat").all()


def test_scaling_check_takes_an_optimizer_function_and_records_every_step():
    x = torch.randn(8, 32)
    calls = []

    def sgd(model, lr):
        calls.append(lr)
        return torch.optim.SGD(model.parameters(), lr=lr)

    r = wt.scaling_check(_readout_mlp, [16, 32], inputs=x, steps=2, optimizer=sgd,
                         lr=lambda width, depth: 0.1 / width)
    assert calls == [0.1 / 16, 0.1 / 32]
    assert sorted(r.stats.step.unique()) == [0, 1, 2]
    out = r.stats[(r.stats.module == "(output)") & (r.stats.width == 16)].set_index("step")
    assert out.log10_q[0] != out.log10_q[2]                  # training moved the output
    assert set(r.slopes.against) == {"width"}
    with pytest.raises(TypeError, match="optimizer"):
        wt.scaling_check(_readout_mlp, [16], inputs=x, optimizer="adam")


class _ResNet(nn.Module):
    def __init__(self, width, depth):
        super().__init__()
        self.inp = nn.Linear(32, width, bias=False)
        self.blocks = nn.Sequential(*[Block(width, depth ** -0.5) for _ in range(depth)])
        self.out = nn.Linear(width, 10, bias=False)

    def forward(self, x):
        return self.out(self.blocks(self.inp(x)))


def test_scaling_check_over_depth(tmp_path):
    x = torch.randn(32, 32, generator=torch.Generator().manual_seed(1))
    depths = [2, 4, 8, 16, 32]
    plain = wt.scaling_check(lambda w, d: _mlp([32] + [w] * (d - 1) + [10], final_act=False),
                             [128], depths=depths, inputs=x)
    res = wt.scaling_check(_ResNet, [128], depths=depths, inputs=x)
    pick = lambda r, q: r.slopes[(r.slopes.against == "depth") & (r.slopes.quantity == q)
                                 ].set_index("module")
    # torch's default init (Var = 1/(3 fan_in)) with ReLU: 1/6 per layer, -0.78 decades
    assert pick(plain, "log10_q").loc["(output)", "slope"] == pytest.approx(-0.78, abs=0.05)
    assert pick(plain, "log10_q").loc["(output)", "verdict"] == "shrinks"
    assert pick(plain, "log10_grad_q").loc["(input)", "verdict"] == "shrinks"
    for q, module in (("log10_q", "(output)"), ("log10_grad_q", "(input)")):
        assert abs(pick(res, q).loc[module, "change"]) < 0.2
        assert pick(res, q).loc[module, "verdict"] == "flat"
    path = tmp_path / "scaling.png"
    res.plot(path)
    assert path.stat().st_size > 10_000


# ---------------------------------------------------------------------------- compare

@pytest.mark.parametrize("final_act", [True, False])
def test_compare_beside_propagate_and_theory(final_act):
    torch.manual_seed(2)
    model = _mlp([64, 256, 256, 256, 8], nn.Tanh, bias=True, final_act=final_act).double()
    wt.init_(model, "xavier_normal:gain=auto", bias=0.05)
    x = torch.randn(64, 64, dtype=torch.float64)
    df = wt.compare(model, x)
    inner = df if final_act else df.iloc[:-1]
    for q in ("log10_pre_q", "log10_post_q", "log10_grad_q", "log10_wgrad_q", "frac_zero",
              "unit_var_ratio"):
        np.testing.assert_allclose(inner["winit_sim_" + q], inner["torch_" + q], rtol=1e-10,
                                   atol=1e-12, err_msg=q)
    # width 256: the forward's q within 0.1 decade of mean-field theory
    np.testing.assert_allclose(df.torch_log10_pre_q, df.theory_log10_pre_q, atol=0.1)
    np.testing.assert_allclose(df.torch_log10_grad_q, df.theory_log10_grad_q, atol=0.3)
    if not final_act:
        assert np.isnan(df.winit_sim_log10_pre_q.iloc[-1])


RESIDUAL_ARCHS = ["residual", "residual:alpha=inv_sqrt_depth",
                  "residual:branch=2,hidden=48,norm=layernorm",
                  "residual:branch=2,norm=rmsnorm,position=post,beta=1.3", "gpt2", "deepnorm"]


@pytest.mark.parametrize("arch", RESIDUAL_ARCHS)
@pytest.mark.parametrize("act", ["relu", "tanh", "gelu"])
def test_compare_residual_nets_beside_propagate(arch, act):
    model = wt.residual_net(arch, 32, 5, act, init="he_normal", seed=3)
    df = wt.compare(model, torch.randn(16, 32, dtype=torch.float64), init="he_normal")
    cols = [c[len("torch_"):] for c in df.columns if c.startswith("torch_")]
    branch2 = ws.layers.resolve_arch(arch, 5, 32).branch == 2
    for q in cols:
        if q == "log10_wgrad2_q" and not branch2:
            assert df["torch_" + q].isna().all()
            continue
        if q == "frac_zero" and act == "gelu":
            # torch's gelu, 0.5 h (1 + erf(h / sqrt 2)), rounds to exactly 0 below about
            # h = -8.3; winit_sim's keeps h Phi(h) (1e-197 at h = -30)
            assert (df["torch_" + q] >= df["winit_sim_" + q]).all()
            continue
        np.testing.assert_allclose(df["winit_sim_" + q], df["torch_" + q], rtol=1e-10,
                                   atol=1e-12, err_msg=f"{arch} {act} {q}")
    assert np.isfinite(df.theory_log10_stream_q).all()


def test_residual_net_draws_simulates_weights_and_diagnose_finds_its_blocks():
    arch = "residual:branch=2,hidden=20,norm=layernorm"
    model = wt.residual_net(arch, 12, 4, "gelu", init="he_normal", seed=4)
    weights, _ = model.weights()
    blocks = ws.layers.resolve_arch(arch, 4, 12)
    for i, w in enumerate(weights):
        l, j = i // 2 + 1, i % 2
        want = [blocks.in_scale, blocks.out_scale][j] * ws.sample_weights(
            "he_normal", w.shape[1], w.shape[0], seed=4, layer=l, matrix=j)
        np.testing.assert_array_equal(w.detach().numpy(), want)
    df = wt.diagnose(model, torch.randn(8, 12, dtype=torch.float64))
    assert list(df[df.role == "residual"].module) == [f"blocks.{l}" for l in range(4)]
    # theory at width 256 within 0.1 decade of the stream
    wide = wt.residual_net("residual:alpha=inv_sqrt_depth", 256, 20, "relu", init="he_normal")
    cmp = wt.compare(wide, torch.randn(64, 256, dtype=torch.float64), init="he_normal")
    np.testing.assert_allclose(cmp.torch_log10_stream_q, cmp.theory_log10_stream_q, atol=0.1)
    with pytest.raises(ValueError, match="residual arch"):
        wt.residual_net("mlp", 8, 2)


def test_compare_refuses_what_winit_sim_cannot_express():
    with pytest.raises(ValueError, match="one activation throughout"):
        wt.compare(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh()),
                   torch.randn(2, 4))
    with pytest.raises(ValueError, match="does not fit"):
        wt.compare(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), torch.randn(2, 4))


# ---------------------------------------------------------------------------- errors

def test_bad_input_gets_clear_errors():
    model = _mlp([784, 32, 10])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        wt.diagnose(lambda x: x, torch.randn(2, 784))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        wt.init_("model")
    with pytest.raises(ValueError, match=r"module '0' \(Linear \(its in_features is 784\)\).*"
                                         r"\(64, 100\)"):
        wt.diagnose(model, torch.randn(64, 100))
    with pytest.raises(ValueError, match="no module diagnose reports on"):
        wt.diagnose(nn.Sequential(nn.Flatten()), torch.randn(2, 3))
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv"):
        wt.init_(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="unknown init 'he_norml'.*he_normal"):
        wt.init_(model, "he_norml")
    with pytest.raises(ValueError, match="unknown init"):
        wt.diagnose(model, torch.randn(2, 784), init="bogus")
    with pytest.raises(TypeError, match="inputs must be a tensor"):
        wt.diagnose(model, [[1.0] * 784])
    with pytest.raises(ValueError, match="widths"):
        wt.scaling_check(_readout_mlp, [64, 0], inputs=torch.randn(2, 32))
    with pytest.raises(ValueError, match="receptive_field"):
        ws.sample_weights("he_normal", 4, 4, receptive_field=0)


def test_import_without_torch_names_the_extra():
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import winit_sim.torch\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert 'pip install -e ".[torch]"' in out


# ---------------------------------------------------------------------------- CLI

FACTORY = '''
import torch.nn as nn

def model():
    return nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                         nn.Linear(32, 4))
'''


def test_cli_diagnose_writes_csv_markdown_and_png(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_models.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "diag"
    assert main(["diagnose", "my_models:model", "--input-shape", "16,20", "--init",
                 "xavier_normal:gain=auto", "--trials", "2", "--out", str(out)]) == 0
    df = pd.read_csv(out / "diagnose.csv")
    assert list(df.module[df.role == "linear"]) == ["0", "2", "4"]
    assert (df.trials == 2).all()
    assert "| depth_index |" in (out / "diagnose.md").read_text()
    assert (out / "diagnose.png").stat().st_size > 10_000
    assert "verdicts:" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["no_such_module:model", "--input-shape", "2,20"], "cannot import 'no_such_module'"),
    (["my_models:nothing", "--input-shape", "2,20"], "has no attribute 'nothing'"),
    (["my_models", "--input-shape", "2,20"], "package.module:function"),
    (["my_models:model", "--input-shape", "2,x"], "--input-shape"),
    (["my_models:model", "--input-shape", "2,21"], "do not fit module '0'"),
    (["my_models:model", "--input-shape", "2,20", "--init", "nope"], "--init"),
])
def test_cli_diagnose_bad_input_exits_2(tmp_path, monkeypatch, capsys, argv, message):
    (tmp_path / "my_models.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    assert main(["diagnose", *argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o" / "diagnose.csv")
