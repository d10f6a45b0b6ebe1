r"""Shows what the model will see from a COCO-format dataset: counts, what was skipped and why, broken images,
and a few images with their ground truth drawn.

  python scripts/inspect_dataset.py --annotations ../shared/data/balloon/annotations_train.json \
      --images ../shared/data/balloon/images --output /tmp/balloon_inspect

Exits 1 when the annotation file is unusable (the message names the file and the problem), 2 for
a usage problem; skipped annotations, duplicate annotation ids and broken images are reported, not fatal.
"""

import collections
import pathlib
import sys

import tqdm
from absl import flags

from maskrcnn_jax.command_line import UsageError, run_script
from maskrcnn_jax.data import coco
from maskrcnn_jax.data import image_io
from maskrcnn_jax.data import validation
from maskrcnn_jax.drawing import draw_instances


def print_summary(source: coco.CocoSource) -> None:
    instances = collections.Counter()
    images_with = collections.Counter()
    for entry in source.entries:
        instances.update(int(label) for label in entry.labels)
        images_with.update({int(label) for label in entry.labels})
    print(f"annotation file: {source.annotation_file}")
    print(f"images: {len(source)} ({source.num_images_without_annotations} without training instances)")
    print(f"training instances: {sum(instances.values())}, categories: {source.num_classes - 1}")
    print("instances per category:")
    print(f"  {'label':>5} {'category_id':>11} {'instances':>9} {'images':>6}  name")
    for label in range(1, source.num_classes):
        print(f"  {label:>5} {source.label_to_category_id[label]:>11} {instances[label]:>9} "
              f"{images_with[label]:>6}  {source.class_names[label]}")
    for category_id in source.background_category_ids:
        print(f"category id {category_id} is named '{validation.BACKGROUND_CATEGORY_NAME}' (labelme exports): no label")
    print(f"crowd annotations: {source.num_crowd} (not training targets; kept in the file for COCO evaluation)")
    if not source.skipped:
        print("skipped annotations: none")
    for reason, count in sorted(source.skipped.items()):
        print(f"skipped annotations: {reason}: {count} ({validation.SKIP_REASONS[reason]})")
    duplicates = source.duplicate_annotation_ids
    if duplicates:
        examples = ", ".join(f"{i} ({n} times)" for i, n in list(duplicates.items())[:5])
        print(f"duplicate annotation ids: {len(duplicates)}, e.g. {examples} (training is unaffected; COCO "
              "evaluation refuses the file: pycocotools would score only the last annotation of each id)")
    else:
        print("duplicate annotation ids: none")


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("annotations", None, "COCO instances json", required=True, flag_values=flag_values)
    flags.DEFINE_string("images", None, "folder the json's file_name entries are relative to", required=True,
                        flag_values=flag_values)
    flags.DEFINE_string("output", None, "folder for PNGs with the ground truth drawn", flag_values=flag_values)
    flags.DEFINE_integer("num_drawn", 4, "how many images to draw (those with instances)", flag_values=flag_values)
    flags.DEFINE_integer("max_checked", 0, "decode only the first N images to look for broken ones (default 0: all)",
                         flag_values=flag_values)


def inspect(args: flags.FlagValues, positional: list[str]) -> int:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    if not pathlib.Path(args.annotations).is_file():
        raise UsageError(f"--annotations {args.annotations}: no such file")
    if not pathlib.Path(args.images).is_dir():
        raise UsageError(f"--images {args.images}: no such folder")
    if args.output and pathlib.Path(args.output).is_file():
        raise UsageError(f"--output {args.output} is a file; give a folder for the drawings")
    if args.num_drawn < 0 or args.max_checked < 0:
        raise UsageError("--num_drawn and --max_checked take numbers >= 0")
    source = coco.CocoSource(args.annotations, args.images)
    print_summary(source)

    checked = len(source) if args.max_checked <= 0 else min(args.max_checked, len(source))
    broken = []
    drawable = []
    for index in tqdm.tqdm(range(checked), desc="decoding images", file=sys.stderr, leave=False):
        try:
            source.load_image(index)
        except image_io.BrokenImageError as error:
            broken.append(error)
            continue
        if len(drawable) < args.num_drawn and len(source.entries[index].labels):
            drawable.append(index)
    print(f"broken images: {len(broken)} of {checked} checked (skipped by the training pipeline)")
    for error in broken:
        print(f"  broken image: {error.path}: {error.reason}")

    if args.output:
        output = pathlib.Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        for index in drawable:
            record = source[index]
            path = output / f"{record['image_id']}_{pathlib.Path(record['file_name']).stem}.png"
            picture = draw_instances(record["image"], record["boxes"], record["labels"], record["masks"], source.class_names)
            picture.save(path)
            print(f"drew {len(record['labels'])} instances: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(inspect, define_flags, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
