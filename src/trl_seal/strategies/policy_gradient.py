"""The policy-gradient alternative: TRL's own GRPO objective on group-normalised self-edit rewards."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PolicyGradient:
    """GRPO (Shao et al., 2024, arXiv 2402.03300) over self-edits: advantages are rewards minus the context's mean,
    divided by its standard deviation; the loss is exactly `GRPOTrainer`'s (clipping, KL and loss type from the
    config).

    Example:
    ```python
    >>> import torch
    >>> PolicyGradient().completion_weights(torch.tensor([[1.0, 0.0]]))
    tensor([[ 0.7070, -0.7070]])
    ```
    """

    restart_each_round: bool = False
    uses_grpo_loss = True  # the trainer applies GRPOTrainer's loss to the completion weights

    def completion_weights(self, rewards: torch.Tensor) -> torch.Tensor:
        mean = torch.nanmean(rewards, dim=1, keepdim=True)
        centred = rewards - mean
        count = (~torch.isnan(rewards)).sum(dim=1, keepdim=True).clamp(min=2)
        std = (torch.nansum(centred**2, dim=1, keepdim=True) / (count - 1)).sqrt()
        return torch.nan_to_num(centred / (std + 1e-4), nan=0.0)

    def loss(
        self, per_token_logps: torch.Tensor, completion_mask: torch.Tensor, weights: torch.Tensor,
        normaliser: torch.Tensor,
    ) -> torch.Tensor:
        """Not called: `uses_grpo_loss` makes `SEALTrainer` apply `GRPOTrainer`'s loss to these weights."""
        raise NotImplementedError("PolicyGradient uses GRPOTrainer's loss (uses_grpo_loss=True).")
