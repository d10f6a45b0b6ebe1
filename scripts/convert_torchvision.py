"""Convert a torchvision Mask R-CNN state_dict (.pth) into an Orbax checkpoint of our parameters.

    python scripts/convert_torchvision.py --input model.pth --output DIR [--config CFG] [--set key=value]

Needs torch (the `test` extra). The file is read with torch.load(weights_only=True): only tensors
and plain containers are unpickled, never arbitrary objects.

FrozenBatchNorm eps is NOT stored in the state_dict, and the converter copies the raw statistics,
so the eps belongs to the config used at prediction time (config.model.backbone.bn_eps):
  * torchvision's COCO_V1 weights (maskrcnn_resnet50_fpn(weights="COCO_V1")): eps = 0.0,
    the default of configs/mask_rcnn_r50_fpn_coco.py;
  * a model built with weights=None (random or trained by you): eps = 1e-5, so pass
    `--set model.backbone.bn_eps=1e-5` to predict.py.
"""

import argparse
import os
import pathlib
import sys

import jax
import jax.numpy as jnp

from maskrcnn_jax.checkpoint import save_params
from maskrcnn_jax.config_file import load_config
from maskrcnn_jax.convert_torchvision import ConversionError, convert_state_dict
from maskrcnn_jax.models import build_model

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "mask_rcnn_r50_fpn_coco.py"


def read_state_dict(path: str) -> dict:
    """torch.load(weights_only=True) -> {key: float32 numpy}; a {'model': state_dict} wrapper is unwrapped."""
    import torch  # only the converter needs torch

    if not os.path.isfile(path):
        raise ConversionError(f"no file at {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a non-checkpoint or unsafe pickle
        raise ConversionError(f"{path} is not a torch state_dict readable with weights_only=True: {error}") from error
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ConversionError(f"{path} does not hold a state_dict (a dict of tensors), but {type(loaded).__name__}")
    return {key: value.detach().float().numpy() for key, value in loaded.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="torchvision maskrcnn_resnet50_fpn state_dict (.pth)")
    parser.add_argument("--output", required=True, help="checkpoint directory to create (must not exist)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="model config (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    args = parser.parse_args(argv)

    if os.path.exists(args.output):
        parser.error(f"--output {args.output} already exists; choose a new directory")
    config = load_config(args.config, args.set)
    model = build_model(config)
    expected = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32))["params"]
    try:
        params = convert_state_dict(read_state_dict(args.input), expected, fpn_channels=config.model.fpn_channels)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    save_params(args.output, params)
    count = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    print(
        f"wrote {count:,} parameters to {args.output}; the config's bn_eps is {config.model.backbone.bn_eps} "
        "(right for COCO_V1 weights; a model built with weights=None needs --set model.backbone.bn_eps=1e-5)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
