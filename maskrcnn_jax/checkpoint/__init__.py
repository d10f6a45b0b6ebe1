"""Self-describing checkpoints: the parameters together with the model config and the class names.

A checkpoint is a directory holding two entries:

    DIR/metadata.json  {"config": the ml_collections config as JSON, "class_names": [K] names,
                        index = label, index 0 "__background__"}
    DIR/params/        the parameter tree (the model's `params` collection), an Orbax checkpoint
                       written by ocp.StandardCheckpointer (or a CheckpointManager item named
                       "params" saved with ocp.args.StandardSave)

`save_checkpoint` writes one (the torchvision converter does). The trainer writes the same two
entries into each step directory of an Orbax CheckpointManager, WORKDIR/checkpoints/<step>/: its
items "params" and "metadata" (the same JSON, `checkpoint_metadata`, as Orbax's JSON item file
metadata/metadata, written with the step, see `maskrcnn_jax.training.checkpoints`); Orbax lists a
step only once every item is complete. A step directory with neither metadata file is never read.
The readers (`load_checkpoint`, `load_params`, `load_metadata`, `latest_params`, `latest_step`)
accept a checkpoint directory, a directory of numbered step directories, or a training workdir
(its checkpoints/ folder), and then read the latest step that has its metadata.

A backbone checkpoint (`save_backbone_checkpoint`, written by scripts/convert_backbone.py from
ImageNet classification weights) has the same two entries, but no detection heads and no class
names: DIR/params/ holds {"backbone": ...} and DIR/metadata.json {"kind": "backbone", "backbone":
{what the weights are: architecture, depth, stage_sizes, stem_width, bn_eps, source, input}}. It
starts a training run (config.init.mode = "backbone"); the model readers refuse it with that advice.

JSON has no tuples: the config's sequences come back as tuples (configs use tuples, not lists).

Errors name the path and what to do: FileNotFoundError / NotADirectoryError for a path that holds
no checkpoint (a torch file gets the converter's command), `CheckpointError` for one that cannot be
read or does not fit the model.

Modules: `layout.py` (the names of the entries and the one metadata builder), `write.py`,
`read.py`, `config_file.py` (a checkpoint's config as a config file for `--config`).
"""

from maskrcnn_jax.checkpoint.layout import (
    CHECKPOINTS_DIR,
    CheckpointError,
    checkpoint_metadata,
    steps_directory,
)
from maskrcnn_jax.checkpoint.read import (
    check_params_fit,
    describe_backbone,
    describe_input,
    latest_params,
    latest_step,
    load_backbone_description,
    load_checkpoint,
    load_config,
    load_metadata,
    load_params,
    resolve_checkpoint,
)
from maskrcnn_jax.checkpoint.write import save_backbone_checkpoint, save_checkpoint, save_metadata

__all__ = [
    "CHECKPOINTS_DIR",
    "CheckpointError",
    "check_params_fit",
    "checkpoint_metadata",
    "describe_backbone",
    "describe_input",
    "latest_params",
    "latest_step",
    "load_backbone_description",
    "load_checkpoint",
    "load_config",
    "load_metadata",
    "load_params",
    "resolve_checkpoint",
    "save_backbone_checkpoint",
    "save_checkpoint",
    "save_metadata",
    "steps_directory",
]
