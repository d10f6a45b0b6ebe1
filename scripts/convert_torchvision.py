r"""Convert a torchvision Mask R-CNN state_dict (.pth) into a self-describing checkpoint directory.

    python scripts/convert_torchvision.py --input model.pth --output DIR \
        [--config configs/mask_rcnn_r50_fpn_coco.py] [--config.model.num_classes=5 --class_names=a,b,c,d] \
        [--bn_eps=EPS]

The checkpoint holds the parameters, the config and the class names, so `predict.py --checkpoint DIR`
and `Detector.from_checkpoint(DIR)` need nothing else. Needs torch (the `test` extra); the file is
read with torch.load(weights_only=True): only tensors and plain containers are unpickled.

BatchNorm eps is not in a state_dict; it is decided here and stored in the config:
  * BatchNorm2d buffers (num_batches_tracked), a model built with weights=None: eps = 1e-5;
  * FrozenBatchNorm2d buffers only, torchvision's COCO_V1 weights: eps = 0.0, unless --bn_eps
    says otherwise (a model fine-tuned with another eps).
Class names: COCO's for the default 91-slot head; give --class_names for any other head.
"""

import pathlib
import sys

from absl import app, flags

from maskrcnn_jax.command_line import define_config_flag, run
from maskrcnn_jax.convert_torchvision import ConversionError, convert_torchvision_checkpoint

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "mask_rcnn_r50_fpn_coco.py"

_CONFIG = define_config_flag("model config file", default=str(DEFAULT_CONFIG))
_INPUT = flags.DEFINE_string("input", None, "torchvision maskrcnn_resnet50_fpn state_dict (.pth)", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "checkpoint directory to create (must not exist)", required=True)
_CLASS_NAMES = flags.DEFINE_list("class_names", None, "names of labels 1..K-1 (default: COCO's, for 91 slots)")
_BN_EPS = flags.DEFINE_float("bn_eps", None, "BatchNorm eps (default: decided from the state_dict, see above)")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if pathlib.Path(_OUTPUT.value).exists():
        raise app.UsageError(f"--output {_OUTPUT.value} already exists; choose a new directory")
    class_names = None if _CLASS_NAMES.value is None else ["__background__", *_CLASS_NAMES.value]
    try:
        done = convert_torchvision_checkpoint(_INPUT.value, _OUTPUT.value, _CONFIG.value, class_names, _BN_EPS.value)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {done.num_parameters:,} parameters, the config and the class names to {_OUTPUT.value}")
    print(f"bn_eps = {done.bn_eps} ({done.bn_eps_reason})")
    return 0


if __name__ == "__main__":
    run(main)
