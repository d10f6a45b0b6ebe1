"""Random-access source over a TFDS dataset written by `tfds_builder` (ArrayRecord), read without TensorFlow.

Records are the same as `coco.CocoSource`'s:
  {"image_id": int, "file_name": str, "image": uint8 [H, W, 3] RGB (EXIF-oriented),
   "boxes": float32 [N, 4] xyxy, "labels": int32 [N] contiguous 1..K, "masks": uint8 [N, H, W]}
Broken images were left out when the dataset was written (listed in `broken_images`); should a
stored image still fail to decode, `source[i]` raises `image_io.BrokenImageError` as CocoSource does.
"""

import collections
import os

import tensorflow_datasets as tfds

from maskrcnn_jax.data import coco
from maskrcnn_jax.data import image_io
from maskrcnn_jax.data import tfds_builder


class TfdsSource:
    """A split of a `coco_instances` TFDS dataset as a grain `RandomAccessDataSource` (picklable).

    Args:
      data_dir: the TFDS data_dir the dataset was written to (local path or e.g. gs://...).
      split: split name, e.g. "train".
      skip_images_without_annotations: leave out records with no instance (for training).

    Attributes (as CocoSource): num_classes, label_to_category_id, class_names, skipped (Counter per
    reason), num_crowd, num_images_without_annotations; plus broken_images: [(path, reason)] left
    out when the dataset was written.
    """

    def __init__(self, data_dir: str | os.PathLike, split: str, *, skip_images_without_annotations: bool = False):
        self.data_dir = str(data_dir)
        self.split = split
        self.records = tfds.data_source(tfds_builder.DATASET_NAME, split=split, data_dir=self.data_dir)
        metadata = self.records.dataset_info.metadata
        self.label_to_category_id = {int(label): int(category_id)
                                     for label, category_id in metadata["label_to_category_id"]}
        self.class_names = tuple(metadata["class_names"])
        self.num_classes = len(self.class_names)
        self.skipped = collections.Counter(metadata["skipped"][split])
        self.num_crowd = int(metadata["num_crowd"][split])
        self.broken_images = [tuple(item) for item in metadata["broken_images"][split]]
        without_instances = set(metadata["records_without_instances"][split])
        self.num_images_without_annotations = len(without_instances)
        self.indices = [i for i in range(len(self.records))
                        if not (skip_images_without_annotations and i in without_instances)]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        """The record of image `index`; raises `image_io.BrokenImageError` for an undecodable image."""
        stored = self.records[self.indices[index]]
        file_name = stored["file_name"].decode("utf-8")
        entry = coco.ImageEntry(
            image_id=int(stored["image_id"]),
            file_name=file_name,
            height=int(stored["height"]),
            width=int(stored["width"]),
            boxes=stored["boxes"],
            labels=stored["labels"],
            rles=tuple(stored["mask_rles"]),
        )
        where = f"{self.data_dir}:{self.split}/{file_name}"
        return coco.make_record(entry, image_io.decode_image(stored["image"], where), where)

    def image_size(self, index: int) -> tuple[int, int]:
        """(H, W) of image `index` from its stored record, without decoding the image."""
        stored = self.records[self.indices[index]]
        return int(stored["height"]), int(stored["width"])

    def __repr__(self) -> str:
        return f"TfdsSource({self.data_dir!r}, {self.split!r}, images={len(self)}, classes={self.num_classes - 1})"
