"""C&W-style optimisation with a binary search over the distance weight (PROTOCOL.md section 1,
"C&W-style bookkeeping" and "Binary search over the distance weight").

Shared by the C&W family (``cw`` = Perturb; Add-CD/HD reuse it with another parameter and
distance). What is optimised is pluggable: a parameter tensor ``param`` ``[B, ...]`` (the
whole cloud for Perturb, the extra points for Add), ``make_adv(param) -> [B, N', 3]`` builds
the adversarial cloud from it and ``distance(adv, points) -> [B]`` measures it.

Per sample: ``lower = 0``, ``upper = max_w``, ``w = init_w``. Each binary step restarts Adam
(lr ``lr``) from ``param + N(0, noise_std)`` (noise seeded per (seed, sample index, binary
step)) and runs ``num_iter`` iterations on ``adv_loss + w * distance``, both per-sample and
summed over the batch, so one Adam over the batch's tensor equals one Adam per sample (Adam is
elementwise). Every iterate is evaluated *before* its update (as in the reference): when it
succeeds with a distance below the sample's best so far it becomes the kept iterate. After a
binary step, a sample whose best was improved during that step gets ``lower = w``, any other
``upper = w``; then ``w = (lower + upper) / 2``. A sample never successful falls back to its
last evaluated iterate (the reference's ``input_val``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attacks.base import sample_generator

__all__ = ["SearchResult", "binary_search_attack", "seeded_normal", "update_bounds"]


@dataclass
class SearchResult:
    """Outcome of ``binary_search_attack``, per sample.

    Attributes:
        points: ``[B, N', 3]`` kept iterate (successful with the smallest distance), or the last
            evaluated iterate for a sample never successful.
        success: ``[B]`` bool, some iterate succeeded.
        iterations: ``[B]`` long, Adam updates done before the kept iterate, counted over all
            binary steps (``k * num_iter + t`` for iterate ``t`` of binary step ``k``);
            ``binary_steps * num_iter`` for a sample never successful.
        distance: ``[B]`` the kept iterate's distance (``inf`` when never successful).
        weights: ``[binary_steps, B]`` the weight ``w`` used at each binary step.
        step_success: ``[binary_steps, B]`` bool, the step improved the sample's best.
        lower, upper: ``[B]`` final search bounds.
    """

    points: Tensor
    success: Tensor
    iterations: Tensor
    distance: Tensor
    weights: Tensor
    step_success: Tensor
    lower: Tensor
    upper: Tensor


def seeded_normal(
    shape: tuple[int, ...], indices: Tensor, seed: int, stream: str, *, device=None, dtype=torch.float32
) -> Tensor:
    """``N(0, 1)`` noise ``[B, *shape]``; row ``b`` depends only on ``(stream, seed, indices[b])``."""
    rows = [torch.randn(shape, generator=sample_generator(stream, seed, int(i))) for i in indices.tolist()]
    return torch.stack(rows).to(device=device, dtype=dtype)


def update_bounds(lower: Tensor, upper: Tensor, weight: Tensor, succeeded: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One binary-search update: success ``lower = w`` (raise the distance penalty), failure
    ``upper = w``; returns ``(lower, upper, (lower + upper) / 2)``.

    As in the reference, ``lower = max(lower, w)`` and ``upper = min(upper, w)``.
    """
    lower = torch.where(succeeded, torch.maximum(lower, weight), lower)
    upper = torch.where(succeeded, upper, torch.minimum(upper, weight))
    return lower, upper, (lower + upper) / 2


def binary_search_attack(
    model: nn.Module,
    points: Tensor,
    labels: Tensor,
    targets: Tensor | None,
    *,
    indices: Tensor,
    param: Tensor,
    make_adv: Callable[[Tensor, Tensor], Tensor],
    distance: Callable[[Tensor, Tensor], Tensor],
    adv_loss: Callable[[Tensor, Tensor], Tensor],
    init_weight: float,
    max_weight: float,
    binary_steps: int,
    num_iter: int,
    lr: float,
    seed: int,
    stream: str,
    noise_std: float = 1e-7,
    early_stop: bool = False,
) -> SearchResult:
    """Run the C&W binary search (see the module docstring).

    Args:
        model: ``[B, N', 3] -> [B, C]`` logits (eval mode, gradients off: ``Attack`` does that).
        points: ``[B, N, 3]`` clean clouds.
        labels: ``[B]`` long; success when ``targets`` is None means ``pred != labels``.
        targets: ``[B]`` long (targeted: success means ``pred == targets``) or None.
        indices: ``[B]`` long sample indices (seed the start noise).
        param: ``[B, ...]`` initial parameter; each binary step restarts from it plus noise.
        make_adv: ``(param rows [b, ...], rows [b]) -> [b, N', 3]`` adversarial clouds of the
            batch rows ``rows`` (differentiable in the parameter).
        distance: ``(adv [b, N', 3], rows [b]) -> [b]`` distance of those rows to their clean
            clouds (differentiable).
        adv_loss: ``(logits [b, C], rows [b]) -> [b]`` adversarial loss of those rows to minimise.
        init_weight, max_weight: initial ``w`` and initial ``upper``.
        binary_steps, num_iter: binary steps and Adam iterations per step.
        lr: Adam learning rate.
        seed, stream: seed the start noise per (stream, seed, index, binary step).
        noise_std: standard deviation of the start noise.
        early_stop: a sample stops (leaves the batch: no more model passes, no more binary
            steps) at its first successful iterate, which it keeps; the reference keeps
            searching for a smaller distance.

    Returns:
        ``SearchResult``.
    """
    batch = points.shape[0]
    device, dtype = points.device, points.dtype
    param0 = param.detach()
    lower = torch.zeros(batch, device=device, dtype=dtype)
    upper = torch.full((batch,), float(max_weight), device=device, dtype=dtype)
    weight = torch.full((batch,), float(init_weight), device=device, dtype=dtype)
    best_dist = torch.full((batch,), float("inf"), device=device, dtype=dtype)
    best_iter = torch.full((batch,), binary_steps * num_iter, dtype=torch.long, device=device)
    best_adv: Tensor | None = None
    last_adv: Tensor | None = None
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    weights, step_success = [], []

    for k in range(binary_steps):
        noise = seeded_normal(tuple(param0.shape[1:]), indices, seed, f"{stream}:step{k}", device=device, dtype=dtype)
        var = (param0 + noise * noise_std).requires_grad_(True)
        opt = torch.optim.Adam([var], lr=lr)
        improved = torch.zeros(batch, dtype=torch.bool, device=device)
        for t in range(num_iter):
            rows = (~done).nonzero().flatten()
            if rows.numel() == 0:
                break
            # only the rows still searching cost a model pass; the others get no gradient (Adam is
            # elementwise, so their stale moments touch nothing else)
            adv = make_adv(var[rows], rows)
            logits = model(adv)
            dist = distance(adv, rows)
            with torch.no_grad():
                pred = logits.argmax(dim=1)
                ok = pred == targets[rows] if targets is not None else pred != labels[rows]
                better = ok & (dist < best_dist[rows])
                if last_adv is None:
                    last_adv = adv.new_zeros((batch, *adv.shape[1:]))
                    best_adv = last_adv.clone()
                last_adv[rows] = adv.detach()
                best_adv[rows[better]] = adv.detach()[better]
                best_dist[rows] = torch.where(better, dist.detach(), best_dist[rows])
                best_iter[rows[better]] = k * num_iter + t
                improved[rows] |= better
                if early_stop:
                    done[rows[ok]] = True
            loss = (adv_loss(logits, rows) + weight[rows] * dist).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        weights.append(weight)
        step_success.append(improved)
        lower, upper, weight = update_bounds(lower, upper, weight, improved)

    success = torch.isfinite(best_dist)
    assert best_adv is not None and last_adv is not None
    out = torch.where(success[:, None, None], best_adv, last_adv)
    return SearchResult(
        points=out,
        success=success,
        iterations=best_iter,
        distance=best_dist,
        weights=torch.stack(weights),
        step_success=torch.stack(step_success),
        lower=lower,
        upper=upper,
    )


def check_search_params(attack: object) -> None:
    """The one relation between the binary-search hyperparameters every C&W-style attack shares
    (their domains are declared on the fields): ``max_weight >= init_weight``."""
    if not attack.max_weight >= attack.init_weight:
        raise ValueError(f"{type(attack).__name__}: max_weight must be >= init_weight; "
                         f"got {attack.max_weight} < {attack.init_weight}")
