"""Detections of photo files as one COCO-style results JSON (scripts/predict.py's detections.json),
complete on disk after every image: entries with the image's file name and class names, and the
output names that keep photos from different folders apart. Light to import (pycocotools and JAX
come with the first `coco_entries`), so that a script's usage errors come at once.
"""

import json
import os
import pathlib


class JsonListFile:
    """A JSON list on disk that is complete after every `extend`: entries go in before the closing bracket."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self._file = open(path, "wb")
        self._file.write(b"[")
        self._end = self._file.tell()
        self._count = 0
        self._write_tail()

    def _write_tail(self) -> None:
        self._file.write(b"\n]\n")
        self._file.truncate()
        self._file.flush()

    def extend(self, entries: list[dict]) -> None:
        if not entries:
            return
        self._file.seek(self._end)
        separator = b",\n" if self._count else b"\n"
        self._file.write(separator + ",\n".join(json.dumps(entry) for entry in entries).encode())
        self._end = self._file.tell()
        self._count += len(entries)
        self._write_tail()

    def close(self) -> None:
        self._file.close()


def output_names(paths: list[pathlib.Path]) -> list[str]:
    """Each image's path relative to the folder holding them all (posix, extension kept)."""
    parents = [os.path.dirname(os.path.abspath(path)) for path in paths]
    common = os.path.commonpath(parents)
    return [pathlib.Path(os.path.relpath(os.path.abspath(path), common)).as_posix() for path in paths]


def coco_entries(image_id: int, file_name: str, detections: dict) -> list[dict]:
    """COCO-style results entries of one image's detections (with file name and class names)."""
    from maskrcnn_jax.evaluation.coco_results import encode_mask_windows, image_detections_to_coco

    height, width = detections["image_size"]
    rles = encode_mask_windows(detections["mask_windows"], height, width)
    label_to_category_id = {int(label): int(label) for label in detections["classes"]}
    entries = image_detections_to_coco(image_id, detections["boxes"], detections["scores"], detections["classes"],
                                       label_to_category_id, rles)
    return [dict(entry, file_name=file_name, class_name=name) for entry, name in zip(entries, detections["class_names"])]
