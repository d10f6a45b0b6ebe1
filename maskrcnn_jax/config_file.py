"""Loading an `ml_collections` config file (a module with `get_config()`) plus `key=value` overrides."""

import ast
import importlib.util
import os
from typing import Sequence

import ml_collections


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """`get_config()` of the Python file at `path`, then each "dotted.key=literal" override applied.

    Override values are Python literals (`model.backbone.bn_eps=1e-5`, `input.canvas_size=(800,800)`);
    anything that is not a literal is taken as a string.
    """
    spec = importlib.util.spec_from_file_location("maskrcnn_config", os.fspath(path))
    if spec is None or not os.path.isfile(path):
        raise FileNotFoundError(f"no config file at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator:
            raise ValueError(f"override {override!r} is not of the form dotted.key=value")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        if leaf not in node:
            raise KeyError(f"config has no field {key!r}")
        node[leaf] = value
    return config
