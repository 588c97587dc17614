"""Point-cloud autoencoder (AdvPC's): PointNet encoder, fully connected decoder.

Hamdi et al. (ECCV 2020) make adversarial perturbations survive an autoencoder's
reconstruction; PROTOCOL.md section 2 ("advpc") fixes its shape: encoder = shared MLP
3-64-128-128-256-code with BN + ReLU and a global max-pool, decoder = FC code-256-256-3K
reshaped to ``[K, 3]``. Trained with Chamfer loss on the dataset in use (``models.zoo``).
"""
from __future__ import annotations

from torch import Tensor, nn

from models import register_model

__all__ = ["PointCloudAutoencoder", "pc_autoencoder"]


class PointCloudAutoencoder(nn.Module):
    """``forward(points [B, N, 3]) -> reconstruction [B, num_points, 3]`` (any N in, fixed K out)."""

    def __init__(self, num_points: int = 1024, code_size: int = 128, encoder_widths: tuple[int, ...] = (64, 128, 128, 256),
                 decoder_widths: tuple[int, ...] = (256, 256)) -> None:
        super().__init__()
        self.num_points = num_points
        self.code_size = code_size
        layers: list[nn.Module] = []
        prev = 3
        for width in (*encoder_widths, code_size):
            layers += [nn.Conv1d(prev, width, 1), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            prev = width
        self.encoder = nn.Sequential(*layers)
        dec: list[nn.Module] = []
        prev = code_size
        for width in decoder_widths:
            dec += [nn.Linear(prev, width), nn.ReLU(inplace=True)]
            prev = width
        dec.append(nn.Linear(prev, num_points * 3))
        self.decoder = nn.Sequential(*dec)

    def encode(self, points: Tensor) -> Tensor:
        """``[B, N, 3] -> [B, code_size]`` global code (max-pooled)."""
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must be [B, N, 3], got {list(points.shape)}")
        return self.encoder(points.transpose(1, 2)).amax(dim=-1)

    def decode(self, code: Tensor) -> Tensor:
        """``[B, code_size] -> [B, num_points, 3]``."""
        return self.decoder(code).view(code.shape[0], self.num_points, 3)

    def forward(self, points: Tensor) -> Tensor:
        return self.decode(self.encode(points))


@register_model("pc-autoencoder")
def pc_autoencoder(num_points: int = 1024, code_size: int = 128, **kwargs) -> PointCloudAutoencoder:
    """Point-cloud autoencoder for AdvPC: PointNet encoder (128-d code), FC decoder to K points."""
    return PointCloudAutoencoder(num_points=num_points, code_size=code_size, **kwargs)

