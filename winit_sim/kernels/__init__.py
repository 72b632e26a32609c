"""Numba kernels: arithmetic only. Nothing here validates, allocates results for
users or builds DataFrames, and nothing here imports from above ``kernels/``
(only the registries' codes, which are data).

* :mod:`.rng`          keyed counter-based random numbers (SplitMix64 + ziggurat)
* :mod:`.elementwise`  every activation's phi, phi' and limits, one branch per entry
* :mod:`.householder`  orthogonal weights as Householder reflectors, applied without W
* :mod:`.weights`      sampling kinds: weight matrices, and products sampled on the fly
* :mod:`.layer`        the network description and the per-layer pieces both engines share
* :mod:`.matrix`       the matrix engine (weight matrices, checkpointed backward)
* :mod:`.blocks`       block arithmetic, B x B factors, products on fixed blocks of rows
* :mod:`.conditional`  the conditional engine (Gaussian layers without weight matrices)
* :mod:`.orthogonal`   Haar orthogonal layers on the conditional engine
* :mod:`.spectrum`     singular values of the input-output Jacobian (log-space product SVD)
* :mod:`.residual`     residual blocks around a stream (either engine's products)
* :mod:`.residual_conditional`  a block's matrices drawn given their inputs
* :mod:`.driver`       the one driver skeleton every engine runs under
* :mod:`.sgd`          one SGD step with explicit weights (the training probe)
"""

import numba

# reassociation lets LLVM vectorise the per-row sums; the order is still fixed by
# the code (never by the thread count), so results stay deterministic
FAST = {"reassoc", "contract", "nsz"}


def njit(*args, **options):
    """Every kernel's ``numba.njit``, with NumPy's error model.

    Numba's default model ("python") tests the divisor of every division and carries a
    ZeroDivisionError raise for it: code that is part of every first compile (about
    1 s of the CLI's). No kernel divides by zero by design; a float division by zero
    gives inf or NaN, as in NumPy. The corpus check keeps the results' bits.
    """
    return numba.njit(*args, error_model="numpy", **options)


def internal(**options):
    """``njit(cache=True, **options)`` for a kernel that only compiled code calls.

    Numba gives every compiled function an entry point for Python, which unboxes each
    argument (a ``State`` is some twenty arrays), and one for C. A kernel that only
    other kernels call uses neither, and building them is part of every first
    compile. Calling such a kernel from Python is an error.
    """
    return njit(cache=True, no_cpython_wrapper=True, no_cfunc_wrapper=True, **options)


# Copies between arrays are loops, never slice assignments (``a[:, :] = b``): Numba
# compiles a slice assignment's shape check with a formatted message, string code that
# took 2.5 s to 3.9 s of a cold residual net's or spectrum's first compile.

@njit(inline="always")
def copy_into(dst, src):
    """dst[:] = src for 1-D arrays of one size (dtype converted as by assignment)."""
    for j in range(src.size):
        dst[j] = src[j]


@njit(inline="always")
def copy_rows(dst, src):
    """dst[:, :] = src for 2-D arrays of one shape (dtype converted as by assignment)."""
    for r in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[r, j] = src[r, j]
