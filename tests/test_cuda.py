"""On a CUDA device (skipped elsewhere): every task trains, tests and predicts through the CLI in
full and mixed precision, a GPU checkpoint predicts on CPU, and RoIAlign uses torchvision's kernel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import CLI, command_args, readme_task_commands

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
TINY = [
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
    "trainer.accelerator=cpu",
    "callbacks.progress=null",
    "data.num_workers=0",
    "data.image_size=48",
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=4",
    "model.backbone.channels=[8,8,16,16]",
]


def extra(task: str) -> list[str]:
    """A small detector (FPN and box head widths) for the R-CNN tasks."""
    if task == "semantic_segmentation":
        return []
    return ["model.neck.out_channels=16", "model.head.representation_size=32"]


GPU = [a for a in TINY if not a.startswith("trainer.accelerator=")] + ["trainer.accelerator=gpu"]
TASKS = ("classification", "semantic_segmentation", "detection", "instance_segmentation")


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("task", TASKS)
def test_task_on_cuda(cli: CLI, tmp_path: Path, task: str, precision: str) -> None:
    run = tmp_path / "run"
    detector = task in ("detection", "instance_segmentation")
    overrides = [
        *command_args(readme_task_commands()[task]),  # the README's, with the GPU keys it names
        *(extra(task) if detector else []),
        f"trainer.precision={precision}",
    ]
    cli(*overrides, *GPU, f"hydra.run.dir={run}", check=True)
    results = json.loads((run / "results.json").read_text())
    assert any(k.startswith("test/") for k in results), sorted(results)
    ckpt = run / "checkpoints" / "best.ckpt"
    # a checkpoint written on the GPU predicts on a machine without one
    pred = tmp_path / "pred"
    from PIL import Image

    Image.new("RGB", (45, 61), (30, 140, 200)).save(tmp_path / "picture.png")
    cli("predict", f"ckpt_path={ckpt}", f"input={tmp_path / 'picture.png'}", *TINY, f"hydra.run.dir={pred}", env={"CUDA_VISIBLE_DEVICES": ""}, check=True)  # fmt: skip
    assert (pred / "predictions" / "picture.png").is_file()


def test_roi_align_on_cuda_is_torchvisions() -> None:
    import torchvision

    from visionkit.layers.roi_align import roi_align

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 16, 16, 16, generator=g).cuda().requires_grad_()
    xy = torch.rand(64, 2, generator=g) * 40
    rois = torch.cat([torch.randint(0, 4, (64, 1), generator=g).float(), xy, xy + 12], 1).cuda()
    ours = roi_align(x, rois, 7, 0.25, 2)
    (grad,) = torch.autograd.grad(ours.sum(), x)
    ref = torchvision.ops.roi_align(x, rois, 7, 0.25, 2)
    (ref_grad,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(grad, ref_grad)


@pytest.mark.parametrize("task", TASKS)
def test_load_on_cuda_predicts_as_on_cpu(tmp_path: Path, task: str) -> None:
    """visionkit.load(..., device="cuda"): the same typed results (on the CPU) as on the CPU."""
    import visionkit
    from tests import deploy_models as dm

    ckpt = dm.save(dm.build(task), tmp_path / "model.ckpt")
    pictures = list(dm.pictures(tmp_path, {"a.png": (50, 30), "b.png": (40, 44)}).values())
    cpu = visionkit.load(ckpt).predict(pictures)
    gpu = visionkit.load(ckpt, device="cuda").predict(pictures)
    for c, g in zip(cpu, gpu, strict=True):
        if isinstance(c, visionkit.Classification):
            torch.testing.assert_close(g.probs, c.probs, atol=1e-3, rtol=0)
        elif isinstance(c, visionkit.SemanticMap):
            assert g.size == c.size and (g.indices == c.indices).float().mean() > 0.99
        else:
            assert g.boxes.device.type == "cpu" and g.size == c.size and len(g) > 0
