"""End-to-end speed of our Mask R-CNN against torchvision's, same weights, same images, same threads.

    python benchmarks/benchmark.py --task=inference --against=torchvision --size=800x1216 --output=FILE.json
    python benchmarks/benchmark.py --task=train --against=torchvision --size=512x512 --batch=2 --output=FILE.json

inference: a seeded confident random torchvision `maskrcnn_resnet50_fpn` (or, with
--config configs/mask_rcnn_r50_fpn_v2_coco.py, `maskrcnn_resnet50_fpn_v2`) is converted to our
parameters; one real photo is resized to exactly --size (so neither side rescales it) and both
run the whole prediction: torchvision `model([image])` (transform, network, postprocess with mask
pasting) against ours (host preprocessing, jitted predict, jitted mask pasting at the image size,
results to the host). Runs alternate between the two after a warm-up, so load from other
processes hits both alike; the medians of --runs are reported. compile_s is the XLA compile time
of predict plus the paster; jax_peak_rss_mb is the process's peak RSS after the JAX runs (it
includes torch and the torchvision model, which live in the same process).

train: one full training step (forward, backward, SGD momentum + weight decay update) of R50-FPN on
--batch real photos resized to exactly --size with their COCO ground truth, torchvision's sampling
sizes (2000 proposals, 256 anchors, 512 RoIs per image) on both sides, the same converted weights
(torchvision's training recipe: FrozenBatchNorm, stem and layer1 frozen). Each framework runs in
its own worker process, so each peak RSS is its own; the driver alternates single steps between
them after a warm-up step. compile_s is the XLA compile of our jitted step.
Writes {"jax_s", "torchvision_s", "ratio", "compile_s", "jax_peak_rss_mb", ...} and prints a table.

Both tasks also report our achieved GFLOP/s (XLA's cost analysis of the compiled programs over the
median time) against a float32 2048x2048 matmul timed at the start of the same run, and (unless
--noprofile) a per-stage profile after the timed runs: each stage jitted on the real outputs of the
one before, median of 3 (benchmarking.py).

--against=none: our model alone on whatever device JAX has (the accelerator mode, no torch needed),
random parameters, the config's model and dtype, noise images filling the --size canvas:
    python benchmarks/benchmark.py --task=train --against=none --size=800x1344 --batch=16 \
        --config.model.dtype=bfloat16 --output=train_gpu.json
    python benchmarks/benchmark.py --task=inference --against=none --size=800x1344 --output=inference_gpu.json
train: images/s of the jitted, donated training step (synthetic ground truth shaped as the config's
pipeline makes it); inference: `predict` latency at batch 1 and throughput at --throughput_batch.
"""

import json
import multiprocessing
import os
import tempfile
import pathlib
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from PIL import Image

import benchmarking
from maskrcnn_jax.command_line import UsageError, run_script
from maskrcnn_jax.convert.torchvision import convert_state_dict
from maskrcnn_jax.data.image_io import load_image
from maskrcnn_jax.detector import make_binary_mask_paster, make_predict_fn, spec_from_config
from maskrcnn_jax.models import build_model
from maskrcnn_jax.models.build import compute_dtype
from maskrcnn_jax.inference.preprocess import preprocess_batch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the reference model is a test helper (imported where used: torch)

DEFAULT_CONFIG = ROOT / "configs" / "mask_rcnn_r50_fpn_coco.py"
DEFAULT_IMAGE = ROOT / ".." / "shared" / "data" / "coco_val2014_43" / "images" / "000000000042.jpg"


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_enum("task", None, ["inference", "train"], "what to time", required=True, flag_values=flag_values)
    flags.DEFINE_enum("against", "torchvision", ["torchvision", "none"],
                      "the reference implementation; none: ours alone on the default device", flag_values=flag_values)
    flags.DEFINE_string("size", "800x1216", "HxW of the image fed to both models", flag_values=flag_values)
    flags.DEFINE_string("image", str(DEFAULT_IMAGE), "photo resized to --size (default: a COCO val photo)",
                        flag_values=flag_values)
    flags.DEFINE_integer("batch", 2, "images per training step (task train)", flag_values=flag_values)
    flags.DEFINE_integer("runs", 5, "timed runs per system after one warm-up", flag_values=flag_values)
    flags.DEFINE_integer("threads", os.cpu_count(), "torch threads; XLA:CPU uses all cores", flag_values=flag_values)
    flags.DEFINE_string("output", None, "JSON file for the figures", required=True, flag_values=flag_values)
    flags.DEFINE_bool("profile", True, "also time each stage on its own (benchmarking.py)", flag_values=flag_values)
    flags.DEFINE_integer("throughput_batch", 16, "inference batch for throughput (--against=none)",
                         flag_values=flag_values)


def benchmark_inference(config, size: str, image_path: str, runs: int, threads: int, profile: bool) -> dict:
    """Median seconds per image for our predict path and torchvision's, plus compile time, peak RSS,
    our GFLOP/s and (profile) the per-stage profile."""
    import torch
    from torchvision_reference import confident_random_torchvision_maskrcnn

    torch.set_num_threads(threads)
    height, width = (int(side) for side in size.split("x"))
    image = np.asarray(Image.fromarray(load_image(image_path)).resize((width, height), Image.BILINEAR))
    architecture = config.model.get("architecture", "v1")
    # v2: random BatchNorm statistics sized from this photo's activations (tests/torchvision_reference.py).
    v2_options = dict(class_logit_scale=8.0, statistics_images=[torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255])
    with torch.no_grad():
        reference = confident_random_torchvision_maskrcnn(seed=0, min_size=min(height, width), max_size=max(height, width),
                                                          architecture=architecture, **(v2_options if architecture == "v2" else {}))

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
    gflop = (benchmarking.compiled_flops(predict) + benchmarking.compiled_flops(paste)) / 1e9
    stages = benchmarking.profile_inference(model, spec_from_config(config), params, batch, (height, width)) if profile else None
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
        "jax_gflop": gflop,
        "jax_gflops": gflop / jax_s,
        "profile": stages,
    }


TRAIN_PHOTOS = (0, 10)  # ../shared/data/coco_train2017_85 records with 8 objects each
TRAIN_MAX_INSTANCES = 16
TRAIN_LEARNING_RATE = 1e-3  # small: the timed steps must stay finite on random weights


def write_training_inputs(path: str, size: tuple[int, int], batch_size: int) -> None:
    """Real photos resized to exactly `size` with their GT, saved for both workers: float [0, 1]
    images, boxes, labels, full-image masks (torchvision's targets) and 112x112 box crops (ours)."""
    from maskrcnn_jax.data.coco import CocoSource
    from maskrcnn_jax.data.transforms import crop_masks_to_boxes, resize_image

    root = ROOT / ".." / "shared" / "data" / "coco_train2017_85"
    source = CocoSource(root / "annotations.json", root / "images")
    height, width = size
    arrays = {}
    for index in range(batch_size):
        record = source[TRAIN_PHOTOS[index % len(TRAIN_PHOTOS)]]
        original_height, original_width = record["image"].shape[:2]
        rows = np.minimum((np.arange(height) + 0.5) * original_height / height, original_height - 1).astype(int)
        cols = np.minimum((np.arange(width) + 0.5) * original_width / width, original_width - 1).astype(int)
        scale = np.array([width / original_width, height / original_height] * 2, np.float32)
        boxes = np.asarray(record["boxes"], np.float32).reshape(-1, 4)[:TRAIN_MAX_INSTANCES] * scale
        masks = record["masks"][:TRAIN_MAX_INSTANCES][:, rows][:, :, cols]
        arrays[f"image_{index}"] = resize_image(record["image"].astype(np.float32) / 255.0, height, width)
        arrays[f"boxes_{index}"] = boxes
        arrays[f"labels_{index}"] = np.asarray(record["labels"], np.int64)[:TRAIN_MAX_INSTANCES]
        arrays[f"masks_{index}"] = masks
        arrays[f"crops_{index}"] = crop_masks_to_boxes(masks, boxes, 112)
    np.savez(path, **arrays)


def _serve_steps(connection, step) -> None:
    """Runs `step()` each time the driver says "step" and answers its seconds; "done" answers the peak RSS."""
    connection.send("ready")
    while connection.recv() == "step":
        start = time.perf_counter()
        step()
        connection.send(time.perf_counter() - start)
    connection.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


# torchvision's trainable backbone layers: v1's recipe 3; v2 built without backbone weights (PR 5773
# trains it from scratch) trains all 5.
TRAINABLE_BACKBONE_LAYERS = {"v1": 3, "v2": 5}


def torchvision_train_worker(connection, inputs_path: str, weights_path: str, size, batch_size: int, threads: int,
                             architecture: str):
    """torchvision's training step (v1 or v2, as trainable_torchvision_maskrcnn builds it); saves the
    model's initial state_dict for the JAX worker first."""
    import torch
    from torchvision_reference import trainable_torchvision_maskrcnn

    torch.set_num_threads(threads)
    model = trainable_torchvision_maskrcnn(seed=0, min_size=min(size), max_size=max(size), architecture=architecture)
    np.savez(weights_path, **{key: value.numpy() for key, value in model.state_dict().items()})
    inputs = np.load(inputs_path)
    images = [torch.from_numpy(inputs[f"image_{b}"]).permute(2, 0, 1).contiguous() for b in range(batch_size)]
    targets = [{"boxes": torch.from_numpy(inputs[f"boxes_{b}"]), "labels": torch.from_numpy(inputs[f"labels_{b}"]),
                "masks": torch.from_numpy(inputs[f"masks_{b}"])} for b in range(batch_size)]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=TRAIN_LEARNING_RATE,
                                momentum=0.9, weight_decay=1e-4)

    def step():
        optimizer.zero_grad()
        sum(model(images, targets).values()).backward()
        optimizer.step()

    step()  # warm-up
    _serve_steps(connection, step)


def jax_train_worker(connection, inputs_path: str, weights_path: str, config, size, batch_size: int, profile: bool):
    """Our jitted training step (the trainer's step function) on the same weights and inputs; after
    the timed steps, with profile, the per-stage profile of the step."""
    from maskrcnn_jax.detector.losses import make_loss_fn
    from maskrcnn_jax.models import frozen_parameter_mask
    from maskrcnn_jax.training.optimizer import sgd_without_learning_rate
    from maskrcnn_jax.training.state import TrainState
    from maskrcnn_jax.training.step import train_step_fn

    config = config.copy_and_resolve_references()
    config.model.backbone.bn_eps = 1e-5  # torchvision's FrozenBatchNorm2d and BatchNorm2d default
    model, spec = build_model(config), spec_from_config(config)
    expected = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    params = jax.device_put(convert_state_dict(dict(np.load(weights_path)), expected))
    frozen = frozen_parameter_mask(params, trainable_backbone_layers=TRAINABLE_BACKBONE_LAYERS[model.architecture],
                                   norm=model.norm)
    optimizer = sgd_without_learning_rate(frozen, momentum=0.9, weight_decay=1e-4)
    step_fn = train_step_fn(make_loss_fn(model, spec), optimizer, lambda step: jnp.float32(TRAIN_LEARNING_RATE), frozen)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                       key=jax.random.key_data(jax.random.key(0)))
    batch = our_training_batch(np.load(inputs_path), size, batch_size)
    start = time.perf_counter()
    compiled = jax.jit(step_fn, donate_argnums=0).lower(state, batch).compile()
    compile_s = time.perf_counter() - start

    def step():
        nonlocal state
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics["loss"])

    # Where the memory goes: the process's peak so far (compilation included, before any step) and
    # XLA's own account of the step's buffers.
    compile_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    memory = compiled.memory_analysis()
    buffers_mb = {name: getattr(memory, f"{name}_size_in_bytes") / 2**20 for name in ("argument", "output", "temp")}
    step()  # warm-up
    connection.send((compile_s, benchmarking.compiled_flops(compiled) / 1e9, compile_peak_mb, buffers_mb))
    _serve_steps(connection, step)
    if profile:
        connection.send(benchmarking.profile_train_step(model, spec, state, batch, optimizer, TRAIN_LEARNING_RATE, frozen))


def our_training_batch(inputs, size, batch_size: int) -> dict:
    """The data pipeline's batch schema for the saved inputs (canvas = size rounded up to 32)."""
    canvas = tuple(-(-side // 32) * 32 for side in size)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    batch = {key: [] for key in ("image", "image_size", "gt_boxes", "gt_classes", "gt_masks", "gt_valid")}
    for b in range(batch_size):
        count = len(inputs[f"boxes_{b}"])
        padding = TRAIN_MAX_INSTANCES - count
        image = np.zeros((*canvas, 3), np.float32)
        image[: size[0], : size[1]] = (inputs[f"image_{b}"] - mean) / std
        batch["image"].append(image)
        batch["image_size"].append(np.array(size, np.int32))
        batch["gt_boxes"].append(np.pad(inputs[f"boxes_{b}"], ((0, padding), (0, 0))))
        batch["gt_classes"].append(np.pad(inputs[f"labels_{b}"].astype(np.int32), (0, padding)))
        batch["gt_masks"].append(np.pad(inputs[f"crops_{b}"], ((0, padding), (0, 0), (0, 0))))
        batch["gt_valid"].append(np.arange(TRAIN_MAX_INSTANCES) < count)
    batch = {key: jnp.asarray(np.stack(value)) for key, value in batch.items()}
    batch["valid"] = jnp.ones(batch_size, bool)
    return batch


def benchmark_train(config, size: str, batch_size: int, runs: int, threads: int, profile: bool) -> dict:
    """Median seconds per training step for ours and torchvision's, each in its own process, our
    GFLOP/s and (profile) the per-stage profile of our step."""
    height, width = (int(side) for side in size.split("x"))
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as scratch:
        inputs_path, weights_path = os.path.join(scratch, "inputs.npz"), os.path.join(scratch, "weights.npz")
        write_training_inputs(inputs_path, (height, width), batch_size)
        torch_end, torch_worker_end = context.Pipe()
        torch_worker = context.Process(target=torchvision_train_worker, args=(
            torch_worker_end, inputs_path, weights_path, (height, width), batch_size, threads,
            config.model.get("architecture", "v1")))
        torch_worker.start()
        assert torch_end.recv() == "ready"
        jax_end, jax_worker_end = context.Pipe()
        jax_worker = context.Process(target=jax_train_worker, args=(
            jax_worker_end, inputs_path, weights_path, config, (height, width), batch_size, profile))
        jax_worker.start()
        compile_s, gflop, compile_peak_mb, buffers_mb = jax_end.recv()
        assert jax_end.recv() == "ready"
        jax_times, torchvision_times = [], []
        for _ in range(runs):
            for end, times in ((jax_end, jax_times), (torch_end, torchvision_times)):
                end.send("step")
                times.append(end.recv())
        peaks = []
        for end in (jax_end, torch_end):
            end.send("done")
            peaks.append(end.recv())
        stages = jax_end.recv() if profile else None
        jax_worker.join()
        torch_worker.join()
    jax_s, torchvision_s = statistics.median(jax_times), statistics.median(torchvision_times)
    return {
        "task": "train",
        "size": [height, width],
        "batch": batch_size,
        "threads": threads,
        "runs": runs,
        "jax_s": jax_s,
        "torchvision_s": torchvision_s,
        "ratio": jax_s / torchvision_s,
        "compile_s": compile_s,
        "jax_peak_rss_mb": peaks[0],
        "jax_peak_rss_after_compile_mb": compile_peak_mb,
        "jax_step_buffers_mb": buffers_mb,
        "torchvision_peak_rss_mb": peaks[1],
        "jax_runs_s": jax_times,
        "torchvision_runs_s": torchvision_times,
        "device": jax.devices()[0].device_kind,
        "jax_gflop": gflop,
        "jax_gflops": gflop / jax_s,
        "profile": stages,
    }


def benchmark_ours(config, task: str, size: str, batch_size: int, runs: int, throughput_batch: int,
                   profile: bool) -> dict:
    """The accelerator mode (--against=none): our model alone on the default device."""
    canvas = tuple(int(side) for side in size.split("x"))
    result = {"task": task, "against": "none", "size": list(canvas), "device": jax.devices()[0].device_kind,
              "platform": jax.default_backend(), "dtype": compute_dtype(config.model).name}
    if task == "train":
        result.update(benchmarking.train_speed(config, canvas, batch_size, runs, profile=profile))
    else:
        result["inference"] = benchmarking.inference_speed(config, canvas, (1, throughput_batch), runs)
    return result


def print_ours(result: dict) -> None:
    print(f"device: {result['device']} ({result['platform']}), dtype {result['dtype']}, "
          f"canvas {'x'.join(map(str, result['size']))}")
    if result["task"] == "train":
        print(f"train batch {result['batch']}: {result['images_per_s']:.2f} images/s, step {result['step_s']:.3f} s, "
              f"compile {result['compile_s']:.1f} s, {result['gflop']:.0f} GFLOP per step = {result['gflops']:.1f} GFLOP/s")
    else:
        for row in result["inference"]:
            print(f"inference batch {row['batch']}: {row['ms_per_image']:.1f} ms per image, "
                  f"{row['images_per_s']:.2f} images/s, compile {row['compile_s']:.1f} s")


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
    ]
    if result["task"] == "train":
        rows.insert(2, ("batch", result["batch"]))
        buffers = result["jax_step_buffers_mb"]
        rows += [("jax peak RSS after compile MB", f"{result['jax_peak_rss_after_compile_mb']:.0f}"),
                 ("jax step buffers MB (XLA)", ", ".join(f"{name} {size:.0f}" for name, size in buffers.items())),
                 ("torchvision peak RSS MB", f"{result['torchvision_peak_rss_mb']:.0f}")]
    else:
        rows.append(("detections jax / torchvision", f"{result['detections']['jax']} / {result['detections']['torchvision']}"))
    rows += [("device", result["device"]),
             ("jax GFLOP (XLA count)", f"{result['jax_gflop']:.1f}"),
             ("jax GFLOP/s", f"{result['jax_gflops']:.1f}")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def benchmark(args: flags.FlagValues, positional: list[str]) -> None:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    ceiling = benchmarking.matmul_ceiling()
    print(f"matmul ceiling: {ceiling['size']}x{ceiling['size']} float32 in {ceiling['seconds'] * 1000:.1f} ms "
          f"= {ceiling['gflops']:.1f} GFLOP/s ({jax.devices()[0].device_kind})")
    if args.against == "none":
        result = benchmark_ours(args.config, args.task, args.size, args.batch, args.runs, args.throughput_batch,
                                args.profile)
        print_ours(result)
    elif args.task == "train":
        result = benchmark_train(args.config, args.size, args.batch, args.runs, args.threads, args.profile)
        print_table(result)
    else:
        result = benchmark_inference(args.config, args.size, args.image, args.runs, args.threads, args.profile)
        print_table(result)
    result["matmul_ceiling"] = ceiling
    if result.get("profile"):
        print(benchmarking.format_profile(result["profile"], ceiling["gflops"]))
    pathlib.Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    return run_script(benchmark, define_flags, argv, doc=__doc__, config_help="model config file",
                      config_default=str(DEFAULT_CONFIG))


if __name__ == "__main__":
    sys.exit(main())
