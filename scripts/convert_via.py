r"""Converts a VGG Image Annotator (VIA 1.x / 2.x) polygon json to a COCO instances json.

  python scripts/convert_via.py --via ../shared/data/balloon/raw/train/via_region_data.json \
      --images ../shared/data/balloon/images --output /tmp/balloon_train.json --category balloon
"""

import json
import pathlib
import sys

from absl import flags

from maskrcnn_jax.command_line import UsageError, run_script


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("via", None, "VIA json (export or VIA 2 project file)", required=True, flag_values=flag_values)
    flags.DEFINE_string("images", None, "folder with the images (their sizes are read from them)", required=True,
                        flag_values=flag_values)
    flags.DEFINE_string("output", None, "COCO json to write", required=True, flag_values=flag_values)
    flags.DEFINE_string("category", "object", "category of regions that name none", flag_values=flag_values)
    flags.DEFINE_string("category_attribute", None, "region attribute that holds each region's category name",
                        flag_values=flag_values)


def convert(args: flags.FlagValues, positional: list[str]) -> int:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    if not pathlib.Path(args.via).is_file():
        raise UsageError(f"--via {args.via}: no such file")
    if not pathlib.Path(args.images).is_dir():
        raise UsageError(f"--images {args.images}: no such folder")
    if pathlib.Path(args.output).is_dir():
        raise UsageError(f"--output {args.output} is a folder; give the COCO json file to write")
    from maskrcnn_jax.data import via

    entries = via.load_via_json(args.via)
    dataset, skipped = via.via_to_coco(entries, args.images, category_attribute=args.category_attribute,
                                       default_category=args.category)
    for reason, count in sorted(skipped.items()):
        print(f"skipped {count}: {reason}")
    if entries and not dataset["images"]:
        raise ValueError(f"none of the {len(entries)} images of {args.via} was found in --images {args.images} "
                         f"(e.g. {entries[0]['filename']!r}): is it the folder that holds them?")
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(dataset, handle)
    print(f"wrote {args.output}: {len(dataset['images'])} images, {len(dataset['annotations'])} annotations, "
          f"categories {[c['name'] for c in dataset['categories']]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(convert, define_flags, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
