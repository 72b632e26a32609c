"""Theory beside the simulation (infinite width).

* :mod:`.moments`   Gaussian moments of activations (quadrature) and computed gains
* :mod:`.meanfield` q- and c-maps, predictions of every layer, fixed points, depth scales
* :mod:`.spectrum`  free probability: the Jacobian's singular-value moments and density

Everything public of both is importable from here: ``from winit_sim import theory;
theory.predict(...)``.
"""
from .meanfield import (FixedPoint, chi1, correlation_map, critical_sw2, depth_scales,
                        fixed_point, gain_table, phase_diagram, predict, predict_layers, qmap)
from .moments import auto_gain, gain, gaussian_expectation, log_moments
from .spectrum import jacobian_density, jacobian_moments, sample_jacobian_density

__all__ = ["FixedPoint", "auto_gain", "chi1", "correlation_map", "critical_sw2",
           "depth_scales", "fixed_point", "gain", "gain_table", "gaussian_expectation",
           "jacobian_density", "jacobian_moments", "log_moments", "phase_diagram", "predict", "predict_layers",
           "qmap", "sample_jacobian_density"]
