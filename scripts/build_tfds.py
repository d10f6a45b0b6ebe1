r"""Writes COCO-format splits (json + image folder) as a TFDS ArrayRecord dataset with instance masks (no TF).

  python scripts/build_tfds.py --data_dir /shared/tfds/balloon \
      --split train,../shared/data/balloon/annotations_train.json,../shared/data/balloon/images \
      --split val,../shared/data/balloon/annotations_val.json,../shared/data/balloon/images

Read it back with `maskrcnn_jax.data.tfds_source.TfdsSource(DATA_DIR, "train")`. Broken images are
left out and listed; skipped annotations are counted per reason. Exits 1 on a broken annotation file
or when the dataset exists already (unless --overwrite), 2 for a usage problem.
"""

import pathlib
import sys

from absl import flags

from maskrcnn_jax.command_line import UsageError, run_script


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("data_dir", None, "TFDS data_dir to write to (local path or gs://...)", required=True,
                        flag_values=flag_values)
    flags.DEFINE_multi_string("split", None, "a split NAME,ANNOTATIONS,IMAGES: its name, COCO json and image "
                              "folder (repeat for more)", required=True, flag_values=flag_values)
    flags.DEFINE_bool("overwrite", False, "rebuild a dataset that already exists", flag_values=flag_values)


def build(args: flags.FlagValues, positional: list[str]) -> int:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    splits = {}
    for split in args.split:
        if split.count(",") != 2:
            raise UsageError(f"--split {split}: give NAME,ANNOTATIONS,IMAGES")
        name, annotations, images = split.split(",")
        if name in splits:
            raise UsageError(f"--split {name} is given twice")
        if not pathlib.Path(annotations).is_file():
            raise UsageError(f"--split {name}: annotation file {annotations}: no such file")
        if not pathlib.Path(images).is_dir():
            raise UsageError(f"--split {name}: image folder {images}: no such folder")
        splits[name] = (annotations, images)
    import tensorflow_datasets as tfds

    from maskrcnn_jax.data import tfds_builder

    builder = tfds_builder.CocoInstances(splits=splits, data_dir=args.data_dir, file_format="array_record")
    if builder.is_prepared() and not args.overwrite:
        raise ValueError(f"{builder.data_dir} already exists; pass --overwrite to rebuild it")
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


def main(argv: list[str] | None = None) -> int:
    return run_script(build, define_flags, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
