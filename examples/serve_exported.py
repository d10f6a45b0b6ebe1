"""Serve an exported Mask R-CNN with nothing but jax, numpy and pillow: no Flax, no maskrcnn_jax.

    python examples/serve_exported.py --model model.jaxexport --output detections.json \
        [--score_threshold 0.5] [--batch_size 1] IMAGE...

`model.jaxexport` is what scripts/export.py writes (a zip: description.json, weights.npz and one
serialized jax.export program per canvas). Each photo is resized and padded as the description
records, the program run (any batch size: the batch is symbolic), and the masks pasted into the
photo; the output is a JSON list in the schema of scripts/predict.py's detections.json: {"image_id":
position among the images (1, 2, ...), "file_name": path relative to the folder holding them all,
"category_id", "class_name", "bbox": [x, y, w, h], "score", "segmentation": COCO compressed RLE}.
Needs jax (with flatbuffers, which jax.export's deserializer imports), numpy and pillow; the RLE is
encoded here (pycocotools writes the same strings).

This file copies on purpose what maskrcnn_jax does on the host (torch's bilinear resize, torchvision's
mask paste): it is what a serving process that does not install this repository runs.
"""

import argparse
import io
import json
import math
import os
import pathlib
import time
import zipfile

import jax
import numpy as np
from PIL import Image, ImageOps


def read_artifact(path):
    """(description, {canvas (Hc, Wc): jax.export.Exported}, weights list of numpy arrays)."""
    with zipfile.ZipFile(path) as archive:
        description = json.loads(archive.read("description.json"))
        with np.load(io.BytesIO(archive.read("weights.npz"))) as stored:
            weights = [stored[f"w{index:04d}"] for index in range(len(stored.files))]
        programs = {tuple(entry["canvas"]): jax.export.deserialize(bytearray(archive.read(entry["program"])))
                    for entry in description["canvases"]}
    return description, programs, weights


def load_rgb(path) -> np.ndarray:
    """uint8 [H, W, 3] RGB, EXIF orientation applied, alpha dropped."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode == "P":
            image = image.convert("RGBA")  # palette transparency keeps its colours this way
        return np.asarray(image.convert("RGB"), np.uint8)


def resized_shape(height, width, min_size, max_size):
    """torchvision's resize: scale = min(min_size / short, max_size / long), sides floored."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return max(1, math.floor(float(height) * scale)), max(1, math.floor(float(width) * scale))


def source_coordinates(in_size, out_size):
    """torch's bilinear (align_corners=False) neighbours and weights along one axis."""
    scale = np.float32(in_size) / np.float32(out_size)
    # torch's float32 fused multiply-add: the float64 product is exact, so rounding it once agrees.
    source = np.maximum(((np.arange(out_size) + 0.5) * np.float64(scale) - 0.5).astype(np.float32), np.float32(0.0))
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    return low, np.minimum(low + 1, in_size - 1), (source - low).astype(np.float32)


def resize(image, out_height, out_width, dtype):
    """uint8 [H, W, 3] -> [h, w, 3]: bilinear in float32 (columns, then rows), for dtype "uint8"
    rounded half to even."""
    x_low, x_high, x_weight = source_coordinates(image.shape[1], out_width)
    y_low, y_high, y_weight = source_coordinates(image.shape[0], out_height)
    left, right = image[:, x_low].astype(np.float32), image[:, x_high].astype(np.float32)
    columns = left + (right - left) * x_weight[None, :, None]
    top, bottom = columns[y_low], columns[y_high]
    resized = top + (bottom - top) * y_weight[:, None, None]
    return np.clip(np.round(resized), 0, 255).astype(np.uint8) if dtype == "uint8" else resized


def model_inputs(images, canvases, min_size, max_size, dtype):
    """(image [B, Hc, Wc, 3] of dtype, image_size int32 [B, 2], original_size int32 [B, 2]) on the
    smallest canvas that holds every resized photo."""
    resized = [resize(image, *resized_shape(*image.shape[:2], min_size, max_size), dtype) for image in images]
    fitting = [c for c in canvases if all(r.shape[0] <= c[0] and r.shape[1] <= c[1] for r in resized)]
    if not fitting:
        raise ValueError(f"resized {[r.shape[:2] for r in resized]} fit none of the canvases {canvases}")
    height, width = min(fitting, key=lambda canvas: canvas[0] * canvas[1])
    batch = np.zeros((len(images), height, width, 3), dtype)
    for slot, photo in zip(batch, resized):
        slot[:photo.shape[0], :photo.shape[1]] = photo
    return (batch, np.asarray([r.shape[:2] for r in resized], np.int32),
            np.asarray([image.shape[:2] for image in images], np.int32))


def paste_weights(box_start, box_end, first, stop, mask_extent):
    """Bilinear weights [stop - first, mask_extent] from image pixels onto the padded mask (one axis)."""
    resized_extent = max(box_end - box_start + 1, 1)
    local = (np.arange(first, stop) - box_start).astype(np.float32)
    ratio = np.float32(mask_extent) / np.float32(resized_extent)
    source = np.maximum(ratio * (local + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
    low = np.minimum(np.floor(source).astype(np.int64), mask_extent - 1)
    high = np.where(low < mask_extent - 1, low + 1, low)
    high_weight = np.clip(source - low, 0.0, 1.0).astype(np.float32)
    weights = np.zeros((len(local), mask_extent), np.float32)
    weights[np.arange(len(local)), low] += 1.0 - high_weight
    weights[np.arange(len(local)), high] += high_weight
    return weights


def paste_mask(mask_probs, box, height, width, threshold):
    """torchvision's paste_masks_in_image of one [S, S] mask into an [H, W] photo -> bool [H, W]."""
    mask_size = mask_probs.shape[-1]
    padded = np.pad(np.asarray(mask_probs, np.float32), 1)
    box = np.asarray(box, np.float32)
    scale = np.float32((mask_size + 2) / mask_size)
    half_width, half_height = (box[2] - box[0]) * np.float32(0.5) * scale, (box[3] - box[1]) * np.float32(0.5) * scale
    centre_x, centre_y = (box[2] + box[0]) * np.float32(0.5), (box[3] + box[1]) * np.float32(0.5)
    x0, y0, x1, y1 = (int(v) for v in (centre_x - half_width, centre_y - half_height,
                                       centre_x + half_width, centre_y + half_height))
    top, bottom = min(max(y0, 0), height), max(min(y1 + 1, height), 0)
    left, right = min(max(x0, 0), width), max(min(x1 + 1, width), 0)
    mask = np.zeros((height, width), bool)
    if bottom > top and right > left:
        rows = paste_weights(y0, y1, top, bottom, mask_size + 2)
        columns = paste_weights(x0, x1, left, right, mask_size + 2)
        mask[top:bottom, left:right] = np.einsum("yj,xj->yx", rows @ padded, columns) > threshold
    return mask


def encode_rle(mask):
    """COCO compressed RLE of a bool [H, W] mask: {"size": [H, W], "counts": str}, as pycocotools."""
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts  # runs start with zeros
    characters = []
    for index, count in enumerate(counts):
        value = count - counts[index - 2] if index > 2 else count
        more = True
        while more:
            chunk = value & 0x1F
            value >>= 5
            more = value != -1 if chunk & 0x10 else value != 0
            characters.append(chr((chunk | 0x20 if more else chunk) + 48))
    return {"size": list(mask.shape), "counts": "".join(characters)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the artifact written by scripts/export.py")
    parser.add_argument("--output", required=True, help="the detections JSON to write")
    parser.add_argument("--score_threshold", type=float, default=0.5, help="keep detections scoring at least this")
    parser.add_argument("--batch_size", type=int, default=1, help="photos per call of the program")
    parser.add_argument("images", nargs="+")
    arguments = parser.parse_args()

    start = time.perf_counter()
    description, programs, weights = read_artifact(arguments.model)
    class_names = description["class_names"]
    resize = description["preprocessing"]["resize"]
    mask_threshold = description["postprocessing"]["mask_threshold"]
    input_dtype = {entry["name"]: entry for entry in description["inputs"]}["image"]["dtype"]
    weights = [jax.device_put(weight) for weight in weights]  # once, for every call
    print(f"loaded {arguments.model} in {time.perf_counter() - start:.2f} s", flush=True)
    calls = {canvas: jax.jit(exported.call) for canvas, exported in programs.items()}  # compiled once per batch size
    common = os.path.commonpath([os.path.dirname(os.path.abspath(path)) for path in arguments.images])
    names = [pathlib.Path(os.path.relpath(os.path.abspath(path), common)).as_posix() for path in arguments.images]

    entries = []
    for start in range(0, len(arguments.images), arguments.batch_size):
        images = [load_rgb(path) for path in arguments.images[start:start + arguments.batch_size]]
        image, image_size, original_size = model_inputs(images, list(programs), resize["min_size"], resize["max_size"],
                                                         input_dtype)
        called = time.perf_counter()
        outputs = jax.device_get(calls[image.shape[1:3]](weights, image, image_size, original_size))
        seconds = time.perf_counter() - called  # the first call of a canvas and batch size includes its compile
        for slot, photo in enumerate(images):
            image_id = start + slot + 1
            keep = np.flatnonzero(outputs["valid"][slot] & (outputs["scores"][slot] >= arguments.score_threshold))
            for d in keep:
                x1, y1, x2, y2 = (float(v) for v in outputs["boxes"][slot, d])
                label = int(outputs["classes"][slot, d])
                mask = paste_mask(outputs["masks"][slot, d], outputs["boxes"][slot, d], *photo.shape[:2],
                                  mask_threshold)
                entries.append({"image_id": image_id, "file_name": names[image_id - 1], "category_id": label,
                                "class_name": class_names[label], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "score": float(outputs["scores"][slot, d]), "segmentation": encode_rle(mask)})
            print(f"{names[image_id - 1]}: {len(keep)} detections (batch of {len(images)} on {image.shape[1]}x"
                  f"{image.shape[2]}: {seconds:.2f} s)", flush=True)
    pathlib.Path(arguments.output).write_text(json.dumps(entries))
    print(f"wrote {len(entries)} detections for {len(arguments.images)} images to {arguments.output}")


if __name__ == "__main__":
    main()
