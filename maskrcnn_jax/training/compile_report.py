"""What a pod would run, measured on this machine: the trainer's step (or predict) compiled ahead of
time for a TPU topology (libtpu's compile-only devices, no TPU needed) or for N CPU devices, and what
XLA says of it per chip: memory against the chip's HBM, FLOP and bytes accessed per image, a roofline
bound of the step time, the collectives, and a per-stage breakdown.

As MaxText's train_compile.py and axlearn's run_aot_compilation.py check a pod config before launch.
The train step is `training.setup.training_program` over a mesh of the topology's devices, with the
state and batch sharded as the trainer shards them; nothing executes.

Counting loops: XLA's cost analysis counts a while loop's body once, whatever its trip count. The
whole step's figures are XLA's, and the report lists the loops left in the compiled program with
their trip counts (`loops`) so that a loop is never mistaken for a saving. The per-stage breakdown
compiles each stage alone, loop-free: RoIAlign gathers every box at once and the mask head runs on
every slot (an upper bound for the chunked head, which skips chunks without a positive), so every
FLOP and byte a stage moves is counted. A stage with a backward is also compiled as forward +
backward together. NMS's loops (data-dependent trip counts, [T, T] tiles of boxes) stay and count once.

Legend: B global batch, b per-chip batch, Hc Wc canvas.
"""

import dataclasses
import functools
import os
import re
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from maskrcnn_jax.detector import make_predict_fn, pool_rois, pyramid_anchors, spec_from_config
from maskrcnn_jax.detector.losses import LOSS_NAMES, head_losses, training_proposals, training_targets
from maskrcnn_jax.detector.pyramid import POOLED_STRIDES, flatten_rpn_outputs
from maskrcnn_jax.detector.spec import NORM_STATISTICS
from maskrcnn_jax.evaluation import evaluation_canvases
from maskrcnn_jax.models import build_model, platform_config
from maskrcnn_jax.training import mesh as mesh_lib
from maskrcnn_jax.training.loss import loss_fn_from_config
from maskrcnn_jax.training.setup import abstract_training_batch, training_canvases, training_program
from maskrcnn_jax.training.step import apply_gradients, trainable_gradients

GIB = 2**30
TASKS = ("train", "predict")


class Chip(NamedTuple):
    """A TPU generation's published figures per chip: HBM bytes, peak bfloat16 FLOP/s, HBM bytes/s."""

    hbm_bytes: float
    peak_flops: float
    hbm_bandwidth: float


# Google Cloud's TPU system-architecture pages (cloud.google.com/tpu/docs/v4, v5e, v5p, v6e), per chip.
CHIPS = {
    "v4": Chip(32 * GIB, 275e12, 1228e9),
    "v5e": Chip(16 * GIB, 197e12, 819e9),
    "v5p": Chip(95 * GIB, 459e12, 2765e9),
    "v6e": Chip(32 * GIB, 918e12, 1640e9),
}
# Generations with two TensorCores per chip, which JAX drives as one device ("megacore"); libtpu's
# compile-only topology lists each core unless asked for that chip configuration.
MEGACORE = ("v4", "v5p")
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4,
                "u32": 4, "f64": 8, "s64": 8, "u64": 8}


def prepare_devices(topology: str) -> None:
    """Call before JAX starts a backend. JAX stays on the CPU (it compiles for the topology and runs
    nothing); `cpu:N` asks for N CPU devices, a TPU topology tells libtpu not to look for a TPU VM."""
    jax.config.update("jax_platforms", "cpu")
    if topology.startswith("cpu:"):
        jax.config.update("jax_num_cpu_devices", _cpu_count(topology))
    else:
        os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
        os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def _cpu_count(topology: str) -> int:
    count = topology.split(":", 1)[1]
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"topology {topology!r}: expected cpu:N with N >= 1 devices")
    return int(count)


def topology_devices(topology: str) -> tuple[list, Chip | None]:
    """(devices, chip figures or None for CPU) of `topology`: "cpu:N" or a TPU topology such as
    "v5e:4x4" (compile-only devices from libtpu: `pip install -e '.[tpu]'`)."""
    if topology.startswith("cpu:"):
        count = _cpu_count(topology)
        devices = jax.devices("cpu")
        if len(devices) < count:
            raise ValueError(f"topology {topology}: JAX has {len(devices)} CPU devices (prepare_devices must run "
                             "before JAX starts)")
        return devices[:count], None
    generation = topology.split(":", 1)[0]
    if generation not in CHIPS:
        raise ValueError(f"topology {topology!r}: expected cpu:N or one of {sorted(CHIPS)} with a shape, e.g. v5e:4x4")
    from jax.experimental import topologies

    try:
        options = {"chip_config_name": "megacore"} if generation in MEGACORE else {}
        description = topologies.get_topology_desc(topology_name=topology, platform="tpu", **options)
    except Exception as error:  # a missing libtpu, a shape libtpu does not know
        raise ValueError(f"topology {topology}: libtpu cannot describe it ({' '.join(str(error).split())[:300]}); "
                         "libtpu comes with pip install -e '.[tpu]'") from error
    return list(description.devices), CHIPS[generation]


def _shape_bytes(shape_text: str) -> int:
    """Bytes of an HLO shape such as `f32[256,1024]{1,0}` or a tuple `(bf16[8]{0}, f32[])`."""
    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", shape_text):
        if dtype in _DTYPE_BYTES:
            total += _DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
    return total


def collective_ops(hlo_text: str) -> dict[str, dict[str, int]]:
    """{kind: {"count", "bytes"}} of the collectives in a compiled module's HLO text (an async pair,
    `-start` and `-done`, counts once; bytes are the result's)."""
    found = {kind: {"count": 0, "bytes": 0} for kind in COLLECTIVES}
    for shape, kind in re.findall(r"=\s*(\(.*?\)|\S+)\s+(" + "|".join(COLLECTIVES) + r")(?:-start)?\(", hlo_text):
        found[kind]["count"] += 1
        found[kind]["bytes"] += _shape_bytes(shape)
    return found


def while_loops(hlo_text: str) -> list[int | None]:
    """The trip count of every while loop in a compiled module's HLO text, each loop once: XLA's
    `known_trip_count` where it records one (CPU, GPU), else read from a condition of the form
    `counter < constant` (a scan's, counting from 0, as TPU programs leave it); None when neither
    says (a data-dependent loop such as NMS's)."""
    conditions = {}
    for match in re.finditer(r"^%(\S+) \(.*?\{\n(.*?)^\}", hlo_text, re.MULTILINE | re.DOTALL):
        body = match.group(2)
        root = re.search(r"ROOT .*? compare\(.*?\), direction=LT", body)
        constants = re.findall(r"s32\[\]\S* constant\((\d+)\)", body)
        plain_counter = root is not None and len(constants) == 1 and len(body.strip().splitlines()) == 4
        conditions[match.group(1)] = int(constants[0]) if plain_counter else None
    counts = []
    for line in hlo_text.splitlines():
        if not re.search(r"\swhile\(", line):
            continue
        known = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
        condition = re.search(r"condition=%([\w.\-]+)", line)
        counts.append(int(known.group(1)) if known else conditions.get(condition.group(1)) if condition else None)
    return counts


# Instructions that move no bytes of their own (views, bookkeeping), or whose work lies in another
# computation (loop and branch bodies, counted there); the second half of an async pair (`-done`) neither.
_NO_TRAFFIC = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "partition-id",
               "replica-id", "while", "conditional", "call"}


def heaviest_ops(hlo_text: str, count: int = 12) -> list[dict]:
    """The `count` instructions of a compiled module's entry computation that move the most bytes,
    each {"bytes", "opcode", "shape", "op_name"} (op_name: the JAX operation XLA's metadata names).

    An estimate from the HLO's shapes: an instruction reads its operands and writes its result (an
    async `-start` moves its operand once each way). Loop and branch bodies are left out (see
    `while_loops`); an in-place update is counted as its whole buffer. It names where the traffic
    goes, which XLA's one total does not.
    """
    entry = re.search(r"^ENTRY [^\n]*\{\n(.*?)^\}", hlo_text, re.MULTILINE | re.DOTALL)
    if entry is None:
        return []
    sizes, rows = {}, []
    for line in entry.group(1).splitlines():
        match = re.match(r"\s*(?:ROOT )?%(\S+) = (\(.*?\)|\S+) ([\w\-]+)\(([^)]*)\)", line)
        if match is None:
            continue
        name, shape, opcode, operands = match.groups()
        sizes[name] = _shape_bytes(shape)
        if opcode in _NO_TRAFFIC or opcode.endswith("-done"):
            continue
        read = sum(sizes.get(operand, 0) for operand in re.findall(r"%([\w.\-]+)", operands))
        moved = 2 * read if opcode.endswith("-start") else read + sizes[name]
        op_name = re.search(r'op_name="([^"]*)"', line)
        rows.append({"bytes": moved, "opcode": opcode, "shape": re.sub(r"\{[^}]*\}", "", shape)[:80],
                     "op_name": op_name.group(1).replace("jit(train_step)/", "")[:160] if op_name else ""})
    return sorted(rows, key=lambda row: -row["bytes"])[:count]


def _costs(compiled) -> tuple[float, float]:
    """(FLOP, bytes accessed) per device of a compiled program, XLA's count."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


def _memory(compiled) -> dict[str, float]:
    """Per-chip bytes: arguments, outputs, temporaries, aliased (outputs in donated arguments), total."""
    memory = compiled.memory_analysis()
    sizes = {"arguments": memory.argument_size_in_bytes, "outputs": memory.output_size_in_bytes,
             "temporaries": memory.temp_size_in_bytes, "aliased": memory.alias_size_in_bytes}
    sizes["total"] = sizes["arguments"] + sizes["outputs"] + sizes["temporaries"] - sizes["aliased"]
    return {name: float(value) for name, value in sizes.items()}


def _placed(tree, mesh, global_batch_size: int | None):
    """ShapeDtypeStructs of `tree` placed as the step places them: with a global_batch_size, arrays
    whose leading dimension is the global batch split over the data axis; everything else replicated."""
    batch_sharding = mesh_lib.batch_sharding(mesh, mesh_lib.DATA_AXIS)

    def place(leaf):
        split = global_batch_size is not None and leaf.ndim > 0 and leaf.shape[0] == global_batch_size
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=batch_sharding if split else mesh_lib.replicated(mesh))

    return jax.tree.map(place, tree)


class _StageCompiler:
    """Compiles stages `fn(params, *data)` one after the other on abstract inputs (params replicated,
    data split over the data axis) and keeps their FLOP and bytes per chip."""

    def __init__(self, mesh, global_batch_size: int, frozen_mask):
        self.mesh, self.global_batch_size, self.frozen_mask = mesh, global_batch_size, frozen_mask
        self.rows: list[dict] = []

    def _costs(self, fn: Callable, params, data: tuple) -> tuple[float, float]:
        placed = (_placed(params, self.mesh, None), _placed(data, self.mesh, self.global_batch_size))
        return _costs(jax.jit(fn).lower(*placed).compile())

    def forward(self, name: str, fn: Callable, params, *data):
        """Counts fn(params, *data) and returns its abstract outputs, the next stage's inputs."""
        flops, accessed = self._costs(lambda p, d: fn(p, *d), params, data)
        self.rows.append({"stage": name, "flops": flops, "bytes": accessed, "with_backward": None})
        return jax.eval_shape(fn, params, *data)

    def backward(self, name: str, fn: Callable, params, num_differentiated: int, *data) -> None:
        """Adds to the stage `name` the counts of its forward + backward compiled together: the vjp
        (a cotangent of ones) of fn(params, *data) with respect to the trainable params (frozen ones
        get no gradient, as in the train step) and the first `num_differentiated` data arguments.
        Kept as a whole, not as a difference: compiled together, XLA fuses the forward into the
        backward differently (e.g. RoIAlign's gathered corners are never written out)."""

        def forward_backward(params, data):
            inputs, constants = data[:num_differentiated], data[num_differentiated:]
            outputs, vjp = jax.vjp(lambda p, *x: fn(p, *x, *constants), params, *inputs)
            gradients = vjp(jax.tree.map(jnp.ones_like, outputs))
            if params is None:
                return gradients[1:]
            return (trainable_gradients(gradients[0], _subtree_like(self.frozen_mask, params)), *gradients[1:])

        flops, accessed = self._costs(forward_backward, params, data)
        row = next(row for row in self.rows if row["stage"] == name)
        row["with_backward"] = {"flops": flops, "bytes": accessed}


def _subtree_like(tree: dict, like: dict) -> dict:
    return {name: tree[name] for name in like}


def _train_stages(config: ml_collections.ConfigDict, program, batch: dict, mesh, global_batch_size: int) -> list[dict]:
    """Per-stage FLOP and bytes of the training step, each stage compiled alone and loop-free (module
    docstring); rows {"stage", "flops", "bytes"} per chip."""
    model = program.model
    spec = dataclasses.replace(spec_from_config(config), mask_head_chunk_size=0)
    unplaced = lambda tree: jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), tree)  # noqa: E731
    params, batch = unplaced(program.abstract_state.params), unplaced(batch)
    stages = _StageCompiler(mesh, global_batch_size, program.frozen_mask)

    def apply(params, *args, method, **kwargs):  # training mode; the new running statistics are dropped
        return model.apply({"params": params}, *args, method=method, mutable=[NORM_STATISTICS], **kwargs)[0]

    features_fn = lambda p, images: apply(p, images, method="features", train=True)  # noqa: E731
    features = stages.forward("backbone + fpn", features_fn, params, batch["image"])
    anchors, level_sizes = pyramid_anchors(spec, batch["image"].shape[1:3], [f.shape[1:3] for f in features])
    rpn_fn = lambda p, f: flatten_rpn_outputs(*model.apply({"params": p}, f, method="rpn"))  # noqa: E731

    def rpn_and_proposals(p, f, image_sizes):  # as detector_losses: proposals from the detached outputs
        objectness, deltas = rpn_fn(p, f)
        detached = jax.lax.stop_gradient((objectness, deltas))
        return (objectness, deltas), training_proposals(spec, anchors, level_sizes, *detached, image_sizes)

    def rpn_and_proposal_boxes(p, f, image_sizes):  # the differentiable (floating) outputs
        (objectness, deltas), (proposals, _) = rpn_and_proposals(p, f, image_sizes)
        return objectness, deltas, proposals

    (objectness, deltas), (proposals, proposal_valid) = stages.forward(
        "rpn head + proposals", rpn_and_proposals, params, features, batch["image_size"])
    targets = stages.forward(
        "targets + sampling", lambda _, *args: training_targets(spec, anchors, *args, key=jax.random.key(0)),
        None, proposals, proposal_valid, batch)
    rois, slots = targets["rois"], targets["mask_slots"]
    pooled = list(features[: len(POOLED_STRIDES)])
    boxes_at_once = dataclasses.replace(spec, roi_boxes_per_step=spec.roi_sampler.batch_size_per_image)

    def roi_align(_, f, box_rois, mask_rois):
        return (pool_rois(boxes_at_once, f, box_rois, spec.box_roi_size),
                pool_rois(boxes_at_once, f, mask_rois, spec.mask_roi_size))

    box_features, mask_features = stages.forward("roialign", roi_align, None, pooled, rois["boxes"], slots["boxes"])
    box_fn = lambda p, x, valid: apply(p, x, valid=valid, train=True, method="box_head")  # noqa: E731
    class_logits, box_deltas = stages.forward("box head", box_fn, params, box_features, rois["valid"])
    mask_fn = lambda p, x, valid, classes: apply(p, x, valid=valid, train=True, classes=classes,  # noqa: E731
                                                 method="mask_head")
    mask_logits = stages.forward("mask head", mask_fn, params, mask_features, slots["valid"], slots["classes"])
    outputs = (objectness, deltas, class_logits, box_deltas, mask_logits)

    def total_loss(_, *outputs_and_targets):
        return sum(head_losses(*outputs_and_targets)[0][name] for name in LOSS_NAMES)

    stages.forward("losses", total_loss, None, *outputs, targets)

    stages.backward("losses", total_loss, None, len(outputs), *outputs, targets)
    stages.backward("mask head", mask_fn, params, 1, mask_features, slots["valid"], slots["classes"])
    stages.backward("box head", box_fn, params, 1, box_features, rois["valid"])
    stages.backward("roialign", roi_align, None, 1, pooled, rois["boxes"], slots["boxes"])
    stages.backward("rpn head + proposals", rpn_and_proposal_boxes, params, 1, features, batch["image_size"])
    stages.backward("backbone + fpn", features_fn, params, 0, batch["image"])

    state = unplaced(program.abstract_state)
    update = functools.partial(apply_gradients, optimizer=program.optimizer, frozen_mask=program.frozen_mask)
    stages.forward("optimizer", lambda state_and_grads: update(*state_and_grads[:1], jnp.float32(0), state_and_grads[1],
                                                               learning_rate=jnp.float32(0.01)), (state, params))
    return stages.rows


def report_canvases(config: ml_collections.ConfigDict, task: str) -> list[tuple[int, int]]:
    """The canvases a task compiles for: the trainer's one step per training canvas
    (`training_canvases`), predict's one per evaluation canvas (`evaluation_canvases`)."""
    return training_canvases(config) if task == "train" else evaluation_canvases(config)


def compile_report(config: ml_collections.ConfigDict, topology: str, per_chip_batch: int, task: str = "train",
                   canvas: tuple[int, int] | None = None, stages: bool = True) -> dict:
    """Compiles `task` ("train": the trainer's step; "predict": `make_predict_fn`) of `config` for
    `topology` ("cpu:N", or a TPU topology such as "v5e:4x4": call `prepare_devices` first) at
    `per_chip_batch` images per chip on `canvas` (default the task's first canvas, `report_canvases`)
    and returns the report.

    Returns {"topology", "chip", "chips", "global_batch", "per_chip_batch", "canvas", "dtype", "task",
    "compile_s", "hbm" {arguments, outputs, temporaries, aliased, total: bytes per chip}, "hbm_capacity"
    (bytes per chip, None on CPU), "fits" (None on CPU), "flops_per_image", "bytes_per_image",
    "roofline" {compute_s, memory_s, step_s, images_per_s_per_chip, bound} (None on CPU), "collectives"
    {kind: {count, bytes}}, "loops" [trip count or None], "heaviest_ops" (`heaviest_ops`), "stages" [{stage, flops_per_image,
    bytes_per_image, with_backward: the same for forward + backward compiled together, or None}],
    "error": None, or XLA's message when the program does not fit the chip (then only the header
    fields are set and "fits" is False)}.
    """
    if task not in TASKS:
        raise ValueError(f"task {task!r}: expected one of {TASKS}")
    if per_chip_batch < 1:
        raise ValueError(f"per-chip batch {per_chip_batch}: must be at least 1")
    devices, chip = topology_devices(topology)
    mesh = mesh_lib.make_mesh(devices)
    global_batch_size = per_chip_batch * len(devices)
    config = platform_config(config, devices[0].platform)
    config.train.global_batch_size = global_batch_size
    canvas = tuple(canvas or report_canvases(config, task)[0])
    batch = abstract_training_batch(config, mesh, global_batch_size, canvas)
    start = time.perf_counter()
    if task == "train":
        program = training_program(config, mesh, loss_fn_from_config)
        lowered = program.train_step.lower(program.abstract_state, batch)
    else:
        model = build_model(config)
        program = None
        params = jax.eval_shape(lambda key: model.init(key, jnp.zeros((1, 64, 64, 3)))["params"], jax.random.key(0))
        params = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                                sharding=mesh_lib.replicated(mesh)), params)
        inputs = {key: batch[key] for key in ("image", "image_size", "original_size")}
        lowered = make_predict_fn(model, spec_from_config(config)).lower(params, inputs)
    report = {
        "topology": topology, "chip": devices[0].device_kind, "chips": len(devices), "global_batch": global_batch_size,
        "per_chip_batch": per_chip_batch, "canvas": list(canvas), "dtype": str(config.model.dtype), "task": task,
        "hbm_capacity": chip.hbm_bytes if chip else None, "hbm": None, "fits": None, "flops_per_image": None,
        "bytes_per_image": None, "roofline": None, "collectives": None, "loops": None, "heaviest_ops": None,
        "stages": [], "error": None,
    }
    try:
        compiled = lowered.compile()
    except Exception as error:  # noqa: BLE001 - only XLA's out-of-memory is a result; anything else is raised
        message = " ".join(str(error).split())
        if "RESOURCE_EXHAUSTED" not in message:
            raise
        # The TPU compiler refuses a program larger than the chip's HBM, as the chip itself would.
        return {**report, "compile_s": time.perf_counter() - start, "fits": False, "error": message[:600]}
    report["compile_s"] = time.perf_counter() - start
    flops, accessed = _costs(compiled)
    hbm = _memory(compiled)
    hlo = compiled.as_text()
    report.update(hbm=hbm, fits=(hbm["total"] <= chip.hbm_bytes) if chip else None,
                  flops_per_image=flops / per_chip_batch, bytes_per_image=accessed / per_chip_batch,
                  roofline=_roofline(flops, accessed, per_chip_batch, chip), collectives=collective_ops(hlo),
                  loops=while_loops(hlo), heaviest_ops=heaviest_ops(hlo))
    if stages and task == "train":
        rows = _train_stages(config, program, batch, mesh, global_batch_size)
        per_image = lambda counts: {"flops_per_image": counts["flops"] / per_chip_batch,  # noqa: E731
                                    "bytes_per_image": counts["bytes"] / per_chip_batch}
        report["stages"] = [{"stage": row["stage"], **per_image(row), "with_backward":
                             per_image(row["with_backward"]) if row["with_backward"] else None} for row in rows]
    return report


def _roofline(flops: float, accessed: float, per_chip_batch: int, chip: Chip | None) -> dict | None:
    """The step's lower bound on `chip`: the larger of its arithmetic and its HBM traffic times."""
    if chip is None:
        return None
    compute_s, memory_s = flops / chip.peak_flops, accessed / chip.hbm_bandwidth
    step_s = max(compute_s, memory_s)
    return {"compute_s": compute_s, "memory_s": memory_s, "step_s": step_s,
            "images_per_s_per_chip": per_chip_batch / step_s if step_s else None,
            "bound": "memory" if memory_s > compute_s else "compute"}


def format_report(report: dict) -> str:
    """The report as text: a header, memory per chip, compute and traffic, collectives, loops, stages."""
    gib = lambda value: f"{value / GIB:.2f} GiB"  # noqa: E731
    hbm = report["hbm"]
    lines = [f"{report['task']} step, {report['topology']} ({report['chips']} x {report['chip']}), global batch "
             f"{report['global_batch']} ({report['per_chip_batch']} per chip), canvas "
             f"{report['canvas'][0]}x{report['canvas'][1]}, {report['dtype']}, compiled in {report['compile_s']:.1f} s"]
    if report["error"]:
        return "\n".join(lines + [f"does NOT fit: {report['error']}"])
    lines += [f"HBM per chip: arguments {gib(hbm['arguments'])}, outputs {gib(hbm['outputs'])}, temporaries "
             f"{gib(hbm['temporaries'])}, aliased {gib(hbm['aliased'])}: total {gib(hbm['total'])}"]
    if report["hbm_capacity"]:
        margin = report["hbm_capacity"] - hbm["total"]
        lines[-1] += f" of {gib(report['hbm_capacity'])}: " + (
            f"fits ({gib(margin)} free)" if report["fits"] else f"does NOT fit (short by {gib(-margin)})")
    lines.append(f"per image: {report['flops_per_image'] / 1e9:.1f} GFLOP, {report['bytes_per_image'] / 1e9:.2f} GB "
                 f"accessed ({report['flops_per_image'] / max(report['bytes_per_image'], 1):.0f} FLOP/byte)")
    roofline = report["roofline"]
    if roofline:
        lines.append(f"roofline per chip-step: arithmetic {roofline['compute_s'] * 1e3:.1f} ms, memory "
                     f"{roofline['memory_s'] * 1e3:.1f} ms: {roofline['bound']}-bound, at most "
                     f"{roofline['images_per_s_per_chip']:.1f} images/s per chip")
    collectives = ", ".join(f"{kind} {entry['count']} ({entry['bytes'] / 2**20:.1f} MiB)"
                            for kind, entry in report["collectives"].items() if entry["count"])
    lines.append(f"collectives: {collectives or 'none'}")
    loops = report["loops"]
    lines.append(f"while loops (XLA counts each body once): {len(loops)}, trip counts "
                 f"{sorted(loops, key=lambda n: -1 if n is None else n) if loops else '-'} (None: data-dependent)")
    lines.append("heaviest instructions (bytes per chip-step, estimated from shapes; loop bodies left out):")
    for row in report["heaviest_ops"]:
        lines.append(f"  {row['bytes'] / 1e9:8.2f} GB  {row['opcode']:<18} {row['shape']:<40} {row['op_name'][:90]}")
    if report["stages"]:
        lines.append(f"{'per image, each stage alone, loop-free':<40}{'forward':>20}{'forward + backward':>22}")
        lines.append(f"{'':<40}{'GFLOP':>10}{'GB':>10}{'GFLOP':>11}{'GB':>11}")
        total = {"forward": [0.0, 0.0], "with_backward": [0.0, 0.0]}
        for row in report["stages"]:
            both = row["with_backward"] or row
            for key, counts in (("forward", row), ("with_backward", both)):
                total[key][0] += counts["flops_per_image"]
                total[key][1] += counts["bytes_per_image"]
            backward = (f"{both['flops_per_image'] / 1e9:>11.2f}{both['bytes_per_image'] / 1e9:>11.3f}"
                        if row["with_backward"] else f"{'-':>11}{'-':>11}")
            lines.append(f"{row['stage']:<40}{row['flops_per_image'] / 1e9:>10.2f}{row['bytes_per_image'] / 1e9:>10.3f}"
                         + backward)
        lines.append(f"{'sum (forward + backward: - counts forward)':<40}{total['forward'][0] / 1e9:>10.2f}"
                     f"{total['forward'][1] / 1e9:>10.3f}{total['with_backward'][0] / 1e9:>11.2f}"
                     f"{total['with_backward'][1] / 1e9:>11.3f}")
    return "\n".join(lines)
