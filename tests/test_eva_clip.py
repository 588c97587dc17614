"""EVA-CLIP teachers (the paper's EVA02-E-14-plus family) load from a local file, offline, unchanged.

A tiny EVA-based open_clip architecture (timm's ``eva02_tiny_patch14_224`` image trunk, a
two-layer text tower; EVA02-B-16's config shape) gets random weights saved to a file; the
``clip`` model builder loads it with networking disabled and must embed images and text as
open_clip's own model does with the same weights.
"""
from __future__ import annotations

import json
import socket

import pytest
import torch

import models  # noqa: F401  (registers the models)
from benchmark.core.registry import MODELS
from models.clip import ClipTeacher, PromptedTextEncoder

NAME = "EVA02-Tiny-pcrb-test"
CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "timm_model_name": "eva02_tiny_patch14_224", "timm_model_pretrained": False,
                   "timm_pool": "token", "timm_proj": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    "custom_text": True,
}


def _no_network(*args, **kwargs):
    raise OSError("networking is disabled in this test")


@pytest.fixture(scope="module")
def eva_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """``(name, path of a .bin, path of a .safetensors, open_clip's own model with those weights)``,
    with the tiny EVA config registered in open_clip only for this module and no network."""
    import open_clip
    from open_clip import factory
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("eva_clip")
    (folder / f"{NAME}.json").write_text(json.dumps(CONFIG))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(factory, "_MODEL_CONFIG_PATHS", list(factory._MODEL_CONFIG_PATHS))  # restored afterwards
        mp.setattr(factory, "_MODEL_CONFIGS", dict(factory._MODEL_CONFIGS))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", _no_network)
        open_clip.add_model_config(folder / f"{NAME}.json")
        torch.manual_seed(0)
        reference = open_clip.create_model(NAME, pretrained=None).eval()
        g = torch.Generator().manual_seed(1)
        state = {k: (v + 0.02 * torch.randn(v.shape, generator=g)) if v.is_floating_point() else v
                 for k, v in reference.state_dict().items()}
        reference.load_state_dict(state)
        torch.save(state, folder / "open_clip_pytorch_model.bin")
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))
        yield folder / "open_clip_pytorch_model.bin", folder / "open_clip_model.safetensors", reference


def images(b: int = 2) -> torch.Tensor:
    return torch.rand(b, 3, 224, 224, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_an_eva_clip_checkpoint_loads_offline_and_embeds_as_open_clip_does(eva_checkpoint, fmt):
    import open_clip

    bin_path, st_path, reference = eva_checkpoint
    teacher = MODELS.build("clip", model_name=NAME, checkpoint=str(bin_path if fmt == "bin" else st_path))
    assert isinstance(teacher, ClipTeacher) and type(teacher.model).__name__ == "CustomTextCLIP"
    assert teacher.image_hw == (224, 224) and teacher.embed_dim == 64 and teacher.text_width == 64
    x = images()
    with torch.no_grad():
        ours = teacher.encode_image(x)
        theirs = reference.encode_image((x - teacher.image_mean) / teacher.image_std)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
        tokens = open_clip.get_tokenizer(NAME)(["A depth picture of chair.", "a lamp"])
        torch.testing.assert_close(teacher.encode_text(tokens), reference.encode_text(tokens), rtol=0, atol=0)


def test_coop_text_prompts_run_on_the_eva_clip_text_tower(eva_checkpoint):
    bin_path, _, _ = eva_checkpoint
    teacher = MODELS.build("clip", model_name=NAME, checkpoint=str(bin_path)).freeze()
    names = ["chair", "flower_pot"]
    plain = PromptedTextEncoder(teacher, names, n_ctx=0)
    with torch.no_grad():
        prompts = ["A depth picture of chair.", "A depth picture of flower pot."]
        expected = teacher.encode_text(teacher.tokenize(prompts))
        torch.testing.assert_close(plain(), expected)
    prompted = PromptedTextEncoder(teacher, names, n_ctx=3)
    prompted().sum().backward()
    assert prompted.ctx.grad is not None and prompted.ctx.grad.abs().sum() > 0


def test_a_checkpoint_missing_a_tensor_names_the_file_and_the_architecture(eva_checkpoint, tmp_path):
    bin_path, _, _ = eva_checkpoint
    state = torch.load(bin_path, weights_only=True)
    del state["visual.trunk.blocks.0.attn.q_bias"]
    torch.save(state, tmp_path / "broken.bin")
    with pytest.raises(ValueError, match=rf"broken\.bin' into architecture '{NAME}'[\s\S]*q_bias"):
        MODELS.build("clip", model_name=NAME, checkpoint=str(tmp_path / "broken.bin"))


def test_the_papers_eva02_e_14_plus_builds_offline_in_uni3ds_embedding_space(monkeypatch):
    """The paper's teacher: the 1024-d space Uni3D embeds into, 1280-wide text tokens (MRPD's ctx_dim)."""
    import open_clip

    monkeypatch.setattr(socket.socket, "connect", _no_network)
    with torch.device("meta"):
        model = open_clip.create_model("EVA02-E-14-plus", pretrained=None, load_weights=False, device="meta")
    assert model.text.text_projection.shape == (1280, 1024)
    assert model.visual.trunk.head.weight.shape == (1024, 1792)
    assert model.text.token_embedding.embedding_dim == 1280
