"""Specification of models/clip.py: the open_clip teacher wrapper, offline builders, CoOp prompts."""
from __future__ import annotations

import socket

import pytest
import torch

from benchmark.core.registry import MODELS, UnknownNameError
from models.clip import (
    ClipTeacher,
    MissingClipWeightsError,
    PromptedTextEncoder,
    build_clip,
    build_tiny_clip,
    encode_text_classes,
    load_clip_checkpoint,
    tiny_clip_config,
)

SIZES = {
    "image_size": 32, "embed_dim": 32, "vision_width": 64, "vision_layers": 2, "patch_size": 8,
    "text_width": 64, "text_layers": 2, "text_heads": 2, "context_length": 24,
}
CLASSES = ["chair", "night_stand", "airplane"]


@pytest.fixture(scope="module", autouse=True)
def offline():
    """Every test here runs with the Hub offline and sockets unable to connect."""

    def refuse(*args, **kwargs):
        raise RuntimeError(f"test_clip: network access attempted: {args!r}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield


@pytest.fixture(scope="module")
def tiny(offline) -> ClipTeacher:
    return build_tiny_clip(**SIZES)


@pytest.fixture(scope="module")
def frozen(offline) -> ClipTeacher:
    """The same tiny teacher, frozen as MRPD uses it (no parameter requires grad)."""
    return build_tiny_clip(**SIZES).freeze()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_tiny_clip_builds_offline_with_the_configured_sizes(tiny):
    assert (tiny.image_size, tiny.embed_dim, tiny.text_width, tiny.context_length) == (32, 32, 64, 24)
    assert tiny.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    tokens = tiny.tokenize(["a chair"])
    assert tokens.shape == (1, 24) and tokens.dtype == torch.int64
    assert tokens.max().item() == 49407  # EOT of open_clip's BPE vocabulary (49,408 ids)


def test_tiny_clip_is_reproducible_from_its_seed(tiny, images):
    again = build_tiny_clip(**SIZES)
    with torch.no_grad():
        assert torch.equal(again.encode_image(images), tiny.encode_image(images))


def test_encode_image_normalises_unit_range_images_with_the_model_mean_std(tiny, images):
    with torch.no_grad():
        out = tiny.encode_image(images)
        mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
        std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
        expected = tiny.model.encode_image((images - mean) / std)
    assert out.shape == (4, 32)
    torch.testing.assert_close(out, expected)


def test_encode_image_rejects_images_of_the_wrong_size(tiny):
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        tiny.encode_image(torch.rand(2, 3, 16, 16))


def test_encode_text_maps_tokens_to_embeddings(tiny):
    with torch.no_grad():
        out = tiny.encode_text(tiny.tokenize(["a chair", "a lamp", "a cup"]))
    assert out.shape == (3, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("suffix", ["safetensors", "pt"])
def test_local_checkpoint_reloads_through_the_registered_builder(tiny, images, tmp_path, suffix):
    state = tiny.model.state_dict()
    path = tmp_path / f"open_clip_model.{suffix}"
    if suffix == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    reloaded = MODELS.build("clip", model_name="tiny", checkpoint=str(path), seed=1, **SIZES)
    tokens = tiny.tokenize(CLASSES)
    with torch.no_grad():
        assert not torch.equal(build_tiny_clip(seed=1, **SIZES).encode_image(images), tiny.encode_image(images))
        assert torch.equal(reloaded.encode_image(images), tiny.encode_image(images))
        assert torch.equal(reloaded.encode_text(tokens), tiny.encode_text(tokens))


def test_named_architecture_loads_a_local_checkpoint(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    source = open_clip.create_model("ViT-S-32-alt", pretrained=None, load_weights=False)
    path = tmp_path / "vit-s-32-alt.safetensors"
    save_file(source.state_dict(), str(path))
    teacher = build_clip("ViT-S-32-alt", path)
    tokens = teacher.tokenize(["A depth picture of chair."])
    assert teacher.image_size == 224 and teacher.context_length == 77
    with torch.no_grad():
        assert torch.equal(teacher.encode_text(tokens), source.encode_text(tokens))


def test_named_architecture_without_checkpoint_is_a_clear_error():
    message = (
        "CLIP weights for 'ViT-B-32' must be a local file: pass "
        "clip_checkpoint=/path/to/open_clip_model.safetensors; PCRB never downloads"
    )
    with pytest.raises(MissingClipWeightsError) as err:
        MODELS.build("clip", model_name="ViT-B-32")
    assert str(err.value) == message


def test_missing_checkpoint_file_is_named_in_the_error(tmp_path):
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors.*does not exist"):
        build_clip("ViT-B-32", missing)
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        MODELS.build("clip", model_name="tiny", checkpoint=str(missing), **SIZES)


def test_unknown_architecture_lists_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean.*'ViT-B-32'"):
        build_clip("ViT-B-23", "weights.safetensors")


def test_architectures_needing_hugging_face_files_are_refused_before_building(tmp_path):
    with pytest.raises(NotImplementedError, match="never downloads"):
        build_clip("ViT-B-16-SigLIP", tmp_path / "w.safetensors")


def test_unknown_tiny_size_is_an_error_naming_the_known_ones():
    with pytest.raises(UnknownNameError, match="did you mean 'vision_width'"):
        MODELS.build("clip", vision_widht=32)


def test_prompt_encoder_without_context_equals_plain_encode_text(frozen):
    enc = PromptedTextEncoder(frozen, CLASSES, n_ctx=0)
    plain = frozen.tokenize([f"A depth picture of {c.replace('_', ' ')}." for c in CLASSES])
    assert torch.equal(enc(), frozen.encode_text(plain))


def test_prompt_encoder_equals_encode_text_on_a_custom_text_clip():
    """CustomTextCLIP (EVA02-E-14-plus's class) keeps its text tower under .text."""
    import open_clip

    model = open_clip.CustomTextCLIP(**tiny_clip_config(**SIZES))
    teacher = ClipTeacher(model, open_clip.SimpleTokenizer(context_length=24)).freeze()
    enc = PromptedTextEncoder(teacher, CLASSES, n_ctx=0)
    plain = teacher.tokenize([f"A depth picture of {c.replace('_', ' ')}." for c in CLASSES])
    assert torch.equal(enc(), teacher.encode_text(plain))


def test_only_context_is_trainable_and_clip_gets_no_gradient(tiny):
    enc = PromptedTextEncoder(tiny, CLASSES, n_ctx=3)
    assert list(enc.parameters()) == [enc.ctx] and list(enc.state_dict()) == ["ctx"]
    assert enc.ctx.shape == (3, 64)
    assert all(p.requires_grad for p in tiny.parameters())  # trainable elsewhere, still untouched here
    out = enc()
    assert out.shape == (3, 32)
    out.pow(2).sum().backward()
    assert enc.ctx.grad is not None and enc.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.parameters())


def test_output_follows_the_context_vectors(tiny):
    enc = PromptedTextEncoder(tiny, CLASSES, n_ctx=3)
    with torch.no_grad():
        before = enc()
        enc.ctx.add_(0.5)
        after = enc()
    assert not torch.allclose(before, after)


def test_context_initialisation_is_seeded_with_the_given_std(tiny):
    a = PromptedTextEncoder(tiny, CLASSES, n_ctx=12, ctx_std=0.05, seed=3)
    b = PromptedTextEncoder(tiny, CLASSES, n_ctx=12, ctx_std=0.05, seed=3)
    assert torch.equal(a.ctx, b.ctx)
    assert a.ctx.std().item() == pytest.approx(0.05, rel=0.15)


def test_class_name_underscores_become_spaces_after_the_context_tokens(tiny):
    enc = PromptedTextEncoder(tiny, CLASSES, n_ctx=3)
    assert enc.prompts[1] == "X X X A depth picture of night stand."
    assert torch.equal(enc.tokens[1], tiny.tokenize("X X X A depth picture of night stand.")[0])


def test_prompt_longer_than_the_context_length_is_an_error(tiny):
    with pytest.raises(ValueError, match="night stand.*24 tokens"):
        PromptedTextEncoder(tiny, CLASSES, n_ctx=16)


def test_zero_shot_head_averages_normalised_template_embeddings(tiny):
    templates = ("A depth picture of {}.", "A depth map of a {}.")
    with torch.no_grad():
        head = encode_text_classes(tiny, CLASSES, templates)
        single = encode_text_classes(tiny, CLASSES, templates[:1])
        plain = tiny.encode_text(tiny.tokenize([f"A depth picture of {c.replace('_', ' ')}." for c in CLASSES]))
    assert head.shape == (3, 32)
    torch.testing.assert_close(head.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(single, torch.nn.functional.normalize(plain, dim=-1))


def test_load_clip_checkpoint_rejects_a_mismatched_file(tiny, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file(build_tiny_clip(**{**SIZES, "embed_dim": 16}).model.state_dict(), str(path))
    with pytest.raises(ValueError, match="other.safetensors.*'tiny'"):
        load_clip_checkpoint(build_tiny_clip(**SIZES), path)
