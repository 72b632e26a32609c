"""Bad input fails early with a message that names the problem and the valid choices."""
import numpy as np
import pytest

import winit_sim as ws


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(width=0, depth=3), ValueError, "width must be >= 1"),
    (dict(width=8, depth=0), ValueError, "depth must be >= 1"),
    (dict(width=8, depth=2, batch=0), ValueError, "batch must be >= 1"),
    (dict(width=8, depth=2, trials=0), ValueError, "trials must be >= 1"),
    (dict(width=8.5, depth=2), TypeError, "width must be an integer"),
    (dict(widths=[8]), ValueError, "at least 2"),
    (dict(widths=[8, 0, 3]), ValueError, r"widths\[1\] must be >= 1"),
    (dict(width=8, depth=2, widths=[8, 8]), ValueError, "not both"),
    (dict(), ValueError, "give width and depth"),
    (dict(width=8, depth=2, init="bogus"), ValueError, "unknown init 'bogus'; valid choices: zeros"),
    (dict(width=8, depth=2, activation="swish"), ValueError, "valid choices: linear, relu"),
    (dict(width=8, depth=2, init="normal:std=-1"), ValueError, "std.*negative"),
    (dict(width=8, depth=2, init="he_normal:mode=fan_avg"), ValueError, "fan_in, fan_out"),
    (dict(width=8, depth=2, init="he_normal:std=1"), ValueError, "valid parameters: gain, mode"),
    (dict(width=8, depth=2, init="normal:std"), ValueError, "expected key=value"),
    (dict(width=8, depth=2, init="normal:std=abc"), TypeError, "must be a number"),
    (dict(width=8, depth=2, activation="relu:slope=0.1"), ValueError, "valid parameters: none"),
    (dict(width=8, depth=2, init=("normal", 0.1)), TypeError, "must be a dict"),
    (dict(width=8, depth=2, init=3), TypeError, "name string"),
    (dict(width=8, depth=2, dtype="float16"), ValueError, "float64, float32"),
    (dict(width=8, depth=2, bias_std=-0.1), ValueError, "bias_std"),
    (dict(width=8, depth=2, seed=-1), ValueError, "seed"),
    (dict(width=8, depth=2, threads=0), ValueError, "threads"),
])
def test_simulate_rejects(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ws.simulate(**kwargs)


def test_propagate_shape_errors():
    w = [np.ones((4, 3)), np.ones((2, 4))]
    x = np.ones((5, 3))
    with pytest.raises(ValueError, match="weights\\[1\\] has fan_in 5"):
        ws.propagate([np.ones((4, 3)), np.ones((2, 5))], x, "relu")
    with pytest.raises(ValueError, match="x has 2 columns"):
        ws.propagate(w, np.ones((5, 2)), "relu")
    with pytest.raises(ValueError, match="grad_output must have shape \\(5, 2\\)"):
        ws.propagate(w, x, "relu", grad_output=np.ones((5, 3)))
    with pytest.raises(ValueError, match="biases\\[0\\] must have shape \\(4,\\)"):
        ws.propagate(w, x, "relu", biases=[np.ones(3), np.ones(2)])
    with pytest.raises(TypeError, match="non-empty list"):
        ws.propagate([], x, "relu")
    with pytest.raises(ValueError, match="inf or NaN"):
        ws.propagate(w, np.full((5, 3), np.nan), "relu")
    with pytest.raises(ValueError, match="unknown activation"):
        ws.propagate(w, x, "nope")


def test_sample_weights_errors():
    with pytest.raises(ValueError, match="fan_in must be >= 1"):
        ws.sample_weights("he_normal", 0, 3)
    with pytest.raises(ValueError, match="layer must be >= 1"):
        ws.sample_weights("he_normal", 3, 3, layer=0)


def test_too_large_for_memory_is_refused_before_allocating():
    with pytest.raises(ValueError, match="GiB of buffers"):
        ws.simulate(200000, 2, batch=128, method="matrix")
    with pytest.raises(ValueError, match="GiB of buffers"):
        ws.simulate(10**8, 2, batch=64, method="conditional")
    with pytest.raises(ValueError, match="reduce width or batch"):
        ws.simulate(4096, 2, batch=10**7)
