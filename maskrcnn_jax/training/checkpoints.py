"""Training checkpoints: WORKDIR/checkpoints/<step>/, written with an Orbax CheckpointManager.

Each step directory holds four items:
  params          the parameter tree (what `maskrcnn_jax.checkpoint`'s readers and prediction read)
  train_state     {"step", "opt_state", "key"}: the rest of the TrainState
  data_iterator   the grain iterator state of the batches consumed (one file per process)
  metadata        json {"config": the run's config as a dict, "class_names": [K + 1 names]}
                  (`maskrcnn_jax.checkpoint.checkpoint_metadata`), so the checkpoint describes the
                  model it holds
Orbax writes a step into a temporary directory and renames it when every item (of every process)
is complete (on gs://, where a rename is a copy, it writes the step in place and marks it complete
with commit_success.txt), and only complete steps are listed: a half-written checkpoint is never
restored (its temporary directory is removed when the next run starts). A complete step that cannot be restored
(a damaged file) is moved to WORKDIR/damaged_checkpoints/ and the run resumes from the step before.

This module is the trainer's save/restore pair and what resuming needs (the compatibility check,
damaged steps moved aside); reading a workdir's parameters, metadata or latest step is
`maskrcnn_jax.checkpoint`'s, which reads these step directories as checkpoint directories.
"""

import json
import os
import time

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax.traverse_util import flatten_dict
from jax.experimental import multihost_utils

from maskrcnn_jax.checkpoint import steps_directory
from maskrcnn_jax.storage import move
from maskrcnn_jax.training.progress import say
from maskrcnn_jax.training.state import TrainState
from maskrcnn_jax.training.processes import wait_for_all_processes
from maskrcnn_jax.training.write_failures import naming, reason

DAMAGED_SUBDIR = "damaged_checkpoints"
# Fields of the config that fix the parameter tree and its meaning; a checkpoint of another value
# cannot be resumed.
COMPATIBILITY_FIELDS = ("model",)


class IncompatibleCheckpointError(ValueError):
    """The workdir's checkpoint was written for another model (the message names the fields)."""


class NoRestorableCheckpointError(RuntimeError):
    """The workdir has checkpoints, and none of them can be restored (the message says why)."""


def checkpoint_manager(workdir: str | os.PathLike, *, max_to_keep: int | None = 3,
                       asynchronous: bool = True) -> ocp.CheckpointManager:
    """Manager of WORKDIR/checkpoints keeping the last `max_to_keep` steps (None keeps all).

    asynchronous: `save` returns once the arrays are copied off the devices and the files are
    written in the background (call `wait_until_finished` before exiting). Temporary directories of
    saves that never finished (a killed run, a full disk) are removed: they are never restored, and
    they hold the space a resumed run needs.
    """
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=asynchronous,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(steps_directory(workdir), options=options)


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: TrainState, data_iterator,
                    metadata: dict) -> None:
    """Saves `state` (at `step` = int(state.step)) with the data iterator and metadata; every process calls it."""
    manager.save(step, force=True, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        train_state=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state, "key": state.key}),
        data_iterator=grain.checkpoint.CheckpointSave(data_iterator),
        metadata=ocp.args.JsonSave(metadata),
    ))


class CheckpointSaver:
    """Saves checkpoints with `manager`; a failed write raises WriteFailedError naming its step, also
    when it failed in the background (reported at the next `save` or at `finish`)."""

    def __init__(self, manager: ocp.CheckpointManager):
        self.manager = manager
        self.in_flight = None  # the step being written in the background

    def _naming(self, step: int):
        return naming(f"the checkpoint of step {step}", self.manager.directory / str(step), errors=(Exception,))

    def save(self, step: int, state: TrainState, data_iterator, metadata: dict) -> None:
        self.finish()
        with self._naming(step):
            save_checkpoint(self.manager, step, state, data_iterator, metadata)
        self.in_flight = step

    def finish(self) -> None:
        """Waits until the checkpoint being written in the background is complete."""
        if self.in_flight is not None:
            step, self.in_flight = self.in_flight, None
            with self._naming(step):
                self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for a save still in flight, then releases the manager. Called on the way out of a
        run that may be failing already, so a failure here is not raised over it: the directory
        listing (`maskrcnn_jax.checkpoint.latest_step`) shows what was saved."""
        try:
            self.manager.close()
        except Exception:  # noqa: BLE001 (the failed step is not listed as complete)
            pass


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


def _on_every_process(ok: bool) -> bool:
    """True when `ok` on every process (a step restores on all of them, or it is not used)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _move_aside(workdir: epath.Path, step: int) -> epath.Path:
    """Moves WORKDIR/checkpoints/<step> into WORKDIR/damaged_checkpoints/ (process 0; data is never deleted)."""
    destination = workdir / DAMAGED_SUBDIR / f"{step}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    if jax.process_index() == 0:
        destination.parent.mkdir(parents=True, exist_ok=True)
        move(steps_directory(workdir) / str(step), destination)
    return destination


def check_workdir_compatible(manager: ocp.CheckpointManager, workdir: epath.Path,
                             config: ml_collections.ConfigDict) -> None:
    """Raises IncompatibleCheckpointError when the newest checkpoint whose metadata reads was
    written for another model (checked before the data and model are built)."""
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            saved_config = read_metadata(manager, step)["config"]
        except Exception:  # noqa: BLE001 (a damaged step: restore_newest_readable reports it)
            continue
        check_compatible(saved_config, config, str(steps_directory(workdir) / str(step)))
        return


def restore_newest_readable(manager: ocp.CheckpointManager, workdir: epath.Path, abstract_state: TrainState,
                            data_iterator) -> tuple[TrainState, int] | None:
    """(state, step) of the newest checkpoint that restores, or None when there is none.

    Newer steps that fail to restore (any item, the metadata too) are moved to
    WORKDIR/damaged_checkpoints/, one line each, once an older step has restored. Raises
    NoRestorableCheckpointError when no step restores (nothing is moved then).
    """
    failures = []  # (step, error)
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            read_metadata(manager, step)
            state, error = restore_checkpoint(manager, step, abstract_state, data_iterator), None
        except Exception as failure:  # noqa: BLE001 (any failure to read means the step cannot be used)
            state, error = None, failure
        if not _on_every_process(error is None):
            failures.append((step, error or RuntimeError("it cannot be restored on another process")))
            continue
        for damaged, failure in failures:
            moved_to = _move_aside(workdir, damaged)
            say(f"checkpoint {steps_directory(workdir) / str(damaged)} cannot be restored "
                f"({reason(failure)}); moved to {moved_to}")
        if failures:
            wait_for_all_processes(f"damaged checkpoints moved aside before step {step}")
            manager.reload()
        return state, step
    if failures:
        raise NoRestorableCheckpointError(
            f"no checkpoint in {steps_directory(workdir)} can be restored ("
            + "; ".join(f"step {step}: {reason(error)}" for step, error in failures)
            + "); move that directory elsewhere to start again from step 0, or use another --workdir")
    return None


def incompatible_fields(saved_config: dict, config: ml_collections.ConfigDict) -> list[str]:
    """'field: checkpoint X, config Y' for each field of COMPATIBILITY_FIELDS that differs."""
    current = json.loads(config.to_json())
    differences = []
    for section in COMPATIBILITY_FIELDS:
        saved, now = (flatten_dict({section: tree.get(section, {})}, sep=".") for tree in (saved_config, current))
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
