"""Loading a local state-dict file into a model built here, with one clear error on mismatch.

``load_state_dict_file`` is what the defense networks with published checkpoints (PU-Net,
ConvONet) share: ``torch.load(weights_only=True)`` (never arbitrary pickles), the state dict
found directly or under a container key of training checkpoints, ``module.`` prefixes
(DataParallel) stripped, and a ``ValueError`` listing every missing, unexpected and
mis-shaped key instead of PyTorch's first-error message.

``read_state_dict`` and ``check_state_dict`` are the same two steps apart, for large
published layouts (Uni3D): safetensors too, prefixes to strip, a capped message that names
the expected layout, and a caller's hint for files ``weights_only`` refuses.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["check_state_dict", "load_state_dict_file", "read_state_dict"]


def load_state_dict_file(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    what: str,
    describe: str,
    containers: Sequence[str] = ("model_state", "state_dict"),
    advice: Callable[[Mapping[str, Tensor]], str] | None = None,
) -> nn.Module:
    """Load the tensors of the file at ``path`` into ``model`` (cast to its dtypes); returns it.

    Args:
        what: the network's name in messages (``"PU-Net"``).
        describe: the model's architecture in a few words, for the mismatch message.
        containers: keys under which a training checkpoint holds the state dict.
        advice: given the file's state dict, the last line of the mismatch message (how to
            build a model that matches).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a state dict, or its keys / shapes differ from ``model``'s.
    """
    path = Path(path).expanduser()
    state = read_state_dict(path, what=what, containers=containers)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: file {list(state[k].shape)} vs model {list(own[k].shape)}"
                    for k in set(own) & set(state) if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        lines = [f"cannot load {what} weights {path}: the file does not match this architecture "
                 f"({describe}; {len(own)} tensors, the file has {len(state)})."]
        for label, items, sep in (("missing in the file", missing, ", "), ("unexpected in the file", unexpected, ", "),
                                  ("shape mismatches", shapes, "; ")):
            if items:
                lines.append(f"  {label} ({len(items)}): {sep.join(items)}")
        lines.append("  " + (advice(state) if advice is not None else
                             "Build the model with the sizes the checkpoint was trained with."))
        raise ValueError("\n".join(lines))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model


# --------------------------------------------------------------------------- strict loading, in two steps
# ``read_state_dict`` + ``check_state_dict`` are for published checkpoints whose layout is large
# (Uni3D: ~200-500 tensors): the mismatch message is capped per category and names the
# expected layout, and a file that ``weights_only`` refuses gets the caller's conversion hint.


def read_state_dict(
    path: str | os.PathLike[str],
    *,
    what: str,
    containers: Sequence[str] = ("state_dict",),
    strip_prefixes: Sequence[str] = ("module.",),
    unreadable_hint: str = "",
) -> dict[str, Tensor]:
    """The tensors of a weights file, as a flat ``{name: tensor}`` dict on the CPU.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(map_location="cpu", weights_only=True)`` (never arbitrary pickles). The
    state dict is found directly or under the first of ``containers`` that holds a dict,
    and each prefix in ``strip_prefixes`` is removed (in order) where a key starts with it.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable (message ends with ``unreadable_hint``) or not a mapping of
            names to tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure means "not a weights file we may read"
        hint = f" {unreadable_hint}" if unreadable_hint else ""
        raise ValueError(f"cannot read {what} weights {path}: {type(err).__name__}: {err}.{hint}") from err
    if isinstance(state, dict):
        for key in containers:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        inside = f" (looked under {', '.join(repr(c) for c in containers)})" if containers else ""
        raise ValueError(f"{path} is not a {what} state dict (a mapping of parameter names to tensors){inside}")
    for prefix in strip_prefixes:
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def check_state_dict(
    model: nn.Module,
    state: Mapping[str, Tensor],
    *,
    what: str,
    source: str | os.PathLike[str],
    describe: str,
    advice: Callable[[Mapping[str, Tensor]], str] | None = None,
    limit: int = 12,
) -> None:
    """Raise unless ``state`` has exactly ``model``'s state-dict keys, each with the model's shape.

    Strict in both directions: a key the model lacks is an error as much as a missing one.
    The message names the source, the expected layout (``describe``), up to ``limit`` keys
    of each kind (missing, unexpected, shape mismatches, with both shapes) and ends with
    ``advice(state)`` (how to build a model that matches). Shapes are compared without
    reading values, so ``state`` and ``model`` may live on the meta device.

    Raises:
        ValueError: on any difference.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: file {list(state[k].shape)} vs model {list(own[k].shape)}"
                    for k in set(own) & set(state) if state[k].shape != own[k].shape)
    if not (missing or unexpected or shapes):
        return
    lines = [(f"cannot load {what} from {source}: the file does not match this architecture "
              f"({len(own)} tensors, the file has {len(state)})."), f"  expected layout: {describe}"]
    for label, items, sep in (("missing in the file", missing, ", "), ("unexpected in the file", unexpected, ", "),
                              ("shape mismatches", shapes, "; ")):
        if items:
            more = f"{sep}... (+{len(items) - limit} more)" if len(items) > limit else ""
            lines.append(f"  {label} ({len(items)}): {sep.join(items[:limit])}{more}")
    lines.append("  " + (advice(state) if advice is not None else
                         "Build the model with the sizes the checkpoint was trained with."))
    raise ValueError("\n".join(lines))
