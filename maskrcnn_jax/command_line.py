"""Configs from files and from the command line, the same way for every script, and how scripts fail.

A config file is a Python file with `get_config()` returning an `ml_collections.ConfigDict`.
Scripts take it with `--config FILE` and change fields with `--config.key=value` (ml_collections
`config_flags` on absl flags; the config is locked, so a misspelt key is an error). Scripts that
read a checkpoint (predict.py, evaluate.py) also run with `--checkpoint DIR` alone: the config is
then the checkpoint's own, still overridable with `--config.key=value`.

How every script ends: a problem is one line on stderr, `error: <what is wrong and what to do>`,
with exit code 2 for a usage problem (a flag or argument that is missing, malformed or out of range,
a path that does not exist or is the wrong kind of thing) and 1 for a failure while working (a file
that exists but cannot be used, an image that fails). `--verbose` adds the traceback, and what
Orbax's background threads and coroutines print about a failure it also raises in the script
(without it that is dropped: `_quiet_background_failures`).

Every script (scripts/, benchmarks/, examples/; not examples/serve_exported.py, which runs without
this package) ends with `sys.exit(main())`, where `main(argv=None)` is `run_script(function,
define_flags, argv, ...)`: absl flags, spelt with underscores, parsed into fresh FlagValues on every
call, so tests call the scripts' `main([...])` in one process.
"""

import importlib.util
import logging as python_logging
import os
import pathlib
import re
import sys
import traceback
from typing import Callable, Sequence

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from maskrcnn_jax.xla_cpu_flags import add_xla_cpu_flags

CHECKPOINT_CONFIG_FILE = pathlib.Path(__file__).parent / "checkpoint" / "config_file.py"
USAGE_EXIT_CODE = 2
FAILURE_EXIT_CODE = 1
CACHE_DIR_ENVIRONMENT_VARIABLE = "MASKRCNN_JAX_CACHE_DIR"
_MAX_MESSAGE_LENGTH = 1000  # one line stays readable; --verbose prints the whole message


class UsageError(Exception):
    """A problem with the command line itself (exit code 2)."""


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


def define_config_flag(
    help_string: str, default: str | None, flag_values: flags.FlagValues, argv: Sequence[str]
) -> flags.FlagHolder:
    """Defines `--config FILE` with `--config.key=value` overrides (locked config) on flag_values;
    argv: the command line the overrides are read from."""
    return config_flags.DEFINE_config_file(
        "config", default, help_string, flag_values=flag_values, lock_config=True, sys_argv=argv
    )


def _flag_value(argv: Sequence[str], name: str) -> str | None:
    """The value of `--name=VALUE` or `--name VALUE` in argv (the last one), or None."""
    value = None
    for i, arg in enumerate(argv):
        match = re.fullmatch(rf"--?{name}(=(.*))?", arg)
        if match:
            value = match.group(2) if match.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
    return value


def checkpoint_config_default(argv: Sequence[str]) -> str | None:
    """The `--config` default for a script reading a checkpoint: when argv has no `--config` but a
    `--checkpoint DIR`, the config stored in that checkpoint (so `--config.key=value` overrides apply
    to it). Raises UsageError when DIR is not a checkpoint."""
    from maskrcnn_jax.checkpoint import resolve_checkpoint  # imports Orbax: only scripts that read checkpoints

    checkpoint = _flag_value(argv, "checkpoint")
    if _flag_value(argv, "config") is not None or not checkpoint:
        return None
    try:
        resolve_checkpoint(checkpoint)
    except (FileNotFoundError, NotADirectoryError) as error:
        raise UsageError(f"--checkpoint: {error}") from None
    return f"{CHECKPOINT_CONFIG_FILE}:{checkpoint}"


def enable_compilation_cache(directory: str | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache, so that a second run (or another process) loads
    compiled programs instead of compiling them again; returns the directory, or None when off.

    directory: where to keep it; None: $MASKRCNN_JAX_CACHE_DIR, else $XDG_CACHE_HOME/maskrcnn_jax/jax,
    else ~/.cache/maskrcnn_jax/jax; "" turns it off. A cache directory the program set already is kept.
    """
    import jax  # only when asked: configs import this module and must not pull in JAX

    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    if directory is None:
        directory = os.environ.get(CACHE_DIR_ENVIRONMENT_VARIABLE)
    if directory is None:
        cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        directory = os.path.join(cache_home, "maskrcnn_jax", "jax")
    if not directory:
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    return directory


def one_line_message(error: BaseException) -> str:
    """The error as one line: its message, prefixed by the exception type unless it is an error
    written for the user (usage, ValueError, OSError, this package's own)."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    message = " ".join(str(error).split())
    ours = type(error).__module__.startswith("maskrcnn_jax")
    written_for_the_user = ours or isinstance(error, (UsageError, app.UsageError, ValueError, OSError))
    if not (written_for_the_user and message):
        message = f"{type(error).__name__}: {message} (unexpected; rerun with --verbose for the traceback)"
    if len(message) > _MAX_MESSAGE_LENGTH:
        message = message[: _MAX_MESSAGE_LENGTH - 40] + " ... (--verbose prints all of it)"
    return message


def report_error(error: BaseException, verbose: bool) -> int:
    """Prints `error: ...` (after the traceback when verbose) and returns the exit code for it."""
    if verbose:
        traceback.print_exception(error)
    print(f"error: {one_line_message(error)}", file=sys.stderr, flush=True)
    if isinstance(error, (UsageError, app.UsageError)):
        return USAGE_EXIT_CODE
    return 130 if isinstance(error, KeyboardInterrupt) else FAILURE_EXIT_CODE


def _from_orbax(filenames) -> bool:
    return any(f"{os.sep}orbax{os.sep}" in filename for filename in filenames)


def _drop_background_errors(record: python_logging.LogRecord) -> bool:
    from_background = record.name == "asyncio" or _from_orbax([record.pathname])
    return not (record.levelno >= python_logging.ERROR and from_background)


class _QuietUnraisables:
    """A sys.unraisablehook that drops, unless verbose, what Orbax's failed reads and writes leave
    behind: the exceptions of its abandoned coroutines, and TensorStore's callbacks into the event
    loop it closed ("Event loop is closed"). Anything else goes to the previous hook."""

    def __init__(self, previous):
        self.previous = previous
        self.verbose = False

    def __call__(self, unraisable) -> None:
        closed_loop = isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"
        frames = traceback.extract_tb(unraisable.exc_traceback)
        if self.verbose or not (closed_loop or _from_orbax(frame.filename for frame in frames)):
            self.previous(unraisable)


def _quiet_background_failures(verbose: bool) -> None:
    """Orbax reports a failure (a full disk, a damaged file) by raising it in the calling thread,
    where the script reports it in one line; it also logs it from its background threads, asyncio
    logs the futures of the event loop it then closes, and its abandoned coroutines and TensorStore's
    callbacks raise where nothing can catch them: thousands of traceback lines saying nothing more.
    Those are shown only when verbose."""
    for logger in (logging.get_absl_logger(), python_logging.getLogger("asyncio")):
        if verbose:
            logger.removeFilter(_drop_background_errors)
        else:
            logger.addFilter(_drop_background_errors)
    if not isinstance(sys.unraisablehook, _QuietUnraisables):
        sys.unraisablehook = _QuietUnraisables(sys.unraisablehook)
    sys.unraisablehook.verbose = verbose


def _wants_verbose(argv: Sequence[str]) -> bool:
    return any(arg in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1") for arg in argv)


def _usage_message(error: BaseException, argv: Sequence[str]) -> str:
    """absl's and config_flags' parsing errors in the user's terms."""
    message = " ".join(str(error).split())
    required = re.fullmatch(r"flag --(\w+)=None: Flag --\w+ must have a value other than None\.", message)
    if required:
        return f"--{required.group(1)} is required (see --help)"
    if isinstance(error, (AttributeError, KeyError)):
        field = message.strip("\"'")
        given = [arg.split("=")[0] for arg in argv if arg.startswith("--config.") and arg.split("=")[0].endswith(f".{field}")]
        return f"{', '.join(given) or '--config.*'}: the config has no field {field!r} (overrides must name existing fields)"
    return message


def _print_help(doc: str, flag_values: flags.FlagValues) -> None:
    print(doc.strip() + "\n\nflags:\n" + flag_values.get_help(include_special_flags=False))


def run_script(
    main: Callable[[flags.FlagValues, list[str]], int | None],
    define_flags: Callable[[flags.FlagValues], None],
    argv: Sequence[str] | None = None,
    *,
    doc: str = "",
    config_help: str | None = None,
    config_default: str | None = None,
    config_from_checkpoint: bool = False,
    compilation_cache: bool = False,
) -> int:
    """Parses argv (default sys.argv, the program name first) into fresh absl flags and returns the
    exit code of `main(flag_values, positional arguments)` (None counts as 0).

    define_flags(flag_values) defines the script's flags; `--verbose` is added, and `--config FILE`
    with overrides when config_help is given (default config_default, or with config_from_checkpoint
    the checkpoint's; see `checkpoint_config_default`); compilation_cache adds
    `--compilation_cache_dir` and turns the cache on (`enable_compilation_cache`). `--help` prints
    doc and the flags. Problems end as one `error:` line (module docstring).
    """
    add_xla_cpu_flags()  # before the script starts JAX
    argv = list(sys.argv if argv is None else argv)
    verbose = _wants_verbose(argv)
    if not flags.FLAGS.is_parsed():
        # absl logging (Orbax, grain workers) expects parsed global flags; scripts use their own.
        flags.FLAGS.mark_as_parsed()
    logging.set_verbosity(logging.WARNING)  # Orbax reports every read and write at INFO
    _quiet_background_failures(verbose)
    flag_values = flags.FlagValues()
    try:
        flags.DEFINE_bool("verbose", False, "print the traceback of an error", flag_values=flag_values)
        if compilation_cache:
            flags.DEFINE_string(
                "compilation_cache_dir", None,
                f"JAX's persistent compilation cache (default ${CACHE_DIR_ENVIRONMENT_VARIABLE}, else "
                "~/.cache/maskrcnn_jax/jax); '' turns it off", flag_values=flag_values)
        define_flags(flag_values)
        if any(arg in ("--help", "-h", "--helpshort", "--helpfull") for arg in argv[1:]):
            if config_help is not None:
                define_config_flag(config_help, config_default, flag_values, argv)
            _print_help(doc, flag_values)
            return 0
        if config_help is not None:
            default = checkpoint_config_default(argv) if config_from_checkpoint else None
            config_file = _flag_value(argv, "config")
            if config_file and not pathlib.Path(config_file.split(":")[0]).is_file():
                raise UsageError(f"--config {config_file}: no such config file")
            define_config_flag(config_help, default or config_default, flag_values, argv)
        positional = flag_values(argv)
    except UsageError as error:
        return report_error(error, verbose)
    except Exception as error:  # absl's flag errors, and whatever loading the config file raised
        if verbose:
            traceback.print_exception(error)
        return report_error(UsageError(_usage_message(error, argv)), verbose=False)
    try:
        if compilation_cache:
            enable_compilation_cache(flag_values.compilation_cache_dir)
        code = main(flag_values, positional)
        return 0 if code is None else int(code)
    except (Exception, KeyboardInterrupt) as error:
        return report_error(error, flag_values.verbose)
