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
