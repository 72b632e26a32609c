"""The public API over the engine: validate, convert, run, build a DataFrame.

:func:`simulate` and :func:`propagate` run networks; :func:`sample_weights`,
:func:`weight_variance`, :func:`phi` and :func:`dphi` expose the init schemes
and activations exactly as the kernels use them.
"""
import math

import numpy as np

from . import engine
from .activations import kernel_data, resolve_activation
from .checks import (check_dtype, check_nonneg_float, check_positive_int, check_seed,
                     resolve_widths)
from .inits import layer_sampler, resolve_init, variance
from .kernels import rng
from .kernels.elementwise import eval_dphi, eval_phi
from .kernels.layer import Given
from .kernels.weights import fill_weights
from .layers import check_method, resolve_arch, stream_blocks
from .theory.meanfield import predict
from .theory.moments import auto_gain

FORWARD_COLUMNS = engine.FORWARD_COLUMNS
BACKWARD_COLUMNS = engine.BACKWARD_COLUMNS


def simulate(width=None, depth=None, *, widths=None, activation="relu", init="he_normal",
             batch=64, trials=1, seed=0, bias_std=0.0, input_var=1.0, dtype="float64",
             backward=True, segment_layers=None, threads=None, theory=False, method="auto",
             arch="mlp"):
    """Propagate random inputs and gradients through freshly initialised deep networks.

    Layers ``l = 1..L``: ``h_l = x_{l-1} @ W_l.T + b_l``, ``x_l = phi(h_l)``;
    ``x_0 ~ N(0, input_var)`` of shape (batch, n_0); loss ``sum(x_L * g)`` with
    ``g ~ N(0, 1)``. Every random number comes from a stream keyed by
    (seed, trial, layer, ...), so results are bit-identical for any thread
    count and the depth-D net is the first D layers of any deeper one.

    Parameters
    ----------
    width, depth : int, optional
        Uniform width and number of layers. Give these or ``widths``.
    widths : sequence of int, optional
        Layer sizes ``[n_0, ..., n_L]``.
    activation : str or tuple
        Activation spec, e.g. ``"tanh"`` or ``"leaky_relu:slope=0.2"``.
    init : str or tuple
        Init spec, e.g. ``"he_normal:mode=fan_out"`` or ``("normal", {"std": 0.05})``.
    batch, trials : int
        Samples per network and independent networks (trial indices 0..trials-1).
    seed : int
        Seed in [0, 2**64).
    bias_std : float
        Biases are i.i.d. N(0, bias_std^2); 0 means no bias.
    input_var : float
        Variance of the input entries.
    dtype : {"float64", "float32"}
        Compute dtype; statistics always accumulate in float64.
    backward : bool
        Also run the backward pass (adds ``log10_grad_q`` and ``log10_wgrad_q``).
    segment_layers : int, optional
        Layers whose inputs and phi' are kept for the backward pass; deeper nets
        are checkpointed and recomputed per segment. Default: as many as fit in
        128 MiB. Results do not depend on it.
    threads : int, optional
        Numba threads for this call (restored afterwards). Results do not depend on it.
    theory : bool
        Add the mean-field prediction (:func:`winit_sim.theory.predict`) as
        ``theory_*`` columns and the deviations ``dev_log10_pre_q`` (and, with
        ``backward``, ``dev_log10_grad_q``) = simulated - predicted.
    method : {"auto", "matrix", "conditional"}
        The exact engine. ``"matrix"`` samples every weight matrix (any init).
        ``"conditional"`` (Gaussian inits only: normal, small, large,
        xavier_normal, he_normal, lecun_normal) never forms one: given a layer's
        input X, its units are independent N(0, sw^2 X X^T + sb^2), sampled in
        O(batch^2 width), and the backward pass uses the weights conditioned on
        the forward (see :mod:`winit_sim.kernels.conditional`). Both give the same
        joint distribution of every column, from different random numbers;
        each is bit-identical across thread counts. ``"auto"`` (default) picks
        ``"conditional"`` for Gaussian inits when 8 x batch <= the narrowest
        layer (the measured crossover), else ``"matrix"``. ``segment_layers``
        applies to ``"matrix"`` only: the conditional engine keeps
        O(batch x width + depth x batch^2) memory at any depth. Residual archs
        run on both: the conditional engine draws each branch matrix given its
        input (a zero matrix, as fixup's last, is exact on either), and both
        checkpoint the stream per ``segment_layers`` blocks.
    arch : str or tuple
        ``"mlp"`` (default) or a residual architecture: ``"residual:branch=2,
        norm=layernorm,position=pre,alpha=inv_sqrt_depth"`` or a preset
        (``fixup``, ``skipinit``, ``deepnorm``, ``gpt2``); see
        :data:`winit_sim.layers.ARCHS` for every key. ``depth`` is then the
        number of blocks and the width the stream's (``widths`` uniform).
        Residual nets run on the matrix engine.

    Returns
    -------
    pandas.DataFrame
        One row per (trial, layer): ``trial``, ``layer`` (1..L), ``fan_in``,
        ``fan_out``, ``pre_mean``, ``pre_var`` (mean and centered variance of
        h_l over batch and units), ``log10_pre_q`` (log10 mean(h_l^2)),
        ``log10_post_q`` (log10 mean(x_l^2)), ``frac_zero`` (x_l entries exactly
        0), ``frac_saturated`` (entries with |phi'(h_l)| < 1% of sup|phi'|),
        ``unit_var_ratio`` (mean over samples of the variance across units of
        h_l over mean(h_l^2): 0 when all units are identical, or when h_l is
        all zero), and with ``backward``: ``log10_grad_q`` (log10
        mean(delta_l^2), delta_l = dloss/dh_l) and ``log10_wgrad_q`` (log10
        mean((dloss/dW_l)^2), summed over the batch).

        A residual arch gives one row per (trial, block): the columns above
        describe the branch's pre-activation a (``N(x)`` for branch=1, ``W N(x)
        + b`` for branch=2) and phi(a), ``log10_wgrad_q`` the branch's first
        matrix; then ``log10_stream_q`` (log10 mean(x_l^2)), ``log10_branch_q``
        (log10 mean((alpha F)^2)), and with ``backward``
        ``log10_wgrad2_q`` (the second matrix, branch=2) and
        ``log10_stream_grad_q`` (log10 mean((dloss/dx_l)^2)).

    Notes
    -----
    The log10 columns are computed from log-scales and stay finite at any
    depth; exact zero gives -inf. ``pre_mean`` and ``pre_var`` are in linear
    units and become +-inf only when the true value is beyond float64
    (|x| > 1.8e308). For tanh/sigmoid whose pre-activations exceed exp(200),
    phi' is its limit 0 and gradients below that layer are exactly 0.
    """
    widths = resolve_widths(width, depth, widths)
    rows = check_positive_int(batch, "batch")
    trials = check_positive_int(trials, "trials")
    seed = check_seed(seed)
    bias_std = check_nonneg_float(bias_std, "bias_std")
    input_var = check_nonneg_float(input_var, "input_var")
    dt = check_dtype(dtype)
    method = check_method(method)
    resolve_activation(activation)
    layer_sampler(init, 1, 1, auto_gain(init, activation))  # validate before any work
    depth = widths.size - 1
    blocks = stream_blocks(arch, widths)
    with engine.threads(threads):
        fwd, bwd = engine.simulate_arrays(
            widths, activation, init, rows=rows, trials=trials, seed=seed, bias_std=bias_std,
            input_std=math.sqrt(input_var), dtype=dt, tops=[depth] if backward else [],
            segment=segment_layers, method=method, blocks=blocks)
    if blocks is not None:
        df = engine.block_frame(fwd, bwd if backward else None, blocks, int(widths[0]))
    else:
        df = engine.frame(fwd, bwd if backward else None, widths)
    if theory:
        df = with_theory(df, widths, activation, init, bias_std, input_var, rows, arch)
    return df


def with_theory(df, widths, activation, init, bias_std, input_var, batch, arch="mlp"):
    """Join the mean-field prediction to simulated rows, with ``dev_*`` deviations
    (simulated - predicted) of the pre-activation's and the gradient's q, and of the
    stream's for a residual arch."""
    pred = predict(widths=list(widths), activation=activation, init=init, bias_std=bias_std,
                   input_var=input_var, batch=batch, arch=arch)
    df = df.merge(pred, on="layer", how="left")
    with np.errstate(invalid="ignore"):
        for col in ("log10_pre_q", "log10_grad_q", "log10_stream_q", "log10_stream_grad_q"):
            if col in df.columns:
                df["dev_" + col] = df[col] - df["theory_" + col]
    return df


def propagate(weights, x, activation, grad_output=None, biases=None, *, arch="mlp",
              segment_layers=None):
    """Statistics of a forward and backward pass through given weights.

    Parameters
    ----------
    weights : sequence of 2-D arrays
        In forward order, each of shape ``(fan_out, fan_in)``. For the MLP they
        chain: ``W_{l+1}.shape[1] == W_l.shape[0]``. For a residual ``arch``:
        one (n, n) matrix per block (branch=1), or W_1, V_1, W_2, V_2, ... of
        shapes (hidden, n) and (n, hidden) (branch=2).
    x : array, shape (batch, n_0)
        Input. Its dtype (float32 or float64) is the compute dtype.
    activation : str or tuple
        Activation spec.
    grad_output : array, shape (batch, n_L), optional
        dloss/dx_L; without it only forward columns are returned.
    biases : sequence of 1-D arrays, optional
        One per weight matrix, of shape ``(fan_out,)``.
    arch : str or tuple
        As in :func:`simulate`. Its ``in_scale`` / ``out_scale`` do not apply
        (the weights are given); its alpha, beta, norm and eps do.
    segment_layers : int, optional
        As in :func:`simulate`.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`simulate`, trial 0.
    """
    mats = weight_matrices(weights)
    resolve_activation(activation)
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must have shape (batch, n_0), got {x.shape}")
    dt = check_dtype(x.dtype if x.dtype.kind == "f" else "float64")
    blocks = None if resolve_arch(arch) is None else given_blocks(arch, mats, x.shape[1])
    if blocks is None:
        widths = _chained_widths(mats, x.shape[1])
    n_out = x.shape[1] if blocks is not None else mats[-1].shape[0]
    w_flat, w_off, b_flat, b_off = flatten_given(mats, biases, dt)
    g = None
    if grad_output is not None:
        g = np.ascontiguousarray(grad_output, dtype=dt)
        if g.shape != (x.shape[0], n_out):
            raise ValueError(f"grad_output must have shape {(x.shape[0], int(n_out))}, "
                             f"got {g.shape}")
    for name, arr in (("x", x), ("grad_output", g)):
        if arr is not None and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains inf or NaN")
    rows = x.shape[0]
    given = Given(w_flat, w_off, b_flat, b_off, np.ascontiguousarray(x, dtype=dt),
                  g if g is not None else np.zeros((rows, int(n_out)), dt))
    depth = len(mats) if blocks is None else len(mats) // blocks.branch
    if blocks is None:
        net = engine.describe(widths, activation, None)
    else:
        net = engine.describe_blocks(blocks, x.shape[1], depth, activation, None)
    with engine.threads(None):
        fwd, bwd = engine.execute(engine.plan(net, None, rows, dt, segment=segment_layers,
                                              given=given),
                                  activation, 0, 1, [depth] if g is not None else [], given)
    bwd = bwd if g is not None else None
    if blocks is None:
        return engine.frame(fwd, bwd, widths)
    return engine.block_frame(fwd, bwd, blocks, x.shape[1])


def weight_matrices(weights):
    """Given weights as a list of 2-D arrays; TypeError / ValueError naming the misfit."""
    if isinstance(weights, np.ndarray) or not hasattr(weights, "__len__") or len(weights) == 0:
        raise TypeError("weights must be a non-empty list of (fan_out, fan_in) arrays")
    mats = []
    for i, w in enumerate(weights):
        w = np.asarray(w)
        if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
            raise ValueError(f"weights[{i}] must be a 2-D (fan_out, fan_in) array, got shape {w.shape}")
        mats.append(w)
    return mats


def flatten_given(mats, biases, dt):
    """(w_flat, w_off, b_flat, b_off) of given weights and biases (zeros when None), as the
    kernels' :data:`Given` takes them; ValueError for a misfit bias or inf / NaN."""
    fan_out = [w.shape[0] for w in mats]
    w_flat = np.concatenate([w.astype(dt).ravel() for w in mats])
    w_off = np.concatenate([[0], np.cumsum([w.size for w in mats])]).astype(np.int64)
    b_off = np.concatenate([[0], np.cumsum(fan_out)]).astype(np.int64)
    b_flat = None
    if biases is not None:
        if isinstance(biases, np.ndarray) or not hasattr(biases, "__len__"):
            raise TypeError("biases must be a list of 1-D arrays, one per weight matrix")
        if len(biases) != len(mats):
            raise ValueError(f"got {len(biases)} biases for {len(mats)} weight matrices")
        for i, b in enumerate(biases):
            if np.shape(b) != (fan_out[i],):
                raise ValueError(f"biases[{i}] must have shape ({fan_out[i]},), "
                                 f"got {np.shape(b)}")
        b_flat = np.concatenate([np.asarray(b, np.float64) for b in biases])
    for name, arr in (("weights", w_flat), ("biases", b_flat)):
        if arr is not None and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains inf or NaN")
    if b_flat is None:   # zero biases run exactly as none (their RMS is 0)
        b_flat = np.zeros(int(b_off[-1]))
    return w_flat, w_off, b_flat, b_off


def given_weights(weights, x, biases, dt):
    """Given MLP weights chained from input x (batch, n_0): (w_flat, w_off, b_flat,
    b_off, widths), validated."""
    mats = weight_matrices(weights)
    widths = _chained_widths(mats, x.shape[1])
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains inf or NaN")
    return flatten_given(mats, biases, dt) + (widths,)


def _chained_widths(mats, n_in):
    """[n_0, ..., n_L] of chained MLP weights; ValueError naming the first misfit."""
    widths = [mats[0].shape[1]] + [w.shape[0] for w in mats]
    if n_in != widths[0]:
        raise ValueError(f"x has {n_in} columns but weights[0] has fan_in {widths[0]}")
    for i in range(1, len(mats)):
        if mats[i].shape[1] != widths[i]:
            raise ValueError(f"weights[{i}] has fan_in {mats[i].shape[1]} but weights[{i - 1}] "
                             f"has fan_out {widths[i]}")
    return np.array(widths, dtype=np.int64)


def given_blocks(arch, mats, width):
    """The resolved residual arch of given weights; ValueError if their count or shapes
    do not fit it (x's columns are the stream width)."""
    branch = resolve_arch(arch, 1, width).branch
    if len(mats) % branch:
        raise ValueError(f"arch {arch!r} has {branch} matrices per block, in forward order "
                         f"(W_1, V_1, W_2, ...); got {len(mats)} weights")
    blocks = resolve_arch(arch, len(mats) // branch, width)
    shapes = engine.block_shapes(branch, width, blocks.hidden)
    for i, w in enumerate(mats):
        want = shapes[i % branch]
        if w.shape != want:
            raise ValueError(f"weights[{i}] must have shape {want} for arch {arch!r} (stream "
                             f"width {width} from x, hidden {blocks.hidden}); got {w.shape}")
    return blocks


def sample_weights(init, fan_in, fan_out, *, seed=0, trial=0, layer=1, dtype="float64",
                   activation=None, matrix=0, receptive_field=1):
    """The weight matrix that :func:`winit_sim.simulate` uses for one layer of one trial.

    Parameters
    ----------
    init : str or tuple
        Init spec, e.g. ``"he_normal:mode=fan_out"`` or ``("normal", {"std": 0.05})``.
    fan_in, fan_out : int
        Layer sizes.
    seed, trial : int
        The run's seed and the trial index (0-based).
    layer : int
        1-based layer index.
    dtype : {"float64", "float32"}
    activation : str or tuple, optional
        Needed only for ``gain=auto``.
    matrix : {0, 1}
        In a residual net (``layer`` is then the block): the matrix's index in
        its block, 0 for the first (W), 1 for the second (V, branch=2). An
        arch's ``in_scale`` / ``out_scale`` multiply these matrices.
    receptive_field : int
        For a convolution with ``fan_out`` output channels and a kernel of
        ``receptive_field`` elements (``fan_in`` = in_channels / groups x
        receptive_field): the matrix keeps its shape ``(fan_out, fan_in)``, the
        unfolded kernel, while the scheme's scale uses torch's fans, ``fan_in`` and
        ``fan_out x receptive_field``. 1 (default) is a dense layer.

    Returns
    -------
    numpy.ndarray
        Shape ``(fan_out, fan_in)``: the simulated layer's weights, bit for bit for
        every kind but orthogonal. The matrix engine applies orthogonal layers as
        their Householder reflectors without forming W; this W agrees with those
        products to rounding (about 1e-15 relative in float64).
    """
    fan_in = check_positive_int(fan_in, "fan_in")
    fan_out, seed, trial, layer, dt, stream = _layer_key_args(
        fan_out, seed, trial, layer, dtype, matrix, (rng.STREAM_WEIGHT, rng.STREAM_WEIGHT2))
    receptive_field = check_positive_int(receptive_field, "receptive_field")
    kind, scale = layer_sampler(init, fan_in, fan_out * receptive_field,
                                auto_gain(init, activation))
    out = np.empty((fan_out, fan_in), dt)
    with engine.threads(None):   # BLAS on one thread inside numba's (orthogonal)
        fill_weights(kind, scale, np.uint64(rng.stream_key(seed, trial, layer, stream)), out,
                     engine.orthogonal_layers(kind),
                     engine.uniform_layers(kind))
    return out


def _layer_key_args(fan_out, seed, trial, layer, dtype, matrix, streams):
    """Checked (fan_out, seed, trial, layer, dtype, stream) of one layer's draws; the
    stream is ``streams[matrix]``."""
    if matrix not in (0, 1) or isinstance(matrix, bool):
        raise ValueError(f"matrix must be 0 (a block's first) or 1 (its second), got {matrix!r}")
    return (check_positive_int(fan_out, "fan_out"), check_seed(seed),
            check_positive_int(trial, "trial", minimum=0), check_positive_int(layer, "layer"),
            check_dtype(dtype), streams[matrix])


def sample_biases(bias_std, fan_out, *, seed=0, trial=0, layer=1, dtype="float64", matrix=0):
    """The bias vector that :func:`winit_sim.simulate` uses for one layer of one trial.

    Parameters
    ----------
    bias_std : float
        Their std: i.i.d. N(0, bias_std^2), as ``simulate(bias_std=...)``.
    fan_out : int
        The layer's output size.
    seed, trial, layer, dtype, matrix
        As in :func:`sample_weights`.

    Returns
    -------
    numpy.ndarray
        Shape ``(fan_out,)``, bit for bit the simulated layer's biases.
    """
    bias_std = check_nonneg_float(bias_std, "bias_std")
    fan_out, seed, trial, layer, dt, stream = _layer_key_args(
        fan_out, seed, trial, layer, dtype, matrix, (rng.STREAM_BIAS, rng.STREAM_BIAS2))
    out = np.empty(fan_out, np.float64)
    rng.fill_normal(np.uint64(rng.stream_key(seed, trial, layer, stream)),
                    out.reshape((1, fan_out)), bias_std)
    return out.astype(dt)


def weight_variance(init, fan_in, fan_out, activation=None):
    """Theoretical variance of one weight entry under a scheme.

    Parameters
    ----------
    init : str or tuple
        Init spec, e.g. ``"he_normal"``, ``"xavier_uniform:gain=2"`` or
        ``("normal", {"std": 0.05})``.
    fan_in, fan_out : int
        Layer sizes (weights have shape ``(fan_out, fan_in)``).
    activation : str or tuple, optional
        Needed only for ``gain=auto`` (the gain computed for this activation).

    Returns
    -------
    float
        ``Var(W_ij)``: std^2 for normal kinds, bound^2/3 for uniform kinds,
        0 for constant and zeros, gain^2/max(fan_in, fan_out) for orthogonal
        (the mean square of a semi-orthogonal matrix's entries).
    """
    fan_in = check_positive_int(fan_in, "fan_in")
    fan_out = check_positive_int(fan_out, "fan_out")
    resolve_init(init)
    return variance(init, fan_in, fan_out, auto_gain(init, activation))


def _elementwise(evaluate, activation, h):
    data = kernel_data(activation)
    h = np.asarray(h, dtype=np.float64)
    flat = np.ascontiguousarray(h).ravel()
    out = np.empty_like(flat)
    evaluate(data.code, data.param, flat, out)
    return out.reshape(h.shape)


def phi(activation, h):
    """Evaluate an activation elementwise (array in, float64 array out), as the kernels do."""
    return _elementwise(eval_phi, activation, h)


def dphi(activation, h):
    """Evaluate an activation's exact derivative elementwise, as the kernels do."""
    return _elementwise(eval_dphi, activation, h)
