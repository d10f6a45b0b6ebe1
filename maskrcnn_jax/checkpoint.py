"""Self-describing checkpoints: the parameters together with the model config and the class names.

A checkpoint is a directory holding two entries:

    DIR/metadata.json  {"config": the ml_collections config as JSON, "class_names": [K] names,
                        index = label, index 0 "__background__"}
    DIR/params/        the parameter tree (the model's `params` collection), an Orbax checkpoint
                       written by ocp.StandardCheckpointer (or a CheckpointManager item named
                       "params" saved with ocp.args.StandardSave)

`save_checkpoint` writes one (the torchvision converter does). The trainer writes the same two
entries into each step directory of an Orbax CheckpointManager, WORKDIR/checkpoints/<step>/: its
items "params" and "metadata" (the same JSON, as Orbax's JSON item file metadata/metadata, written
with the step, see `maskrcnn_jax.training.checkpoints`); Orbax lists a step only once every item is
complete. A step directory with neither metadata file is never read. The readers (`load_checkpoint`, `load_params`, `load_metadata`) accept a checkpoint
directory, a directory of numbered step directories, or a training workdir (its checkpoints/
folder), and then read the latest step that has its metadata.json.

A backbone checkpoint (`save_backbone_checkpoint`, written by scripts/convert_backbone.py from
ImageNet classification weights) has the same two entries, but no detection heads and no class
names: DIR/params/ holds {"backbone": ...} and DIR/metadata.json {"kind": "backbone", "backbone":
{what the weights are: architecture, depth, stage_sizes, stem_width, bn_eps, source, input}}. It
starts a training run (config.init.mode = "backbone"); the model readers refuse it with that advice.

JSON has no tuples: the config's sequences come back as tuples (configs use tuples, not lists).

Errors name the path and what to do: FileNotFoundError / NotADirectoryError for a path that holds
no checkpoint (a torch file gets the converter's command), `CheckpointError` for one that cannot be
read or does not fit the model.
"""

import json
import os
import pathlib
import sys
from typing import Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

METADATA_FILE = "metadata.json"
# The same JSON as an Orbax CheckpointManager item named "metadata" (ocp.args.JsonSave) stores it.
METADATA_ITEM_FILE = pathlib.Path("metadata") / "metadata"
PARAMS_DIR = "params"
STEPS_DIR = "checkpoints"  # in a training workdir
TORCH_SUFFIXES = (".pth", ".pt", ".pkl", ".bin")
BACKBONE_KIND = "backbone"  # metadata.json's "kind" of a backbone checkpoint (a model checkpoint has none)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (damaged files, bad metadata) or does not fit the model."""


def _tuples(value):
    """JSON lists back to the tuples a config holds, recursively."""
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def save_metadata(directory: str | os.PathLike, config: ml_collections.ConfigDict, class_names: Sequence[str]) -> None:
    """Writes DIR/metadata.json. class_names: [K] names, index = label, one per class slot of the model
    (config.model.num_classes, background included)."""
    class_names = [str(name) for name in class_names]
    if len(class_names) != config.model.num_classes:
        raise ValueError(
            f"{len(class_names)} class names for a model with {config.model.num_classes} class slots "
            "(give one name per slot, index 0 the background)"
        )
    metadata = {"config": json.loads(config.to_json()), "class_names": class_names}
    pathlib.Path(directory, METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n")


def _save_params_then(directory: str | os.PathLike, params: dict, write_metadata) -> None:
    """Writes DIR/params, then calls write_metadata(DIR); `directory` must not hold a checkpoint already."""
    directory = pathlib.Path(directory).absolute()
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
    """Writes a checkpoint directory (the module docstring's layout); `directory` must not hold one already."""
    _save_params_then(directory, params, lambda path: save_metadata(path, config, class_names))


def save_backbone_checkpoint(directory: str | os.PathLike, params: dict, description: dict) -> None:
    """Writes a backbone checkpoint (module docstring): params {"backbone": the ResNet's tree} and
    `description` (JSON-serialisable) as metadata.json's "backbone"; `directory` must not hold one already."""
    metadata = json.dumps({"kind": BACKBONE_KIND, "backbone": description}, indent=1) + "\n"
    _save_params_then(directory, params, lambda path: (path / METADATA_FILE).write_text(metadata))


def _metadata_file(directory: pathlib.Path) -> pathlib.Path | None:
    """The metadata JSON of a checkpoint directory (converter's or trainer's layout), None if absent."""
    for name in (METADATA_FILE, METADATA_ITEM_FILE):
        if (directory / name).is_file():
            return directory / name
    return None


def _step_directories(folder: pathlib.Path) -> list[pathlib.Path]:
    """Numbered step directories of a CheckpointManager folder that have their metadata, oldest first."""
    steps = [path for path in folder.iterdir() if path.name.isdigit() and _metadata_file(path)]
    return sorted(steps, key=lambda path: int(path.name))


def resolve_checkpoint(path: str | os.PathLike) -> pathlib.Path:
    """The checkpoint directory that `path` names: itself if it holds metadata.json, else the latest
    step of `path` (a folder of numbered steps) or of `path`/checkpoints (a training workdir)."""
    path = pathlib.Path(path).absolute()
    if _metadata_file(path):
        return path
    for folder in (path, path / STEPS_DIR):
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


def _damaged(metadata_file: pathlib.Path, error: Exception) -> CheckpointError:
    return CheckpointError(f"{metadata_file} is damaged ({type(error).__name__}: {error}); "
                           "write or copy the checkpoint again")


def _read_metadata(directory: pathlib.Path) -> dict:
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
    Raises CheckpointError for damaged or truncated parameter files."""
    params_dir = resolve_checkpoint(path) / PARAMS_DIR
    if not params_dir.is_dir():
        raise CheckpointError(f"{params_dir} is missing: the checkpoint is incomplete; write or copy it again")
    try:
        restored = ocp.StandardCheckpointer().restore(params_dir)
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
