"""PointNet (Qi et al., CVPR 2017): shared per-point MLPs, T-nets, symmetric max-pool.

Layout follows the paper's classification network (and its TensorFlow code):

    points [B, N, 3] -> input T-net (3x3) -> shared MLP 64-64 -> feature T-net (64x64)
    -> shared MLP 64-128-1024 -> max over points -> FC 512-256 (BN, ReLU, dropout 0.3) -> C

Every layer except the last FC is followed by batch norm and ReLU (the TF code's
``conv2d(bn=True)``, ReLU on the 1024 layer too). Dropout keeps 0.7 after each hidden
FC, i.e. ``p = 0.3``. Each T-net regresses a matrix that starts as the identity (zero
output layer plus identity), so training starts from the plain network.

The feature-transform matrix of the last forward is kept in ``last_feature_transform``;
``regularization_loss()`` turns it into the paper's training term
``0.001 * feature_transform_regularizer(A)`` (the model zoo's training step adds it).

Floor 1: imports torch, ``benchmark.core.geometry`` and ``models`` only.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models import register_model

__all__ = ["FEATURE_TRANSFORM_WEIGHT", "PointNet", "TNet", "feature_transform_regularizer", "pointnet", "pointnet_lite"]


def _max_pool(x: Tensor, dim: int) -> Tensor:
    """``x.amax(dim)``; with autograd, ``max(dim)`` instead (same values, far cheaper backward on CPU)."""
    return x.max(dim=dim).values if torch.is_grad_enabled() and x.requires_grad else x.amax(dim=dim)


class PointwiseMLP(nn.Module):
    """Shared MLP applied to every point (1x1 convolution), channels last.

    Each layer is ``Linear -> BatchNorm (over batch and points) -> ReLU``.

    Args:
        in_channels: C_in.
        widths: output width of each layer; the last is C_out.
    """

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        for width in widths:
            self.linears.append(nn.Linear(in_channels, width, bias=False))
            self.norms.append(nn.BatchNorm1d(width))
            in_channels = width
        self.out_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[B, N, C_in]`` -> ``[B, N, C_out]``."""
        for linear, norm in zip(self.linears, self.norms):
            y = linear(x)
            x = torch.relu(norm(y.reshape(-1, y.shape[-1])).reshape(y.shape))
        return x


class MLPHead(nn.Module):
    """Classifier head: ``(Linear -> BN -> ReLU -> Dropout)`` per hidden width, then ``Linear`` to C.

    Args:
        in_channels: width of the global feature.
        hidden: hidden widths, e.g. ``(512, 256)``.
        num_classes: C.
        dropout: drop probability after each hidden layer.
    """

    def __init__(self, in_channels: int, hidden: Sequence[int], num_classes: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_channels, width, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_channels = width
        layers.append(nn.Linear(in_channels, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[B, C_in]`` -> logits ``[B, num_classes]``."""
        return self.layers(x)


class TNet(nn.Module):
    """Regresses a ``k x k`` transform from a point set (the paper's T-net).

    Shared MLP 64-128-1024, max-pool, FC 512-256 (BN, ReLU), FC to ``k * k`` initialised
    to zero, plus the identity: a fresh T-net returns exactly ``I``.

    Args:
        k: size of the transform (3 for coordinates, 64 for features).
        mlp: widths of the shared MLP.
        fc: widths of the hidden FC layers.
    """

    def __init__(self, k: int, mlp: Sequence[int] = (64, 128, 1024), fc: Sequence[int] = (512, 256)) -> None:
        super().__init__()
        self.k = k
        self.mlp = PointwiseMLP(k, mlp)
        self.regressor = MLPHead(self.mlp.out_channels, fc, k * k, dropout=0.0)
        last = self.regressor.layers[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[B, N, k]`` -> transform ``[B, k, k]``; apply as ``x @ A``."""
        g = _max_pool(self.mlp(x), dim=1)
        eye = torch.eye(self.k, dtype=x.dtype, device=x.device)
        return self.regressor(g).reshape(-1, self.k, self.k) + eye


#: Weight of the feature-transform orthogonality penalty in the training loss (paper: 0.001).
FEATURE_TRANSFORM_WEIGHT = 0.001


def feature_transform_regularizer(transform: Tensor) -> Tensor:
    """Orthogonality penalty ``||I - A A^T||_F^2`` on a feature transform, averaged over the batch.

    Args:
        transform: ``A`` ``[B, k, k]`` (e.g. ``PointNet.last_feature_transform``).

    Returns:
        Scalar tensor, zero iff every ``A`` is orthogonal; differentiable w.r.t. ``A``.
        The paper adds it to the loss with weight 0.001.
    """
    if transform.dim() != 3 or transform.shape[1] != transform.shape[2]:
        raise ValueError(f"transform must have shape [B, k, k]; got {list(transform.shape)}")
    eye = torch.eye(transform.shape[1], dtype=transform.dtype, device=transform.device)
    diff = eye - transform @ transform.transpose(1, 2)
    return (diff**2).sum(dim=(1, 2)).mean()


class PointNet(nn.Module):
    """PointNet classifier: ``[B, N, 3]`` points -> ``[B, num_classes]`` logits.

    Args:
        num_classes: C.
        mlp1: widths of the shared MLP before the feature transform (paper: 64-64).
        mlp2: widths of the shared MLP after it (paper: 64-128-1024); the last width is
            the global feature size.
        head: hidden widths of the classifier (paper: 512-256).
        dropout: drop probability in the head (paper: keep 0.7 -> 0.3).
        input_transform: regress a 3x3 transform of the input points (T-net).
        feature_transform: regress a ``mlp1[-1]`` square transform of the point features.
    """

    def __init__(
        self,
        num_classes: int = 40,
        mlp1: Sequence[int] = (64, 64),
        mlp2: Sequence[int] = (64, 128, 1024),
        head: Sequence[int] = (512, 256),
        dropout: float = 0.3,
        input_transform: bool = True,
        feature_transform: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.input_tnet = TNet(3) if input_transform else None
        self.mlp1 = PointwiseMLP(3, mlp1)
        self.feature_tnet = TNet(self.mlp1.out_channels) if feature_transform else None
        self.mlp2 = PointwiseMLP(self.mlp1.out_channels, mlp2)
        self.head = MLPHead(self.mlp2.out_channels, head, num_classes, dropout)
        #: ``[B, k, k]`` feature transform of the last forward (None without a feature T-net).
        self.last_feature_transform: Tensor | None = None

    def global_feature(self, points: Tensor) -> Tensor:
        """``points`` ``[B, N, 3]`` -> max-pooled global feature ``[B, mlp2[-1]]``."""
        x = points
        if self.input_tnet is not None:
            x = x @ self.input_tnet(x)
        x = self.mlp1(x)
        if self.feature_tnet is not None:
            transform = self.feature_tnet(x)
            self.last_feature_transform = transform
            x = x @ transform
        return _max_pool(self.mlp2(x), dim=1)

    def forward(self, points: Tensor) -> Tensor:
        """``points`` ``[B, N, 3]`` float32 -> logits ``[B, num_classes]``."""
        return self.head(self.global_feature(points))

    def regularization_loss(self, weight: float = FEATURE_TRANSFORM_WEIGHT) -> Tensor:
        """The term a training step adds to its loss: ``weight * ||I - A A^T||^2`` for the
        feature transform ``A`` of the last forward; a zero scalar without a feature T-net."""
        if self.last_feature_transform is None:
            return self.head.layers[-1].weight.new_zeros(())
        return weight * feature_transform_regularizer(self.last_feature_transform)


@register_model("pointnet")
def pointnet(num_classes: int = 40, **kwargs) -> PointNet:
    """PointNet (Qi et al. 2017) with input and feature T-nets: the classic victim, 3.5 M parameters."""
    sizes = {"mlp1": (64, 64), "mlp2": (64, 128, 1024), "head": (512, 256),
             "input_transform": True, "feature_transform": True}
    return PointNet(num_classes=num_classes, **{**sizes, **kwargs})


@register_model("pointnet-lite")
def pointnet_lite(num_classes: int = 40, **kwargs) -> PointNet:
    """PointNet without T-nets, MLP 3-64-128-512: the fast CPU surrogate, 0.2 M parameters."""
    sizes = {"mlp1": (64,), "mlp2": (128, 512), "head": (256,),
             "input_transform": False, "feature_transform": False}
    return PointNet(num_classes=num_classes, **{**sizes, **kwargs})
