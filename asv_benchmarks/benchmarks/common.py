"""What the asv suite and the scripts next to it share: baseline loops, timing, memory.

Import it as ``from .common import ...`` in the asv suite (this package) and as
``from benchmarks.common import ...`` from the scripts in asv_benchmarks/ (run as
``python asv_benchmarks/X.py``, which makes asv_benchmarks/ the first import
directory) and from child processes started as ``python -c`` with
``cwd=SUITE_DIR`` (``-c`` makes the working directory the first one). Nothing here imports winit_sim or, until it is called,
torch.

Baselines: the same work as ``simulate`` written as plain loops, for speed
ratios. Forward: random weights, ``h = x @ W.T``, activation, statistics;
backward with the stored weights, ``delta`` and the weight gradient
``delta.T @ x``. ReLU, He-normal weights, no biases, log-scales omitted (they
are not needed at depth 100).
"""
import os
import statistics
import subprocess
import sys
import time

import numpy as np

SUITE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""asv_benchmarks/: the working directory under which ``benchmarks.common`` imports."""

TORCH_THREADS = 2


def numpy_loop(width, depth, batch, dtype, seed=0):
    rng = np.random.default_rng(seed)
    std = np.sqrt(2.0 / width)
    x = rng.standard_normal((batch, width), dtype=dtype)
    ws, hs, xs, stats = [], [], [x], []
    for _ in range(depth):
        w = rng.standard_normal((width, width), dtype=dtype) * dtype(std)
        h = xs[-1] @ w.T
        y = np.maximum(h, 0)
        stats.append((h.mean(), h.var(), np.mean(h * h), np.mean(y * y), np.mean(y == 0)))
        ws.append(w)
        hs.append(h)
        xs.append(y)
    g = rng.standard_normal((batch, width), dtype=dtype)
    for l in range(depth - 1, -1, -1):
        delta = g * (hs[l] > 0)
        gw = delta.T @ xs[l]
        stats.append((np.mean(delta * delta), np.mean(gw * gw)))
        g = delta @ ws[l]
    return stats


def load_torch(threads=TORCH_THREADS):
    """``import torch`` limited to ``threads`` CPU threads; ImportError without torch."""
    import torch
    torch.set_num_threads(threads)
    return torch


def torch_loop(width, depth, batch, dtype, seed=0, init="he_normal"):
    """``init``: "he_normal", or "orthogonal" (``torch.nn.init.orthogonal_`` per layer,
    gain sqrt(2))."""
    import torch
    torch.manual_seed(seed)
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    std = (2.0 / width) ** 0.5
    with torch.no_grad():
        x = torch.randn(batch, width, dtype=tdt)
        ws, hs, xs, stats = [], [], [x], []
        for _ in range(depth):
            if init == "orthogonal":
                w = torch.nn.init.orthogonal_(torch.empty(width, width, dtype=tdt),
                                              gain=2.0 ** 0.5)
            else:
                w = torch.randn(width, width, dtype=tdt) * std
            h = xs[-1] @ w.T
            y = torch.relu(h)
            stats.append(torch.stack([h.mean(), h.var(unbiased=False), (h * h).mean(),
                                      (y * y).mean(), (y == 0).to(tdt).mean()]))
            ws.append(w)
            hs.append(h)
            xs.append(y)
        g = torch.randn(batch, width, dtype=tdt)
        for l in range(depth - 1, -1, -1):
            delta = g * (hs[l] > 0)
            gw = delta.T @ xs[l]
            stats.append(torch.stack([(delta * delta).mean(), (gw * gw).mean()]))
            g = delta @ ws[l]
        return [s.tolist() for s in stats]


def sample_times(fn, repeat, warmup=1):
    """Seconds of ``repeat`` calls of ``fn``, after ``warmup`` untimed calls (JIT, caches)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def median_time(fn, repeat, warmup=1):
    """Median seconds of ``repeat`` calls of ``fn``, after ``warmup`` untimed calls."""
    return statistics.median(sample_times(fn, repeat, warmup))


def peak_rss_mib():
    """Peak resident memory (MiB) of this process so far, from VmHWM.

    exec resets VmHWM; ru_maxrss is inherited from the forking parent, so only
    VmHWM measures a fresh child alone.
    """
    with open("/proc/self/status") as fh:
        line = next(l for l in fh if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def peak_rss_of(code):
    """Peak resident memory (MiB) of a fresh process running ``code``."""
    out = subprocess.run([sys.executable, "-c", code + "\nfrom benchmarks.common import "
                          "peak_rss_mib\nprint(peak_rss_mib())"],
                         capture_output=True, text=True, check=True, cwd=SUITE_DIR)
    return float(out.stdout.split()[-1])


def torch_residual_loop(width, depth, batch, dtype, branch=2, norm=True, seed=0):
    """A pre-LN residual net as PyTorch users write it (autograd for the backward):
    ``x += V relu(W LN(x))`` (branch 2) or ``x += W relu(LN(x))`` (branch 1), He-normal
    weights stored, with the statistics simulate reports per block."""
    import torch
    from torch.nn import functional as F
    torch.manual_seed(seed)
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    std = (2.0 / width) ** 0.5
    x = torch.randn(batch, width, dtype=tdt, requires_grad=True)   # so every block has grads
    mats = [torch.randn(width, width, dtype=tdt).mul_(std).requires_grad_()
            for _ in range(depth * branch)]
    acts, streams = [], []
    for l in range(depth):
        u = F.layer_norm(x, (width,)) if norm else x
        a = u @ mats[l * branch].T if branch == 2 else u.clone()
        a.retain_grad()
        f = torch.relu(a) @ mats[l * branch + branch - 1].T
        x = x + f
        x.retain_grad()
        acts.append(a)
        streams.append(x)
    (x * torch.randn(batch, width, dtype=tdt)).sum().backward()
    with torch.no_grad():
        out = [torch.stack([(a * a).mean(), (s * s).mean(), (a.grad * a.grad).mean(),
                            (s.grad * s.grad).mean()]) for a, s in zip(acts, streams)]
        out += [(m.grad * m.grad).mean() for m in mats]
    return [o.tolist() for o in out]


def torch_jacobian_svdvals(width, depth, activation="tanh", seed=0, init="orthogonal"):
    """The singular values of a deep MLP's input-output Jacobian as PyTorch users get them:
    stored weights (``init``: ``"orthogonal"`` by ``orthogonal_``, ``"he_normal"`` by
    ``kaiming_normal_``), ``torch.func.jacrev`` and ``torch.linalg.svdvals`` (float64).
    Returns them, descending (small ones are lost below ~1e-16 of the largest)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    ws = []
    for _ in range(depth):
        w = torch.empty(width, width, dtype=torch.float64)
        if init == "orthogonal":
            torch.nn.init.orthogonal_(w, generator=gen)
        elif init == "he_normal":
            torch.nn.init.kaiming_normal_(w, nonlinearity="relu", generator=gen)
        else:
            raise ValueError(f"init {init!r}: orthogonal or he_normal")
        ws.append(w)
    act = {"tanh": torch.tanh, "relu": torch.relu, "linear": lambda v: v}[activation]

    def net(x):
        for w in ws:
            x = act(w @ x)
        return x

    x0 = torch.randn(width, dtype=torch.float64, generator=gen)
    jac = torch.func.jacrev(net)(x0)
    return torch.linalg.svdvals(jac)
