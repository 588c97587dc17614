"""Loading a local state-dict file into a model built here, with one clear error on mismatch.

``load_state_dict_file`` is what the defense networks with published checkpoints (PU-Net,
ConvONet) share: ``torch.load(weights_only=True)`` (never arbitrary pickles), the state dict
found directly or under a container key of training checkpoints, ``module.`` prefixes
(DataParallel) stripped, and a ``ValueError`` listing every missing, unexpected and
mis-shaped key instead of PyTorch's first-error message.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["load_state_dict_file"]


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
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure means "not a weights file"
        raise ValueError(f"cannot read {what} weights {path}: {err}") from err
    if isinstance(state, dict):
        for key in containers:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a {what} state dict (a mapping of parameter names to tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
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
