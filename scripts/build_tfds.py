r"""Writes COCO-format splits (json + image folder) as a TFDS ArrayRecord dataset with instance masks (no TF).

  python scripts/build_tfds.py --data-dir /shared/tfds/balloon \
      --split train ../shared/data/balloon/annotations_train.json ../shared/data/balloon/images \
      --split val ../shared/data/balloon/annotations_val.json ../shared/data/balloon/images

Read it back with `maskrcnn_jax.data.tfds_source.TfdsSource(DATA_DIR, "train")`. Broken images are
left out and listed; skipped annotations are counted per reason. Exits 2 on a broken annotation file.
"""

import argparse
import sys

from maskrcnn_jax.data import tfds_builder
from maskrcnn_jax.data.validation import DatasetFileError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="TFDS data_dir to write to (local path or gs://...)")
    parser.add_argument("--split", nargs=3, action="append", required=True,
                        metavar=("NAME", "ANNOTATIONS", "IMAGES"), help="a split: name, COCO json, image folder")
    args = parser.parse_args()
    splits = {name: (annotations, images) for name, annotations, images in args.split}
    try:
        builder = tfds_builder.CocoInstances(splits=splits, data_dir=args.data_dir, file_format="array_record")
    except (DatasetFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    builder.download_and_prepare()
    metadata = builder.info.metadata
    print(f"wrote {builder.data_dir}")
    for name in splits:
        print(f"split {name}: {builder.info.splits[name].num_examples} images, "
              f"{len(metadata['records_without_instances'][name])} without instances, "
              f"{metadata['num_crowd'][name]} crowd annotations (not stored)")
        for reason, count in sorted(metadata["skipped"][name].items()):
            print(f"  skipped {count} annotations: {reason}")
        for path, reason in metadata["broken_images"][name]:
            print(f"  broken image left out: {path}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
