"""Export to ONNX / TorchScript: every task exports with its post-processing, checks itself
against the eager model (export.json), runs through onnxruntime / torch.jit.load with the same
results as the checkpoint, and refuses what it cannot do (tiny in-process models; one CLI run)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

import visionkit
from tests import deploy_models as dm
from tests.conftest import command_args, readme_commands, run_cli
from visionkit import export
from visionkit.errors import ConfigError, ExportError

pytest.importorskip("onnxruntime")

SIZES = {"a.png": (50, 30), "b.jpg": (33, 61), "c.png": (64, 64)}  # (width, height)
CASES = [(task, fmt) for task in dm.MODELS for fmt in export.FORMATS]


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return list(dm.pictures(tmp_path_factory.mktemp("pics"), SIZES).values())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, pictures: list[Path]):
    """``exported(task, fmt)`` -> (file, its export report): each exported once per module, checked
    on the first two pictures (the third is new to it)."""
    done: dict[tuple[str, str], tuple[Path, dict]] = {}

    def get(task: str, fmt: str) -> tuple[Path, dict]:
        if (task, fmt) not in done:
            path = tmp_path_factory.mktemp(f"{task}-{fmt}") / f"model{export.FORMATS[fmt]}"
            done[task, fmt] = path, export.export(dm.build(task), fmt, path, pictures[:2])
        return done[task, fmt]

    return get


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same (seeded) models as checkpoints: the eager reference."""
    root = tmp_path_factory.mktemp("ckpts")
    return {task: dm.save(dm.build(task), root / f"{task}.ckpt") for task in dm.MODELS}


def compare(eager: list, got: list, mask_atol: float = 1e-4) -> None:
    """Same typed results from the checkpoint and the exported file (``mask_atol``: of the mask
    probabilities)."""
    for e, g in zip(eager, got, strict=True):
        assert type(e) is type(g)
        if isinstance(e, visionkit.Classification):
            torch.testing.assert_close(g.probs, e.probs, atol=1e-5, rtol=0)
            assert (g.label, g.category_id) == (e.label, e.category_id)
        elif isinstance(e, visionkit.SemanticMap):
            assert g.size == e.size and (g.labels == e.labels).float().mean() > 0.999
        else:
            pairs = export.match({"boxes": e.boxes, "labels": e.indices, "scores": e.scores}, {"boxes": g.boxes, "labels": g.indices, "scores": g.scores})  # fmt: skip
            assert not isinstance(pairs, str), pairs
            a, b = pairs
            assert g.size == e.size and len(a) == len(e) > 0
            torch.testing.assert_close(g.boxes[b], e.boxes[a], atol=1e-3, rtol=0)
            torch.testing.assert_close(g.scores[b], e.scores[a], atol=1e-5, rtol=0)
            assert g.labels[b].tolist() == e.labels[a].tolist()
            if e.masks is not None:  # pasted at the original size, as the eager detector does
                assert g.masks.shape == e.masks.shape == (len(e), *e.size)
                torch.testing.assert_close(g.masks[b], e.masks[a], atol=mask_atol, rtol=0)


@pytest.mark.parametrize(("task", "fmt"), CASES)
def test_export_checks_itself_and_predicts_like_the_checkpoint(task: str, fmt: str, exported, checkpoints: dict[str, Path], pictures: list[Path]) -> None:  # fmt: skip
    path, report = exported(task, fmt)
    written = json.loads((path.parent / "export.json").read_text())
    assert written == json.loads(json.dumps(report)) and written["passed"] is True
    assert written["dynamic"] == ["batch", "height", "width"] and written["images"] == 4
    if export.is_detector(task):
        assert written["matched_detections"] > 0 and written["max_abs_box_diff"] <= 1e-3
    else:
        assert written["max_abs_logit_diff"] <= 1e-4
    if task == "instance_segmentation":
        assert written["max_abs_mask_diff"] <= 1e-4 and written["mask_pixels_differing"] <= 0.01
    loaded = visionkit.load(path)  # the third picture was not among the checked ones
    assert loaded.task_name == task and loaded.label_map.to_dict()["ids"][-3:] == [3, 7, 12]
    eager = visionkit.load(checkpoints[task])
    compare(eager.predict(pictures, batch_size=2), loaded.predict(pictures, batch_size=2))


RTDET_CASES = [("detection", dm.RTDET), ("instance_segmentation", dm.RTDET_SEG)]


@pytest.mark.parametrize("fmt", sorted(export.FORMATS))
@pytest.mark.parametrize(("task", "spec"), RTDET_CASES, ids=["rtdet", "rtdet_seg"])
def test_rtdet_exports_with_its_batched_post_processing(task: str, spec: dict, fmt: str, tmp_path: Path, pictures: list[Path]) -> None:  # fmt: skip
    """The real-time detector (not a torchvision detector) and its mask-prototype variant export
    through the same path (the variant's masks compared as Mask R-CNN's are)."""
    model = dm.build(task, model=spec)
    # untrained, its scores nearly tie (activations shrink layer by layer): BatchNorm statistics
    # of one batch spread them, so that eager and exported top-k pick the same detections
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(list(torch.rand(8, 3, 64, 64)))  # every branch, post-processing included
        # and scaled class weights keep the scores off 1.0, where equal scores would leave NMS's
        # choice to rounding (export and `load` fold the BatchNorms: other rounding than eager)
        detector = model.head.detector
        getattr(detector, "base", detector).cls_pred.weight.mul_(0.1)
    model.eval()
    path = tmp_path / f"model{export.FORMATS[fmt]}"
    report = export.export(model, fmt, path, pictures[:2])
    assert report["passed"] is True and report["matched_detections"] > 0
    eager = visionkit.load(dm.save(model, tmp_path / "model.ckpt"))
    # prototype masks come from a product of two graph outputs upsampled 4x: float32 differences
    # of the features (the graph's input is resized outside it) reach 2e-4 in probability
    compare(eager.predict(pictures, batch_size=2), visionkit.load(path).predict(pictures, batch_size=2), mask_atol=1e-3)  # fmt: skip


def test_onnx_batch_is_dynamic(exported) -> None:
    runner = visionkit.load(exported("classification", "onnx")[0]).runner
    for n in (1, 3, 5):
        assert [tuple(o.shape) for o in runner([torch.zeros(3, 40, 40)] * n)] == [(3,)] * n


def test_onnxruntime_pool_threads_do_not_spin(exported) -> None:
    # spinning pool threads took a core from torch's pre- and post-processing between runs:
    # semantic segmentation ran at 0.65x eager with 2 threads on 2 cores
    model = export.load_exported(exported("semantic_segmentation", "onnx")[0], threads=2)
    options = model.runner.backend.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2


@pytest.mark.parametrize(("fmt", "beside"), [("onnx", 1), ("torchscript", 3)])
def test_torch_runs_one_thread_beside_onnxruntime(fmt: str, beside: int, exported, pictures: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # torch's idle OpenMP workers spun on the cores onnxruntime computed on next: torch runs one
    # thread while a batch is read and onnxruntime runs it, its own threads for decoding results;
    # TorchScript runs on torch's threads (unchanged)
    model = visionkit.load(exported("classification", fmt)[0])
    seen: dict[str, set[int]] = {"read": set(), "run": set(), "decode": set()}
    prepare, run, decode = model.preprocess.prepare, model.runner.backend.run, model.task_cls.decode

    def spy(name: str, fn):
        return lambda *a, **k: (seen[name].add(torch.get_num_threads()), fn(*a, **k))[1]

    monkeypatch.setattr(model.preprocess, "prepare", spy("read", prepare))
    monkeypatch.setattr(model.runner.backend, "run", spy("run", run))
    monkeypatch.setattr(model, "task_cls", type("Spied", (), {"decode": staticmethod(spy("decode", decode))}))  # fmt: skip
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        results = model.predict(pictures, batch_size=2)
        assert len(results) == len(pictures)
        assert seen == {"read": {beside}, "run": {beside}, "decode": {3}}
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("fmt", list(export.FORMATS))
def test_exported_detector_runs_a_batch_of_mixed_sizes_in_one_call(fmt: str, exported, checkpoints: dict[str, Path], pictures: list[Path]) -> None:  # fmt: skip
    """Pictures of different sizes (and two of one size) go through the graph in one call, padded
    to one input with a size per image (batch_index tells their detections apart), each with the
    eager model's detections and masks for it alone."""
    model = visionkit.load(exported("instance_segmentation", fmt)[0])
    calls = []
    run = model.runner.backend.run
    model.runner.backend.run = lambda *inputs: calls.append(inputs) or run(*inputs)
    a, b, c = (torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in pictures)  # fmt: skip
    batch = [a, c, b, c.flip(-1)]
    got = model.predict(batch, batch_size=4)
    assert len(calls) == 1
    images, image_size, original_size = calls[0]
    assert original_size.tolist() == [list(p.shape[-2:]) for p in batch]
    assert tuple(images.shape[:2]) == (4, 3) and list(images.shape[-2:]) == image_size.amax(0).tolist()  # fmt: skip
    assert len({tuple(s) for s in image_size.tolist()}) == 3
    eager = visionkit.load(checkpoints["instance_segmentation"])
    compare([eager.predict(p) for p in batch], got)


def test_an_export_of_another_layout_is_refused(exported, tmp_path: Path) -> None:
    """A file whose graph takes other inputs than this version feeds (an older export) is one
    clear error, not a runtime failure deep in onnxruntime."""
    import onnx

    model = onnx.load(str(exported("detection", "onnx")[0]))
    meta = next(p for p in model.metadata_props if p.key == "visionkit")
    meta.value = json.dumps({**json.loads(meta.value), "inputs": ["image"]})
    onnx.save(model, str(tmp_path / "old.onnx"))
    with pytest.raises(ConfigError, match=r"old\.onnx: a detection graph with inputs \['image'\].*export the checkpoint again"):  # fmt: skip
        visionkit.load(tmp_path / "old.onnx")


def test_a_failed_check_is_an_error(tmp_path: Path, pictures: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """An exported model that drifts by 1e-3 in its logits fails the 1e-4 check."""
    load = export.load_exported

    def drifting(path, *args, **kwargs):
        model = load(path, *args, **kwargs)
        runner = model.runner
        model.runner = lambda images: [o + 1e-3 for o in runner(images)]
        return model

    monkeypatch.setattr(export, "load_exported", drifting)
    with pytest.raises(ExportError, match=r"logits differ by 0\.001"):
        export.export(dm.build("classification"), "onnx", tmp_path / "model.onnx", pictures[:1])
    report = json.loads((tmp_path / "export.json").read_text())
    assert report["passed"] is False and report["max_abs_logit_diff"] > 1e-4


def test_exported_file_not_from_visionkit_is_refused(tmp_path: Path) -> None:
    module = torch.jit.trace(torch.nn.Conv2d(3, 2, 1), torch.zeros(1, 3, 4, 4))
    torch.jit.save(module, str(tmp_path / "plain.pt"))
    with pytest.raises(ConfigError, match="not written by visionkit export"):
        visionkit.load(tmp_path / "plain.pt")


def test_cli_export_then_predict_with_the_exported_file(tmp_path: Path, data_dir: Path, pictures: list[Path]) -> None:  # fmt: skip
    """The README's commands as written: `export` writes model.onnx + export.json into
    outputs/export/<date_time>/; `predict ckpt_path=<that>/model.onnx input=photos/` writes what the
    checkpoint's predict writes (no data override anywhere)."""
    export_line, predict_line = readme_commands("Export", level=3)
    ckpt = dm.save(dm.build("instance_segmentation"), tmp_path / "outputs/instance_segmentation/run/checkpoints/best.ckpt")  # fmt: skip
    shutil.copytree(pictures[0].parent, tmp_path / "photos")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=tmp_path, data_dir=data_dir, check=True)

    proc = cli(*command_args(export_line, {"outputs/.../": "outputs/instance_segmentation/run/"}), "input=photos/")  # fmt: skip
    assert "export:" in proc.stdout and "passed" in proc.stdout
    (run,) = (tmp_path / "outputs" / "export").iterdir()
    report = json.loads((run / "export.json").read_text())
    assert report["passed"] and report["images"] == 5 and report["task"] == "instance_segmentation"
    assert report["mask_pixels_differing"] <= 0.01
    outputs = {}
    cli("predict", f"ckpt_path={ckpt}", "input=photos/", "num_workers=0", "hydra.run.dir=ckpt")
    cli(*command_args(predict_line, {"<date_time>": run.name}), "num_workers=0", "hydra.run.dir=onnx")  # fmt: skip
    for name in ("ckpt", "onnx"):
        outputs[name] = json.loads((tmp_path / name / "detections.json").read_text())
    assert len(outputs["onnx"]) == len(outputs["ckpt"]) > 0
    key = lambda r: (r["image_id"], r["category_id"], round(r["score"], 4), r["bbox"])  # noqa: E731
    for e, g in zip(sorted(outputs["ckpt"], key=key), sorted(outputs["onnx"], key=key), strict=True):  # fmt: skip
        assert e["image_id"] == g["image_id"] and e["category_id"] == g["category_id"]
        np.testing.assert_allclose(g["bbox"], e["bbox"], atol=1e-2)
        assert e["segmentation"]["size"] == g["segmentation"]["size"]
        if e["segmentation"]["counts"] != g["segmentation"]["counts"]:  # the same pixels, or nearly
            assert mask_utils.iou([g["segmentation"]], [e["segmentation"]], [0])[0, 0] > 0.95


def test_paste_masks_equals_torchvision_without_a_loop() -> None:
    """The graph's paste (all masks at once, separable resize) gives torchvision's pasted masks."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    g = torch.Generator().manual_seed(0)
    for h, w in ((50, 30), (33, 61), (97, 128)):
        corner = torch.rand(40, 2, generator=g) * torch.tensor([w, h]) * 1.2 - 5
        boxes = torch.cat([corner, corner + torch.rand(40, 2, generator=g) * torch.tensor([w, h]) + 0.3], 1)  # fmt: skip
        boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clamp(0, w), boxes[:, 1::2].clamp(0, h)
        masks = torch.rand(40, 1, 28, 28, generator=g)
        expected = paste_masks_in_image(masks, boxes, (h, w), padding=1)
        torch.testing.assert_close(export.paste_masks(masks, boxes, torch.tensor([h, w])), expected, atol=2e-6, rtol=0)  # fmt: skip
