"""Synthetic shapes: seeded images of squares, circles and triangles with exact instance masks.

Shapes are painted in order, so later shapes occlude earlier ones; each instance's mask is the set
of pixels where it is visible, and a shape that is fully hidden is dropped. The image is painted
from the same pixel sets, so masks are exact (no anti-aliasing). The dataset is written as COCO
json (RLE masks) + PNG files, which `coco.CocoSource` reads.
"""

import dataclasses
import json
import os
import pathlib

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

CATEGORIES = (
    {"id": 1, "name": "square", "supercategory": "shape"},
    {"id": 2, "name": "circle", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
)
SQUARE, CIRCLE, TRIANGLE = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Shape:
    """One shape in image pixels: category (SQUARE, CIRCLE, TRIANGLE), centre, size, rotation, colour.

    size is the side of a square or triangle and the diameter of a circle; angle (radians) rotates
    triangles (squares stay axis-aligned so that their masks are exact rectangles).
    """

    category_id: int
    center_x: float
    center_y: float
    size: float
    angle: float
    color: tuple[int, int, int]


def shape_mask(shape: Shape, height: int, width: int) -> np.ndarray:
    """bool [H, W]: the pixels whose centre (x + 0.5, y + 0.5) lies inside the shape."""
    x = np.arange(width, dtype=np.float64)[None, :] + 0.5 - shape.center_x
    y = np.arange(height, dtype=np.float64)[:, None] + 0.5 - shape.center_y
    half = shape.size / 2
    if shape.category_id == SQUARE:
        return (np.abs(x) <= half) & (np.abs(y) <= half)
    if shape.category_id == CIRCLE:
        return x * x + y * y <= half * half
    if shape.category_id == TRIANGLE:
        # Equilateral triangle: inside when on the inner side of all three edges.
        radius = shape.size / np.sqrt(3.0)
        angles = shape.angle + np.array([0.0, 2.0, 4.0]) * np.pi / 3
        corners = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
        inside = np.ones((height, width), dtype=bool)
        for start, end in zip(corners, np.roll(corners, -1, axis=0)):
            edge_x, edge_y = end - start
            # Corners come in increasing angle, so the interior is where edge x (point - start) >= 0.
            inside &= edge_x * (y - start[1]) - edge_y * (x - start[0]) >= 0
        return inside
    raise ValueError(f"unknown shape category {shape.category_id}")


def render_scene(background: np.ndarray, shapes: list[Shape]) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Paints shapes in order over a background.

    Args:
      background: uint8 [H, W, 3].
      shapes: painted first to last; later shapes occlude earlier ones.

    Returns:
      (image uint8 [H, W, 3], kept: indices into shapes of the N shapes with a visible pixel,
       masks: bool [N, H, W] visible pixels of each kept shape).
    """
    height, width = background.shape[:2]
    image = background.copy()
    owner = np.full((height, width), -1, dtype=np.int32)
    for index, shape in enumerate(shapes):
        pixels = shape_mask(shape, height, width)
        owner[pixels] = index
        image[pixels] = shape.color
    kept = [index for index in range(len(shapes)) if np.any(owner == index)]
    masks = np.stack([owner == index for index in kept]) if kept else np.zeros((0, height, width), dtype=bool)
    return image, kept, masks


def random_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3]: a linear gradient between two random colours in a random direction, plus mild noise."""
    start, end = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
    direction = rng.uniform(0.0, 2 * np.pi)
    position = (np.arange(width, dtype=np.float32)[None, :] * np.float32(np.cos(direction))
                + np.arange(height, dtype=np.float32)[:, None] * np.float32(np.sin(direction)))
    position = (position - position.min()) / max(float(np.ptp(position)), 1.0)
    gradient = start + position[..., None] * (end - start)
    noise = rng.standard_normal(size=(height, width, 3), dtype=np.float32) * np.float32(6.0)
    return np.clip(gradient + noise, 0, 255).astype(np.uint8)


def random_shapes(rng: np.random.Generator, height: int, width: int, max_shapes: int) -> list[Shape]:
    """1..max_shapes shapes of random category, colour, size (10%-45% of the short side) and place (may overlap)."""
    short_side = min(height, width)
    shapes = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        size = rng.uniform(0.10, 0.45) * short_side
        shapes.append(Shape(
            category_id=int(rng.integers(1, len(CATEGORIES) + 1)),
            center_x=float(rng.uniform(size / 4, width - size / 4)),
            center_y=float(rng.uniform(size / 4, height - size / 4)),
            size=float(size),
            angle=float(rng.uniform(0.0, 2 * np.pi)),
            color=tuple(int(c) for c in rng.integers(0, 256, size=3)),
        ))
    return shapes


def make_shapes_image(seed: int, index: int, min_size: int, max_size: int,
                      max_shapes: int) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Image `index` of the dataset with `seed`: (image uint8 [H, W, 3], category ids [N], masks bool [N, H, W]).

    Each image has its own generator seeded by (seed, index), so an image does not depend on how
    many images are made. H and W are drawn independently from [min_size, max_size].
    """
    rng = np.random.default_rng([seed, index])
    height, width = (int(side) for side in rng.integers(min_size, max_size + 1, size=2))
    background = random_background(rng, height, width)
    shapes = random_shapes(rng, height, width, max_shapes)
    image, kept, masks = render_scene(background, shapes)
    return image, [shapes[i].category_id for i in kept], masks


def write_shapes_dataset(output_dir: str | os.PathLike, num_images: int, *, seed: int = 0, min_size: int = 128,
                         max_size: int = 256, max_shapes: int = 6) -> pathlib.Path:
    """Writes output_dir/images/NNNNNN.png and output_dir/annotations.json (COCO, RLE masks); returns the json path.

    Image ids start at 1. Every annotation has iscrowd 0, bbox and area from its RLE.
    """
    output_dir = pathlib.Path(output_dir)
    image_dir = output_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        image, category_ids, masks = make_shapes_image(seed, index, min_size, max_size, max_shapes)
        image_id = index + 1
        file_name = f"{image_id:06d}.png"
        # compress_level 1: files a little larger, writing several times faster.
        Image.fromarray(image).save(image_dir / file_name, compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]})
        for category_id, mask in zip(category_ids, masks):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0,
            })
    dataset = {
        "info": {"description": f"synthetic shapes, seed {seed}, sides {min_size}-{max_size}, "
                                f"up to {max_shapes} shapes per image"},
        "images": images,
        "annotations": annotations,
        "categories": list(CATEGORIES),
    }
    annotation_file = output_dir / "annotations.json"
    annotation_file.write_text(json.dumps(dataset))
    return annotation_file
