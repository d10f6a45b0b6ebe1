r"""Convert an ImageNet classification ResNet-50 / ResNet-101 state_dict (.pth) from torchvision or timm
into a backbone checkpoint: the start of a COCO training run (config.init.mode = "backbone").

    python scripts/convert_backbone.py --input resnet50-0676ba61.pth --output DIR \
        [--config configs/mask_rcnn_r50_fpn_coco.py] [--config.model.backbone.depth=101]
    python scripts/train.py --config configs/mask_rcnn_r50_fpn_coco.py --workdir RUN --config.init.checkpoint=DIR

torchvision's files: https://download.pytorch.org/models/resnet50-0676ba61.pth (IMAGENET1K_V1, what
its Mask R-CNN recipe starts from), resnet50-11ad3fa6.pth (IMAGENET1K_V2), resnet101-63fe2227.pth;
timm's resnet50 / resnet101 state_dicts use the same names. The classifier (fc) is dropped, the
BatchNorm statistics kept; the checkpoint records the architecture, depth, stem width, BatchNorm
eps (1e-5), the source file and its sha256, and the input the weights expect (RGB in [0, 1],
ImageNet mean and std: what the pipeline feeds). The file must fit the config's backbone (depth or
stage_sizes, stem_width). Needs torch (the `test` extra); read with torch.load(weights_only=True).
"""

import pathlib
import sys

from absl import flags

from maskrcnn_jax.checkpoint import describe_backbone
from maskrcnn_jax.command_line import UsageError, run_script

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "mask_rcnn_r50_fpn_coco.py"


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("input", None, "classification ResNet state_dict (.pth), torchvision's or timm's",
                        required=True, flag_values=flag_values)
    flags.DEFINE_string("output", None, "backbone checkpoint directory to create (must not exist)", required=True,
                        flag_values=flag_values)


def convert(flag_values: flags.FlagValues, positional: list[str]) -> int:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    if not pathlib.Path(flag_values.input).is_file():
        raise UsageError(f"--input {flag_values.input}: no such file")
    if pathlib.Path(flag_values.output).exists():
        raise UsageError(f"--output {flag_values.output} already exists; choose a new directory")
    from maskrcnn_jax.convert.backbone import convert_backbone_checkpoint  # imports torch and the model

    done = convert_backbone_checkpoint(flag_values.input, flag_values.output, flag_values.config)
    print(f"wrote a backbone checkpoint of {done.num_parameters:,} parameters to {flag_values.output} "
          f"(dropped the classifier: {', '.join(done.dropped) or 'none in the file'})")
    print(describe_backbone(done.description))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(convert, define_flags, argv, doc=__doc__, config_help="model config file",
                      config_default=str(DEFAULT_CONFIG))


if __name__ == "__main__":
    sys.exit(main())
