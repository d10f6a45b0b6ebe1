"""End-to-end speed of our Mask R-CNN against torchvision's, same weights, same image, same threads.

    python scripts/benchmark.py --task=inference --against=torchvision --size=800x1216 --output=FILE.json

inference: a seeded confident random torchvision `maskrcnn_resnet50_fpn` is converted to our
parameters; one real photo is resized to exactly --size (so neither side rescales it) and both
run the whole prediction: torchvision `model([image])` (transform, network, postprocess with mask
pasting) against ours (host preprocessing, jitted predict, jitted mask pasting at the image size,
results to the host). Runs alternate between the two after a warm-up, so load from other
processes hits both alike; the medians of --runs are reported. compile_s is the XLA compile time
of predict plus the paster; jax_peak_rss_mb is the process's peak RSS after the JAX runs (it
includes torch and the torchvision model, which live in the same process).
Writes {"jax_s", "torchvision_s", "ratio", "compile_s", "jax_peak_rss_mb", ...} and prints a table.
"""

import json
import os
import pathlib
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from PIL import Image

from maskrcnn_jax.command_line import define_config_flag, run
from maskrcnn_jax.convert_torchvision import convert_state_dict
from maskrcnn_jax.data.image_io import load_image
from maskrcnn_jax.detector import make_binary_mask_paster, make_predict_fn, spec_from_config
from maskrcnn_jax.models import build_model
from maskrcnn_jax.preprocess import preprocess_batch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the reference model is a test helper
from torchvision_reference import confident_random_torchvision_maskrcnn  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "mask_rcnn_r50_fpn_coco.py"
DEFAULT_IMAGE = ROOT / ".." / "shared" / "data" / "coco_val2014_43" / "images" / "000000000042.jpg"

_CONFIG = define_config_flag("model config file", default=str(DEFAULT_CONFIG))
_TASK = flags.DEFINE_enum("task", None, ["inference"], "what to time", required=True)
_AGAINST = flags.DEFINE_enum("against", "torchvision", ["torchvision"], "the reference implementation")
_SIZE = flags.DEFINE_string("size", "800x1216", "HxW of the image fed to both models")
_IMAGE = flags.DEFINE_string("image", str(DEFAULT_IMAGE), "photo resized to --size (default: a COCO val photo)")
_RUNS = flags.DEFINE_integer("runs", 5, "timed runs per system after one warm-up")
_THREADS = flags.DEFINE_integer("threads", os.cpu_count(), "torch threads; XLA:CPU uses all cores")
_OUTPUT = flags.DEFINE_string("output", None, "JSON file for the figures", required=True)


def benchmark_inference(config, size: str, image_path: str, runs: int, threads: int) -> dict:
    """Median seconds per image for our predict path and torchvision's, plus compile time and peak RSS."""
    import torch

    torch.set_num_threads(threads)
    height, width = (int(side) for side in size.split("x"))
    image = np.asarray(Image.fromarray(load_image(image_path)).resize((width, height), Image.BILINEAR))
    reference = confident_random_torchvision_maskrcnn(seed=0, min_size=min(height, width), max_size=max(height, width))

    config = config.copy_and_resolve_references()
    config.model.backbone.bn_eps = 1e-5  # torchvision built with weights=None
    config.input.min_size, config.input.max_size = min(height, width), max(height, width)
    model = build_model(config)
    expected = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    params = jax.device_put(convert_state_dict({k: v.numpy() for k, v in reference.state_dict().items()}, expected))

    batch = preprocess_batch([image], config.input.min_size, config.input.max_size, None, config.input.size_divisible)
    start = time.perf_counter()
    predict = make_predict_fn(model, spec_from_config(config)).lower(params, batch).compile()
    dummy_masks = jnp.zeros((1, config.test.detections_per_image, 28, 28))
    paste = make_binary_mask_paster(height, width)
    paste = paste.lower(dummy_masks, jnp.zeros((1, config.test.detections_per_image, 4))).compile()
    compile_s = time.perf_counter() - start

    def run_jax():
        inputs = preprocess_batch([image], config.input.min_size, config.input.max_size, None, config.input.size_divisible)
        outputs = predict(params, inputs)
        masks = paste(outputs["masks"], outputs["boxes"])
        return jax.device_get({"boxes": outputs["boxes"][0], "valid": outputs["valid"][0], "masks": masks[0]})

    def run_torchvision():
        with torch.no_grad():
            return reference([torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255])[0]

    ours, theirs = run_jax(), run_torchvision()  # warm-up
    jax_times, torchvision_times = [], []
    for _ in range(runs):
        start = time.perf_counter()
        run_jax()
        jax_times.append(time.perf_counter() - start)
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        run_torchvision()
        torchvision_times.append(time.perf_counter() - start)

    jax_s, torchvision_s = statistics.median(jax_times), statistics.median(torchvision_times)
    return {
        "task": "inference",
        "size": [height, width],
        "threads": threads,
        "runs": runs,
        "jax_s": jax_s,
        "torchvision_s": torchvision_s,
        "ratio": jax_s / torchvision_s,
        "compile_s": compile_s,
        "jax_peak_rss_mb": peak_rss_mb,
        "jax_runs_s": jax_times,
        "torchvision_runs_s": torchvision_times,
        "detections": {"jax": int(ours["valid"].sum()), "torchvision": int(len(theirs["boxes"]))},
        "device": jax.devices()[0].device_kind,
    }


def print_table(result: dict) -> None:
    rows = [
        ("task", result["task"]),
        ("image size", "x".join(map(str, result["size"]))),
        ("threads", result["threads"]),
        ("jax median s", f"{result['jax_s']:.3f}"),
        ("torchvision median s", f"{result['torchvision_s']:.3f}"),
        ("ratio jax / torchvision", f"{result['ratio']:.2f}"),
        ("compile s", f"{result['compile_s']:.1f}"),
        ("jax peak RSS MB", f"{result['jax_peak_rss_mb']:.0f}"),
        ("detections jax / torchvision", f"{result['detections']['jax']} / {result['detections']['torchvision']}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    result = benchmark_inference(_CONFIG.value, _SIZE.value, _IMAGE.value, _RUNS.value, _THREADS.value)
    print_table(result)
    pathlib.Path(_OUTPUT.value).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    run(main)
