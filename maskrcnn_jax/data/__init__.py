from maskrcnn_jax.data.coco import CocoSource
from maskrcnn_jax.data.image_io import BrokenImageError
from maskrcnn_jax.data.validation import DatasetFileError
from maskrcnn_jax.data.pipeline import evaluation_dataset, training_dataset
from maskrcnn_jax.data.sharding import global_batch
