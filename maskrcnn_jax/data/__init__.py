from maskrcnn_jax.data.coco import CocoSource
from maskrcnn_jax.data.image_io import BrokenImageError
from maskrcnn_jax.data.validation import DatasetFileError
