"""Export the predict path to a portable artifact (`jax.export`: serialized StableHLO) and run it.

    python scripts/export.py --checkpoint DIR --output model.jaxexport      # writes model.json beside it
    python examples/serve_exported.py --model model.jaxexport --output out.json photo.jpg   # jax, numpy, pillow

serving.py builds and exports the on-device program (uint8 canvases in, fixed-size detections out,
a symbolic batch); artifact.py is the file format and its JSON description; exported_model.py loads
an artifact and runs it on photos; detector.py puts it behind `Detector`'s `detect` and `draw`.
"""

from maskrcnn_jax.export.artifact import read_artifact, write_artifact
from maskrcnn_jax.export.exported_model import ExportedModel
from maskrcnn_jax.export.serving import default_canvases, export_detector

__all__ = ["ExportedModel", "default_canvases", "export_detector", "read_artifact", "write_artifact"]
