"""The same work as ``simulate`` written as plain loops, for speed ratios.

Forward: random weights, ``h = x @ W.T``, activation, statistics; backward with
the stored weights, ``delta`` and the weight gradient ``delta.T @ x``. ReLU,
He-normal weights, no biases, log-scales omitted (they are not needed at
depth 100).
"""
import numpy as np


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


def torch_loop(width, depth, batch, dtype, seed=0):
    import torch
    torch.manual_seed(seed)
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    std = (2.0 / width) ** 0.5
    with torch.no_grad():
        x = torch.randn(batch, width, dtype=tdt)
        ws, hs, xs, stats = [], [], [x], []
        for _ in range(depth):
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
