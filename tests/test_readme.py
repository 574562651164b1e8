"""Every command line of README.md's bash blocks runs in a test as written (a project rule): RUN
names, per line (README section, heading level, line prefix), the test that runs it, reading it
from the README (placeholders replaced by data the test writes, shrinking overrides such as FAST
appended; tests/test_cuda.py runs the one-task lines on a GPU too); NOT_RUN says why a line is not
run in a test.
Each entry owns exactly one line (the longest prefix of the sections holding the line wins), so a
README line added later without an entry fails here, and so does an entry whose line or test is
gone. No subprocess: the runs themselves are the named tests."""

from __future__ import annotations

import re
from collections import Counter

from tests.conftest import ROOT, readme_commands

OWN_DATA = "tests/commands/own_data.py::test_train"
CONVERT = (
    "tests/commands/test_convert.py::test_readme_convert_commands_coco_yolo_round_trip_and_voc"
)
OPTUNA = (
    "tests/sweep/test_optuna_sweeper.py::test_trials_run_in_parallel_jobs_with_data_loader_workers"
)
TWO_NODES = "tests/sweep/test_job.py::test_two_torchrun_nodes_equal_two_devices_on_one_node"
PLUGINS = "tests/test_plugins.py::"
EXPORT = "tests/test_export.py::test_cli_export_then_predict_with_the_exported_file"
TOOLS = "tests/commands/test_training_tools.py::"
# fmt: off
RUN = {
    ("Train each task", 2, "python -m visionkit"): "tests/commands/test_train_test.py::test_train_writes_config_checkpoints_metrics_results_and_picture",
    ("Train each task", 2, "python -m visionkit task=semantic_segmentation"): "tests/commands/test_predict.py::test_semantic_overlays_and_label_maps_in_separate_trees",
    ("Train each task", 2, "python -m visionkit task=detection"): "tests/commands/test_train_test.py::test_readme_train_each_task_lines_train",
    ("Train each task", 2, "python -m visionkit task=instance_segmentation"): "tests/commands/test_train_test.py::test_readme_train_each_task_lines_train",
    ("Train each task", 2, "python -m visionkit model.norm=gn model.act=hswish"): "tests/commands/test_train_test.py::test_results_report_the_validation_of_the_best_checkpoint",
    ("Train each task", 2, "python -m visionkit model/backbone=mobilenet model/head=conv"): "tests/loggers/test_run_files.py::test_mlflow_stores_metrics_config_and_pictures_in_the_run_directory",
    ("Train each task", 2, "python -m visionkit model/backbone=timm"): "tests/commands/test_train_test.py::test_readme_train_each_task_lines_train",
    ("Train each task", 2, "python -m visionkit task=semantic_segmentation model/head=deeplabv3"): "tests/commands/test_train_test.py::test_readme_train_each_task_lines_train",
    ("Train each task", 2, "python -m visionkit task=detection model/head=retinanet"): "tests/commands/test_train_test.py::test_readme_train_each_task_lines_train",
    ("Train each task", 2, "python -m visionkit list backbones"): PLUGINS + "test_list_filters_by_family_and_pattern",
    ("Train each task", 2, "python -m visionkit optimizer=sgd scheduler=warmup_cosine"): "tests/test_checkpoints.py::test_checkpoint_is_plain_data_and_records_each_parts_supplier",
    ("Real-time detection", 3, "python -m visionkit experiment=rtdet_n"): "tests/commands/test_rtdet_readme.py::test_readme_rtdet_command_trains_and_tests_on_coco",
    ("Real-time instance segmentation", 3, "python -m visionkit experiment=rtdet_seg_n"): "tests/commands/test_rtdet_readme.py::test_readme_rtdet_seg_command_trains_and_tests_on_coco",
    ("Your own data", 2, "python -m visionkit task=detection data=coco"): OWN_DATA,
    ("Your own data", 2, "python -m visionkit task=instance_segmentation data=coco"): OWN_DATA,
    ("Your own data", 2, "python -m visionkit data=imagefolder"): OWN_DATA,
    ("Your own data", 2, "python -m visionkit task=semantic_segmentation data=masks"): OWN_DATA,
    ("Your own data", 2, "python -m visionkit data=digits"): OWN_DATA,
    ("Your own data", 2, "python -m visionkit task=detection data=voc"): OWN_DATA,
    ("Your own data", 2, "python -m visionkit task=instance_segmentation data=voc"): OWN_DATA,
    ("Your own data", 2, "python -m visionkit task=instance_segmentation data=yolo"): OWN_DATA,
    ("Your own data", 2, "python -m visionkit convert voc coco"): CONVERT,
    ("Your own data", 2, "python -m visionkit convert yolo coco"): CONVERT,
    ("Your own data", 2, "python -m visionkit convert coco yolo"): CONVERT,
    ("Export", 3, "python -m visionkit export"): EXPORT,
    ("Export", 3, "python -m visionkit predict"): EXPORT,
    ("Add a plugin", 2, "python -m visionkit list activations"): PLUGINS + "test_list_filters_by_family_and_pattern",
    ("Add a plugin", 2, "python -m visionkit model/backbone=example_net"): PLUGINS + "test_plugin_config_is_selectable_and_its_backbone_trains",
    ("Add a plugin", 2, "python -m visionkit experiment=example_squareplus"): PLUGINS + "test_plugin_experiment_is_selectable_and_trains",
    ("Sweep", 2, "python -m visionkit --multirun optimizer.lr=1e-3,3e-3"): "tests/sweep/test_basic_sweeper.py::test_readme_grid_runs_every_combination_in_its_own_directory",
    ("Sweep", 2, "python -m visionkit --multirun hparams_search=classification"): OPTUNA,
    ("Sweep", 2, "python -m visionkit --multirun hparams_search=classification hydra/launcher=joblib"): OPTUNA,
    ("Sweep", 2, "python -m visionkit --multirun hparams_search=classification hydra.sweep.dir=multirun/classification/<date_time>"): OPTUNA,
    ("Sweep", 2, "python -m visionkit report"): "tests/sweep/test_optuna_sweeper.py::test_report_tabulates_the_study",
    ("Sweep", 2, "python -m visionkit --multirun trainer.devices=1,2"): "tests/sweep/test_job.py::test_ddp_job_of_a_sweep_runs_once_in_its_own_directory",
    ("Sweep", 2, "torchrun --nnodes=2 --nproc-per-node=1 --node-rank=0"): TWO_NODES,
    ("Sweep", 2, "torchrun --nnodes=2 --nproc-per-node=1 --node-rank=1"): TWO_NODES,
    ("Fine-tune from a checkpoint", 2, "python -m visionkit data=digits model.backbone.pretrained=outputs/classification/<run>/checkpoints/best.ckpt"): "tests/commands/test_train_test.py::test_readme_finetune_command_keeps_the_runs_backbone_frozen",
    ("Whole pretrained models", 3, "python -m visionkit experiment=tv_fasterrcnn_resnet50_fpn"): "tests/models/test_whole_pretrained.py::test_readme_command_fine_tunes_torchvision_weights_on_coco",
    ("Training tools", 2, "python -m visionkit 'callbacks=[ema,early_stopping]'"): TOOLS + "test_train_reports_ema_early_stopping_and_tta",
    ("Training tools", 2, "python -m visionkit test ckpt_path=outputs/classification/<date_time>/checkpoints/best.ckpt"): TOOLS + "test_test_command_with_multiscale_tta",
    ("Training tools", 2, "python -m visionkit task=instance_segmentation data.sampler=repeat_factor"): TOOLS + "test_instance_segmentation_with_mosaic_copy_paste_and_repeat_factor",
    ("Inspect a model", 2, "python -m visionkit analyze"): "tests/commands/test_analyze.py::test_analyze_vgg_cli",
}
NOT_RUN = {
    ("visionkit", 1, "make run"): "creates .venv and pip-installs visionkit before training; bench/bench_default_run.py measures it",
    ("visionkit", 1, "make test"): "runs this test suite itself (what CI runs)",
    ("Sweep", 2, "python -m visionkit --multirun hydra/launcher=slurm"): "needs a SLURM cluster; composed in tests/sweep/test_job.py::test_slurm_launcher_config_has_the_usual_keys",
    ("Sweep", 2, "srun python -m visionkit train"): "a line of an sbatch script: needs a SLURM cluster with 2 nodes of 4 GPUs",
}
# fmt: on
ENTRIES = {**RUN, **NOT_RUN}


def matches(line: str, prefix: str) -> bool:
    """``prefix`` is the line or its first words."""
    return line == prefix or line.startswith(prefix + " ")


def entry_of(line: str) -> tuple[str, int, str] | None:
    """The entry of a README line: the longest prefix among those of the sections holding it."""
    found = [key for key in ENTRIES if matches(line, key[2]) and line in readme_commands(*key[:2])]
    return max(found, key=lambda key: len(key[2]), default=None)


def test_every_readme_command_line_has_an_entry() -> None:
    lines = readme_commands("visionkit", level=1)  # the title's section: the whole README
    assert len(lines) > 40, lines
    missing = [line for line in lines if entry_of(line) is None]
    assert not missing, f"README command lines no test runs (add a test, then an entry in RUN): {missing}"  # fmt: skip


def test_every_entry_owns_exactly_one_readme_line() -> None:
    """No stale entry (its line is gone), and no entry standing for a second, newer line."""
    owned = Counter(entry_of(line) for line in readme_commands("visionkit", level=1))
    wrong = {key: owned[key] for key in ENTRIES if owned[key] != 1}
    assert not wrong, f"entries owning other than one README line: {wrong}"


def test_every_named_test_exists_and_reads_the_readme() -> None:
    """The test is defined in its module, and the module takes its commands from the README (the
    conftest readers or the sweep tests' readme_argv) rather than from a copy."""
    for key, test in RUN.items():
        path, name = test.split("::")
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), (key, test)
        assert re.search(r"\breadme_(commands|blocks|task_commands|argv)\(", source), (key, path)
