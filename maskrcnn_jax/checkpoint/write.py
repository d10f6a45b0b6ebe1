"""Writing checkpoint directories (the package docstring's layout): a model's, or a backbone's.
The trainer's steps are written by its CheckpointManager (`maskrcnn_jax.training.checkpoints`)."""

import json
import os
from typing import Sequence

import ml_collections
import orbax.checkpoint as ocp

from maskrcnn_jax.checkpoint.layout import BACKBONE_KIND, METADATA_FILE, PARAMS_DIR, checkpoint_metadata
from maskrcnn_jax.storage import as_path


def save_metadata(directory: str | os.PathLike, config: ml_collections.ConfigDict, class_names: Sequence[str]) -> None:
    """Writes DIR/metadata.json (`checkpoint_metadata`)."""
    metadata = checkpoint_metadata(config, class_names)
    (as_path(directory) / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n")


def _save_params_then(directory: str | os.PathLike, params: dict, write_metadata) -> None:
    """Writes DIR/params, then calls write_metadata(DIR); `directory` must not hold a checkpoint already."""
    directory = as_path(directory)
    if (directory / PARAMS_DIR).exists() or (directory / METADATA_FILE).exists():
        raise FileExistsError(f"{directory} already holds a checkpoint")
    directory.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / PARAMS_DIR, params)
    checkpointer.wait_until_finished()
    # Metadata last: a directory with metadata.json holds complete parameters.
    write_metadata(directory)


def save_checkpoint(
    directory: str | os.PathLike, params: dict, config: ml_collections.ConfigDict, class_names: Sequence[str]
) -> None:
    """Writes a checkpoint directory; `directory` must not hold one already."""
    checkpoint_metadata(config, class_names)  # refuses names that do not fit before anything is written
    _save_params_then(directory, params, lambda path: save_metadata(path, config, class_names))


def save_backbone_checkpoint(directory: str | os.PathLike, params: dict, description: dict) -> None:
    """Writes a backbone checkpoint (package docstring): params {"backbone": the ResNet's tree} and
    `description` (JSON-serialisable) as metadata.json's "backbone"; `directory` must not hold one already."""
    metadata = json.dumps({"kind": BACKBONE_KIND, "backbone": description}, indent=1) + "\n"
    _save_params_then(directory, params, lambda path: (path / METADATA_FILE).write_text(metadata))
