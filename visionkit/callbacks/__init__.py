"""CALLBACKS: finetune schedules and visualisation, registered lazily (they import Lightning)."""

from visionkit.registries import CALLBACKS

# finetune schedules (transfer learning): conf/finetune/<name>.yaml
_FT = "visionkit.callbacks.finetuning"
CALLBACKS.register(f"{_FT}:Full", name="full")
CALLBACKS.register(f"{_FT}:LinearProbe", name="linear_probe")
CALLBACKS.register(f"{_FT}:FreezeUnfreeze", name="freeze_unfreeze")
CALLBACKS.register(f"{_FT}:Partial", name="partial")
CALLBACKS.register(f"{_FT}:Gradual", name="gradual")
CALLBACKS.register(f"{_FT}:MultiStageProbe", name="multi_stage_probe")
CALLBACKS.register(f"{_FT}:Evaluate", name="evaluate")
CALLBACKS.register("visionkit.callbacks.auto_finetune:AutoFinetune", name="auto")
CALLBACKS.register("visionkit.callbacks.visualization:ValidationOverlays", name="overlays")
CALLBACKS.register("visionkit.callbacks.learning_curves:LearningCurves", name="learning_curves")
CALLBACKS.register("visionkit.callbacks.early_stopping:EarlyStopping", name="early_stopping")
CALLBACKS.register("visionkit.callbacks.ema:EMA", name="ema")
