"""asv: the Jacobian spectrum (every singular value, log-space product SVD).

Width 256 and 1024 tanh/orthogonal nets; JIT compilation happens in setup(), outside
the timings. ``asv_benchmarks/spectrum.py`` compares with PyTorch in the same run.
"""
import winit_sim as ws


class JacobianSpectrum:
    params = [[256, 1024], [10, 100]]
    param_names = ["width", "depth"]
    timeout = 1200
    number = 1
    repeat = 3

    def setup(self, width, depth):
        ws.jacobian_spectrum(8, 2, activation="tanh", init="orthogonal")

    def time_jacobian_spectrum(self, width, depth):
        ws.jacobian_spectrum(width, depth, activation="tanh", init="orthogonal")
