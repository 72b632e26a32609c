"""Training probe: the seed document's claims about learning, measured (small, fixed seeds)."""
import numpy as np
import pytest

from winit_sim.training import distinct_units, train

ARCH = dict(width=32, depth=10, batch=16)


def _ratio(df, last=20):
    return df.loss.iloc[-last:].mean() / df.loss.iloc[0]


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_zeros_never_learn(act):
    df = train(**ARCH, activation=act, init="zeros", steps=30, lr=0.3, data="fixed")
    gn = df.filter(like="log10_gnorm_")
    assert np.all(gn.to_numpy() == -np.inf)       # no weight ever gets a gradient
    assert df.loss.nunique() == 1                  # so the loss never moves


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])
def test_constant_keeps_units_identical(act):
    df = train(**ARCH, activation=act, init="constant", steps=40, lr=0.1)
    assert np.all(df.filter(like="distinct_units_").to_numpy() == 1)
    he = train(**ARCH, activation=act, init="he_normal", steps=2, lr=0.1)
    assert np.all(he.filter(like="distinct_units_").to_numpy() == 32)


def test_small_sigmoid_vanishes_and_learns_less_than_xavier():
    small = train(64, 10, activation="sigmoid", init="small", steps=300, lr=0.3, batch=32)
    xavier = train(64, 10, activation="sigmoid", init="xavier_normal", steps=300, lr=0.3,
                   batch=32)
    first = small.iloc[0]
    assert first.log10_gnorm_1 < first.log10_gnorm_10 - 10   # measured: 15 decades
    assert _ratio(small) > 0.85 and _ratio(xavier) < 0.7      # measured: about 0.97 and 0.55


def test_large_diverges_where_he_trains():
    large = train(64, 10, activation="relu", init="large", steps=300, lr=0.3, batch=32)
    assert large.attrs["diverged"] and large.diverged.iloc[-1] and len(large) < 300
    he = train(64, 10, activation="relu", init="he_normal", steps=300, lr=0.3, batch=32)
    assert not he.attrs["diverged"] and _ratio(he) < 0.25     # measured: 0.18


def test_xavier_tanh_learns():
    df = train(64, 10, activation="tanh", init="xavier_normal", steps=300, lr=0.3, batch=32)
    assert _ratio(df) < 0.6                                    # measured: 0.48


def test_distinct_units_and_errors():
    w = np.arange(12.0).reshape(4, 3)
    assert distinct_units(w) == 4
    assert distinct_units(np.vstack([w, w[1:2] * (1 + 1e-14)])) == 4
    assert distinct_units(np.zeros((5, 3))) == 1
    with pytest.raises(ValueError, match="valid: sgd, momentum"):
        train(8, 2, optimizer="adam")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        train(8, 2, steps=0)
    with pytest.raises(ValueError, match="unknown init"):
        train(8, 2, init="nope")


def test_cli_train_writes_summary_and_plot(tmp_path, capsys):
    from winit_sim.cli import main
    out = tmp_path / "t"
    assert main(["train", "--width", "16", "--depth", "4", "--activation", "tanh", "--init",
                 "xavier_normal", "--steps", "20", "--out", str(out)]) == 0
    assert "final_over_initial_loss" in capsys.readouterr().out
    for name in ("train_summary.csv", "train_summary.md", "train_curves.csv", "train_loss.png"):
        assert (out / name).stat().st_size > 0
    assert main(["train", "--width", "16", "--depth", "4", "--optimizer", "adam",
                 "--out", str(out)]) == 2


@pytest.mark.parametrize("act,init,most", [("tanh", "xavier_normal", 0.5),
                                           ("relu", "he_normal", 0.5),
                                           ("sigmoid", "xavier_normal", 0.8)])
def test_auto_lr_lets_every_recommended_pairing_learn(act, init, most):
    """The default lr="auto": width 64, depth 6, 150 steps (at lr 0.01, Xavier/tanh kept
    94% of its loss). The search is reported, and the rate used is its best."""
    df = train(64, 6, activation=act, init=init, steps=150)
    search = df.attrs["lr_search"]
    assert list(search.columns) == ["lr", "score", "diverged"] and len(search) == 10
    live = search[~search.diverged]
    assert df.attrs["lr"] == live.sort_values("score").lr.iloc[0]
    assert not df.attrs["diverged"]
    assert df.loss.iloc[-1] / df.loss.iloc[0] < most


def test_auto_lr_cannot_rescue_bad_inits():
    """Zero weights stay symmetric at every rate; large weights with ReLU diverge at every
    rate, and the run shown is the smallest."""
    zeros = train(32, 6, activation="tanh", init="zeros", steps=60)
    assert zeros.loss.iloc[-1] / zeros.loss.iloc[0] > 0.95
    large = train(64, 10, activation="relu", init="large", steps=60)
    assert large.attrs["lr_search"].diverged.all()
    assert large.attrs["diverged"] and large.attrs["lr"] == 1e-4


def test_bad_lr_is_named():
    with pytest.raises(ValueError, match="lr must be a number >= 0 or 'auto', got 'fast'"):
        train(8, 2, lr="fast")
