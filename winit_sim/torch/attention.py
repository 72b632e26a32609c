"""Statistics of one attention computation: attention entropy and token similarity.

Definitions (the same for every attention a forward pass runs, whatever its class):

* **Attention weights** A (..., T_q, T_k): each query's softmax over the keys, rows
  summing to 1 (masked keys have weight exactly 0).
* **Attention entropy**: H = -sum_k A_qk ln A_qk (nats, 0 ln 0 = 0) of each query's row,
  averaged over the batch, the heads and the queries. Its **ratio** divides it by the
  mean over the same queries of ln(number of keys with nonzero weight), the largest
  entropy each query could have (ln T_k without a mask; ln(q + 1) for causal query q):
  1 is uniform attention, 0 is each query on one key (entropy collapse).
* **Token cosine similarity** of token representations x (batch, T, features; every
  head's features together): the mean over sequences of the mean over ordered pairs of
  distinct tokens i != j of cos(x_i, x_j). 1 means every token points the same way
  (rank collapse); independent random tokens give about 0. Computed as
  (||sum_i u_i||^2 - T) / (T (T - 1)) with u_i = x_i / ||x_i|| (a token of norm 0
  counts as u_i = 0), in float64.

Entering the attention are the values V (the tokens that are mixed) and leaving it is
A V (before any output projection), so the two similarities show what the mixing
itself does to the tokens.
"""
import math

import torch


def softmax_weights(query, key, attn_mask=None, is_causal=False, scale=None):
    """A = softmax(scale q k^T + mask) as ``F.scaled_dot_product_attention`` defines it:
    ``scale`` defaults to 1 / sqrt(d); a boolean mask keeps the True entries, a float
    mask is added; ``is_causal`` keeps key <= query (top-left aligned). Keys with fewer
    heads than the queries (grouped-query attention) are repeated. In float64."""
    q = query.detach().to(torch.float64)
    k = key.detach().to(torch.float64)
    if q.ndim >= 3 and k.ndim == q.ndim and k.shape[-3] != q.shape[-3] and \
            q.shape[-3] % k.shape[-3] == 0:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = factor * (q @ k.transpose(-1, -2))
    t_q, t_k = scores.shape[-2], scores.shape[-1]
    if is_causal:
        keep = torch.ones(t_q, t_k, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~keep, -math.inf)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, -math.inf)
        else:
            scores = scores + attn_mask.detach().to(torch.float64)
    return torch.softmax(scores, dim=-1)


def entropy(weights):
    """(mean attention entropy in nats, its ratio to the mean ln of the keys each query
    can see): see the module docstring. NaN ratio where no query sees two keys."""
    a = weights.detach().to(torch.float64)
    a = a.reshape(-1, a.shape[-1])
    positive = a > 0
    terms = torch.where(positive, a * torch.log(torch.where(positive, a, 1.0)), 0.0)
    h = float(-terms.sum(dim=1).mean())
    most = float(torch.log(positive.sum(dim=1).to(torch.float64)).mean())
    return h, (h / most if most > 0 else math.nan)


def tokens(x, token_dim=-2):
    """x as (sequences, T, features): the token axis ``token_dim``, the first axis the
    batch (when x has three or more), every other axis (heads, head features) features."""
    x = x.detach().to(torch.float64).movedim(token_dim, -1)
    if x.ndim == 1:
        return x.reshape(1, -1, 1)
    if x.ndim == 2:   # (features, T): one sequence
        return x.T.unsqueeze(0)
    return x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2)


def token_cosine(x, token_dim=-2):
    """Mean pairwise cosine similarity of distinct tokens (module docstring); NaN with
    fewer than two tokens."""
    t = tokens(x, token_dim)
    n = t.shape[1]
    if n < 2:
        return math.nan
    norms = t.norm(dim=-1, keepdim=True)
    u = torch.where(norms > 0, t / torch.where(norms > 0, norms, 1.0), 0.0)
    total = u.sum(dim=1).square().sum(dim=-1)
    return float(((total - (norms > 0).squeeze(-1).sum(dim=1)) / (n * (n - 1))).mean())


def mean_square(t):
    """mean(t^2) in float64."""
    return float(t.detach().to(torch.float64).square().mean())


def attention_stats(query, key, value, weights, output):
    """The statistics of one attention: mean squares of q, k, v (``q_q``, ``k_q``,
    ``v_q``; NaN where not known), ``attn_entropy`` and ``attn_entropy_ratio``
    (:func:`entropy`), ``token_cos_in`` (of the values) and ``token_cos_out`` (of A V).
    Tensors are (..., T, features per head), the heads before T."""
    h, ratio = entropy(weights)
    return {"q_q": mean_square(query) if query is not None else math.nan,
            "k_q": mean_square(key) if key is not None else math.nan,
            "v_q": mean_square(value),
            "attn_entropy": h, "attn_entropy_ratio": ratio,
            "token_cos_in": token_cosine(value), "token_cos_out": token_cosine(output)}
