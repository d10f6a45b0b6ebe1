"""What a checkpoint directory holds (the package docstring): the names of its entries, of the
trainer's folder of steps, and the one metadata builder that both writers use."""

import json
import os
import pathlib
from typing import Sequence

import ml_collections
from etils import epath

from maskrcnn_jax.storage import as_path

METADATA_FILE = "metadata.json"
# The same JSON as an Orbax CheckpointManager item named "metadata" (ocp.args.JsonSave) stores it.
METADATA_ITEM_FILE = pathlib.Path("metadata") / "metadata"
PARAMS_DIR = "params"
CHECKPOINTS_DIR = "checkpoints"  # in a training workdir: one numbered directory per saved step
BACKBONE_KIND = "backbone"  # metadata.json's "kind" of a backbone checkpoint (a model checkpoint has none)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (damaged files, bad metadata) or does not fit the model."""


def steps_directory(workdir: str | os.PathLike) -> epath.Path:
    """WORKDIR/checkpoints, where the trainer's CheckpointManager writes its steps (a URI stays one)."""
    return as_path(workdir) / CHECKPOINTS_DIR


def checkpoint_metadata(config: ml_collections.ConfigDict, class_names: Sequence[str]) -> dict:
    """The metadata of a model checkpoint: {"config": config as JSON types, "class_names": [K] names},
    class_names one per class slot of the model (config.model.num_classes, index 0 the background)."""
    class_names = [str(name) for name in class_names]
    if len(class_names) != config.model.num_classes:
        raise ValueError(
            f"{len(class_names)} class names for a model with {config.model.num_classes} class slots "
            "(give one name per slot, index 0 the background)"
        )
    return {"config": json.loads(config.to_json()), "class_names": class_names}
