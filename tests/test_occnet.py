"""The convolutional occupancy network (ConvONet, 3 planes): shapes, registry, masking,
plane sampling and its second derivative, and loading ConvONet checkpoints."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from benchmark.core.registry import MODELS
from models.occnet import (
    ConvOccupancyNetwork,
    PlaneUNet,
    conv_onet,
    load_occnet_weights,
    normalize_coordinate,
    sample_planes,
)

TINY = {"c_dim": 8, "hidden_dim": 8, "resolution": 16, "unet_depth": 2, "unet_filters": 8}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(seed: int = 0) -> ConvOccupancyNetwork:
    torch.manual_seed(seed)
    return ConvOccupancyNetwork(**TINY).eval()


def cube_points(b: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, n, 3, generator=torch.Generator().manual_seed(seed)) * 0.9 - 0.45


def test_conv_onet_is_registered_with_if_defense_sizes():
    entry = MODELS.get("conv-onet")
    assert "defense-part" in entry.tags and entry.description
    model = entry.build()
    assert model.config == {"c_dim": 32, "hidden_dim": 32, "resolution": 64, "unet_depth": 4, "unet_filters": 32,
                            "n_blocks": 5, "padding": 0.1}
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(2.0e6, rel=0.02)  # the paper's ~2 M


def test_encode_gives_three_planes_and_decode_one_logit_per_query():
    model = tiny()
    with torch.no_grad():
        planes = model.encode(cube_points(2, 50))
        logits = model.decode(cube_points(2, 70, seed=1), planes)
    assert planes.shape == (2, 3, 8, 16, 16)
    assert logits.shape == (2, 70) and torch.isfinite(logits).all()


def test_full_size_network_runs_on_600_points():
    model = conv_onet().eval()
    with torch.no_grad():
        out = model(cube_points(1, 600), cube_points(1, 32, seed=1))
    assert out.shape == (1, 32)


def test_masked_points_do_not_change_the_planes():
    model = tiny()
    points = cube_points(1, 40)
    garbage = torch.cat([points, cube_points(1, 25, seed=3)], 1)
    mask = torch.arange(65).unsqueeze(0) < 40
    with torch.no_grad():
        assert torch.allclose(model.encode(garbage, mask), model.encode(points), atol=1e-6)


def test_normalize_coordinate_maps_the_padded_cube_to_the_unit_square():
    points = torch.tensor([[[-0.55, 0.0, 0.55], [2.0, -2.0, 0.0]]])
    uv = normalize_coordinate(points, padding=0.1)  # [1, 3 planes, 2 points, 2]
    assert uv.shape == (1, 3, 2, 2)
    assert torch.allclose(uv[0, 0, 0], torch.tensor([0.0, 1.0]), atol=1e-4)  # xz plane
    assert uv.min() >= 0 and uv.max() < 1  # outside points clamp to the border


@pytest.mark.parametrize("twice", [False, True])
def test_plane_sampling_equals_grid_sample_summed_over_planes(twice):
    planes = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    uv = torch.rand(2, 3, 50, 2, generator=torch.Generator().manual_seed(1))
    ref = sum(F.grid_sample(planes[:, i], (2 * uv[:, i] - 1).unsqueeze(2), align_corners=True,
                            padding_mode="border").squeeze(-1) for i in range(3)).transpose(1, 2)
    assert torch.allclose(sample_planes(planes, uv, twice_differentiable=twice), ref, atol=1e-5)


def test_twice_differentiable_decoding_has_a_second_derivative():
    """What an unrolled adaptive attack needs: d/dplanes of d(logit)/d(query)."""
    model = tiny()
    with torch.no_grad():
        planes = model.encode(cube_points(1, 50))
    planes.requires_grad_(True)
    query = cube_points(1, 20, seed=2).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.decode(query, planes, twice_differentiable=True).sum(), query,
                                  create_graph=True)
    (second,) = torch.autograd.grad(grad.square().sum(), planes)
    assert torch.isfinite(second).all() and second.abs().sum() > 0


def test_unet_refuses_a_resolution_it_cannot_pool():
    with pytest.raises(ValueError, match="divisible by 8"):
        PlaneUNet(4, 4, depth=4, filters=4)(torch.zeros(1, 4, 12, 12))
    with pytest.raises(ValueError, match="divisible"):
        ConvOccupancyNetwork(resolution=20, unet_depth=4)


def test_convonet_checkpoints_load_from_model_key_with_module_prefix(tmp_path):
    source, target = tiny(0), tiny(1)
    path = tmp_path / "model_best.pt"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch_it": 3}, path)
    load_occnet_weights(target, path)
    x, q = cube_points(1, 30), cube_points(1, 10, seed=4)
    with torch.no_grad():
        assert torch.equal(target(x, q), source(x, q))


def test_a_mismatched_checkpoint_names_the_keys_and_the_sizes(tmp_path):
    state = ConvOccupancyNetwork(**{**TINY, "c_dim": 16}).state_dict()
    state.pop("decoder.fc_out.bias")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        load_occnet_weights(tiny(), path)
    message = str(err.value)
    assert "missing in the file" in message and "decoder.fc_out.bias" in message
    assert "unexpected in the file" in message and "extra.weight" in message
    assert "encoder.fc_c.weight: file [16, 8] vs model [8, 8]" in message
    with pytest.raises(FileNotFoundError, match="not found"):
        load_occnet_weights(tiny(), tmp_path / "missing.pt")
