"""Time each convolution formulation of maskrcnn_jax.models.conv against lax.conv_general_dilated.

    .venv/bin/python benchmarks/benchmark_convs.py [--repeats 5] [--only 3x3] [--output convs.json]

Shapes: every convolution of Mask R-CNN R50-FPN in a training step at 512x512, batch 2 (ResNet-50,
FPN, RPN head on P2-P6, mask head on 2 x 128 mask RoIs of 14x14); identical shapes are timed once
and weighted by how often the step runs them. Per shape, forward and forward + backward (gradients
of the input and the kernel for one fixed cotangent), each variant jitted, warmed up, then run
interleaved with the others `--repeats` times; the median is reported. Variants: 1x1 "plain" vs
"matmul" (conv_1x1_matmul, autodiff); kxk "plain" vs "taps" (conv_tap_weight_grad: the weight
gradient as one matmul per kernel tap); the 2x2 stride-2 transposed conv "plain" vs "matmul"
(conv_transpose_matmul). The last column says which one the model runs on CPU (conv.conv_fast).
"""

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from maskrcnn_jax.command_line import UsageError, run_script
from maskrcnn_jax.models import conv

BATCH = 2
MASK_ROIS = BATCH * 128


def step_convolutions() -> list[dict]:
    """The convolutions of one R50-FPN Mask R-CNN training step at 512x512, batch 2, by shape."""
    layers = []

    def add(where, batch, side, in_channels, out_channels, kernel, stride=1, count=1, transpose=False):
        layers.append(dict(where=where, batch=batch, side=side, cin=in_channels, cout=out_channels,
                           kernel=kernel, stride=stride, count=count, transpose=transpose))

    add("stem", BATCH, 512, 3, 64, 7, 2)
    side, in_channels = 128, 64
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        stride = 1 if stage == 0 else 2
        out_side = side // stride
        name = f"layer{stage + 1}"
        add(f"{name}.0.conv1", BATCH, side, in_channels, width, 1)
        add(f"{name}.0.conv2", BATCH, side, width, width, 3, stride)
        add(f"{name}.*.conv3", BATCH, out_side, width, 4 * width, 1, count=blocks)
        add(f"{name}.0.downsample", BATCH, side, in_channels, 4 * width, 1, stride)
        add(f"{name}.1+.conv1", BATCH, out_side, 4 * width, width, 1, count=blocks - 1)
        add(f"{name}.1+.conv2", BATCH, out_side, width, width, 3, count=blocks - 1)
        side, in_channels = out_side, 4 * width
    for level, (side, in_channels) in enumerate(zip((128, 64, 32, 16), (256, 512, 1024, 2048))):
        add(f"fpn.inner_{level}", BATCH, side, in_channels, 256, 1)
        add(f"fpn.layer_{level}", BATCH, side, 256, 256, 3)
    for side in (128, 64, 32, 16, 8):
        add(f"rpn.conv P{side}", BATCH, side, 256, 256, 3)
        add(f"rpn.cls_logits P{side}", BATCH, side, 256, 3, 1)
        add(f"rpn.bbox_pred P{side}", BATCH, side, 256, 12, 1)
    add("mask_fcn1-4", MASK_ROIS, 14, 256, 256, 3, count=4)
    add("conv5_mask (transposed)", MASK_ROIS, 14, 256, 256, 2, 2, transpose=True)
    add("mask_fcn_logits", MASK_ROIS, 28, 256, 91, 1)
    return merge_identical(layers)


def merge_identical(layers: list[dict]) -> list[dict]:
    merged = {}
    for layer in layers:
        key = tuple(layer[k] for k in ("batch", "side", "cin", "cout", "kernel", "stride", "transpose"))
        if key in merged:
            merged[key]["count"] += layer["count"]
            merged[key]["where"] += ", " + layer["where"]
        else:
            merged[key] = dict(layer)
    return list(merged.values())


def variants(layer: dict) -> dict:
    """name -> function(x, kernel) for this layer's shape."""
    stride, padding = layer["stride"], layer["kernel"] // 2
    if layer["transpose"]:
        return {"plain": conv.conv_transpose_plain, "matmul": conv.conv_transpose_matmul}
    plain = {"plain": lambda x, k: conv.conv_plain(x, k, stride, padding)}
    if layer["kernel"] == 1:
        return plain | {"matmul": lambda x, k: conv.conv_1x1_matmul(x, k, stride)}
    return plain | {"taps": lambda x, k: conv.conv_tap_weight_grad(x, k, stride, padding)}


def output_side(layer: dict) -> int:
    return layer["side"] * layer["kernel"] if layer["transpose"] else -(-layer["side"] // layer["stride"])


def forward_flops(layer: dict) -> float:
    taps = 1 if layer["transpose"] else layer["kernel"] ** 2
    return 2.0 * layer["batch"] * output_side(layer) ** 2 * taps * layer["cin"] * layer["cout"]


def model_choice(layer: dict) -> str:
    """Which variant conv.conv_fast / ConvTranspose run on CPU for this layer."""
    if layer["transpose"] or layer["kernel"] == 1:
        return "matmul"
    output_pixels = layer["batch"] * output_side(layer) ** 2
    return "taps" if conv.uses_tap_weight_grad(layer["kernel"], layer["cin"], layer["cout"], output_pixels) else "plain"


def time_layer(layer: dict, repeats: int, rng: np.random.Generator) -> dict:
    x = jnp.asarray(rng.normal(size=(layer["batch"], layer["side"], layer["side"], layer["cin"])), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(layer["kernel"], layer["kernel"], layer["cin"], layer["cout"])) * 0.05,
                         jnp.float32)
    functions = variants(layer)
    output_shape = jax.eval_shape(functions["plain"], x, kernel).shape
    cotangent = jnp.asarray(rng.normal(size=output_shape), jnp.float32)
    jitted = {}
    for name, function in functions.items():
        # The cotangent is an argument: a closed-over constant would be folded into the program.
        jitted[(name, "forward")] = jax.jit(lambda x, k, dy, f=function: f(x, k))
        jitted[(name, "forward+backward")] = jax.jit(lambda x, k, dy, f=function: jax.vjp(f, x, k)[1](dy))
    for run in jitted.values():
        jax.block_until_ready(run(x, kernel, cotangent))  # compile and warm up
    times = {key: [] for key in jitted}
    for _ in range(repeats):
        for key, run in jitted.items():
            start = time.perf_counter()
            jax.block_until_ready(run(x, kernel, cotangent))
            times[key].append(time.perf_counter() - start)
    return {f"{name} {mode}": statistics.median(samples) for (name, mode), samples in times.items()}


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_integer("repeats", 5, "timed runs of each layer", flag_values=flag_values)
    flags.DEFINE_string("only", "", "run only layers whose description contains this text", flag_values=flag_values)
    flags.DEFINE_string("output", "", "write the figures to this JSON file", flag_values=flag_values)


def compare(args: flags.FlagValues, positional: list[str]) -> None:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    rng = np.random.default_rng(0)
    results = []
    totals = {"plain": 0.0, "fast": 0.0, "model": 0.0}  # weighted forward+backward seconds per step
    print("| layer (count) | input | kernel | mode | plain ms | fast ms | plain/fast | plain GFLOP/s | fast GFLOP/s "
          "| model runs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for layer in step_convolutions():
        label = f"{layer['kernel']}x{layer['kernel']}{' transposed' if layer['transpose'] else ''} s{layer['stride']}"
        if args.only and args.only not in f"{layer['where']} {label}":
            continue
        medians = time_layer(layer, args.repeats, rng)
        results.append({**layer, "forward_gflop": forward_flops(layer) / 1e9, "median_s": medians})
        fast = [name for name in ("matmul", "taps") if f"{name} forward" in medians][0]
        choice = model_choice(layer)
        for mode, flops in (("forward", forward_flops(layer)), ("forward+backward", 3 * forward_flops(layer))):
            plain_s, fast_s = medians[f"plain {mode}"], medians[f"{fast} {mode}"]
            print(f"| {layer['where']} ({layer['count']}) | {layer['batch']}x{layer['side']}x{layer['side']}x{layer['cin']} "
                  f"| {label} -> {layer['cout']} | {mode} | {plain_s * 1e3:.1f} | {fast} {fast_s * 1e3:.1f} "
                  f"| {plain_s / fast_s:.2f} | {flops / plain_s / 1e9:.0f} | {flops / fast_s / 1e9:.0f} | {choice} |",
                  flush=True)
        plain_s, fast_s = medians["plain forward+backward"], medians[f"{fast} forward+backward"]
        totals["plain"] += layer["count"] * plain_s
        totals["fast"] += layer["count"] * fast_s
        totals["model"] += layer["count"] * medians[f"{choice} forward+backward"]
    print(f"\nforward+backward, weighted by count: plain {totals['plain']:.2f} s, fast variant everywhere "
          f"{totals['fast']:.2f} s, the model's choice {totals['model']:.2f} s")
    if args.output:
        with open(args.output, "w") as file:
            json.dump({"jax": jax.__version__, "devices": str(jax.devices()), "repeats": args.repeats,
                       "totals_s": totals, "layers": results},
                      file, indent=1)


def main(argv: list[str] | None = None) -> int:
    return run_script(compare, define_flags, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
