"""sweep(): grid independence, prefix sharing, verdicts on the seed document's cases."""
import numpy as np
import pandas as pd
import pytest

import winit_sim as ws
from winit_sim.engine import compile_scope, frame, simulate_arrays

KEY = ["width", "depth", "activation", "init", "trial", "layer"]


def _cell(df, width, depth, act, init):
    sel = (df.width == width) & (df.depth == depth) & (df.activation == act) & (df.init == init)
    cell = df[sel].drop(columns=["width", "depth", "activation", "init", "arch"])
    return cell.reset_index(drop=True)


def test_cell_equals_simulate_with_its_seed():
    df = ws.sweep([24, 40], [3, 7, 12], ["tanh", "relu"], ["xavier_normal", "he_uniform"],
                  trials=2, batch=4, seed=9, bias_std=0.1, progress=False)
    assert len(df) == 2 * 2 * 2 * 2 * (3 + 7 + 12)
    # relu with xavier_normal: the sweep compiles one general variant (smooth formulas,
    # uniform sampling) for its cells, simulate only what this net needs; same bits
    for act, init in (("tanh", "he_uniform"), ("relu", "xavier_normal")):
        for depth in (3, 7, 12):
            ref = ws.simulate(40, depth, activation=act, init=init, trials=2, batch=4,
                              bias_std=0.1, seed=ws.seed_of_cell(9, 40, act, init))
            assert _cell(df, 40, depth, act, init).equals(ref)


def test_compile_scope_covers_the_grid_axes():
    assert compile_scope(["relu", "leaky_relu:slope=0.2"], ["he_normal"]) == (False, False)
    assert compile_scope(["relu", "tanh"], ["he_normal", "small"]) == (True, False)
    assert compile_scope(["linear"], ["he_normal", "xavier_uniform"]) == (False, True)
    with pytest.raises(ValueError, match="unknown activation"):
        compile_scope(["nope"], ["he_normal"])


def test_cells_do_not_depend_on_the_rest_of_the_grid():
    big = ws.sweep([16, 32], [4, 9], ["relu", "sigmoid"], ["he_normal", "small"], trials=2,
                   batch=4, progress=False)
    small = ws.sweep([32], [9], ["sigmoid"], ["kaiming_normal"], trials=2, batch=4,
                     progress=False)
    a = big.set_index(KEY).sort_index().loc[(32, 9, "sigmoid", "he_normal")]
    b = small.set_index(KEY).sort_index().loc[(32, 9, "sigmoid", "he_normal")]
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("seg", [2, 5])
def test_backward_from_several_tops_with_checkpoints(seg):
    """One forward pass, backward from depths 3, 8, 11, recomputing segments: same as separate nets."""
    widths = np.array([9, 13, 7, 11, 11, 6, 10, 12, 8, 9, 7, 5], dtype=np.int64)
    kw = dict(rows=3, trials=2, seed=5, bias_std=0.2, input_std=1.0, dtype="float64")
    fwd, bwd = simulate_arrays(widths, "gelu", "lecun_normal", tops=[3, 8, 11], segment=seg, **kw)
    for i, d in enumerate([3, 8, 11]):
        f1, b1 = simulate_arrays(widths[:d + 1], "gelu", "lecun_normal", tops=[d], **kw)
        assert frame(fwd, bwd, widths, depth=d, top_index=i).equals(frame(f1, b1, widths[:d + 1]))


def _verdicts(quantity, **grid):
    df = ws.sweep(progress=False, **grid)
    return ws.variance_decay_table(df, quantity)["verdict"]


def test_seed_document_verdicts():
    grid = dict(widths=[512], depths=[10, 40], activations=["sigmoid", "tanh", "relu"],
                inits=["zeros", "constant", "small", "large", "xavier_normal", "he_normal"],
                trials=4, batch=8)
    fwd = _verdicts("forward", **grid)
    bwd = _verdicts("backward", **grid)
    for act in ("sigmoid", "tanh", "relu"):
        assert fwd[(act, "zeros", 512)] == "dead"
        assert fwd[(act, "constant", 512)] == "symmetric"
    assert bwd[("sigmoid", "small", 512)] == "vanishing"
    assert fwd[("relu", "large", 512)] == "exploding"
    assert bwd[("relu", "large", 512)] == "exploding"
    assert bwd[("tanh", "large", 512)] == "exploding"
    assert fwd[("relu", "he_normal", 512)] == "stable"
    assert bwd[("relu", "he_normal", 512)] == "stable"
    for v in (fwd[("tanh", "xavier_normal", 512)], bwd[("tanh", "xavier_normal", 512)]):
        assert v not in ("vanishing", "exploding")
    from winit_sim.report import VERDICTS
    assert set(fwd) | set(bwd) <= set(VERDICTS)


def test_tanh_critical_decay_is_a_power_law():
    v = _verdicts("forward", widths=[256], depths=[10, 100], activations=["tanh"],
                  inits=["xavier_normal"], trials=2, batch=16)
    assert v.iloc[0] == "slow decay"


def test_table_shape_and_errors():
    df = ws.sweep([16], [2, 5], ["relu"], ["he_normal", "zeros"], progress=False, batch=4)
    t = ws.variance_decay_table(df, "weight_grad", at=[5])
    assert list(t.columns) == [5, "spread", "verdict"]
    assert list(t.index.names) == ["activation", "init", "width"]
    with pytest.raises(ValueError, match="valid: forward, backward, weight_grad"):
        ws.variance_decay_table(df, "sideways")
    with pytest.raises(ValueError, match=r"depths \[7\] are not in the results"):
        ws.variance_decay_table(df, at=[7])


@pytest.mark.parametrize("kwargs, match", [
    (dict(widths=[], depths=[3]), "widths must not be empty"),
    (dict(widths=[0], depths=[3]), "widths entry must be >= 1"),
    (dict(widths=[8], depths=[3], activations=["nope"]), "unknown activation"),
    (dict(widths=[8], depths=[3], inits=["he_normal:mode=sideways"]), "fan_in, fan_out"),
])
def test_sweep_bad_input(kwargs, match):
    grid = dict(activations=["relu"], inits=["he_normal"]) | kwargs
    with pytest.raises(ValueError, match=match):
        ws.sweep(progress=False, **grid)
