"""Writes COCO-format datasets (json + images) as a TFDS dataset in ArrayRecord files, with instance masks.

No TensorFlow needed: every feature is a plain `Tensor` (the image as its encoded file bytes,
masks as pycocotools compressed RLE strings), which TFDS serialises without TF. TFDS's own
`coco/2017` has no instance masks, which is why this exists. `tfds_source.TfdsSource` reads it.

Per example (N instances): image (encoded bytes), image_id int64, file_name bytes, height/width int32,
boxes float32 [N, 4] xyxy, labels int32 [N] contiguous 1..K, mask_rles bytes [N].
Dataset metadata: label_to_category_id as [[label, category_id], ...], class_names [K + 1], and per
split what was left out: skipped annotations per reason, crowd count, broken images with reasons,
and the indices of records without instances.
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from maskrcnn_jax.data import coco
from maskrcnn_jax.data import image_io

DATASET_NAME = "coco_instances"
VERSION = "1.0.0"


def _features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(), dtype=np.object_),
        "image_id": tfds.features.Scalar(dtype=np.int64),
        "file_name": tfds.features.Tensor(shape=(), dtype=np.object_),
        "height": tfds.features.Scalar(dtype=np.int32),
        "width": tfds.features.Scalar(dtype=np.int32),
        "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
        "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "mask_rles": tfds.features.Tensor(shape=(None,), dtype=np.object_),
    })


# Not registered by name: readers open the written files, and re-importing must not clash.
with tfds.core.registered.skip_registration():

    class CocoInstances(tfds.core.GeneratorBasedBuilder):
        """COCO instances (json + image folder per split) -> TFDS ArrayRecord dataset with RLE masks.

        Args:
          splits: split name -> (annotation json, image folder). All splits must have the same categories.
          **kwargs: passed to `tfds.core.GeneratorBasedBuilder` (data_dir, file_format, ...).
        """

        name = DATASET_NAME
        VERSION = tfds.core.Version(VERSION)
        # Nothing is downloaded, so there is no checksums file to look for beside the code.
        code_path = None

        def __init__(self, *, splits: dict[str, tuple[str | os.PathLike, str | os.PathLike]], **kwargs):
            self._annotations = {name: coco.read_coco_annotations(annotation_file)
                                 for name, (annotation_file, _) in splits.items()}
            self._image_dirs = {name: image_dir for name, (_, image_dir) in splits.items()}
            label_maps = {name: a.label_to_category_id for name, a in self._annotations.items()}
            if len({tuple(sorted(m.items())) for m in label_maps.values()}) > 1:
                raise ValueError(f"splits have different categories: {label_maps}")
            first = next(iter(self._annotations.values()))
            self._metadata = tfds.core.MetadataDict(
                label_to_category_id=sorted([label, category_id]
                                            for label, category_id in first.label_to_category_id.items()),
                class_names=list(first.class_names),
                skipped={name: dict(a.skipped) for name, a in self._annotations.items()},
                num_crowd={name: a.num_crowd for name, a in self._annotations.items()},
                broken_images={name: [] for name in splits},
                records_without_instances={name: [] for name in splits},
            )
            super().__init__(**kwargs)

        def _info(self) -> tfds.core.DatasetInfo:
            return tfds.core.DatasetInfo(
                builder=self,
                description="COCO-format instance segmentation with RLE masks, written by maskrcnn_jax.",
                features=_features(),
                metadata=self._metadata,
                # Keep the annotation file's image order: record i is image i of the split.
                disable_shuffling=True,
            )

        def _split_generators(self, dl_manager):
            return {name: self._generate_examples(name) for name in self._annotations}

        def _generate_examples(self, split: str):
            image_dir = self._image_dirs[split]
            written = 0
            for entry in self._annotations[split].images:
                path = os.path.join(image_dir, entry.file_name)
                try:
                    data = image_io.read_image_bytes(path)
                    # Decode once now so a broken image is reported at build time, not in training.
                    coco.make_record(entry, image_io.decode_image(data, path), path)
                except image_io.BrokenImageError as error:
                    self._metadata["broken_images"][split].append([error.path, error.reason])
                    continue
                if not entry.rles:
                    self._metadata["records_without_instances"][split].append(written)
                written += 1
                yield entry.image_id, {
                    "image": data,
                    "image_id": entry.image_id,
                    "file_name": entry.file_name,
                    "height": entry.height,
                    "width": entry.width,
                    "boxes": entry.boxes,
                    "labels": entry.labels,
                    "mask_rles": list(entry.rles),
                }
