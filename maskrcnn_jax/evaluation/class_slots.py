"""Which class slot of the model stands for which label of a dataset: one rule for the trainer's
targets, the class names a checkpoint records and the COCO category of each detection scored.

A head with one slot per dataset class (K + 1 slots, the background included) uses the dataset's
contiguous labels 1..K as they are. A 91-slot head on a COCO-numbered dataset is torchvision's COCO
head: slot = COCO category id, names from coco_classes. Other counts raise ValueError.

Legend: K dataset classes.
"""

import dataclasses

import numpy as np

from maskrcnn_jax.detector.coco_classes import COCO_CLASS_NAMES


@dataclasses.dataclass(frozen=True)
class ClassSlots:
    """The model's class slots for one dataset (`class_slots`)."""

    label_slots: np.ndarray  # int32 [K + 1]: the model's slot of each dataset label, slot 0 for background
    class_names: tuple[str, ...]  # a name per slot of the model, index 0 the background
    category_ids: dict[int, int]  # model label -> dataset category id, for every slot that stands for one


def class_slots(num_model_classes: int, source) -> ClassSlots:
    """The slots of a model with `num_model_classes` (config.model.num_classes) for the labels of
    `source` (num_classes = K + 1, class_names, label_to_category_id {label: category id})."""
    label_to_category_id = source.label_to_category_id
    if num_model_classes == source.num_classes:
        return ClassSlots(np.arange(source.num_classes, dtype=np.int32), tuple(source.class_names),
                          dict(label_to_category_id))
    category_ids = set(label_to_category_id.values())
    if num_model_classes == len(COCO_CLASS_NAMES) and category_ids <= set(range(1, num_model_classes)):
        label_slots = np.zeros(source.num_classes, np.int32)
        for label, category_id in label_to_category_id.items():
            label_slots[label] = category_id
        return ClassSlots(label_slots, COCO_CLASS_NAMES, {category_id: category_id for category_id in sorted(category_ids)})
    raise ValueError(
        f"the model has {num_model_classes} class slots but the dataset {len(category_ids)} categories "
        f"(ids {sorted(category_ids)[:10]}...): no label mapping fits"
    )
