"""Specification of the prompt-capable point transformer and the embedding heads (tiny sizes, CPU)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmark.core.registry import MODELS
from models.heads import EmbeddingClassifier, LinearHead, TextEmbeddingHead
from models.point_transformer import PointTransformer

WIDTH, EMBED, GROUPS, GROUP_SIZE, N = 32, 16, 8, 8, 128
TINY = {
    "width": WIDTH, "depth": 2, "num_heads": 4, "num_groups": GROUPS, "group_size": GROUP_SIZE,
    "embed_dim": EMBED, "encoder_hidden": (16, 32, 64),
}


def clouds(b: int, n: int = N, seed: int = 0) -> torch.Tensor:
    """``[b, n, 3]`` float32 points on a jittered unit sphere."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, generator=g)
    return F.normalize(x, dim=-1) * (1 + 0.1 * torch.rand(b, n, 1, generator=g))


def encoder(seed: int = 0, **overrides) -> PointTransformer:
    torch.manual_seed(seed)
    return PointTransformer(**{**TINY, **overrides}).eval()


def text_embeddings(c: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(c, EMBED, generator=torch.Generator().manual_seed(seed))


def prompts(p: int = 3, batch: int | None = None, seed: int = 2) -> torch.Tensor:
    shape = (p, WIDTH) if batch is None else (batch, p, WIDTH)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------- shapes


def test_encode_maps_clouds_to_embed_dim_vectors():
    assert encoder().encode(clouds(3)).shape == (3, EMBED)


def test_cls_plus_max_pooling_also_maps_to_embed_dim():
    assert encoder(pool="cls+max").encode(clouds(2), prompts(2)).shape == (2, EMBED)


def test_classifier_with_linear_head_returns_logits():
    model = EmbeddingClassifier(encoder(), LinearHead(EMBED, 7)).eval()
    assert model(clouds(3)).shape == (3, 7)
    assert model.embed(clouds(3)).shape == (3, EMBED)
    assert model.num_classes == 7 and len(model.class_names) == 7


def test_classifier_with_text_head_returns_logits():
    names = ("chair", "table", "lamp", "cup", "bottle")
    model = EmbeddingClassifier(encoder(), TextEmbeddingHead(text_embeddings(5)), class_names=names).eval()
    assert model(clouds(3)).shape == (3, 5)
    assert model(clouds(3), prompts(4)).shape == (3, 5)
    assert model.class_names == names and model.num_classes == 5


# ----------------------------------------------------------------- prompts


def test_prompts_change_the_output():
    model, x = encoder(), clouds(2)
    with torch.no_grad():
        assert not torch.allclose(model.encode(x), model.encode(x, prompts(3)), atol=1e-4)


def test_no_prompts_and_zero_prompts_tokens_give_the_plain_encoder():
    model, x = encoder(), clouds(2)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x, torch.zeros(0, WIDTH)), model.encode(x))


def test_frozen_backbone_gets_no_gradient_while_prompts_do():
    model = EmbeddingClassifier(encoder(), TextEmbeddingHead(text_embeddings(5))).eval().requires_grad_(False)
    p = prompts(3).requires_grad_(True)
    loss = F.cross_entropy(model(clouds(4), p), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(param.grad is None for param in model.parameters())
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_shared_prompts_broadcast_like_batched_prompts():
    model, x, p = encoder(), clouds(3), prompts(4)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x, p), model.encode(x, p.expand(3, -1, -1)))


def test_prompts_enter_the_first_block_unchanged_after_cls():
    model, p = encoder(), prompts(3, batch=2)
    seen = {}
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0].detach()))
    with torch.no_grad():
        model.encode(clouds(2), p)
    x = seen["x"]
    assert x.shape == (2, 1 + 3 + GROUPS, WIDTH)
    torch.testing.assert_close(x[:, 1:4], p)  # zero positional embedding for prompts
    torch.testing.assert_close(x[:, 0], (model.cls_token + model.cls_pos)[0].expand(2, -1))


def test_prompts_of_the_wrong_width_are_rejected_with_the_expected_shape():
    with pytest.raises(ValueError, match=rf"\[P, {WIDTH}\]"):
        encoder().encode(clouds(2), torch.zeros(3, WIDTH + 1))


# ----------------------------------------------------------------- inputs and gradients


def test_input_gradient_reaches_the_points_and_is_finite():
    model = EmbeddingClassifier(encoder(), LinearHead(EMBED, 5)).eval()
    x = clouds(2).requires_grad_(True)
    F.cross_entropy(model(x), torch.tensor([1, 3])).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad.abs().sum(-1) > 0).float().mean() > 0.2  # many points, not only the centres


def test_too_few_points_is_an_error_that_names_the_need():
    with pytest.raises(ValueError, match=f"N >= {max(GROUPS, GROUP_SIZE)}"):
        encoder().encode(clouds(1, n=GROUPS - 1))


def test_eval_mode_is_deterministic():
    model, x = encoder(), clouds(3)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x, prompts(2)), model.encode(x, prompts(2)), rtol=0, atol=0)


def test_eval_mode_treats_each_sample_independently_of_its_batch():
    model, x = encoder(), clouds(4)
    with torch.no_grad():
        model.train()(x)  # move the BatchNorm running statistics away from their init
        model.eval()
        batched = model.encode(x, prompts(2))
        alone = model.encode(x[2:3], prompts(2))
    torch.testing.assert_close(alone[0], batched[2], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- text-embedding head


def test_text_head_logits_are_scale_times_cosine():
    t, z = text_embeddings(4), torch.randn(3, EMBED)
    head = TextEmbeddingHead(t, logit_scale=50.0)
    manual = torch.tensor([[50.0 * float(zi @ tc / (zi.norm() * tc.norm())) for tc in t] for zi in z])
    torch.testing.assert_close(head(z), manual, rtol=1e-5, atol=1e-4)
    assert float(head.logit_scale) == 50.0


def test_text_head_is_invariant_to_the_norm_of_the_embedding():
    head, z = TextEmbeddingHead(text_embeddings(4)), torch.randn(3, EMBED)
    torch.testing.assert_close(head(z), head(7.5 * z))


def test_text_head_buffers_are_normalised_fixed_and_replaceable():
    head = TextEmbeddingHead(3 * text_embeddings(4))
    assert not list(head.parameters())
    torch.testing.assert_close(head.class_embeddings.norm(dim=-1), torch.ones(4))
    head.set_class_embeddings(text_embeddings(6, seed=9))
    assert head.num_classes == 6 and head(torch.randn(2, EMBED)).shape == (2, 6)
    torch.testing.assert_close(head.class_embeddings, F.normalize(text_embeddings(6, seed=9), dim=-1))


def test_text_head_weights_round_trip_through_the_state_dict():
    built = MODELS.build("point-transformer-student", class_embeddings=text_embeddings(5, seed=3), embed_dim=EMBED)
    fresh = MODELS.build("point-transformer-student", num_classes=5, head="text", embed_dim=EMBED)
    fresh.load_state_dict(built.state_dict())
    x = clouds(2, n=64)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), built.eval()(x))


# ----------------------------------------------------------------- registered variants


def test_registered_student_builds_with_num_classes_as_a_linear_classifier():
    model = MODELS.build("point-transformer-student", num_classes=5).eval()
    assert isinstance(model, EmbeddingClassifier) and isinstance(model.head, LinearHead)
    assert model.encoder.width == 128
    with torch.no_grad():
        assert model(clouds(2, n=64)).shape == (2, 5)


def test_registered_student_builds_with_class_embeddings_as_a_zero_shot_classifier():
    t = text_embeddings(5)
    model = MODELS.build("point-transformer-student", class_embeddings=t, embed_dim=EMBED).eval()
    assert isinstance(model.head, TextEmbeddingHead) and model.num_classes == 5
    with torch.no_grad():
        logits = model(clouds(2, n=64), torch.zeros(10, model.encoder.width))
    assert logits.shape == (2, 5) and logits.abs().max() <= 100.0 + 1e-3


def test_registered_builder_without_classes_says_what_to_pass():
    with pytest.raises(ValueError, match="num_classes"):
        MODELS.build("point-transformer-student")


def test_all_four_variants_are_registered_with_descriptions():
    for name in ("point-transformer-student", "point-transformer-teacher",
                 "point-transformer-student-paper", "point-transformer-teacher-paper"):
        assert MODELS.get(name).description
