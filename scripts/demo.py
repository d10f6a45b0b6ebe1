"""The first run (what `make demo` calls): trains configs/shapes_tiny.py on the CPU, scores it on
held-out shapes and draws, into --output (maskrcnn_jax/demo.py says what is written there).

  python scripts/demo.py --output demo_output [--config configs/shapes_tiny.py] [--config.key=value ...]

Running it again resumes (or, when finished, only scores and draws again); compiled programs are
kept in JAX's persistent cache as scripts/train.py keeps them.
"""

import pathlib

from absl import flags

from maskrcnn_jax.command_line import define_config_flag, enable_compilation_cache, run
from maskrcnn_jax.demo import run_demo
from maskrcnn_jax.training import IncompatibleCheckpointError

_CONFIG = define_config_flag("config file with get_config()",
                             str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "shapes_tiny.py"))
_OUTPUT = flags.DEFINE_string("output", "demo_output", "directory for the scores, pictures and the training run")


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"error: unexpected arguments {argv[1:]}")
    enable_compilation_cache()
    try:
        run_demo(_CONFIG.value, _OUTPUT.value)
    except IncompatibleCheckpointError as error:
        raise SystemExit(f"error: {error}\n(an earlier demo of another model is in {_OUTPUT.value}: delete it)")


if __name__ == "__main__":
    run(main)
