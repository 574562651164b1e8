"""Offline pretrained weights: visionkit checkpoints, timm / torchvision state dicts, safetensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visionkit.errors import ConfigError
from visionkit.models.pretrained import load_pretrained
from visionkit.plugins import load_builtins
from visionkit.registries import TASKS

load_builtins()
SMALL = {"name": "simple_cnn", "channels": [4, 8]}
FPN = {"name": "fpn", "out_channels": 8, "in_indices": None, "extra_levels": 0}


def task(backbone=SMALL, num_classes: int = 3, head="linear", neck=None, **kw):
    model = {"backbone": backbone, "head": head, **({"neck": neck} if neck else {})}
    return TASKS.get("classification")(model=model, num_classes=num_classes, **kw)


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def checkpoint(tmp_path: Path, source, task_name: str = "classification") -> Path:
    """A visionkit checkpoint as Lightning writes it (state_dict, hyper_parameters, visionkit)."""
    path = tmp_path / "run.ckpt"
    torch.save(
        {
            "state_dict": source.state_dict(),
            "hyper_parameters": dict(source.hparams),
            "visionkit": {"task": task_name, "version": "0"},
            "epoch": 3,
        },
        path,
    )
    return path


def test_backbone_pretrained_takes_only_the_backbone_of_a_same_task_checkpoint(tmp_path: Path, capsys) -> None:  # fmt: skip
    """model.backbone.pretrained: the backbone, even when neck and head would fit; one line says
    so and names model.pretrained for the whole model."""
    torch.manual_seed(0)
    source = task(neck=FPN)
    torch.manual_seed(1)
    target = task(neck=FPN)
    neck_before, head_before = (
        {k: v.clone() for k, v in m.state_dict().items()} for m in (target.neck, target.head)
    )
    report = load_pretrained(target, checkpoint(tmp_path, source))
    assert same(source.backbone, target.backbone)
    assert all(torch.equal(v, target.neck.state_dict()[k]) for k, v in neck_before.items())
    assert all(torch.equal(v, target.head.state_dict()[k]) for k, v in head_before.items())
    assert not same(source.head, target.head)  # so the check above can fail
    assert report.loaded == {"backbone": len(source.backbone.state_dict())}
    assert not report.missing and not report.unexpected
    line = "neck and head not loaded: model.backbone.pretrained takes the backbone only (model.pretrained=<checkpoint> loads the whole model)"  # fmt: skip
    assert report.messages == [line]
    out = capsys.readouterr().out
    assert "loaded backbone" in out and line in out


def test_whole_model_from_a_same_task_checkpoint(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    source = task()
    torch.manual_seed(1)
    target = task()
    report = load_pretrained(target, checkpoint(tmp_path, source), whole=True)
    assert same(source.backbone, target.backbone) and same(source.head, target.head)
    assert report.format == "visionkit" and set(report.loaded) == {"backbone", "head"}
    assert not report.missing and not report.unexpected and not report.messages
    assert "loaded backbone" in capsys.readouterr().out


def test_other_class_count_reinitialises_head_with_a_message(tmp_path: Path) -> None:
    source, target = task(num_classes=5), task(num_classes=3)
    head_before = {k: v.clone() for k, v in target.head.state_dict().items()}
    report = load_pretrained(target, checkpoint(tmp_path, source), whole=True)
    assert same(source.backbone, target.backbone)
    assert all(torch.equal(v, target.head.state_dict()[k]) for k, v in head_before.items())
    assert any("head re-initialised" in m and "5 classes" in m for m in report.messages)


def test_backbone_from_another_tasks_run(tmp_path: Path) -> None:
    source, target = task(), task()
    report = load_pretrained(target, checkpoint(tmp_path, source, "semantic_segmentation"), whole=True)  # fmt: skip
    assert same(source.backbone, target.backbone)
    assert "head" not in report.loaded
    assert any("semantic_segmentation" in m for m in report.messages)


def test_pretrained_key_in_model_spec_loads_at_build(tmp_path: Path) -> None:
    source = task()
    path = checkpoint(tmp_path, source)
    target = task(backbone={**SMALL, "pretrained": str(path)})
    assert same(source.backbone, target.backbone)
    assert "pretrained" not in target.hparams["model"]["backbone"]  # weights travel, not the path


TIMM = {"name": "timm", "model_name": "test_resnet"}


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_timm_state_dict_and_safetensors(tmp_path: Path, fmt: str) -> None:
    import timm

    full = timm.create_model("test_resnet", pretrained=False)
    state = full.state_dict()
    path = tmp_path / f"weights.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state}, path)  # timm training scripts wrap it like this
    target = task(TIMM)
    report = load_pretrained(target, path)
    loaded = target.backbone.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.items())
    assert not report.missing
    assert sorted(report.unexpected) == sorted(f"backbone:{k}" for k in state if k not in loaded)
    assert any("fc" in k for k in report.unexpected)  # the classifier is reported, not loaded


def test_timm_stage_renaming_is_absorbed(tmp_path: Path) -> None:
    """features_only renames ``stages.0`` to ``stages_0``; keys still match."""
    import timm

    full = timm.create_model("test_convnext", pretrained=False)
    torch.save(full.state_dict(), tmp_path / "convnext.pth")
    target = task({"name": "timm", "model_name": "test_convnext"})
    report = load_pretrained(target, tmp_path / "convnext.pth")
    assert any(k.startswith("stages_0") for k in target.backbone.model.state_dict())
    assert not report.missing
    torch.testing.assert_close(
        target.backbone.model.state_dict()["stages_1.blocks.0.conv_dw.weight"],
        full.state_dict()["stages.1.blocks.0.conv_dw.weight"],
    )


def test_torchvision_state_dict(tmp_path: Path) -> None:
    import torchvision

    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    target = task({"name": "timm", "model_name": "resnet18"})
    report = load_pretrained(target, tmp_path / "resnet18.pth")
    assert not report.missing
    assert sorted(report.unexpected) == ["backbone:fc.bias", "backbone:fc.weight"]
    torch.testing.assert_close(target.backbone.model.state_dict()["layer4.1.bn2.running_var"], tv.layer4[1].bn2.running_var)  # fmt: skip


def test_mismatching_shapes_are_reported(tmp_path: Path) -> None:
    source = task({"name": "simple_cnn", "channels": [4, 16]})
    torch.save(source.backbone.state_dict(), tmp_path / "bb.pth")
    report = load_pretrained(task(), tmp_path / "bb.pth")
    assert any("another shape" in m for m in report.messages)
    assert report.missing  # the second stage stayed as initialised


def test_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.backbone\.pretrained"):
        load_pretrained(task(), tmp_path / "missing.pth")
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match=r"no tensor of .*other\.pth matches"):
        load_pretrained(task(), tmp_path / "other.pth")
    torch.save({"obj": Path("x")}, tmp_path / "pickle.pth")  # needs weights_only=False
    with pytest.raises(ConfigError, match="weights_only=True"):
        load_pretrained(task(), tmp_path / "pickle.pth")


def test_backbone_supplied_by_another_package_warns(tmp_path: Path, capsys) -> None:
    source = task()
    path = checkpoint(tmp_path, source)
    ckpt = torch.load(path, weights_only=True)
    ckpt["visionkit"]["suppliers"] = [
        {"family": "backbones", "name": "simple_cnn", "package": "other-pkg", "version": "9",
         "keys": ["model.backbone"]},
        {"family": "heads", "name": "linear", "package": "other-pkg", "version": "9",
         "keys": ["model.head"]},  # not taken from a pretrained file: no warning
    ]  # fmt: skip
    torch.save(ckpt, path)
    load_pretrained(task(), path)
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {path}: backbones 'simple_cnn' (model.backbone) was supplied by other-pkg 9 "
        "when saved, here by visionkit 0.1.0"
    ]


def hub_cache(root: Path, state: dict[str, torch.Tensor]) -> Path:
    """``state`` saved where the Hugging Face hub caches timm's test_resnet: the model folder,
    its ``refs/main`` naming a snapshot, the snapshot's model.safetensors (a link to a blob)."""
    from safetensors.torch import save_file

    revision = "0123456789abcdef0123456789abcdef01234567"
    model = root / "models--timm--test_resnet.r160_in1k"
    (model / "blobs").mkdir(parents=True)
    (model / "refs").mkdir()
    (model / "refs" / "main").write_text(revision)
    blob = model / "blobs" / "a1b2c3"
    save_file({k: v.contiguous() for k, v in state.items()}, str(blob))
    snapshot = model / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(blob)
    return snapshot / "model.safetensors"


def test_timm_weights_from_a_local_hub_cache_offline(tmp_path: Path, monkeypatch) -> None:
    """The hub cache folder (or its parent, HF_HOME) as model.backbone.pretrained: the model's
    file is found there without a network; timm itself reads the same layout offline (so the
    layout written here is the real one), and both give the same weights."""
    import timm
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is imported: and now
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(3)
    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    cache = tmp_path / "huggingface" / "hub"
    file = hub_cache(cache, state)
    by_timm = timm.create_model("test_resnet", pretrained=True, cache_dir=cache).state_dict()
    assert all(torch.equal(by_timm[k], v) for k, v in state.items())
    for given in (cache, cache.parent, file):  # HF_HUB_CACHE, HF_HOME, the file in the snapshot
        target = task({**TIMM, "pretrained": str(given)})
        loaded = target.backbone.model.state_dict()
        assert loaded and all(torch.equal(v, state[k]) for k, v in loaded.items())


def test_a_hub_cache_without_the_model_names_the_expected_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        task({**TIMM, "pretrained": str(tmp_path)})
    assert str(error.value) == (
        f"no weights of timm's 'timm/test_resnet.r160_in1k' in the hub cache {tmp_path} (config "
        f"key model.backbone.pretrained): expected {tmp_path}/models--timm--test_resnet.r160_in1k/"
        f"snapshots/<revision>/model.safetensors (or pytorch_model.bin) with refs/main naming the "
        f"revision"
    )
    with pytest.raises(ConfigError, match="is a folder: a hub cache folder works for timm backbones"):  # fmt: skip
        task({**SMALL, "pretrained": str(tmp_path)})
