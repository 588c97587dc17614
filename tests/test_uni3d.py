"""Specification of the Uni3D encoders: Uni3D's checkpoint layout, strict loading, Uni3D's forward.

The layouts below are written from the published configurations (timm's EVA / EVA02 model
definitions that Uni3D's ``create_uni3d`` builds, and Uni3D's ``PointcloudEncoder``), not read
from our model. Real sizes are compared by shapes on the meta device; Uni3D-Ti is saved to a
file in Uni3D's own format, loaded strictly and run against a straightforward reference:
Uni3D's forward written out, with timm's blocks called in a loop.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import models  # noqa: F401  (registers the models)
from benchmark.core.registry import MODELS, UnknownNameError
from models.checkpoints import check_state_dict
from models.uni3d import UNI3D_SIZES, Uni3DEncoder, load_uni3d_weights

# size: (width, depth, heads, image size, qkv, (mlp kind, hidden), classifier classes)
PUBLISHED = {
    "ti": (192, 12, 3, 224, "fused", ("packed-swiglu", 512), 0),
    "s": (384, 12, 6, 224, "fused", ("packed-swiglu", 1024), 0),
    "b": (768, 12, 12, 448, "split", ("swiglu-norm", 2048), 1000),
    "l": (1024, 24, 16, 448, "split", ("swiglu-norm", 2730), 1000),
    "g": (1408, 40, 16, 560, "fused", ("gelu", 6144), 1000),
}
PATCH, ENCODER_DIM, EMBED_DIM = 14, 512, 1024


def uni3d_layout(size: str) -> dict[str, tuple[int, ...]]:
    """Every key of Uni3D's ``model.pt`` (``["module"]``, ``module.`` stripped) with its shape."""
    w, depth, _, image, qkv, (mlp, hidden), classes = PUBLISHED[size]
    out: dict[str, tuple[int, ...]] = {"logit_scale": ()}
    pe = "point_encoder."
    for conv, (cin, mid, cout) in (("first_conv", (6, 128, 256)), ("second_conv", (512, 512, ENCODER_DIM))):
        out |= {f"{pe}encoder.{conv}.0.weight": (mid, cin, 1), f"{pe}encoder.{conv}.0.bias": (mid,),
                f"{pe}encoder.{conv}.3.weight": (cout, mid, 1), f"{pe}encoder.{conv}.3.bias": (cout,),
                f"{pe}encoder.{conv}.1.num_batches_tracked": ()}
        out |= {f"{pe}encoder.{conv}.1.{p}": (mid,) for p in ("weight", "bias", "running_mean", "running_var")}
    out |= {f"{pe}encoder2trans.weight": (w, ENCODER_DIM), f"{pe}encoder2trans.bias": (w,),
            f"{pe}trans2embed.weight": (EMBED_DIM, w), f"{pe}trans2embed.bias": (EMBED_DIM,),
            f"{pe}cls_token": (1, 1, w), f"{pe}cls_pos": (1, 1, w),
            f"{pe}pos_embed.0.weight": (128, 3), f"{pe}pos_embed.0.bias": (128,),
            f"{pe}pos_embed.2.weight": (w, 128), f"{pe}pos_embed.2.bias": (w,)}
    v = pe + "visual."
    out |= {f"{v}cls_token": (1, 1, w), f"{v}pos_embed": (1, (image // PATCH) ** 2 + 1, w),
            f"{v}patch_embed.proj.weight": (w, 3, PATCH, PATCH), f"{v}patch_embed.proj.bias": (w,),
            f"{v}fc_norm.weight": (w,), f"{v}fc_norm.bias": (w,)}
    if classes:
        out |= {f"{v}head.weight": (classes, w), f"{v}head.bias": (classes,)}
    for i in range(depth):
        b = f"{v}blocks.{i}."
        out |= {f"{b}{n}.{p}": (w,) for n in ("norm1", "norm2") for p in ("weight", "bias")}
        out |= {f"{b}attn.proj.weight": (w, w), f"{b}attn.proj.bias": (w,)}
        if qkv == "fused":
            out |= {f"{b}attn.qkv.weight": (3 * w, w), f"{b}attn.q_bias": (w,), f"{b}attn.v_bias": (w,)}
        else:
            out |= {f"{b}attn.{n}_proj.weight": (w, w) for n in "qkv"}
            out |= {f"{b}attn.q_proj.bias": (w,), f"{b}attn.v_proj.bias": (w,)}
        if mlp == "packed-swiglu":
            out |= {f"{b}mlp.fc1.weight": (2 * hidden, w), f"{b}mlp.fc1.bias": (2 * hidden,)}
        elif mlp == "swiglu-norm":
            out |= {f"{b}mlp.fc1_{g}.{p}": (hidden, w) if p == "weight" else (hidden,)
                    for g in "gx" for p in ("weight", "bias")}
            out |= {f"{b}mlp.norm.weight": (hidden,), f"{b}mlp.norm.bias": (hidden,)}
        else:
            out |= {f"{b}mlp.fc1.weight": (hidden, w), f"{b}mlp.fc1.bias": (hidden,)}
        out |= {f"{b}mlp.fc2.weight": (w, hidden), f"{b}mlp.fc2.bias": (w,)}
    return out


def random_state(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values in ``layout``: small weights, unit-ish norms, positive BatchNorm variances."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif key == "logit_scale":
            state[key] = torch.tensor(math.log(100.0))
        elif key.endswith("weight") and len(shape) == 1:  # LayerNorm / BatchNorm scales
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[key] = 0.05 * torch.randn(shape, generator=g)
    return state


def meta_encoder(size: str) -> Uni3DEncoder:
    with torch.device("meta"):
        return Uni3DEncoder(size)


def clouds(b: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, generator=g)
    return F.normalize(x, dim=-1) * (0.5 + 0.5 * torch.rand(b, n, 1, generator=g))


# ----------------------------------------------------------------- the reference: Uni3D's forward written out


def reference_fps(xyz: torch.Tensor, count: int) -> torch.Tensor:
    """Farthest point sampling from index 0 (pointnet2_ops' CUDA kernel): ``[B, count]`` indices."""
    b, n, _ = xyz.shape
    chosen = torch.zeros(b, count, dtype=torch.long)
    nearest = torch.full((b, n), float("inf"))
    last = torch.zeros(b, dtype=torch.long)
    for i in range(1, count):
        d = ((xyz - xyz[torch.arange(b), last].unsqueeze(1)) ** 2).sum(-1)
        nearest = torch.minimum(nearest, d)
        last = nearest.argmax(-1)
        chosen[:, i] = last
    return chosen


def reference_uni3d(state: dict[str, torch.Tensor], points: torch.Tensor, prompts: torch.Tensor | None,
                    groups: int, group_size: int, colour: float) -> torch.Tensor:
    """Uni3D's ``PointcloudEncoder.forward`` (with MRPD's prompts after CLS) on ``state``, step by step."""
    import timm

    visual = timm.create_model("eva02_tiny_patch14_224", pretrained=False)
    prefix = "point_encoder.visual."
    visual.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    visual.eval()
    s = {k.removeprefix("point_encoder."): v for k, v in state.items()}
    b = points.shape[0]
    # Group: FPS centres, kNN by squared distance (top-k smallest), neighbourhoods relative to the centre
    centre = points[torch.arange(b).unsqueeze(1), reference_fps(points, groups)]  # [B, G, 3]
    sq = (centre ** 2).sum(-1, keepdim=True) + (points ** 2).sum(-1).unsqueeze(1) - 2 * centre @ points.transpose(1, 2)
    idx = sq.topk(group_size, dim=-1, largest=False).indices  # [B, G, K]
    neighbourhood = points[torch.arange(b).view(b, 1, 1), idx] - centre.unsqueeze(2)
    features = torch.cat([neighbourhood, torch.full_like(neighbourhood, colour)], dim=-1)
    # Encoder: Conv1d / BatchNorm1d (eval) / ReLU / Conv1d, max, concat, again
    x = features.reshape(b * groups, group_size, 6).transpose(1, 2)

    def conv_block(x: torch.Tensor, name: str) -> torch.Tensor:
        x = F.conv1d(x, s[f"encoder.{name}.0.weight"], s[f"encoder.{name}.0.bias"])
        x = F.batch_norm(x, s[f"encoder.{name}.1.running_mean"], s[f"encoder.{name}.1.running_var"],
                         s[f"encoder.{name}.1.weight"], s[f"encoder.{name}.1.bias"], eps=1e-5)
        return F.conv1d(F.relu(x), s[f"encoder.{name}.3.weight"], s[f"encoder.{name}.3.bias"])

    x = conv_block(x, "first_conv")
    x = torch.cat([x.max(dim=2, keepdim=True).values.expand(-1, -1, group_size), x], dim=1)
    tokens = conv_block(x, "second_conv").max(dim=2).values.reshape(b, groups, -1)
    tokens = F.linear(tokens, s["encoder2trans.weight"], s["encoder2trans.bias"])
    pos = F.linear(F.gelu(F.linear(centre, s["pos_embed.0.weight"], s["pos_embed.0.bias"])),
                   s["pos_embed.2.weight"], s["pos_embed.2.bias"])
    cls, cls_pos = s["cls_token"].expand(b, -1, -1), s["cls_pos"].expand(b, -1, -1)
    if prompts is None:
        x, pos = torch.cat([cls, tokens], 1), torch.cat([cls_pos, pos], 1)
    else:
        prompts = prompts.expand(b, -1, -1)
        x, pos = torch.cat([cls, prompts, tokens], 1), torch.cat([cls_pos, torch.zeros_like(prompts), pos], 1)
    x = x + pos
    for block in visual.blocks:
        x = block(x)
    x = visual.fc_norm(visual.norm(x[:, 0, :]))
    return F.linear(x, s["trans2embed.weight"], s["trans2embed.bias"])


@pytest.fixture(scope="module")
def ti_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """Uni3D-Ti random weights saved as Uni3D saves them: ``{"module": {"module.<key>": tensor}, ...}``."""
    state = random_state(uni3d_layout("ti"))
    path = tmp_path_factory.mktemp("uni3d") / "model.pt"
    torch.save({"module": {f"module.{k}": v for k, v in state.items()}, "epoch": 10, "best_acc1": 53.5}, path)
    return path, state


# ----------------------------------------------------------------- layout


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_each_size_has_exactly_uni3ds_checkpoint_layout(size):
    encoder = meta_encoder(size)
    assert {k: tuple(v.shape) for k, v in encoder.state_dict().items()} == uni3d_layout(size)
    spec = UNI3D_SIZES[size]
    assert (encoder.width, encoder.depth, encoder.num_heads) == (spec.width, spec.depth, spec.num_heads)
    assert (encoder.width, encoder.depth, encoder.num_heads) == PUBLISHED[size][:3]


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_a_file_in_uni3ds_layout_passes_the_strict_check_and_one_wrong_key_does_not(size):
    encoder = meta_encoder(size)
    layout = {k: torch.empty(shape, device="meta") for k, shape in uni3d_layout(size).items()}
    check_state_dict(encoder, layout, what="weights", source="file", describe=encoder.describe())
    key = "point_encoder.visual.blocks.3.norm1.weight"
    renamed = {("point_encoder.visual.blocks.3.ln1.weight" if k == key else k): v for k, v in layout.items()}
    with pytest.raises(ValueError, match=r"missing in the file \(1\): point_encoder\.visual\.blocks\.3\.norm1"
                                         r"\.weight[\s\S]*unexpected in the file \(1\): .*blocks\.3\.ln1\.weight"):
        check_state_dict(encoder, renamed, what="weights", source="file", describe=encoder.describe())


def test_a_wrong_shape_names_the_key_both_shapes_and_the_expected_layout():
    encoder = meta_encoder("b")
    layout = {k: torch.empty(shape, device="meta") for k, shape in uni3d_layout("b").items()}
    layout["point_encoder.visual.blocks.0.mlp.fc2.weight"] = torch.empty(768, 1024, device="meta")
    with pytest.raises(ValueError) as err:
        check_state_dict(encoder, layout, what="Uni3D-B weights", source="model.pt", describe=encoder.describe())
    message = str(err.value)
    assert "point_encoder.visual.blocks.0.mlp.fc2.weight: file [768, 1024] vs model [768, 2048]" in message
    assert "expected layout: Uni3D-B" in message and "eva02_base_patch14_448" in message


# ----------------------------------------------------------------- loading Uni3D-Ti for real


def test_uni3d_ti_loads_uni3ds_file_strictly_and_equals_uni3ds_forward(ti_checkpoint):
    path, state = ti_checkpoint
    model = MODELS.build("uni3d-ti", pretrained=str(path), num_classes=4).eval()
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, state[key].to(value.dtype)), key
    points = clouds(1, 1024)
    with torch.no_grad():
        ours = model.embed(points)
        reference = reference_uni3d(state, points, None, groups=512, group_size=64, colour=0.4)
    assert ours.shape == (1, EMBED_DIM)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("colour", [0.4, 0.5])
@pytest.mark.parametrize("num_prompts", [0, 10])
def test_prompts_after_cls_equal_mrpds_prompted_uni3d(ti_checkpoint, colour, num_prompts):
    path, state = ti_checkpoint
    model = MODELS.build("uni3d-ti", pretrained=str(path), num_classes=4, num_groups=64, group_size=32,
                         colour=colour).eval()
    points = clouds(2, 256, seed=1)
    prompts = torch.randn(1, num_prompts, 192, generator=torch.Generator().manual_seed(3)) if num_prompts else None
    with torch.no_grad():
        ours = model.embed(points, None if prompts is None else prompts[0])
        reference = reference_uni3d(state, points, prompts, groups=64, group_size=32, colour=colour)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)


def test_a_safetensors_file_of_the_same_state_dict_loads_too(ti_checkpoint, tmp_path):
    from safetensors.torch import save_file

    path, state = ti_checkpoint
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    encoder = load_uni3d_weights(Uni3DEncoder("ti"), tmp_path / "model.safetensors")
    assert torch.equal(encoder.point_encoder.cls_pos, state["point_encoder.cls_pos"])


def test_a_ti_file_given_to_another_size_says_which_model_fits(ti_checkpoint):
    path, _ = ti_checkpoint
    with pytest.raises(ValueError, match=r"192 wide, Uni3D-S is 384: use model 'uni3d-ti'"):
        load_uni3d_weights(meta_encoder("s"), path)


def test_another_embedding_size_is_explained(ti_checkpoint):
    path, _ = ti_checkpoint
    with pytest.raises(ValueError, match=r"trans2embed\.weight: file \[1024, 192\] vs model \[256, 192\]"
                                         r"[\s\S]*embed_dim=1024.*EVA02-E-14-plus"):
        MODELS.build("uni3d-ti", pretrained=str(path), num_classes=4, embed_dim=256)


def test_a_missing_file_names_the_set_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--set models\.uni3d-b\.pretrained=/path/to/model\.pt"):
        MODELS.build("uni3d-b", pretrained=str(tmp_path / "nope.pt"), num_classes=4)


def test_a_file_without_point_encoder_keys_is_not_a_uni3d_checkpoint(tmp_path):
    torch.save({"state_dict": {"blocks.0.weight": torch.zeros(3)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a Uni3D checkpoint"):
        load_uni3d_weights(meta_encoder("ti"), tmp_path / "other.pt")


# ----------------------------------------------------------------- the PointTransformer interface


def tiny_ti(**overrides) -> Uni3DEncoder:
    torch.manual_seed(0)
    return Uni3DEncoder("ti", **{"num_groups": 16, "group_size": 8, **overrides}).eval()


def test_prompt_tokens_sit_right_after_cls_unchanged():
    encoder, points = tiny_ti(), clouds(2, 64)
    prompts = torch.randn(2, 5, 192)
    with torch.no_grad():
        plain, prompted = encoder.tokens(points), encoder.tokens(points, prompts)
    assert prompted.shape == (2, 1 + 5 + 16, 192)
    assert torch.equal(prompted[:, 1:6], prompts)
    assert torch.equal(torch.cat([prompted[:, :1], prompted[:, 6:]], 1), plain)


def test_zero_prompts_are_the_plain_encoder():
    encoder, points = tiny_ti(), clouds(2, 64)
    with torch.no_grad():
        assert torch.equal(encoder.encode(points, torch.zeros(0, 192)), encoder.encode(points))


def test_gradients_reach_points_and_prompts():
    encoder = tiny_ti().requires_grad_(False)
    points = clouds(2, 64).requires_grad_(True)
    prompts = torch.randn(3, 192, requires_grad=True)
    encoder.encode(points, prompts).square().sum().backward()
    assert points.grad.abs().sum() > 0 and prompts.grad.abs().sum() > 0


def test_swap_yz_encodes_the_cloud_with_y_and_z_exchanged():
    points = clouds(2, 64)
    with torch.no_grad():
        swapped = tiny_ti(swap_yz=True).encode(points)
        by_hand = tiny_ti().encode(points[..., [0, 2, 1]])
    torch.testing.assert_close(swapped, by_hand)


def test_mrpd_point_prompts_wrap_a_uni3d_student():
    from defenses.prompting import PromptedClassifier, prompt_capable_models

    torch.manual_seed(0)
    victim = MODELS.build("uni3d-ti", num_classes=3, num_groups=16, group_size=8).eval()
    prompted = PromptedClassifier(victim, num_prompts=10)
    assert prompted(clouds(2, 64)).shape == (2, 3)
    assert prompted.prompts.shape == (10, 192)
    assert {"uni3d-ti", "uni3d-s", "uni3d-b", "uni3d-l", "uni3d-g"} <= set(prompt_capable_models())


def test_an_unknown_keyword_is_named_with_close_matches():
    with pytest.raises(UnknownNameError, match="no parameter 'num_group'; did you mean 'num_groups'"):
        MODELS.build("uni3d-ti", num_classes=3, num_group=16)


def test_points_fewer_than_the_groups_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"Uni3D-Ti needs N >= 16"):
        tiny_ti().encode(clouds(1, 10))


def test_a_pickle_weights_only_refuses_gets_the_conversion_recipe(tmp_path):
    import argparse

    torch.save({"module": {"logit_scale": torch.zeros(())}, "args": argparse.Namespace(pc_model="x")}, tmp_path / "ds.pt")
    with pytest.raises(ValueError, match=r"cannot read Uni3D-Ti weights[\s\S]*convert it once[\s\S]*model\.safetensors"):
        load_uni3d_weights(meta_encoder("ti"), tmp_path / "ds.pt")
