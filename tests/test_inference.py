"""The Python API: ``visionkit.load(checkpoint).predict(...)`` on every kind of picture, typed
results in each original image's pixels with the dataset's ids, preprocessing read from the
checkpoint alone, and the README's "Use from Python" examples (tiny in-process models)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision.transforms.v2 import functional as TF

import visionkit
from tests import deploy_models as dm
from tests.conftest import readme_blocks
from visionkit.errors import ConfigError

SIZES = {"a.png": (50, 30), "sub/b.jpg": (33, 61), "c.png": (64, 64)}  # (width, height)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return {task: dm.save(dm.build(task), root / f"{task}.ckpt") for task in dm.MODELS}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return dm.pictures(tmp_path_factory.mktemp("pics"), SIZES)


def oracle_input(path: Path, size: int) -> torch.Tensor:
    """The training-time eval preprocessing written out: resize (antialiased), 0..1, mean/std."""
    raw = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1).copy())
    x = TF.resize(raw, [size, size], antialias=True).float() / 255
    return (x - torch.tensor(dm.MEAN)[:, None, None]) / torch.tensor(dm.STD)[:, None, None]


def test_checkpoint_describes_itself(ckpts: dict[str, Path]) -> None:
    info = torch.load(ckpts["classification"], weights_only=True)["visionkit"]
    assert info["task"] == "classification"
    assert info["label_map"] == dm.LABEL_MAP
    assert info["preprocessing"] == dm.preprocessing("classification")
    assert info["model"]["backbone"]["name"] == "simple_cnn" and info["num_classes"] == 3
    assert {(s["family"], s["name"]) for s in info["suppliers"]} >= {("tasks", "classification"), ("backbones", "simple_cnn"), ("heads", "linear")}  # fmt: skip


def test_classification_uses_the_recorded_preprocessing(ckpts: dict[str, Path], images: dict[str, Path]) -> None:  # fmt: skip
    model = visionkit.load(ckpts["classification"])
    results = model.predict(list(images.values()), batch_size=2)
    with torch.no_grad():
        for result, path in zip(results, images.values(), strict=True):
            probs = model.task(oracle_input(path, 40)[None]).softmax(dim=1)[0]
            torch.testing.assert_close(result.probs, probs, atol=1e-5, rtol=0)
            index = int(probs.argmax())
            assert (result.label, result.category_id) == (dm.LABEL_MAP["names"][index], dm.LABEL_MAP["ids"][index])  # fmt: skip
            w, h = Image.open(path).size
            assert result.size == (h, w) and result.draw(path).shape == (3, h, w)
            assert result.to_coco(5) == [{"image_id": 5, "category_id": result.category_id, "score": round(result.score, 5)}]  # fmt: skip


def test_every_kind_of_picture_gives_the_same_result(ckpts: dict[str, Path], images: dict[str, Path]) -> None:  # fmt: skip
    model = visionkit.load(ckpts["classification"])
    path = images["a.png"]
    pil = Image.open(path).convert("RGB")
    arr = np.asarray(pil)
    tensor = torch.from_numpy(arr.transpose(2, 0, 1).copy())
    kinds = [str(path), path, pil, arr, tensor, tensor.float() / 255]
    single = model.predict(path)  # one picture -> one result
    assert isinstance(single, visionkit.Classification)
    for result in model.predict(kinds, batch_size=4):
        torch.testing.assert_close(result.probs, single.probs, atol=1e-6, rtol=0)


def test_semantic_map_in_original_pixels_with_dataset_ids(ckpts: dict[str, Path], images: dict[str, Path]) -> None:  # fmt: skip
    model = visionkit.load(ckpts["semantic_segmentation"])
    for result, path in zip(model.predict(list(images.values())), images.values(), strict=True):
        w, h = Image.open(path).size
        assert isinstance(result, visionkit.SemanticMap) and result.indices.shape == (h, w)
        assert set(result.labels.unique().tolist()) <= {0, 3, 7, 12}
        records = result.to_coco(1)
        covered = sum(mask_utils.decode(r["segmentation"]).astype(int) for r in records)
        assert covered.shape == (h, w) and (covered == 1).all()  # every pixel in exactly one class
        assert {r["category_id"] for r in records} == set(result.labels.unique().tolist())


@pytest.mark.parametrize("task", ["detection", "instance_segmentation"])
def test_detections_in_original_pixels_with_dataset_ids(task: str, ckpts: dict[str, Path], images: dict[str, Path]) -> None:  # fmt: skip
    model = visionkit.load(ckpts[task])
    results = model.predict(list(images.values()), batch_size=3)
    with torch.no_grad():
        for result, path in zip(results, images.values(), strict=True):
            w, h = Image.open(path).size
            x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1).copy()).float() / 255  # fmt: skip
            eager = model.task([x])[0]  # eval transforms keep the original pixels
            assert len(result) == len(eager["scores"]) > 0
            torch.testing.assert_close(result.boxes, eager["boxes"])
            assert result.labels.tolist() == [dm.LABEL_MAP["ids"][i] for i in eager["labels"].tolist()]  # fmt: skip
            # inside the image (torchvision clips at the resized size, then scales in float32)
            assert (result.boxes[:, 2] <= w + 1e-4).all() and (result.boxes[:, 3] <= h + 1e-4).all()
            records = result.to_coco(9)
            assert {r["category_id"] for r in records} <= {3, 7, 12} and len(records) == len(result)
            if task == "instance_segmentation":
                assert result.masks.shape == (len(result), h, w)
                assert all(r["segmentation"]["size"] == [h, w] for r in records)
            assert result.draw(path, score_thresh=0.0).shape == (3, h, w)


def test_detections_undo_a_recorded_resize(tmp_path: Path, images: dict[str, Path]) -> None:
    """A detector whose eval transforms resize: boxes come back in the original pixels."""
    task = dm.build("detection")
    task.hparams["preprocessing"] = {**dm.preprocessing("detection"), "eval_transforms": [{"name": "resize", "size": [64, 64], "antialias": True}]}  # fmt: skip
    model = visionkit.load(dm.save(task, tmp_path / "resized.ckpt"))
    path = images["a.png"]  # 50 x 30
    result = model.predict(path)
    raw = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1).copy())
    with torch.no_grad():
        eager = model.task([TF.resize(raw, [64, 64], antialias=True).float() / 255])[0]
    scale = torch.tensor([50 / 64, 30 / 64, 50 / 64, 30 / 64])
    torch.testing.assert_close(result.boxes, eager["boxes"] * scale)


def test_batched_equals_one_at_a_time(ckpts: dict[str, Path], images: dict[str, Path]) -> None:
    """A result does not depend on the other images of its batch (sizes differ here)."""
    paths = [*images.values(), images["a.png"]]
    for task in ("classification", "detection"):
        model = visionkit.load(ckpts[task])
        for path, result in zip(paths, model.predict(paths, batch_size=4), strict=True):
            alone = model.predict(path)
            values = (result.scores, alone.scores) if task == "detection" else (result.probs, alone.probs)  # fmt: skip
            torch.testing.assert_close(*values, atol=1e-5, rtol=0)


def test_load_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such model file"):
        visionkit.load(tmp_path / "missing.ckpt")
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=r"notes\.ckpt"):
        visionkit.load(tmp_path / "notes.ckpt")


def test_readme_use_from_python_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # fmt: skip
    """Each README example runs as written, on checkpoints at the paths it names."""
    monkeypatch.chdir(tmp_path)
    blocks = readme_blocks("Use from Python", lang="python")
    paths = set(re.findall(r'"(outputs/[^"]+\.ckpt)"', "".join(blocks)))
    assert paths, "the README examples load no checkpoint"
    for path in paths:
        task = next(t for t in dm.MODELS if f"/{t}/" in path)
        dm.save(dm.build(task), tmp_path / path)
    dm.pictures(tmp_path, {"a.jpg": (50, 30), "b.png": (40, 44)})
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "HardSwish" in out and "classification ['ant', 'bee', 'cow']" in out


def test_load_prepares_the_model_for_prediction_only(ckpts: dict[str, Path], images: dict[str, Path]) -> None:  # fmt: skip
    """BatchNorms folded into their convs, the activations after them in place and channels-last
    weights (CPU); the same results as the task as trained (tests/layers/test_fuse.py checks the
    folding on trained statistics and where activations may run in place)."""
    from visionkit.runner import load_task_from_checkpoint

    model = visionkit.load(ckpts["semantic_segmentation"])
    modules = list(model.task.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in modules)
    convs = [m for m in modules if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    relus = [m for m in modules if isinstance(m, torch.nn.ReLU)]
    assert relus and all(r.inplace for r in relus)
    trained = load_task_from_checkpoint(ckpts["semantic_segmentation"]).eval()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trained.modules())
    assert not any(getattr(m, "inplace", False) for m in trained.modules())
    x = [oracle_input(p, 40) for p in images.values()]
    with torch.no_grad():
        torch.testing.assert_close(model.task.predict_outputs(x), trained.predict_outputs(x), atol=1e-5, rtol=1e-5)  # fmt: skip


def test_torch_threads_restores_the_count_whatever_order_blocks_close_in() -> None:
    # predict calls in two Python threads: one opens, the other opens, the first closes, then
    # the second; a plain save-and-restore left torch at one thread for good
    from visionkit.inference import torch_threads

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        first, second = torch_threads(1), torch_threads(2)
        first.__enter__()
        assert torch.get_num_threads() == 1
        second.__enter__()
        assert torch.get_num_threads() == 2
        first.__exit__(None, None, None)
        assert torch.get_num_threads() == 2  # the open block keeps its count
        second.__exit__(None, None, None)
        assert torch.get_num_threads() == 3
        with torch_threads(None):
            assert torch.get_num_threads() == 3
        with pytest.raises(ConfigError), torch_threads(1):  # restored when the block raises
            raise ConfigError("boom")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
