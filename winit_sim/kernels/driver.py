"""The one driver skeleton every engine runs under.

A run is: per trial, the forward pass of the full net, then the backward pass
from each top (the depth-D net is the first D layers of the full one, so its
forward is shared). What a forward and a backward are is the engine's: each
engine module gives a ``State`` (its buffers, a namedtuple), ``new_state``,
``forward_trial`` and ``backward_from``. :func:`run` takes one State per
engine, all None but the one that runs; Numba resolves each ``state is None``
when it compiles, so a run compiles only its own engine. A new engine is a
module with those names and one more argument and branch here.

Compile time: Numba re-optimises a function's whole call tree when it finalises
it, so every level of calls between ``run`` and the per-layer kernels costs a
pass over all of them. The engines' trial loops, which only route, are inlined
into ``run`` (``inline="always"``), and the choice of engine costs no call at all
(a dispatch through ``numba.extending.overload`` measured 15 s more on a cold
first run).
"""
import numpy as np

from . import conditional, matrix, njit, residual
from .elementwise import check_code


@njit(cache=True)
def run(matrix_state, conditional_state, net, act, draws, tops, given, stats, grads):
    """Simulate ``draws.trials`` networks: one forward pass, a backward pass from each top.

    Exactly one of ``matrix_state`` / ``conditional_state`` is not None: the
    engine that runs. Returns ``(forward, backward)``: forward statistics of
    shape (trials, depth, 7) for every layer of the full net, and backward
    statistics of shape (trials, len(tops), depth, 2) where ``backward[:, i]`` is
    the net of depth ``tops[i]`` (gradient injected at its top; layers above it
    NaN). ``tops`` empty: no backward pass. ``given`` (a :data:`.layer.Given`,
    matrix engine only) or None: every input drawn from its keyed stream. ``stats``,
    ``grads``: those arrays NaN-filled (:func:`.layer.results`), filled in place.
    """
    check_code(act.code)
    for trial in range(draws.trials):
        if matrix_state is not None:
            matrix.forward_trial(matrix_state, net, act, draws, trial, given, stats[trial])
        if conditional_state is not None:
            conditional.forward_trial(conditional_state, net, act, draws, trial, given,
                                      stats[trial])
        # deepest top first: the matrix engine then holds the segment it needs first
        for ti in range(tops.size - 1, -1, -1):
            if matrix_state is not None:
                matrix.backward_from(matrix_state, net, act, draws, trial, given, tops[ti],
                                     grads[trial, ti])
            if conditional_state is not None:
                conditional.backward_from(conditional_state, net, act, draws, trial, given,
                                          tops[ti], grads[trial, ti])
    return stats, grads


@njit(cache=True)
def run_blocks(residual_state, cond_state, net, act, draws, tops, given):
    """:func:`run` for residual networks (:mod:`.residual`): per block the statistics
    of ``residual.N_BLOCK_FORWARD`` forward and ``N_BLOCK_BACKWARD`` backward columns.
    ``cond_state`` (:mod:`.residual_conditional`) or None: the conditional engine or
    the matrix engine."""
    check_code(act.code)
    depth = net.sampler.shape[0]
    stats = np.full((draws.trials, depth, residual.N_BLOCK_FORWARD), np.nan)
    grads = np.full((draws.trials, tops.size, depth, residual.N_BLOCK_BACKWARD), np.nan)
    for trial in range(draws.trials):
        residual.forward_trial(residual_state, cond_state, net, act, draws, trial, given,
                               stats[trial])
        for ti in range(tops.size - 1, -1, -1):
            residual.backward_from(residual_state, cond_state, net, act, draws, trial, given,
                                   tops[ti], grads[trial, ti])
    return stats, grads
