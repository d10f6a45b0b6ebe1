"""Reading checkpoints (the package docstring's layout): a checkpoint directory, a folder of numbered
steps or a training workdir resolves to one step directory, whose metadata and parameters are read.
Parameters come back as host numpy arrays, whatever mesh wrote them."""

import json
import os
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from maskrcnn_jax.checkpoint.layout import (
    BACKBONE_KIND,
    METADATA_FILE,
    METADATA_ITEM_FILE,
    PARAMS_DIR,
    CheckpointError,
    steps_directory,
)
from maskrcnn_jax.storage import as_path, is_uri

COMMIT_SUCCESS_FILE = "commit_success.txt"  # orbax's atomicity_types.COMMIT_SUCCESS_FILE (not public)
TORCH_SUFFIXES = (".pth", ".pt", ".pkl", ".bin")


def _tuples(value):
    """JSON lists back to the tuples a config holds, recursively."""
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def _metadata_file(directory: epath.Path) -> epath.Path | None:
    """The metadata JSON of a checkpoint directory (converter's or trainer's layout), None if absent."""
    for name in (METADATA_FILE, METADATA_ITEM_FILE):
        if (directory / name).is_file():
            return directory / name
    return None


def _complete(step: epath.Path) -> bool:
    """A step directory whose metadata is written and, on an object store, marked complete: there
    Orbax writes a step in place and adds commit_success.txt last (there is no rename to wait for)."""
    return bool(_metadata_file(step)) and (not is_uri(step) or (step / COMMIT_SUCCESS_FILE).is_file())


def _step_directories(folder: epath.Path) -> list[epath.Path]:
    """Complete numbered step directories of a CheckpointManager folder (`_complete`), oldest first."""
    steps = [path for path in folder.iterdir() if path.name.isdigit() and _complete(path)]
    return sorted(steps, key=lambda path: int(path.name))


def resolve_checkpoint(path: str | os.PathLike) -> epath.Path:
    """The checkpoint directory that `path` (local, or a URI such as gs://bucket/run) names: itself
    if it holds metadata.json, else the latest step of `path` (a folder of numbered steps) or of
    `path`/checkpoints (a training workdir)."""
    path = as_path(path)
    if _metadata_file(path):
        return path
    for folder in (path, steps_directory(path)):
        if folder.is_dir():
            steps = _step_directories(folder)
            if steps:
                return steps[-1]
    if path.is_file() and path.suffix in TORCH_SUFFIXES:
        raise NotADirectoryError(
            f"{path} is a torch file, not a checkpoint directory: convert it first with "
            f"`python scripts/convert_torchvision.py --input {path} --output DIR` and pass DIR"
        )
    if path.is_file():
        raise NotADirectoryError(f"{path} is a file; a checkpoint is a directory holding {METADATA_FILE} and {PARAMS_DIR}/")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: no such file or directory")
    raise FileNotFoundError(
        f"{path} is not a checkpoint: it has no {METADATA_FILE}, nor step directories with one "
        "(an empty directory, a training run that saved no step yet, or a checkpoint written before "
        "checkpoints described themselves: convert the model again)"
    )


def _damaged(metadata_file: epath.Path, error: Exception) -> CheckpointError:
    return CheckpointError(f"{metadata_file} is damaged ({type(error).__name__}: {error}); "
                           "write or copy the checkpoint again")


def _read_metadata(directory: epath.Path) -> dict:
    """The metadata JSON of a resolved checkpoint directory, as a dict."""
    metadata_file = _metadata_file(directory)
    try:
        metadata = json.loads(metadata_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _damaged(metadata_file, error) from None
    if not isinstance(metadata, dict):
        raise _damaged(metadata_file, TypeError(f"a JSON {type(metadata).__name__}, not an object"))
    return metadata


def load_backbone_description(path: str | os.PathLike) -> dict | None:
    """The "backbone" description of the backbone checkpoint at `path`; None for a model checkpoint or
    a training workdir (see `resolve_checkpoint`)."""
    directory = resolve_checkpoint(path)
    metadata = _read_metadata(directory)
    if metadata.get("kind") != BACKBONE_KIND:
        return None
    if not isinstance(metadata.get("backbone"), dict):
        raise _damaged(_metadata_file(directory), KeyError("backbone"))
    return metadata["backbone"]


def describe_input(convention: dict) -> str:
    """'RGB in [0.0, 1.0], mean [...], std [...]' from a backbone checkpoint's "input" record."""
    return (f"{convention.get('channels')} in {convention.get('range')}, mean {convention.get('mean')}, "
            f"std {convention.get('std')}")


def describe_backbone(description: dict) -> str:
    """One line on a backbone checkpoint: what the weights are and where they came from."""
    source = description.get("source", {})
    return (f"ResNet-{description.get('depth')} ({description.get('architecture')}, stem width "
            f"{description.get('stem_width')}) from {source.get('file')} (sha256 {str(source.get('sha256'))[:12]}), "
            f"BatchNorm eps {description.get('bn_eps')}, input {describe_input(description.get('input', {}))}")


def load_metadata(path: str | os.PathLike) -> tuple[ml_collections.ConfigDict, tuple[str, ...]]:
    """(config, class_names) of the checkpoint at `path` (see `resolve_checkpoint`); the config is unlocked.
    A backbone checkpoint has neither: CheckpointError saying what it is for."""
    directory = resolve_checkpoint(path)
    metadata = _read_metadata(directory)
    if metadata.get("kind") == BACKBONE_KIND:
        raise CheckpointError(
            f"{directory} is a backbone checkpoint (ImageNet weights of the ResNet only, no detection heads): "
            f"start a training run from it with --config.init.mode=backbone --config.init.checkpoint={directory}")
    try:
        return ml_collections.ConfigDict(_tuples(metadata["config"])), tuple(metadata["class_names"])
    except (KeyError, TypeError, ValueError) as error:
        raise _damaged(_metadata_file(directory), error) from None


def load_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """The model config stored with the checkpoint at `path`."""
    return load_metadata(path)[0]


def _quiet_closed_event_loop(unraisable) -> None:
    """sys.unraisablehook after a failed restore: Orbax's pending reads finish on tensorstore's
    threads after its event loop closed, and each would print "Event loop is closed"."""
    if not (isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value)):
        sys.__unraisablehook__(unraisable)


def load_params(path: str | os.PathLike) -> dict:
    """The parameter tree of the checkpoint at `path` (see `resolve_checkpoint`), as host numpy arrays.
    Read onto this process's first device, whatever mesh wrote them. Raises CheckpointError for
    damaged or truncated parameter files."""
    params_dir = resolve_checkpoint(path) / PARAMS_DIR
    if not params_dir.is_dir():
        raise CheckpointError(f"{params_dir} is missing: the checkpoint is incomplete; write or copy it again")
    checkpointer = ocp.StandardCheckpointer()
    try:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                              checkpointer.metadata(params_dir).item_metadata.tree)
        restored = checkpointer.restore(params_dir, target)
    except Exception as error:  # Orbax and tensorstore raise many types for damaged files
        sys.unraisablehook = _quiet_closed_event_loop
        message = " ".join(str(error).split())[:300]
        raise CheckpointError(f"cannot read the parameters in {params_dir}, a file may be truncated or damaged: "
                              f"{message}; write or copy the checkpoint again") from error
    return jax.tree_util.tree_map(np.asarray, restored)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, ml_collections.ConfigDict, tuple[str, ...]]:
    """(params, config, class_names) of the checkpoint at `path`, all from the same step."""
    directory = resolve_checkpoint(path)
    config, class_names = load_metadata(directory)
    return load_params(directory), config, class_names


def latest_step(workdir: str | os.PathLike) -> int | None:
    """The last complete step in WORKDIR/checkpoints (a step directory with its metadata), or None."""
    folder = steps_directory(workdir)
    steps = _step_directories(folder) if folder.is_dir() else []
    return int(steps[-1].name) if steps else None


def latest_params(workdir: str | os.PathLike) -> tuple[dict, dict, list[str]]:
    """(params, config, class names) of the checkpoint at `workdir` (see `resolve_checkpoint`; a
    training workdir's latest step) as the trainer wrote them: the config as JSON types (a dict,
    lists for tuples), the class names as a list."""
    directory = resolve_checkpoint(workdir)
    metadata = _read_metadata(directory)
    return load_params(directory), metadata["config"], list(metadata["class_names"])


def check_params_fit(params: dict, expected: dict) -> None:
    """Raises CheckpointError naming the parameters that `expected` (the model's tree of arrays or
    ShapeDtypeStructs) has and `params` lacks, has extra, or has with another shape."""

    def flat(tree):
        return {jax.tree_util.keystr(key, simple=True, separator="/"): np.shape(leaf)
                for key, leaf in jax.tree_util.tree_leaves_with_path(tree)}

    ours, wanted = flat(params), flat(expected)
    problems = [f"{name} is missing" for name in wanted if name not in ours]
    problems += [f"{name} is not in the model" for name in ours if name not in wanted]
    problems += [f"{name} has shape {ours[name]}, the model expects {wanted[name]}"
                 for name in wanted if name in ours and ours[name] != wanted[name]]
    if problems:
        raise CheckpointError(
            f"the checkpoint's parameters do not fit the config's model ({len(problems)} problems, e.g. "
            f"{'; '.join(problems[:3])}): use the checkpoint's own config, or fix config.model "
            "(num_classes, backbone depth or widths)"
        )
