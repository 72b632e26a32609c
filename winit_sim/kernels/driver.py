"""The one driver skeleton every engine runs under.

A run is: per trial, the forward pass of the full net, then the backward pass
from each top (the depth-D net is the first D layers of the full one, so its
forward is shared). What a forward and a backward are is the engine's: each
engine module gives a ``State`` (its buffers, a namedtuple), ``forward_trial``
and ``backward_from``, and :func:`run` is compiled for the State it is given
(Numba picks the engine's functions by the State's type when it compiles, so a
run compiles only its own engine). A new engine is a module with those three
names, added to :data:`ENGINES`.
"""
from numba import njit, types
from numba.extending import overload

from . import conditional, matrix
from .elementwise import check_code
from .layer import results

ENGINES = (matrix, conditional)


def _engine_of(state):
    """The engine module whose State is the Numba type ``state``."""
    for module in ENGINES:
        if isinstance(state, types.BaseNamedTuple) and state.instance_class is module.State:
            return module
    raise TypeError(f"no engine has the state type {state}")


def forward_trial(state, net, act, draws, trial, given, stats):
    """The engine's forward pass of one trial (called from compiled code only)."""
    raise NotImplementedError("compiled code only")


def backward_from(state, net, act, draws, trial, given, top, grads):
    """The engine's backward pass from layer ``top`` (called from compiled code only)."""
    raise NotImplementedError("compiled code only")


@overload(forward_trial)
def _forward_trial(state, net, act, draws, trial, given, stats):
    forward = _engine_of(state).forward_trial

    def impl(state, net, act, draws, trial, given, stats):
        forward(state, net, act, draws, trial, given, stats)
    return impl


@overload(backward_from)
def _backward_from(state, net, act, draws, trial, given, top, grads):
    backward = _engine_of(state).backward_from

    def impl(state, net, act, draws, trial, given, top, grads):
        backward(state, net, act, draws, trial, given, top, grads)
    return impl


@njit(cache=True)
def run(state, net, act, draws, tops, given):
    """Simulate ``draws.trials`` networks: one forward pass, a backward pass from each top.

    Returns ``(forward, backward)``: forward statistics of shape (trials, depth, 7)
    for every layer of the full net, and backward statistics of shape
    (trials, len(tops), depth, 2) where ``backward[:, i]`` is the net of depth
    ``tops[i]`` (gradient injected at its top; layers above it NaN). ``tops``
    empty: no backward pass. ``given`` (a :data:`.layer.Given`, matrix engine
    only) or None: every input drawn from its keyed stream.
    """
    check_code(act.code)
    stats, grads = results(draws.trials, net.widths.size - 1, tops)
    for trial in range(draws.trials):
        forward_trial(state, net, act, draws, trial, given, stats[trial])
        # deepest top first: the matrix engine then holds the segment it needs first
        for ti in range(tops.size - 1, -1, -1):
            backward_from(state, net, act, draws, trial, given, tops[ti], grads[trial, ti])
    return stats, grads
