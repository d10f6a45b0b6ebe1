"""Configs from files and from the command line, the same way for every script.

A config file is a Python file with `get_config()` returning an `ml_collections.ConfigDict`.
Scripts take it with `--config FILE` and change fields with `--config.key=value` (ml_collections
`config_flags` on absl flags; the config is locked, so a misspelt key is an error). Scripts that
read a checkpoint (predict.py, evaluate.py) also run with `--checkpoint DIR` alone: the config is
then the checkpoint's own, still overridable with `--config.key=value`.

Scripts start with `run(main)`: absl's app.run, with the log verbosity left at WARNING unless
-v/--verbosity is given (absl raises it to INFO, where Orbax reports every read and write).
"""

import importlib.util
import os
import pathlib
import re
from typing import Callable, Sequence

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

CHECKPOINT_CONFIG_FILE = pathlib.Path(__file__).with_name("checkpoint_config.py")


def load_config_file(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """`get_config()` of the Python config file at `path`, unlocked (for configs derived from another,
    and for tests)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}")
    spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def define_config_flag(help_string: str, default: str | None = None) -> flags.FlagHolder:
    """Defines `--config FILE` with `--config.key=value` overrides (locked config)."""
    return config_flags.DEFINE_config_file("config", default, help_string, lock_config=True)


def _flag_value(argv: Sequence[str], name: str) -> str | None:
    """The value of `--name=VALUE` or `--name VALUE` in argv (the last one), or None."""
    value = None
    for i, arg in enumerate(argv):
        match = re.fullmatch(rf"--?{name}(=(.*))?", arg)
        if match:
            value = match.group(2) if match.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
    return value


def parse_flags_with_checkpoint_config(argv: list[str]) -> list[str]:
    """An `app.run` flags_parser: when argv has no `--config` but a `--checkpoint DIR`, the config flag
    defaults to that checkpoint's config (so `--config.key=value` overrides apply to it); then absl
    parses as usual. Returns the positional arguments (argv[0] first)."""
    checkpoint = _flag_value(argv, "checkpoint")
    if _flag_value(argv, "config") is None and checkpoint:
        # The overrides are read from sys.argv when the default is parsed, as for --config itself.
        flags.FLAGS.set_default("config", f"{CHECKPOINT_CONFIG_FILE}:{checkpoint}")
    return app.parse_flags_with_usage(argv)


def run(main: Callable[[list[str]], int | None], config_from_checkpoint: bool = False) -> None:
    """`app.run(main)` for a script; config_from_checkpoint: use `parse_flags_with_checkpoint_config`."""
    parse = parse_flags_with_checkpoint_config if config_from_checkpoint else app.parse_flags_with_usage

    def main_with_quiet_logs(argv: list[str]) -> int | None:
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        return main(argv)

    app.run(main_with_quiet_logs, flags_parser=parse)
