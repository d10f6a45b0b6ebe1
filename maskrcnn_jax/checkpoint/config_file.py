"""A config file (for ml_collections config_flags) whose config is the one stored in a checkpoint:

    --config=maskrcnn_jax/checkpoint/config_file.py:DIR

predict.py and evaluate.py use it by themselves when given --checkpoint DIR without --config
(`maskrcnn_jax.command_line.checkpoint_config_default`).
"""

import ml_collections

from maskrcnn_jax.checkpoint.read import load_config


def get_config(checkpoint: str) -> ml_collections.ConfigDict:
    return load_config(checkpoint)
