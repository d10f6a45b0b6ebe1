r"""Convert a torchvision Mask R-CNN state_dict (.pth), maskrcnn_resnet50_fpn (v1) or
maskrcnn_resnet50_fpn_v2, into a self-describing checkpoint directory.

    python scripts/convert_torchvision.py --input model.pth --output DIR \
        [--config configs/mask_rcnn_r50_fpn_coco.py] [--config.model.num_classes=5 --class_names=a,b,c,d] \
        [--bn_eps=EPS]

The checkpoint holds the parameters, the config and the class names, so `predict.py --checkpoint DIR`
and `Detector.from_checkpoint(DIR)` need nothing else. Needs torch (the `test` extra); the file is
read with torch.load(weights_only=True): only tensors and plain containers are unpickled.

The architecture (v1 or v2) is read from the state_dict's keys, printed and stored in the config
(config.model.architecture), whichever --config was given.
BatchNorm eps is not in a state_dict; it is decided here and stored in the config:
  * v2: every norm is BatchNorm2d, eps = 1e-5;
  * BatchNorm2d buffers (num_batches_tracked), a model built with weights=None: eps = 1e-5;
  * FrozenBatchNorm2d buffers only, torchvision's COCO_V1 weights: eps = 0.0, unless --bn_eps
    says otherwise (a model fine-tuned with another eps).
Class names: COCO's for the default 91-slot head; give --class_names for any other head.
"""

import pathlib
import sys

from absl import flags

from maskrcnn_jax.command_line import UsageError, run_script

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "mask_rcnn_r50_fpn_coco.py"


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("input", None, "torchvision maskrcnn_resnet50_fpn(_v2) state_dict (.pth)", required=True,
                        flag_values=flag_values)
    flags.DEFINE_string("output", None, "checkpoint directory to create (must not exist)", required=True,
                        flag_values=flag_values)
    flags.DEFINE_list("class_names", None, "names of labels 1..K-1 (default: COCO's, for 91 slots)",
                      flag_values=flag_values)
    flags.DEFINE_float("bn_eps", None, "BatchNorm eps (default: decided from the state_dict, see above)",
                       lower_bound=0.0, flag_values=flag_values)


def convert(flag_values: flags.FlagValues, positional: list[str]) -> int:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    if not pathlib.Path(flag_values.input).is_file():
        raise UsageError(f"--input {flag_values.input}: no such file")
    if pathlib.Path(flag_values.output).exists():
        raise UsageError(f"--output {flag_values.output} already exists; choose a new directory")
    from maskrcnn_jax.convert.torchvision import convert_torchvision_checkpoint  # imports torch and the model

    class_names = None if flag_values.class_names is None else ["__background__", *flag_values.class_names]
    done = convert_torchvision_checkpoint(flag_values.input, flag_values.output, flag_values.config, class_names,
                                          flag_values.bn_eps)
    print(f"wrote {done.num_parameters:,} parameters, the config and the class names to {flag_values.output}")
    print(f"architecture = {done.architecture} ({done.architecture_reason})")
    print(f"bn_eps = {done.bn_eps} ({done.bn_eps_reason})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(convert, define_flags, argv, doc=__doc__, config_help="model config file",
                      config_default=str(DEFAULT_CONFIG))


if __name__ == "__main__":
    sys.exit(main())
