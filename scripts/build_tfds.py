r"""Writes COCO-format splits (json + image folder) as a TFDS ArrayRecord dataset with instance masks (no TF).

  python scripts/build_tfds.py --data-dir /shared/tfds/balloon \
      --split train ../shared/data/balloon/annotations_train.json ../shared/data/balloon/images \
      --split val ../shared/data/balloon/annotations_val.json ../shared/data/balloon/images

Read it back with `maskrcnn_jax.data.tfds_source.TfdsSource(DATA_DIR, "train")`. Broken images are
left out and listed; skipped annotations are counted per reason. Exits 2 on a broken annotation file,
1 when the dataset exists already (unless --overwrite).
"""

import argparse
import sys

import tensorflow_datasets as tfds

from maskrcnn_jax.data import tfds_builder
from maskrcnn_jax.data.validation import DatasetFileError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="TFDS data_dir to write to (local path or gs://...)")
    parser.add_argument("--split", nargs=3, action="append", required=True,
                        metavar=("NAME", "ANNOTATIONS", "IMAGES"), help="a split: name, COCO json, image folder")
    parser.add_argument("--overwrite", action="store_true", help="rebuild a dataset that already exists")
    args = parser.parse_args()
    splits = {name: (annotations, images) for name, annotations, images in args.split}
    try:
        builder = tfds_builder.CocoInstances(splits=splits, data_dir=args.data_dir, file_format="array_record")
    except (DatasetFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if builder.is_prepared() and not args.overwrite:
        print(f"error: {builder.data_dir} already exists; pass --overwrite to rebuild it", file=sys.stderr)
        return 1
    # REUSE_CACHE_IF_EXISTS regenerates the dataset (there is no download to reuse).
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS))
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
