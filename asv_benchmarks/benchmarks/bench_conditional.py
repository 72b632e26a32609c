"""asv: the conditional engine (no weight matrices) against the matrix engine.

JIT compilation happens in setup(), outside the timings.
"""
import winit_sim as ws


class Engines:
    """width 1024, depth 100, batch 16, relu/he_normal, float32, forward+backward."""
    params = [["conditional", "matrix"]]
    param_names = ["method"]
    timeout = 300

    def setup(self, method):
        ws.simulate(64, 2, batch=16, dtype="float32", method=method)

    def time_simulate(self, method):
        ws.simulate(1024, 100, activation="relu", init="he_normal", batch=16, dtype="float32",
                    method=method)


class Width1e6:
    """width 10^6, depth 1000, batch 8, forward+backward: under 2 minutes and 4 GiB."""
    params = [["float64", "float32"]]
    param_names = ["dtype"]
    timeout = 900
    number = 1
    repeat = 1

    def setup(self, dtype):
        ws.simulate(64, 2, batch=8, dtype=dtype, method="conditional")

    def time_width_1e6(self, dtype):
        ws.simulate(10**6, 1000, activation="relu", init="he_normal", batch=8, dtype=dtype,
                    method="conditional")

    def peakmem_width_1e6(self, dtype):
        ws.simulate(10**6, 1000, activation="relu", init="he_normal", batch=8, dtype=dtype,
                    method="conditional")


class Orthogonal:
    """width 1024, depth 100, batch 16, relu/orthogonal (gain sqrt 2), float32,
    forward+backward: Haar weights drawn given each layer's input, or QR-sampled matrices."""
    params = [["conditional", "matrix"]]
    param_names = ["method"]
    timeout = 600
    number = 1
    repeat = 3

    def setup(self, method):
        ws.simulate(64, 2, init="orthogonal", batch=16, dtype="float32", method=method)

    def time_orthogonal(self, method):
        ws.simulate(1024, 100, activation="relu", init="orthogonal:gain=1.4142135623730951",
                    batch=16, dtype="float32", method=method)
