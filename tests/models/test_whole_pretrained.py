"""Whole torchvision models: their state dicts load into the visionkit layout of the same name
(conf/experiment/tv_<name>.yaml) and the two give the same outputs; ours saves back to theirs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.models.detection as tvd
import torchvision.models.segmentation as tvs
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from visionkit.models.whole_pretrained import torchvision_state_dict
from visionkit.plugins import conf_dir, load_all
from visionkit.registries import TASKS

load_all()
SIZE = 64
NAMES = ["a", "b", "c"]  # visionkit classes; torchvision detectors count background too
K = len(NAMES)
# torchvision builder -> (its keywords for small, non-empty eval outputs, our matching overrides)
RPN_TV = {"rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 100}  # fewer RoIs: faster
RPN = ["model.head.rpn_pre_nms_top_n_test=200", "model.head.rpn_post_nms_top_n_test=100"]
DETECTION = {
    "fasterrcnn_resnet50_fpn": (RPN_TV, RPN),
    "fasterrcnn_resnet50_fpn_v2": (RPN_TV, RPN),
    "fasterrcnn_mobilenet_v3_large_fpn": (RPN_TV, RPN),
    "maskrcnn_resnet50_fpn": (RPN_TV, RPN),
    "maskrcnn_resnet50_fpn_v2": (RPN_TV, RPN),
    "retinanet_resnet50_fpn": ({"score_thresh": 0.001}, ["model.head.score_thresh=0.001"]),
    "retinanet_resnet50_fpn_v2": ({"score_thresh": 0.001}, ["model.head.score_thresh=0.001"]),
    "fcos_resnet50_fpn": ({"score_thresh": 0.01}, ["model.head.score_thresh=0.01"]),
}
SEGMENTATION = ["fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large"]


def randomise_norms(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine values, so a misplaced norm cannot pass."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.GroupNorm) and m.weight is not None:
            m.weight.data = torch.rand(m.weight.shape, generator=g) * 0.2 + 0.4  # bounded
            m.bias.data = (torch.rand(m.bias.shape, generator=g) - 0.5) * 0.2
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean = (torch.rand(m.running_mean.shape, generator=g) - 0.5) * 0.2
            m.running_var = torch.rand(m.running_var.shape, generator=g) * 0.4 + 0.8


def torchvision_model(name: str, **kw) -> torch.nn.Module:
    """torchvision's model with no weights (nothing downloaded), a fixed seed, eval mode."""
    torch.manual_seed(0)
    if name in DETECTION:
        kw = {"num_classes": K + 1, "min_size": SIZE, "max_size": SIZE, **DETECTION[name][0], **kw}
        model = getattr(tvd, name)(weights=None, weights_backbone=None, **kw)
    else:
        model = getattr(tvs, name)(weights=None, weights_backbone=None, num_classes=K, **kw)
    randomise_norms(model)
    return model.eval()


def visionkit_task(name: str, weights: Path | None = None, extra: list[str] = (), names: list[str] = NAMES) -> torch.nn.Module:  # fmt: skip
    """The task of ``experiment=tv_<name>`` (composed as the CLI does), in eval mode."""
    overrides = [f"experiment=tv_{name}", *extra]
    if name in DETECTION:
        overrides += [
            f"model.head.min_size={SIZE}",
            f"model.head.max_size={SIZE}",
            *DETECTION[name][1],
        ]
    if weights is not None:
        overrides.append(f"model.pretrained={weights}")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    task = TASKS.get(cfg.task.name)(model=model, num_classes=len(names), label_map={"names": names})
    return task.eval()


def images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return [torch.rand(3, SIZE, SIZE, generator=g), torch.rand(3, SIZE - 16, SIZE, generator=g)]


@pytest.mark.parametrize("name", [*DETECTION, *SEGMENTATION])
def test_torchvision_weights_give_torchvision_outputs(name: str, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    tv = torchvision_model(name)
    path = tmp_path / f"{name}.pth"
    torch.save(tv.state_dict(), path)
    task = visionkit_task(name, path)
    report = task.pretrained_results
    assert report["format"] == "torchvision" and not report["missing"] and not report["unused"]
    assert report["reinitialised"] == []
    with torch.no_grad():
        if name in DETECTION:
            ours, theirs = task(images()), tv(images())
            for o, t in zip(ours, theirs, strict=True):
                assert len(t["boxes"]) > 0  # the comparison is not vacuous
                torch.testing.assert_close(o["boxes"], t["boxes"], atol=1e-5, rtol=0)
                torch.testing.assert_close(o["scores"], t["scores"], atol=1e-5, rtol=0)
                assert torch.equal(o["labels"] + 1, t["labels"])  # ours 0..K-1, theirs 1..K
                if "masks" in t:
                    torch.testing.assert_close(o["masks"], t["masks"], atol=1e-5, rtol=0)
        else:
            x = torch.stack(images()[:1] * 2) - 0.5
            torch.testing.assert_close(task(x), tv(x)["out"], atol=1e-5, rtol=1e-5)
    # and back: torchvision's constructor takes our state dict (frozen norms lack only the
    # batch counters, which torchvision's FrozenBatchNorm2d drops too)
    back = torchvision_model(name)
    missing, unexpected = back.load_state_dict(torchvision_state_dict(task), strict=False)
    assert unexpected == [] and all(k.endswith("num_batches_tracked") for k in missing)
    if not missing:
        back.load_state_dict(torchvision_state_dict(task), strict=True)
    theirs = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert all(torch.equal(back.state_dict()[k], v) for k, v in theirs.items())


@pytest.mark.parametrize(
    "name,names,matched",
    [
        ("fasterrcnn_resnet50_fpn", ["person", "unicorn", "car"], {0: 1, 2: 3}),
        ("maskrcnn_resnet50_fpn", ["car", "unicorn"], {0: 3}),
        ("retinanet_resnet50_fpn", ["unicorn", "dog"], {1: 18}),
        ("fcn_resnet50", ["background", "unicorn", "cat"], {0: 0, 2: 8}),
    ],
)
def test_other_classes_keep_all_but_class_rows(name: str, names: list[str], matched: dict, tmp_path: Path) -> None:  # fmt: skip
    """COCO (detection) / VOC (segmentation) class names keep their predictor rows; the rest of
    the class-specific tensors is re-initialised, every other tensor kept."""
    from visionkit.models.whole_pretrained import CLASS_SPECIFIC, pretrained_names

    torch.set_num_threads(1)
    detector = name in DETECTION
    pretrained_k = 91 if detector else 21
    torch.manual_seed(0)
    if detector:
        tv = getattr(tvd, name)(weights=None, weights_backbone=None, num_classes=pretrained_k)
    else:
        tv = getattr(tvs, name)(weights=None, weights_backbone=None, num_classes=pretrained_k)
    path = tmp_path / "w.pth"
    torch.save(tv.state_dict(), path)
    task = visionkit_task(name, path, names=names)
    report = task.pretrained_results
    old_names = pretrained_names(pretrained_k, detector)
    assert report["matched_classes"] == {names[i]: old_names[j] for i, j in matched.items()}
    theirs = tv.state_dict()
    ours = torchvision_state_dict(task)
    class_keys = {k for k in theirs if k.rsplit(".", 1)[0] in CLASS_SPECIFIC}
    assert len(report["reinitialised"]) == len(class_keys) > 0
    for key, value in theirs.items():
        if key in class_keys or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(ours[key], value), key  # everything else kept
    shift = 1 if detector else 0
    k_new, k_old = len(names) + shift, pretrained_k
    for key in class_keys:
        per = 4 if "bbox_pred" in key else 1
        anchors = ours[key].shape[0] // (k_new * per)
        new = ours[key].reshape(anchors, k_new, per, -1)
        old = theirs[key].reshape(anchors, k_old, per, -1)
        rows = {i + shift: j for i, j in matched.items()} | ({0: 0} if detector else {})
        for i in range(k_new):
            if i in rows:
                assert torch.equal(new[:, i], old[:, rows[i]]), (key, i)
            elif key.endswith("weight"):  # re-initialised (biases may start constant, as the prior)
                assert not any(torch.equal(new[:, i], old[:, j]) for j in range(k_old)), (key, i)
    assert "pretrained" not in str(task.hparams["model"])  # the weights travel, not the path


def test_freeze_schedules_see_the_backbone_stages(tmp_path: Path) -> None:
    task = visionkit_task("fasterrcnn_mobilenet_v3_large_fpn")
    parts = [n for n, _ in task.named_parts()]
    assert parts == [f"backbone.{i}" for i in range(6)] + ["neck", "head"]


def test_wrong_layout_or_backbone_is_one_config_error(tmp_path: Path) -> None:
    from visionkit.errors import ConfigError

    torch.manual_seed(0)
    path = tmp_path / "fcos.pth"
    torch.save(torchvision_model("fcos_resnet50_fpn").state_dict(), path)
    with pytest.raises(ConfigError, match=r"model\.pretrained.*experiment=tv_"):
        visionkit_task("retinanet_resnet50_fpn", path)  # P6P7 from P5 fits, the head does not
    with pytest.raises(ConfigError, match="torchvision-layout backbone"):
        small = {"name": "simple_cnn", "channels": [8, 16]}
        TASKS.get("classification")(model={"backbone": small, "head": "linear", "pretrained": str(path)}, num_classes=2)  # fmt: skip


def test_visionkit_checkpoint_of_another_task(tmp_path: Path) -> None:
    """model.pretrained also takes a visionkit checkpoint: backbone from a classification run."""
    backbone = {"name": "resnet", "depth": 18}
    source = TASKS.get("classification")(model={"backbone": backbone, "head": "linear"}, num_classes=5)  # fmt: skip
    path = tmp_path / "run.ckpt"
    meta = {"task": "classification", "version": "0"}
    torch.save({"state_dict": source.state_dict(), "hyper_parameters": dict(source.hparams), "visionkit": meta}, path)  # fmt: skip
    model = {"backbone": backbone, "head": "deeplabv3", "pretrained": str(path)}
    task = TASKS.get("semantic_segmentation")(model=model, num_classes=2)
    assert task.pretrained_results["format"] == "visionkit"
    assert task.pretrained_results["loaded"] == {"backbone": len(source.backbone.state_dict())}
    ours, theirs = task.backbone.state_dict(), source.backbone.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in theirs.items())


def test_readme_command_fine_tunes_torchvision_weights_on_coco(cli, fast, tmp_path: Path) -> None:
    """The README's `experiment=tv_fasterrcnn_resnet50_fpn data=coco ... model.pretrained=$HOME/...`
    as written ($HOME: this test's folder, holding torchvision-layout weights at that path) on COCO
    data written here, with a freeze schedule: results.json reports what was kept, re-initialised
    and matched (cow: COCO's; ant and bee are not COCO classes)."""
    import json

    from tests.commands.own_data import write_coco
    from tests.conftest import command_args, readme_commands

    (command,) = readme_commands("Whole pretrained models", level=3)
    root = write_coco(tmp_path / "coco")
    torch.manual_seed(0)
    weights = tmp_path / ".cache/torch/hub/checkpoints/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
    weights.parent.mkdir(parents=True)
    tv = tvd.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    torch.save(tv.state_dict(), weights)
    run = tmp_path / "run"
    cli(
        *command_args(command, {"data.root=...": f"data.root={root}", "$HOME": str(tmp_path)}), "data.image_size=64",
        "data.batch_size=2", "finetune=freeze_unfreeze", "test_after_fit=false",
        f"hydra.run.dir={run}", *fast, check=True,
    )  # fmt: skip
    results = json.loads((run / "results.json").read_text())
    report = results["pretrained"]
    assert report["format"] == "torchvision" and report["matched_classes"] == {"cow": "cow"}
    assert len(report["reinitialised"]) == 4 and report["kept"] > 200 and not report["missing"]
    assert "finetune" in results


@pytest.mark.parametrize(
    "task_name,head",
    [
        ("classification", "linear"),
        ("detection", {"name": "retinanet", "min_size": 32}),
        ("detection", {"name": "fasterrcnn", "min_size": 32}),
    ],
    ids=["linear", "retinanet", "fasterrcnn"],
)
def test_visionkit_checkpoint_with_other_classes(task_name: str, head, tmp_path: Path) -> None:
    """Same task, other classes: the head is kept but the class rows of unknown names."""
    from visionkit.models.whole_pretrained import class_blocks

    torch.set_num_threads(1)
    backbone = {"name": "simple_cnn", "channels": [8, 16]}
    neck = {"name": "fpn", "out_channels": 16} if task_name == "detection" else None
    model = {"backbone": backbone, "neck": neck, "head": head}
    old_names, new_names = ["cat", "dog", "cow"], ["dog", "emu"]
    torch.manual_seed(0)
    source = TASKS.get(task_name)(model=model, num_classes=3, label_map={"names": old_names})
    path = tmp_path / "run.ckpt"
    meta = {"task": task_name, "version": "0"}
    torch.save({"state_dict": source.state_dict(), "hyper_parameters": dict(source.hparams), "visionkit": meta}, path)  # fmt: skip
    torch.manual_seed(1)
    task = TASKS.get(task_name)(model={**model, "pretrained": str(path)}, num_classes=2, label_map={"names": new_names})  # fmt: skip
    report = task.pretrained_results
    assert report["matched_classes"] == {"dog": "dog"}
    blocks = class_blocks(task)
    assert sorted(report["reinitialised"]) == sorted(f"head.{k}" for k in blocks) and blocks
    old, new = source.head.state_dict(), task.head.state_dict()
    for key, value in new.items():
        if key not in blocks:
            assert torch.equal(value, old[key]), key
            continue
        block, extra = blocks[key]
        per = 1 if "classification_head.cls_logits" in key else block
        o = old[key].reshape(-1, 3 + extra, per, *old[key].shape[1:])
        n = value.reshape(-1, 2 + extra, per, *value.shape[1:])
        assert torch.equal(n[:, extra], o[:, extra + 1])  # dog's rows
        for e in range(extra):  # background rows kept
            assert torch.equal(n[:, e], o[:, e])
        if key.endswith("weight"):
            assert not any(
                torch.equal(n[:, extra + 1], o[:, j]) for j in range(3 + extra)
            )  # emu: fresh
