"""Training checkpoints: WORKDIR/checkpoints/<step>/, written with an Orbax CheckpointManager.

Each step directory holds four items:
  params          the parameter tree (what `latest_params` and prediction read)
  train_state     {"step", "opt_state", "key"}: the rest of the TrainState
  data_iterator   the grain iterator state of the batches consumed (one file per process)
  metadata        json {"config": the run's config as a dict, "class_names": [K + 1 names]},
                  so the checkpoint describes the model it holds
Orbax writes a step into a temporary directory and renames it when every item (of every process)
is complete, and only complete steps are listed: a half-written checkpoint is never restored.
"""

import json
import os
import pathlib

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from maskrcnn_jax.training.state import TrainState
from maskrcnn_jax.trees import flatten_dict

CHECKPOINT_SUBDIR = "checkpoints"
# Fields of the config that fix the parameter tree and its meaning; a checkpoint of another value
# cannot be resumed.
COMPATIBILITY_FIELDS = ("model",)


class IncompatibleCheckpointError(ValueError):
    """The workdir's checkpoint was written for another model (the message names the fields)."""


def checkpoint_directory(workdir: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(workdir).absolute() / CHECKPOINT_SUBDIR


def checkpoint_manager(workdir: str | os.PathLike, *, max_to_keep: int | None = 3,
                       asynchronous: bool = True) -> ocp.CheckpointManager:
    """Manager of WORKDIR/checkpoints keeping the last `max_to_keep` steps (None keeps all).

    asynchronous: `save` returns once the arrays are copied off the devices and the files are
    written in the background (call `wait_until_finished` before exiting).
    """
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=asynchronous)
    return ocp.CheckpointManager(checkpoint_directory(workdir), options=options)


def _reader(workdir: str | os.PathLike) -> ocp.CheckpointManager:
    """A manager that reads an existing WORKDIR/checkpoints, knowing the handler of every item."""
    return ocp.CheckpointManager(
        checkpoint_directory(workdir), options=ocp.CheckpointManagerOptions(create=False),
        item_handlers={"params": ocp.StandardCheckpointHandler(), "train_state": ocp.StandardCheckpointHandler(),
                       "data_iterator": grain.checkpoint.CheckpointHandler(),
                       "metadata": ocp.JsonCheckpointHandler()})


def checkpoint_metadata(config: ml_collections.ConfigDict, class_names) -> dict:
    """The metadata item: {"config": config as JSON types, "class_names": [names]}."""
    return {"config": json.loads(config.to_json()), "class_names": [str(name) for name in class_names]}


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: TrainState, data_iterator,
                    metadata: dict) -> None:
    """Saves `state` (at `step` = int(state.step)) with the data iterator and metadata; every process calls it."""
    manager.save(step, force=True, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        train_state=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state, "key": state.key}),
        data_iterator=grain.checkpoint.CheckpointSave(data_iterator),
        metadata=ocp.args.JsonSave(metadata),
    ))


def read_metadata(manager: ocp.CheckpointManager, step: int) -> dict:
    return manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())).metadata


def restore_checkpoint(manager: ocp.CheckpointManager, step: int, abstract_state: TrainState,
                       data_iterator) -> TrainState:
    """The TrainState of `step`, each array in the sharding of `abstract_state` (see
    state.abstract_train_state); `data_iterator` is moved to where that step's run stopped."""
    target = {"step": abstract_state.step, "opt_state": abstract_state.opt_state, "key": abstract_state.key}
    restored = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_state.params),
        train_state=ocp.args.StandardRestore(target),
        data_iterator=grain.checkpoint.CheckpointRestore(data_iterator),
    ))
    rest = restored.train_state
    return TrainState(step=rest["step"], params=restored.params, opt_state=rest["opt_state"], key=rest["key"])


def incompatible_fields(saved_config: dict, config: ml_collections.ConfigDict) -> list[str]:
    """'field: checkpoint X, config Y' for each field of COMPATIBILITY_FIELDS that differs."""
    current = json.loads(config.to_json())
    differences = []
    for section in COMPATIBILITY_FIELDS:
        saved, now = ({".".join(path): value for path, value in flatten_dict(tree.get(section, {}), (section,)).items()}
                      for tree in (saved_config, current))
        for field in sorted(set(saved) | set(now)):
            if saved.get(field, "<absent>") != now.get(field, "<absent>"):
                differences.append(f"{field}: checkpoint {saved.get(field, '<absent>')}, "
                                   f"config {now.get(field, '<absent>')}")
    return differences


def check_compatible(saved_config: dict, config: ml_collections.ConfigDict, where: str) -> None:
    """Raises IncompatibleCheckpointError naming every differing model field."""
    differences = incompatible_fields(saved_config, config)
    if differences:
        raise IncompatibleCheckpointError(
            f"the checkpoint in {where} was trained with another model; differing fields:\n  "
            + "\n  ".join(differences)
            + "\nuse another --workdir, or start from it with config.init.checkpoint (fine-tuning)")


def latest_step(workdir: str | os.PathLike) -> int | None:
    """The last complete checkpoint step in WORKDIR/checkpoints, or None."""
    if not checkpoint_directory(workdir).is_dir():
        return None
    return _reader(workdir).latest_step()


def latest_params(workdir: str | os.PathLike) -> tuple[dict, dict, list[str]]:
    """(params as numpy arrays, config dict, class names) of the last complete checkpoint of a training workdir.

    Works on any machine: the parameters are read onto this process's first device, whatever mesh
    wrote them. Raises FileNotFoundError when the workdir holds no complete checkpoint.
    """
    step = latest_step(workdir)
    if step is None:
        raise FileNotFoundError(f"no complete training checkpoint in {checkpoint_directory(workdir)}")
    manager = _reader(workdir)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                          manager.item_metadata(step)["params"])
    restored = manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target),
                                                             metadata=ocp.args.JsonRestore()))
    params = jax.tree.map(np.asarray, restored.params)
    return params, restored.metadata["config"], list(restored.metadata["class_names"])
