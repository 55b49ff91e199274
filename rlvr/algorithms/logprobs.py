"""Token log-probabilities, entropy and masked statistics."""

from __future__ import annotations

import torch


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels) under `logits`. logits [B, T, V], labels [B, T] (long) -> [B, T].

    Computed as gather - logsumexp, which never materialises the full log-softmax in the output dtype."""
    logits = logits.float()
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


# rows of logits per chunk in token_logprobs: 128 x a 49k vocabulary in fp32 is 25 MB, under glibc's largest mmap
# threshold (32 MiB), so each chunk's buffers come from and go back to the heap without page faults
CHUNK_ROWS = 128


class _TokenLogprobs(torch.autograd.Function):
    """log p(label) and the entropy of softmax(logits * inv_temperature), row by row in fp32 chunks; the backward
    recomputes each chunk's softmax from the saved logits (in their own dtype) and the saved log-normaliser, so
    no fp32 copy of the full [N, V] logits outlives a chunk in either direction."""

    @staticmethod
    def forward(ctx, logits, labels, inv_temperature: float, with_entropy: bool):
        n = logits.shape[0]
        logp = torch.empty(n, dtype=torch.float32, device=logits.device)
        log_z = torch.empty_like(logp)
        entropy = torch.empty_like(logp) if with_entropy else None
        for s in range(0, n, CHUNK_ROWS):
            x = logits[s:s + CHUNK_ROWS].to(torch.float32, copy=True)  # never the caller's tensor: changed in place
            if inv_temperature != 1.0:
                x.mul_(inv_temperature)
            z = torch.logsumexp(x, -1)
            log_z[s:s + CHUNK_ROWS] = z
            logp[s:s + CHUNK_ROWS] = x.gather(-1, labels[s:s + CHUNK_ROWS, None]).squeeze(-1) - z
            if with_entropy:
                p = torch.exp(x - z[:, None])
                entropy[s:s + CHUNK_ROWS] = z - (p * x).sum(-1)
        ctx.save_for_backward(logits, labels, log_z)
        ctx.inv_temperature = inv_temperature
        if with_entropy:
            ctx.mark_non_differentiable(entropy)
            return logp, entropy
        return logp, None

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        logits, labels, log_z = ctx.saved_tensors
        t = ctx.inv_temperature
        grad = torch.empty_like(logits)
        for s in range(0, logits.shape[0], CHUNK_ROWS):
            g = grad_logp[s:s + CHUNK_ROWS, None].float()
            x = logits[s:s + CHUNK_ROWS].to(torch.float32, copy=True)  # never the caller's tensor: changed in place
            if t != 1.0:
                x.mul_(t)
            # d logp / d x = onehot(label) - softmax(x); x = logits * t
            gx = torch.exp(x.sub_(log_z[s:s + CHUNK_ROWS, None])).mul_(-g)
            gx.scatter_add_(-1, labels[s:s + CHUNK_ROWS, None], g)
            if t != 1.0:
                gx.mul_(t)
            grad[s:s + CHUNK_ROWS] = gx
        return grad, None, None, None


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                   with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(labels) [N] in fp32 under softmax(logits / temperature), logits [N, V] in any float dtype (bf16
    under autocast), and the entropy of each row [N] (no gradient) when `with_entropy`. Equal to
    logprobs_from_logits / entropy_from_logits of the fp32 logits up to rounding, with the memory of one chunk
    instead of several fp32 copies of the logits; the gradient comes back in the logits' dtype."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"token_logprobs takes logits [N, V] and labels [N]; got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    return _TokenLogprobs.apply(logits, labels, 1.0 / temperature, with_entropy)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position. [B, T, V] -> [B, T]."""
    logits = logits.float()
    log_z = torch.logsumexp(logits, dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return log_z - (probs * logits).sum(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over positions where `mask` is 1 (all of them, or along `dim`). Empty masks give 0."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked positions (population variance); padding comes back as 0.
    With shift_mean=False the mean is added back (scale only)."""
    mask = mask.to(x.dtype)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask
