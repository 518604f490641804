"""ReST-EM (Singh et al., 2023, arXiv 2312.06585) as SEAL's outer loop: keep the self-edits that earned reward,
then fine-tune the policy with plain NLL on them (SEAL keeps the best self-edit per context, reward above 0)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RestEM:
    """Filtered behaviour cloning on rewarded self-edits.

    Args:
        threshold (`float`, defaults to `0.0`): a self-edit is kept only if its reward is strictly above this.
        keep_all_above_threshold (`bool`, defaults to `False`): keep every self-edit above the threshold instead of
            the best one per context (ties go to the first sampled).
        restart_each_round (`bool`, defaults to `False`): original ReST-EM fine-tunes the initial model each round;
            SEAL continues from the last round's policy.

    Example:
    ```python
    >>> import torch
    >>> RestEM().completion_weights(torch.tensor([[0.1, 0.3, -0.2], [-0.1, 0.0, float("nan")]]))
    tensor([[0., 1., 0.],
            [0., 0., 0.]])
    >>> RestEM().loss(torch.tensor([[-1.0, -3.0]]), torch.tensor([[1.0, 0.0]]), torch.ones(1), torch.tensor(1.0))
    tensor(1.)
    ```
    """

    threshold: float = 0.0
    keep_all_above_threshold: bool = False
    restart_each_round: bool = False
    uses_grpo_loss = False  # its own loss, on the kept self-edits only (see `OuterStrategy`)

    def completion_weights(self, rewards: torch.Tensor) -> torch.Tensor:
        """1.0 for kept self-edits, 0.0 otherwise; rewards are `(num_contexts, k)`, NaN = not scored."""
        above = torch.nan_to_num(rewards, nan=-torch.inf) > self.threshold
        if self.keep_all_above_threshold:
            return above.float()
        best = torch.nan_to_num(rewards, nan=-torch.inf).argmax(dim=1, keepdim=True)  # first maximum wins ties
        keep = torch.zeros_like(above).scatter_(1, best, True) & above
        return keep.float()

    def loss(
        self, per_token_logps: torch.Tensor, completion_mask: torch.Tensor, weights: torch.Tensor,
        normaliser: torch.Tensor,
    ) -> torch.Tensor:
        """Weighted NLL of the kept completion tokens, divided by `normaliser` (the round's kept tokens per optimizer
        step and process), so that one pass averages the NLL over all of the round's kept tokens."""
        token_weights = completion_mask * weights.unsqueeze(1)
        return -(per_token_logps * token_weights).sum() / normaliser.clamp(min=1.0)
