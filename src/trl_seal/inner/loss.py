"""The joint step's loss without the full logits: float32 logits over the vocabulary exist for one chunk of trained
tokens at a time.

A causal LM's output head turns every position into `vocabulary` logits; with a 49k-152k vocabulary that is the largest
tensor of a LoRA step (float32 logits, their log-softmax and gradients: ~16 bytes per vocabulary entry per token, more
than all decoder layers' activations together for a small model). Here only the trained positions' final hidden
states go through the head, a chunk of rows at a time, and each chunk's gradient with respect to its hidden states is
computed right away (softmax minus one-hot, through the head's weight), so the backward only hands back what the
forward saved: the same matmuls as autograd's path, nothing recomputed.
"""

from __future__ import annotations

import torch
from torch import nn

from .packing import PackedBatch

LOGIT_CHUNK_BYTES = 32 * 2**20  # float32 logits of one chunk: large enough for efficient matmuls, small beside a step


def chunk_rows(vocabulary: int) -> int:
    """Trained tokens per chunk: `LOGIT_CHUNK_BYTES` of float32 logits, at least 16 rows."""
    return max(16, LOGIT_CHUNK_BYTES // (4 * vocabulary))


class WeightedTokenLoss(torch.autograd.Function):
    """`scale[i] * cross_entropy(hidden[i] @ weight.T + bias, target[i])` for every row i, chunk by chunk.

    `weight` and `bias` (the frozen output head) get no gradient. Folding the per-token scale (1 / the slot's number of
    trained tokens) into the saved gradient keeps autograd's order of operations: the scaled float32 logit gradient is
    rounded to the hidden states' dtype before the matmul.

    Example:
    ```python
    >>> hidden, weight = torch.randn(5, 4, requires_grad=True), torch.randn(7, 4)
    >>> targets, scale = torch.tensor([1, 2, 3, 4, 5]), torch.full((5,), 0.2)
    >>> losses = WeightedTokenLoss.apply(hidden, weight, None, targets, scale, 2)
    >>> reference = 0.2 * torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="none")
    >>> torch.allclose(losses, reference)
    True
    ```
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, scale, rows):
        losses = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        for start in range(0, hidden.shape[0], rows):
            end = min(start + rows, hidden.shape[0])
            logits = nn.functional.linear(hidden[start:end], weight, bias).float()
            log_norm = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, targets[start:end, None]).squeeze(1)
            losses[start:end] = (log_norm - picked) * scale[start:end]
            if grad_hidden is not None:
                grad = logits.sub_(log_norm[:, None]).exp_()  # softmax, in place of the logits
                grad.scatter_add_(1, targets[start:end, None], grad.new_full((end - start, 1), -1.0))
                grad.mul_(scale[start:end, None])
                torch.mm(grad.to(hidden.dtype), weight, out=grad_hidden[start:end])
        ctx.save_for_backward(grad_hidden)
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_losses[:, None].to(grad_hidden.dtype), None, None, None, None, None


def per_slot_losses_from_hidden(hidden: torch.Tensor, head: nn.Linear, batch: PackedBatch) -> torch.Tensor:
    """Mean token cross-entropy of each slot's trained targets from the final hidden states `(rows, length, hidden)`
    and the output head: `packing.per_slot_losses` without materialising the logits of every position."""
    trained = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.target_index)
    scale = (1.0 / batch.target_counts.clamp(min=1)).index_select(0, batch.target_owner)
    token_losses = WeightedTokenLoss.apply(trained, head.weight, head.bias, batch.target_ids, scale,
                                           chunk_rows(head.weight.shape[0]))
    return torch.zeros(len(batch.slots), device=hidden.device).index_add(0, batch.target_owner, token_losses)


def plain_output_head(model: nn.Module) -> nn.Linear | None:
    """The model's output head if its logits are exactly `head(decoder(...).last_hidden_state)`, else None.

    Checked once on a short input against the model's own logits: a head with soft-capping or a logit scale, a
    quantized head or a head with trainable weights keeps the full-logits path."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(head) is not nn.Linear or head.weight.requires_grad or not hasattr(model, "get_decoder"):
        return None
    decoder = model.get_decoder()
    if decoder is model:
        return None
    device = head.weight.device
    ids = torch.arange(1, 9, device=device)[None] % head.weight.shape[0]
    with torch.no_grad():
        expected = model(input_ids=ids, use_cache=False).logits
        hidden = decoder(input_ids=ids, use_cache=False).last_hidden_state
        ours = head(hidden)
    return head if ours.shape == expected.shape and torch.equal(ours, expected) else None
