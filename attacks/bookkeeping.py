"""C&W-style bookkeeping (PROTOCOL.md section 1), shared by kNN, AdvPC and AOF.

Per cloud of a batch: keep the successful iterate with the smallest distance to the clean
cloud and the iteration it came from; with ``early_stop`` a cloud is *done* at its first
success (the attack then stops spending model passes on it). A cloud never successful falls
back to the attack's last iterate.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ClosestSuccess"]


class ClosestSuccess:
    """The closest successful iterate per cloud.

    Args:
        start: ``[B, N', 3]`` the initial kept clouds (returned for a cloud never successful
            only if :meth:`result` gets no last iterate).
        never: the iteration count reported for a cloud never successful.
        early_stop: a cloud is done at its first successful iterate.
    """

    def __init__(self, start: Tensor, never: int, *, early_stop: bool = False) -> None:
        batch = start.shape[0]
        self.adv = start.detach().clone()
        self.dist = torch.full((batch,), float("inf"), device=start.device, dtype=start.dtype)
        self.iteration = torch.full((batch,), int(never), dtype=torch.long, device=start.device)
        self.done = torch.zeros(batch, dtype=torch.bool, device=start.device)
        self.early_stop = early_stop

    def active(self) -> Tensor:
        """Global rows ``[b]`` still searching (every row without ``early_stop``)."""
        return (~self.done).nonzero().flatten()

    def record(self, rows: Tensor, adv: Tensor, dist: Tensor, ok: Tensor, iteration: int) -> None:
        """Offer the iterates ``adv [b, N', 3]`` of the global rows ``rows``: their distances
        ``dist [b]`` and success ``ok [b]`` at ``iteration``."""
        better = ok & (dist < self.dist[rows])
        self.adv[rows[better]] = adv[better].detach()
        self.dist[rows] = torch.where(better, dist.detach(), self.dist[rows])
        self.iteration[rows[better]] = iteration
        if self.early_stop:
            self.done[rows[ok]] = True

    @property
    def success(self) -> Tensor:
        """``[B]`` bool: some iterate succeeded."""
        return torch.isfinite(self.dist)

    def result(self, last: Tensor) -> tuple[Tensor, Tensor]:
        """``(clouds [B, N', 3], iterations [B])``: the kept iterate, else ``last``."""
        return torch.where(self.success[:, None, None], self.adv, last), self.iteration
