"""`train_and_evaluate(config, workdir)`: the whole training run, resumable and preemption-safe.

Reads the config (once, here), holds the workdir (one run at a time), builds the data, model, loss,
optimizer and mesh, resumes from the newest checkpoint in WORKDIR/checkpoints that restores (or
starts from config.init), runs the jitted step to config.train.num_steps with logs, checkpoints and
evaluations, and returns the final state.
"""

import contextlib
import math
import os
from typing import Callable

import jax
import ml_collections
import numpy as np
from etils import epath

from maskrcnn_jax.checkpoint import checkpoint_metadata, latest_step, steps_directory
from maskrcnn_jax.data import global_batch
from maskrcnn_jax.evaluation import class_slots
from maskrcnn_jax.storage import as_path
from maskrcnn_jax.training import checkpoints, initialization, workdir_lock
from maskrcnn_jax.training import data as data_lib
from maskrcnn_jax.training import mesh as mesh_lib
from maskrcnn_jax.training.evaluation import EvaluateFn, make_coco_evaluator
from maskrcnn_jax.training.image_id_log import ImageIdLog
from maskrcnn_jax.training.loss import loss_fn_from_config
from maskrcnn_jax.training.metric_writer import MetricWriter
from maskrcnn_jax.training.preemption import StopRequest
from maskrcnn_jax.training.processes import wait_for_all_processes
from maskrcnn_jax.training.progress import Progress, say
from maskrcnn_jax.training.setup import LossFnFactory, abstract_training_batch, training_canvases, training_program
from maskrcnn_jax.training.state import TrainState, create_train_state, replace_params
from maskrcnn_jax.training.write_failures import WriteFailedError

EvaluateFnFactory = Callable[[ml_collections.ConfigDict, epath.Path], EvaluateFn | None]
# Metrics that are not averaged over the steps between two log lines.
LAST_VALUE_METRICS = ("learning_rate",)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


def _summarise(step_metrics: list[dict]) -> dict[str, float]:
    """Host metrics of consecutive steps -> one record: means over the steps that were not skipped,
    the last learning rate, the number of skipped steps."""
    kept = [m for m in step_metrics if not m["skipped"]]
    summary = {}
    for name in step_metrics[-1]:
        if name == "skipped":
            summary["skipped_steps"] = float(sum(int(m["skipped"]) for m in step_metrics))
        elif name in LAST_VALUE_METRICS:
            summary[name] = float(step_metrics[-1][name])
        else:
            summary[name] = float(np.mean([m[name] for m in kept])) if kept else math.nan
    return summary


def _flatten_evaluation(metrics: dict) -> dict[str, float]:
    """{"bbox": {"AP": x}} -> {"eval/bbox_AP": x}."""
    return {f"eval/{iou_type}_{name}": value for iou_type, table in metrics.items() for name, value in table.items()}


class LoopBookkeeping:
    """The mutable bookkeeping of one training loop: unfetched metrics, the bad-step streak, outputs."""

    def __init__(self, *, writer: MetricWriter, progress: Progress, max_consecutive_bad_steps: int):
        self.writer = writer
        self.progress = progress
        self.max_consecutive_bad_steps = max_consecutive_bad_steps
        self.pending = []  # (step, device metrics) not fetched yet
        self.bad_streak = 0

    def add(self, step: int, metrics: dict) -> None:
        self.pending.append((step, metrics))

    def report(self) -> None:
        """Fetches the pending metrics, counts non-finite steps, writes and shows one record."""
        if not self.pending:
            return
        steps = [step for step, _ in self.pending]
        host = jax.device_get([metrics for _, metrics in self.pending])
        self.pending = []
        for step, metrics in zip(steps, host):
            if metrics["skipped"]:
                self.bad_streak += 1
                self.progress.message(f"step {step}: non-finite loss or gradient, update skipped "
                                      f"({self.bad_streak} in a row)")
                if self.bad_streak >= self.max_consecutive_bad_steps:
                    raise NonFiniteLossError(
                        f"{self.bad_streak} consecutive steps up to step {step} had a non-finite loss or gradient "
                        f"(config.train.max_consecutive_bad_steps = {self.max_consecutive_bad_steps}); the "
                        f"parameters are those of step {step - self.bad_streak}. Lower config.train."
                        f"base_learning_rate, lengthen warmup_steps or set clip_norm.")
            else:
                self.bad_streak = 0
        record = {**_summarise(host), **self.progress.throughput(steps[-1])}
        self.writer.write(steps[-1], record)
        self.progress.show(steps[-1], record)


def _is_multiple(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _restore_or_initialize(config, workdir, manager, program, data_iterator, mesh):
    """(state, step resumed from or None): the newest checkpoint that restores, else a fresh state from config.init."""
    restored = checkpoints.restore_newest_readable(manager, workdir, program.abstract_state, data_iterator)
    if restored is not None:
        state, resume_step = restored
        say(f"resuming from step {resume_step} ({steps_directory(workdir) / str(resume_step)})")
        return state, resume_step
    state = create_train_state(program.initialize, config.train.seed, mesh)
    loaded = initialization.initial_params(state.params, config.init.checkpoint, config.init.mode,
                                            config.model.backbone)
    if loaded is not None:
        state = replace_params(state, loaded, program.optimizer, mesh)
    say(f"starting at step 0 in {workdir} (config.init.mode {config.init.mode})")
    return state, None


def _compile_steps(config, mesh, train_step, state) -> dict:
    """{canvas (Hc, Wc): the step compiled for its batches}, every canvas of `training_canvases`
    compiled before the first step, then all processes start together: no step's collectives wait
    for another process's compilation, and no canvas compiles in the middle of the run."""
    compiled = {}
    for canvas in training_canvases(config):
        batch = abstract_training_batch(config, mesh, config.train.global_batch_size, canvas)
        compiled[canvas] = train_step.lower(state, batch).compile()
    wait_for_all_processes(f"train step compiled for {len(compiled)} canvases")
    return compiled


@contextlib.contextmanager
def _naming_the_last_checkpoint(workdir: epath.Path):
    """Adds the last complete checkpoint to a WriteFailedError. Entered before the checkpoint saver,
    so a save still in flight has ended when the workdir is looked at."""
    try:
        yield
    except WriteFailedError as error:
        step = latest_step(workdir)
        last = f"step {step}" if step is not None else "none yet (a rerun starts at step 0)"
        raise WriteFailedError(f"{error}; the last complete checkpoint is {last}") from error


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       loss_fn_factory: LossFnFactory = loss_fn_from_config,
                       evaluate_fn_factory: EvaluateFnFactory = make_coco_evaluator,
                       mesh: jax.sharding.Mesh | None = None,
                       workdir_lock_stale_seconds: float = workdir_lock.DEFAULT_STALE_AFTER_SECONDS) -> TrainState:
    """Trains to config.train.num_steps in `workdir` (a local folder, or a URI such as
    gs://bucket/run: docs/object_store.md) and returns the final TrainState.

    Holds the workdir while it runs (WORKDIR/train.lock: another run there raises
    WorkdirInUseError; a lock whose run is gone, or untouched for workdir_lock_stale_seconds, is
    taken over). Resumes from the newest checkpoint of WORKDIR/checkpoints that restores when there
    is one (parameters, optimizer state, step, key and data position; newer ones that do not restore
    are moved to WORKDIR/damaged_checkpoints; none restoring raises NoRestorableCheckpointError, a
    checkpoint of another model IncompatibleCheckpointError), else starts from config.init. Saves
    every config.train.checkpoint_every steps, at the end, and on SIGTERM / SIGINT (then returns
    early). A checkpoint, metrics or events file that cannot be written (a full disk) raises
    WriteFailedError naming it and the last complete checkpoint. Evaluates every
    config.train.eval_every steps and at the end (0: never).
    loss_fn_factory(config) -> loss_fn(params, batch, key) -> (loss, metrics); evaluate_fn_factory
    (config, workdir) -> evaluate(params) -> {"bbox": {...}, "segm": {...}} or None, called by every
    process at once (process 0's metrics are logged). mesh: default every device of every process on
    the data axis.
    """
    workdir = as_path(workdir)  # a local folder, or a URI such as gs://bucket/run (docs/object_store.md)
    train = config.train
    mesh = mesh_lib.make_mesh() if mesh is None else mesh
    if train.global_batch_size % mesh.devices.size:
        raise ValueError(f"config.train.global_batch_size {train.global_batch_size} does not split over "
                         f"{mesh.devices.size} devices")
    with _naming_the_last_checkpoint(workdir), workdir_lock.held(workdir, workdir_lock_stale_seconds), \
            contextlib.closing(checkpoints.CheckpointSaver(checkpoints.checkpoint_manager(
                workdir, max_to_keep=train.keep_checkpoints, asynchronous=train.async_checkpointing))) as saver:
        return _train(config, workdir, saver, mesh, loss_fn_factory, evaluate_fn_factory)


def _train(config, workdir, saver, mesh, loss_fn_factory, evaluate_fn_factory) -> TrainState:
    """train_and_evaluate in a held workdir, saving with `saver`."""
    train = config.train
    manager = saver.manager
    checkpoints.check_workdir_compatible(manager, workdir, config)
    if manager.latest_step() is None:  # a fresh run: a missing config.init.checkpoint stops it before the data loads
        initialization.check_init_checkpoint(config.init.checkpoint, config.init.mode)
    source = data_lib.training_source(config, workdir)
    slots = class_slots(config.model.num_classes, source)
    data_iterator = data_lib.training_iterator(config, source)
    program = training_program(config, mesh, loss_fn_factory)
    metadata = checkpoint_metadata(config, slots.class_names)

    # Signals are caught from here on: one arriving during the set-up stops the run after its first step.
    with StopRequest() as stop:
        state, resume_step = _restore_or_initialize(config, workdir, manager, program, data_iterator, mesh)
        train_step = program.train_step
        evaluate = evaluate_fn_factory(config, workdir) if train.eval_every > 0 else None
        step = int(resume_step or 0)
        writer = MetricWriter(workdir, first_step=step)
        image_ids = ImageIdLog(workdir, first_step=step) if train.get("record_image_ids", False) else None
        progress = Progress(first_step=step, num_steps=train.num_steps, global_batch_size=train.global_batch_size)
        run = LoopBookkeeping(writer=writer, progress=progress,
                              max_consecutive_bad_steps=train.max_consecutive_bad_steps)
        if step >= train.num_steps:
            progress.message(f"already at step {step} of {train.num_steps}: nothing to do")
        compiled_steps = _compile_steps(config, mesh, train_step, state) if step < train.num_steps else {}
        try:
            while step < train.num_steps:
                host_batch = next(data_iterator)
                if image_ids is not None:
                    image_ids.write(step + 1, host_batch)
                host_batch["gt_classes"] = slots.label_slots[host_batch["gt_classes"]]
                batch = global_batch(host_batch, mesh)
                state, metrics = compiled_steps[batch["image"].shape[1:3]](state, batch)
                step += 1
                run.add(step, metrics)
                last = step == train.num_steps
                stopping = stop.should_stop(step)
                save = last or stopping or _is_multiple(step, train.checkpoint_every)
                evaluating = evaluate is not None and (last or _is_multiple(step, train.eval_every))
                if save or evaluating or _is_multiple(step, train.log_every):
                    run.report()
                if save:
                    saver.save(step, state, data_iterator, metadata)
                if evaluating:
                    # Every process evaluates its shard of the set together; process 0's metrics are logged.
                    evaluation = evaluate(state.params)
                    if jax.process_index() == 0:
                        scores = _flatten_evaluation(evaluation)
                        writer.write(step, scores)
                        progress.message(f"step {step} evaluation: " + " ".join(
                            f"{name} {value:.4f}" for name, value in scores.items() if name.endswith(("_AP", "_AP50"))))
                    wait_for_all_processes(f"evaluated step {step}")
                    progress.exclude_time_since_report(step)
                if stopping:
                    progress.message(f"stopped by a signal at step {step}; checkpoint saved, rerun to resume")
                    break
            saver.finish()
        finally:
            writer.close()
            progress.close()
    return state
