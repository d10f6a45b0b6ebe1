"""The first run (what `make demo` calls): trains configs/shapes_tiny.py on the CPU, scores it on
held-out shapes and draws, into --output (maskrcnn_jax/demo.py says what is written there).

  python scripts/demo.py --output demo_output [--config configs/shapes_tiny.py] [--config.key=value ...]

Running it again resumes (or, when finished, only scores and draws again); compiled programs are
kept in JAX's persistent cache as scripts/train.py keeps them.
"""

import pathlib
import sys

from absl import flags

from maskrcnn_jax.command_line import UsageError, run_script
from maskrcnn_jax.demo import run_demo
from maskrcnn_jax.training import IncompatibleCheckpointError

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "shapes_tiny.py"


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("output", "demo_output", "directory for the scores, pictures and the training run",
                        flag_values=flag_values)


def demo(flag_values: flags.FlagValues, positional: list[str]) -> None:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    try:
        run_demo(flag_values.config, flag_values.output)
    except IncompatibleCheckpointError as error:
        raise SystemExit(f"error: {error}\n(an earlier demo of another model is in {flag_values.output}: delete it)")


def main(argv: list[str] | None = None) -> int:
    return run_script(demo, define_flags, argv, doc=__doc__, compilation_cache=True,
                      config_help="config file with get_config()", config_default=str(DEFAULT_CONFIG))


if __name__ == "__main__":
    sys.exit(main())
