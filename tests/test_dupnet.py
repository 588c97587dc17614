"""DUP-Net: a faithful PU-Net (the published weights load and hug the surface), its training,
and the defense end to end with its cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import C, TinyPointNet, frozen, unit_clouds

from benchmark.core.config import TrainConfig
from benchmark.core.data import PointCloudDataset, load_dataset
from benchmark.core.geometry import chamfer_distance
from benchmark.core.registry import DEFENSES
from defenses.base import DefenseContext
from defenses.dupnet import (
    DUPNet,
    UpsamplingPairs,
    dense_surface_samples,
    local_upsampling_loss,
    upsampling_loss,
)
from models.punet import PUNet, load_punet_weights

SHARED = Path(__file__).parents[2] / "shared"
WEIGHTS = SHARED / "weights" / "pu-net-in1024-up4.pth"
AIRPLANE = SHARED / "data" / "airplane-1024.npy"


def real_weights() -> Path:
    if not WEIGHTS.is_file():
        pytest.skip(f"no published PU-Net weights at {WEIGHTS} (a user's clone has no ../shared)")
    return WEIGHTS


def airplane() -> torch.Tensor:
    if not AIRPLANE.is_file():
        pytest.skip(f"no real airplane at {AIRPLANE} (a user's clone has no ../shared)")
    return torch.from_numpy(np.load(AIRPLANE)).float()[None]  # [1, 1024, 3]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these small clouds gain nothing from two, and on a shared machine
    two threads wait on each other for every small op of PU-Net's sampling loop."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shapes():
    """33 SynthShapes training clouds of 128 points (one per class), with their solids."""
    return load_dataset("synthshapes", "train", num_points=128, options={"train_size": 33})


# --------------------------------------------------------------------------- the network


def _ball_query_by_definition(xyz, centres, radius, nsample):
    """Per ball, loops: the points strictly inside in storage order, padded with the first
    (the nearest point when none is inside)."""
    out = torch.empty(*centres.shape[:2], nsample, dtype=torch.long)
    for b in range(xyz.shape[0]):
        for s in range(centres.shape[1]):
            dist = torch.cdist(centres[b, s][None], xyz[b])[0]
            inside = [int(i) for i in torch.nonzero(dist < radius).flatten()][:nsample]
            inside = inside or [int(dist.argmin())]
            out[b, s] = torch.tensor(inside + [inside[0]] * (nsample - len(inside)))
    return out


@pytest.mark.parametrize("block", [None, 1000])
def test_ball_query_keeps_the_first_points_inside_in_storage_order(block, monkeypatch):
    from models import punet

    if block is not None:  # several chunks of centres
        monkeypatch.setattr(punet, "_MAX_BLOCK_ELEMENTS", block)
    gen = torch.Generator().manual_seed(0)
    xyz = torch.rand(2, 40, 3, generator=gen)
    centres = torch.cat([xyz[:, :6], torch.full((2, 1, 3), 9.0)], 1)  # the last ball is empty
    for radius, nsample in [(0.3, 8), (0.6, 32), (2.0, 50)]:  # some balls overflow; nsample > N pads
        got = punet.ball_query_first(xyz, centres, radius, nsample)
        assert torch.equal(got, _ball_query_by_definition(xyz, centres, radius, nsample))


def test_inference_pools_over_distinct_members_as_the_full_groups_do():
    """Without autograd, each set-abstraction level runs its MLP on a ball's distinct members
    only; the outputs equal the differentiable path's, which runs it on all K slots."""
    torch.manual_seed(0)
    net = PUNet(up_ratio=4).eval()
    if WEIGHTS.is_file():  # trained weights: ReLUs are neither all on nor all off
        load_punet_weights(net, WEIGHTS)
    points = unit_clouds(2, 1024, seed=3)
    with torch.no_grad():
        fast = net(points)
    full = net(points.clone().requires_grad_(True)).detach()
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1024, 256])
def test_pu_net_outputs_up_ratio_times_the_input_points(n):
    model = PUNet().eval()
    with torch.no_grad():
        out = model(unit_clouds(2, n))
    assert out.shape == (2, 4 * n, 3)
    assert torch.isfinite(out).all()


def test_centres_and_radii_scale_with_the_cloud_size():
    model = PUNet()
    assert model.level_sizes(1024) == [(1024, 0.05), (512, 0.1), (256, 0.2), (128, 0.3)]
    smoke = model.level_sizes(256)  # 4x sparser: half the point spacing's reciprocal
    assert [c for c, _ in smoke] == [256, 128, 64, 32]
    assert [r for _, r in smoke] == pytest.approx([0.1, 0.2, 0.4, 0.6])


def test_identity_initialisation_copies_each_input_point_to_its_children():
    model = PUNet().init_identity_(offset_scale=0.0).eval()
    x = unit_clouds(2, 256)
    with torch.no_grad():
        assert torch.allclose(model(x), x.repeat(1, 4, 1), atol=1e-5)


def test_parameter_names_and_shapes_match_the_published_checkpoint():
    state = torch.load(real_weights(), map_location="cpu", weights_only=True)
    own = PUNet().state_dict()
    assert {k: tuple(v.shape) for k, v in own.items()} == {k: tuple(v.shape) for k, v in state.items()}
    load_punet_weights(PUNet(), WEIGHTS)  # loads without complaint


def test_published_weights_upsample_a_real_airplane_onto_its_surface():
    """Faithfulness: each output point sits closer to the input surface than random jitter of
    the same spread around its parent point (a wrong feature order lands at ~the jitter's)."""
    x = airplane()
    model = load_punet_weights(PUNet(), real_weights()).eval()
    with torch.no_grad():
        out = model(x)
    parents = x.repeat(1, 4, 1)
    spread = (out - parents).norm(dim=-1).mean()  # mean parent-child distance
    sigma = spread / np.sqrt(8 / np.pi)  # Gaussian jitter with that mean displacement
    jitter = parents + sigma * torch.randn(parents.shape, generator=torch.Generator().manual_seed(0))
    pu = float(chamfer_distance(out, x))
    noise = float(chamfer_distance(jitter, x))
    assert 0.01 < spread < 0.1  # it does move the points (units: unit-sphere cloud)
    assert pu < 0.7 * noise, (pu, noise)


def test_loading_zeroes_negligible_weights_without_changing_the_output():
    """The published file holds ~470,000 weights below 1e-20 (most of them subnormal, which
    slowed CPU inference 25x); zeroing them leaves the output as it was."""
    raw = PUNet().eval()
    raw.load_state_dict(torch.load(real_weights(), map_location="cpu", weights_only=True))
    loaded = load_punet_weights(PUNet(), WEIGHTS).eval()
    tiny = torch.cat([p.detach().abs().flatten() for p in loaded.parameters()])
    assert not bool(((tiny > 0) & (tiny < 1e-20)).any())
    x = unit_clouds(1, 256)
    with torch.no_grad():
        assert torch.allclose(loaded(x), raw(x), atol=1e-6)


def test_a_mismatched_checkpoint_is_refused_naming_the_keys(tmp_path):
    state = PUNet().state_dict()
    state.pop("pcd_layer.1.layer0.conv.bias")
    state["extra.weight"] = torch.zeros(1)
    state["FC_Modules.0.layer0.conv.weight"] = torch.zeros(256, 258, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        load_punet_weights(PUNet(), path)
    message = str(err.value)
    assert "missing in the file" in message and "pcd_layer.1.layer0.conv.bias" in message
    assert "unexpected in the file" in message and "extra.weight" in message
    assert "FC_Modules.0.layer0.conv.weight: file [256, 258, 1, 1] vs model [256, 259, 1, 1]" in message


def test_a_checkpoint_for_another_up_ratio_is_refused(tmp_path):
    path = tmp_path / "x4.pth"
    torch.save(PUNet(up_ratio=4).state_dict(), path)
    with pytest.raises(ValueError, match=r"(?s)FC_Modules\.2\.layer0\.conv\.weight.*build it with up_ratio=4"):
        load_punet_weights(PUNet(up_ratio=2), path)


# --------------------------------------------------------------------------- training


def test_dense_surface_samples_lie_on_the_clouds_own_surface(shapes):
    dense = torch.from_numpy(dense_surface_samples(shapes.extras["shapes"], 1024, seed=0))
    points = torch.from_numpy(shapes.points)
    own = chamfer_distance(points, dense)
    other = chamfer_distance(points, dense.roll(1, dims=0))
    assert dense.shape == (33, 1024, 3)
    assert float(own.max()) < 5e-3 < float(other.median())


def test_local_loss_is_exact_when_children_sit_on_their_parents(shapes):
    inputs = torch.from_numpy(shapes.points[:4])
    targets = torch.from_numpy(dense_surface_samples(shapes.subset(np.arange(4)).extras["shapes"], 512, 0))
    pairs = UpsamplingPairs.build(inputs, targets)
    out = inputs.repeat(1, 4, 1)
    _, local, _ = local_upsampling_loss(out, pairs.batch(torch.arange(4), torch.device("cpu")))
    _, exact, _ = upsampling_loss(out, targets)
    assert torch.allclose(local, exact, rtol=1e-5)


def test_a_few_training_steps_lower_the_chamfer_plus_repulsion_loss(shapes):
    torch.manual_seed(0)
    inputs = torch.from_numpy(shapes.points[:8])
    targets = torch.from_numpy(dense_surface_samples(shapes.subset(np.arange(8)).extras["shapes"], 512, 0))
    pairs = UpsamplingPairs.build(inputs, targets)
    batch = pairs.batch(torch.arange(8), torch.device("cpu"))
    model = PUNet(num_points=128).init_identity_()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.no_grad():
        before = upsampling_loss(model(inputs), targets)[0]
    for _ in range(8):
        loss = local_upsampling_loss(model(inputs), batch)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = upsampling_loss(model(inputs), targets)[0]
    assert float(after) < 0.9 * float(before)


# --------------------------------------------------------------------------- the defense


def context(train, tmp_path, messages: list[str]) -> DefenseContext:
    return DefenseContext(
        victim=frozen(TinyPointNet()), train=train, cache_dir=tmp_path, victim_hash="tiny",
        train_config=lambda name: TrainConfig(epochs=1, batch_size=8), progress=False, log=messages.append,
    )


def test_dup_net_is_registered_as_a_bpda_preprocessing_defense():
    entry = DEFENSES.get("dup-net")
    assert entry.obj is DUPNet
    assert entry.defaults["sor_k"] == 2 and entry.defaults["sor_alpha"] == 1.1
    assert entry.defaults["num_points"] == 1024 and entry.defaults["up_ratio"] == 4
    assert DUPNet.kind == "preprocess" and DUPNet.gradient == "bpda" and not DUPNet.randomized


def test_dup_net_end_to_end_trains_once_then_loads_from_the_cache(shapes, tmp_path):
    first: list[str] = []
    defended = DUPNet(num_points=128, train_clouds=8, train_batch_size=4)(context(shapes, tmp_path, first))
    x = unit_clouds(3, 128)
    with torch.no_grad():
        logits = defended(x)
        upsampled = defended.defend(x)
    assert logits.shape == (3, C)
    assert upsampled.shape == (3, 128, 3)  # upsampled x4, then back to the input density
    assert defended.meta["source"] == "trained" and defended.meta["scheme"] == "surface"
    assert defended.meta["cached"] is False and any("epoch 1/1" in m for m in first)

    second: list[str] = []
    again = DUPNet(num_points=128, train_clouds=8, train_batch_size=4)(context(shapes, tmp_path, second))
    assert again.meta["cached"] is True
    assert any("loaded cached training" in m for m in second)
    assert not any("epoch" in m for m in second)  # no retraining
    with torch.no_grad():
        assert torch.equal(again.defend(x), upsampled)


def test_dup_net_trains_from_sparse_subsets_when_the_data_has_no_shapes(tmp_path):
    clouds = PointCloudDataset("blobs", "train", unit_clouds(8, 128).numpy(), np.arange(8) % 2, ("a", "b"))
    defended = DUPNet(num_points=128, train_clouds=8, train_batch_size=4, output_points=0)(context(clouds, tmp_path, []))
    assert defended.meta["scheme"] == "subset"  # 32 points -> the 128 of the cloud
    with torch.no_grad():
        assert defended.defend(unit_clouds(2, 128)).shape == (2, 512, 3)


def test_dup_net_with_published_weights_defends_the_airplane(shapes, tmp_path):
    x = airplane()
    messages: list[str] = []
    defended = DUPNet(pretrained=str(real_weights()), output_points=0)(context(shapes, tmp_path, messages))
    with torch.no_grad():
        out = defended.defend(x)
        logits = defended(x)
    assert out.shape == (1, 4096, 3) and logits.shape == (1, C)
    resampled = DUPNet(pretrained=str(real_weights()))(context(shapes, tmp_path, messages))
    with torch.no_grad():
        assert resampled.defend(x).shape == (1, 1024, 3)  # back to the victim's density
    assert float(chamfer_distance(out, x)) < 2e-3
    assert defended.meta["source"] == "pretrained"
    assert not any("epoch" in m for m in messages)


def test_a_missing_pretrained_file_names_the_path_and_the_option(shapes, tmp_path):
    missing = tmp_path / "nowhere" / "pu.pth"
    with pytest.raises(FileNotFoundError) as err:
        DUPNet(pretrained=str(missing))(context(shapes, tmp_path, []))
    assert str(missing) in str(err.value)
    assert "--set defenses.dup-net.pretrained=" in str(err.value)
