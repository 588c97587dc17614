"""The model zoo: every kind of model trains, is cached by config hash, reloads, and recovers
from corrupt weights. Tiny sizes and one epoch: seconds, not accuracy."""
from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from benchmark.core.config import TrainConfig
from benchmark.core.data import load_dataset
from benchmark.core.geometry import chamfer_distance
from models.heads import EmbeddingClassifier, TextEmbeddingHead
from models.zoo import Zoo, ZooContext

CLASSES = ["chair", "table", "cup", "lamp"]
TINY_CLIP = {"image_size": 32, "embed_dim": 32, "vision_width": 64, "vision_layers": 1, "patch_size": 8,
             "text_width": 64, "text_layers": 1, "text_heads": 2}
TINY_STUDENT = {"width": 32, "depth": 1, "num_heads": 2, "num_groups": 8, "group_size": 8,
                "encoder_hidden": (16, 32, 64)}


@pytest.fixture(scope="module")
def data():
    opts = {"train_size": 40, "test_size": 12, "classes": CLASSES}
    return {split: load_dataset("synthshapes", split, num_points=128, options=opts) for split in ("train", "test")}


def make_zoo(data, cache_dir, epochs: int = 1, **changes) -> Zoo:
    ctx = ZooContext(
        train=data["train"], test=data["test"], cache_dir=cache_dir, seed=0,
        params={"clip": dict(TINY_CLIP), "point-transformer-student": dict(TINY_STUDENT)},
        train_config=lambda name: TrainConfig(epochs=epochs, batch_size=8, val_fraction=0.25),
        progress=False, log=lambda msg: None,
    )
    return Zoo(dataclasses.replace(ctx, **changes))


def weight_files(cache_dir) -> list:
    return sorted((cache_dir / "weights").glob("*.safetensors"))


def test_a_classifier_is_trained_once_then_loaded_from_the_cache(data, tmp_path):
    first = make_zoo(data, tmp_path).get("pointnet-lite")
    assert not first.cached and 0.0 <= first.meta["test_accuracy"] <= 1.0
    assert first.model.class_names == tuple(CLASSES)
    again = make_zoo(data, tmp_path).get("pointnet-lite")
    assert again.cached and again.weights_hash == first.weights_hash
    x = torch.from_numpy(data["test"].points[:3])
    torch.testing.assert_close(again.model(x), first.model(x))


def test_the_metadata_keeps_the_validation_score_of_every_epoch(data, tmp_path):
    """Cached weights record how the recipe's epochs moved the validation score (the evidence for
    or against a cheaper recipe): one value per epoch, the kept epoch's being the best."""
    zoo = make_zoo(data, tmp_path, epochs=3)
    for name, best in (("pointnet-lite", "val_accuracy"), ("clip", "val_zero_shot")):
        meta = zoo.get(name).meta
        assert len(meta["val_by_epoch"]) == 3, name
        assert meta["val_by_epoch"][meta["best_epoch"]] == pytest.approx(meta[best], abs=1e-6), name
        assert max(meta["val_by_epoch"]) == pytest.approx(meta[best], abs=1e-6), name
    assert meta["threads"] == torch.get_num_threads()  # provenance: rounding depends on it
    no_split = make_zoo(data, tmp_path / "no-split", train_config=lambda name: TrainConfig(epochs=1, batch_size=8, val_fraction=0.0))
    assert no_split.get("pointnet-lite").meta["val_by_epoch"] is None


def test_changed_training_settings_train_a_new_entry(data, tmp_path):
    make_zoo(data, tmp_path, epochs=1).get("pointnet-lite")
    make_zoo(data, tmp_path, epochs=2).get("pointnet-lite")
    assert len(weight_files(tmp_path)) == 2


def test_force_retrains_even_when_cached(data, tmp_path):
    make_zoo(data, tmp_path).get("pointnet-lite")
    assert not make_zoo(data, tmp_path, force=True).get("pointnet-lite").cached


def test_corrupt_weights_warn_and_are_retrained(data, tmp_path):
    make_zoo(data, tmp_path).get("pointnet-lite")
    (path,) = weight_files(tmp_path)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.warns(RuntimeWarning, match="checksum"):
        again = make_zoo(data, tmp_path).get("pointnet-lite")
    assert not again.cached
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: the next run loads quietly
        assert make_zoo(data, tmp_path).get("pointnet-lite").cached


def test_the_student_is_aligned_to_the_clip_space_and_classifies_through_text(data, tmp_path):
    zoo = make_zoo(data, tmp_path)
    student = zoo.get("point-transformer-student")
    assert isinstance(student.model, EmbeddingClassifier)
    assert isinstance(student.model.head, TextEmbeddingHead)
    assert student.model.head.class_embeddings.shape == (len(CLASSES), TINY_CLIP["embed_dim"])
    assert "test_accuracy" in student.meta
    assert not zoo.get("clip").cached and "test_zero_shot_accuracy" in zoo.get("clip").meta
    logits = student.model(torch.from_numpy(data["test"].points[:2]))
    assert logits.shape == (2, len(CLASSES))


def test_a_different_clip_teacher_gives_the_student_a_new_cache_entry(data, tmp_path):
    make_zoo(data, tmp_path).get("point-transformer-student")
    other = make_zoo(data, tmp_path)
    other.ctx.params["clip"] = {**TINY_CLIP, "seed": 1}
    assert not other.get("point-transformer-student").cached


def test_the_autoencoder_reconstructs_the_cloud_size(data, tmp_path):
    """Trained long enough to learn (about 2 s), the autoencoder reconstructs unseen test clouds far
    better than clouds that ignore the input: a random cloud, the best fixed training cloud, or its
    own reconstruction of another test cloud."""
    cfg = TrainConfig(epochs=20, lr=3e-3, batch_size=8, val_fraction=0.25)
    ae = make_zoo(data, tmp_path, train_config=lambda name: cfg).get("pc-autoencoder")
    x = torch.from_numpy(data["test"].points)
    with torch.no_grad():
        out = ae.model(x)
        assert out.shape == x.shape == (12, 128, 3)
        own = float(chamfer_distance(out, x, mode="both").mean())
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        noise = noise / noise.norm(dim=-1).amax(dim=1)[:, None, None]  # unit-sphere scale, as the data
        random_cloud = float(chamfer_distance(noise, x, mode="both").mean())
        train = torch.from_numpy(data["train"].points)
        best_fixed = min(float(chamfer_distance(c.expand_as(x), x, mode="both").mean()) for c in train[:, None])
        other = torch.roll(torch.arange(len(x)), 1)  # each cloud vs the reconstruction of the next one
        swapped = float(chamfer_distance(out[other], x, mode="both").mean())
    assert ae.meta["test_chamfer"] == pytest.approx(own, rel=1e-4)  # meta: mean test Chamfer, eval mode
    assert own < 0.6 * random_cloud, (own, random_cloud)
    assert own < 0.6 * best_fixed, (own, best_fixed)
    assert own < 0.6 * swapped, (own, swapped)  # the reconstruction depends on the input


def test_a_clip_checkpoint_that_does_not_exist_is_a_clear_error(data, tmp_path):
    zoo = make_zoo(data, tmp_path)
    zoo.ctx.params["clip"] = {"model_name": "ViT-B-32", "checkpoint": str(tmp_path / "missing.safetensors")}
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        zoo.get("clip")


@pytest.mark.parametrize("name, params", [
    ("pointnet", {}),
    ("dgcnn-small", {"k": 8}),
    ("pointnet2-ssg", {}),
    ("point-transformer-teacher", TINY_STUDENT),
])
def test_every_victim_family_trains_through_the_zoo(data, tmp_path, name, params):
    zoo = make_zoo(data, tmp_path)
    zoo.ctx.params[name] = dict(params)
    ready = zoo.get(name)
    assert 0.0 <= ready.meta["test_accuracy"] <= 1.0
    logits = ready.model(torch.from_numpy(data["test"].points[:2]))
    assert logits.shape == (2, len(CLASSES)) and torch.isfinite(logits).all()


def source_reader(data):
    """A ``ZooContext.source`` over SynthShapes that records what it was asked for."""
    asked = []

    def read(overrides):
        asked.append(dict(overrides))
        opts = {"train_size": 40, "test_size": 12, "classes": CLASSES, **overrides}
        return load_dataset("synthshapes", "train", num_points=128, seed=opts.pop("seed", 0), options=opts)

    read.asked = asked
    return read


def test_a_model_with_a_source_trains_on_it_and_never_sees_the_run_split(data, tmp_path):
    reader = source_reader(data)
    source = {"seed": 3, "jitter": 0.01}
    plain = make_zoo(data, tmp_path)
    sourced = make_zoo(data, tmp_path, source=reader,
                       train_config=lambda name: TrainConfig(epochs=1, batch_size=8, val_fraction=0.25,
                                                             source=source if name == "pointnet-lite" else None))
    assert sourced.training_data("clip") is data["train"]
    trained_on = sourced.training_data("pointnet-lite")
    assert trained_on.fingerprint != data["train"].fingerprint and reader.asked == [source]
    model = sourced.get("pointnet-lite")
    assert model.meta["trained_on"] == trained_on.fingerprint
    assert 0.0 <= model.meta["test_accuracy"] <= 1.0  # scored on the run's test split
    assert plain.get("pointnet-lite").weights_hash != model.weights_hash  # its own cache entry


def test_a_source_for_another_dataset_is_not_applied_and_naming_this_one_keeps_the_key(data, tmp_path):
    reader = source_reader(data)

    def zoo_with(source):
        return make_zoo(data, tmp_path, source=reader, train_config=lambda name: TrainConfig(
            epochs=1, batch_size=8, val_fraction=0.25, source=source))

    model = zoo_with(None)._build("pointnet-lite")
    elsewhere = zoo_with({"dataset": "modelnet40", "train_size": 4096})
    assert elsewhere.training_data("pointnet-lite") is data["train"] and reader.asked == []
    assert elsewhere._key("pointnet-lite", model) == zoo_with(None)._key("pointnet-lite", model)
    here, bare = zoo_with({"dataset": data["train"].name, "seed": 3}), zoo_with({"seed": 3})
    assert here.training_data("pointnet-lite").fingerprint == bare.training_data("pointnet-lite").fingerprint
    assert reader.asked == [{"seed": 3}, {"seed": 3}]  # the reader never sees "dataset"
    assert here._key("pointnet-lite", model) == bare._key("pointnet-lite", model)


def test_a_source_without_a_reader_or_with_other_classes_is_a_clear_error(data, tmp_path):
    config = lambda name: TrainConfig(epochs=1, batch_size=8, source={"seed": 3})  # noqa: E731
    with pytest.raises(ValueError, match="ZooContext.source"):
        make_zoo(data, tmp_path, train_config=config).get("pointnet-lite")

    def other_classes(overrides):
        opts = {"train_size": 40, "classes": ["chair", "table", "cup", "bowl"]}
        return load_dataset("synthshapes", "train", num_points=128, options=opts)

    with pytest.raises(ValueError, match="same classes"):
        make_zoo(data, tmp_path, train_config=config, source=other_classes).get("pointnet-lite")


def test_options_added_later_leave_existing_cache_keys_alone(data, tmp_path):
    zoo = make_zoo(data, tmp_path)
    model = zoo._build("pointnet-lite")
    before = zoo._key("pointnet-lite", model)
    explicit = make_zoo(data, tmp_path, train_config=lambda name: TrainConfig(
        epochs=1, batch_size=8, val_fraction=0.25, point_dropout=0.0, outliers=0.0, image_alignment=1.0, source=None))
    assert explicit._key("pointnet-lite", model) == before
    changed = make_zoo(data, tmp_path, train_config=lambda name: TrainConfig(
        epochs=1, batch_size=8, val_fraction=0.25, point_dropout=0.2))
    assert changed._key("pointnet-lite", model) != before


def test_a_point_encoder_without_image_alignment_never_encodes_images(data, tmp_path, monkeypatch):
    zoo = make_zoo(data, tmp_path, train_config=lambda name: TrainConfig(
        epochs=1, batch_size=8, val_fraction=0.25, image_alignment=0.0 if name != "clip" else 1.0))
    clip = zoo.get("clip").model
    monkeypatch.setattr(clip, "encode_image", lambda *a, **k: pytest.fail("image alignment is off"))
    student = zoo.get("point-transformer-student")
    assert not student.cached and student.model(torch.from_numpy(data["test"].points[:2])).shape == (2, len(CLASSES))


def test_a_pretrained_uni3d_encoder_is_loaded_as_is_with_a_zero_shot_head_not_trained(data, tmp_path):
    from benchmark.core.registry import MODELS

    zoo = make_zoo(data, tmp_path)
    clip = zoo.get("clip")
    sizes = {"embed_dim": clip.model.embed_dim, "num_groups": 16, "group_size": 8}
    source = MODELS.build("uni3d-ti", num_classes=len(CLASSES), **sizes)
    path = tmp_path / "model.pt"  # Uni3D's layout: the encoder's state under "module", keys prefixed "module."
    torch.save({"module": {f"module.{k}": v for k, v in source.encoder.state_dict().items()}}, path)
    before = weight_files(tmp_path)  # the CLIP's
    zoo = make_zoo(data, tmp_path, params={"clip": dict(TINY_CLIP), "uni3d-ti": {"pretrained": str(path), **sizes}})
    got = zoo.get("uni3d-ti")
    assert got.cached and got.meta["pretrained"] == str(path) and weight_files(tmp_path) == before
    for name, value in source.encoder.state_dict().items():  # the file's weights, not fine-tuned
        assert torch.equal(got.model.encoder.state_dict()[name].cpu(), value)
    x = torch.from_numpy(data["test"].points[:4])
    text = torch.nn.functional.normalize(got.model.head.class_embeddings, dim=-1)
    assert got.model(x).argmax(-1).tolist() == (got.model.embed(x) @ text.T).argmax(-1).tolist()
    assert got.weights_hash not in (clip.weights_hash, "")
