"""The PyTorch bridge: winit_sim's schemes, statistics and theory on a user's own model.

* :func:`init_`          initialise a model's Linear and Conv layers with winit_sim's keyed schemes
* :func:`gains_table`    computed gains beside ``torch.nn.init.calculate_gain``
* :func:`diagnose`       per-module signal and gradient statistics at init, with verdicts
* :func:`scaling_check`  mup's coordinate check, over width and depth
* :func:`compare`        a model winit_sim can express, beside ``propagate`` and the theory
* :func:`residual_net`   winit_sim's residual architectures as torch modules

Needs the ``torch`` extra: ``pip install -e ".[torch]"``.
"""
try:
    import torch  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised without torch only
    raise ImportError('winit_sim.torch needs PyTorch, the "torch" extra: '
                      'pip install -e ".[torch]" (or pip install torch)') from err

from .audit import audit  # noqa: E402
from .compare import compare  # noqa: E402
from .diagnose import cotangent, diagnose  # noqa: E402
from .init import gains_table, init_  # noqa: E402
from .modules import torch_activations, weighted_layers  # noqa: E402
from .residual import ResidualNet, residual_net  # noqa: E402
from .scaling import ScalingCheck, scaling_check  # noqa: E402

__all__ = ["init_", "gains_table", "diagnose", "cotangent", "scaling_check", "ScalingCheck",
           "compare", "weighted_layers", "torch_activations", "ResidualNet", "residual_net",
           "audit"]
