"""grain pipelines: shuffling, per-process shards, batches grouped by canvas (orientation), exact
resume, evaluation padding, broken images."""

import numpy as np
import orbax.checkpoint as ocp
import grain
import pytest
from absl import flags

from maskrcnn_jax.data import grouping, pipeline, transforms
from maskrcnn_jax.data.image_io import BrokenImageError

from conftest import shared_data_path

CANVAS = (64, 64)
# Resized images (short side 48, long <= 64) fit one of these; the jitter crops those it enlarges.
ORIENTATIONS = [(48, 64), (64, 48)]
OPTIONS = dict(min_size=48, max_size=64, max_instances=4, mask_size=16)


class EllipseSource:
    """Records following the host-record contract: ellipses on noise, tight boxes, sizes 30-60 px.
    Indices in `broken` raise BrokenImageError like a real source with a corrupt file."""

    def __init__(self, length, broken=()):
        self.length = length
        self.broken = frozenset(broken)

    def __len__(self):
        return self.length

    def image_size(self, index):
        rng = np.random.default_rng(index)  # the first draws of __getitem__
        return int(rng.integers(30, 60)), int(rng.integers(30, 60))

    def __getitem__(self, index):
        if index in self.broken:
            raise BrokenImageError(f"{index}.jpg", "cannot decode: test")
        rng = np.random.default_rng(index)
        height, width = int(rng.integers(30, 60)), int(rng.integers(30, 60))
        count = int(rng.integers(0, 6))
        rows, cols = np.mgrid[:height, :width] + 0.5
        masks = np.zeros((count, height, width), np.uint8)
        boxes = np.zeros((count, 4), np.float32)
        for i in range(count):
            cy, cx, ry, rx = rng.uniform(8, height - 8), rng.uniform(8, width - 8), *rng.uniform(3, 12, 2)
            masks[i] = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1
            ys, xs = np.nonzero(masks[i])
            boxes[i] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        return {"image_id": 1000 + index, "file_name": f"{index}.jpg",
                "image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "boxes": boxes,
                "labels": rng.integers(1, 4, count).astype(np.int32), "masks": masks}


@pytest.fixture(scope="module", autouse=True)
def parsed_absl_flags():
    # grain worker processes read absl flags; pytest does not parse them.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


def training(source, **overrides):
    arguments = dict(global_batch_size=2, seed=3, flip_probability=0.5, jitter_range=(0.8, 1.2), canvases=[CANVAS],
                     **OPTIONS)
    arguments.update(overrides)
    return pipeline.training_dataset(source, **arguments)


def test_training_batches_have_the_contract_shapes():
    batch = next(iter(training(EllipseSource(6))))
    expected = {"image": ((2, 64, 64, 3), np.uint8), "image_size": ((2, 2), np.int32),
                "original_size": ((2, 2), np.int32), "image_id": ((2,), np.int64),
                "gt_boxes": ((2, 4, 4), np.float32), "gt_classes": ((2, 4), np.int32),
                "gt_masks": ((2, 4, 16, 16), np.uint8), "gt_valid": ((2, 4), np.bool_),
                "valid": ((2,), np.bool_), "dropped_degenerate": ((2,), np.int32),
                "dropped_overflow": ((2,), np.int32)}
    assert {key: (value.shape, value.dtype) for key, value in batch.items()} == expected


def test_each_epoch_is_a_fresh_permutation_and_the_seed_decides_it():
    source = EllipseSource(10)
    ids = [b["image_id"].tolist() for b in take(iter(training(source)), 10)]
    epochs = [sum(ids[:5], []), sum(ids[5:], [])]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(1000, 1010))
    assert epochs[0] != epochs[1]
    again = [b["image_id"].tolist() for b in take(iter(training(source)), 10)]
    other_seed = [b["image_id"].tolist() for b in take(iter(training(source, seed=4)), 10)]
    assert again == ids and other_seed != ids


def valid_ids(batches):
    return [int(i) for b in batches for i in b["image_id"][b["valid"]]]


def test_record_sizes_match_the_images():
    source = EllipseSource(5)
    assert all(source.image_size(i) == source[i]["image"].shape[:2] for i in range(5))


@pytest.mark.parametrize("canvases", [[CANVAS], ORIENTATIONS], ids=["one canvas", "orientations"])
@pytest.mark.parametrize("processes", [1, 2])
def test_every_record_exactly_once_per_epoch_and_each_global_batch_one_canvas(canvases, processes):
    source = EllipseSource(13)
    per_canvas = np.bincount([grouping.canvas_index(*source.image_size(i), canvases) for i in range(13)],
                             minlength=len(canvases))
    if len(canvases) == 2:
        assert per_canvas.min() >= 3  # both orientations are present
    epoch_batches = int(np.sum(-(-per_canvas // 4)))  # a canvas's last global batch is padded
    streams = [take(iter(training(source, global_batch_size=4, canvases=canvases, shard_index=p,
                                  shard_count=processes)), 2 * epoch_batches) for p in range(processes)]
    epochs = []
    for epoch in range(2):
        steps = [[stream[step] for stream in streams]
                 for step in range(epoch * epoch_batches, (epoch + 1) * epoch_batches)]
        for parts in steps:
            assert sum(len(part["valid"]) for part in parts) == 4
            shapes = {part["image"].shape[1:3] for part in parts}
            assert len(shapes) == 1 and shapes <= set(canvases)  # every process on the step's canvas
            canvas = canvases.index(shapes.pop())
            for part in parts:
                sizes = part["original_size"][part["valid"]]
                assert all(grouping.canvas_index(h, w, canvases) == canvas for h, w in sizes)
        ids = valid_ids([part for parts in steps for part in parts])
        assert sorted(ids) == list(range(1000, 1013))
        epochs.append(ids)
    assert epochs[0] != epochs[1]


def test_landscape_and_portrait_records_go_to_their_canvas():
    assert grouping.canvas_index(600, 800, ORIENTATIONS) == 0 and grouping.canvas_index(800, 600, ORIENTATIONS) == 1
    assert grouping.canvas_index(700, 700, ORIENTATIONS) == 0  # a tie: the first listed
    assert grouping.canvas_index(480, 2000, [(64, 64), (800, 1344), (1344, 800)]) == 1


def test_training_example_equals_the_transform_applied_directly():
    source = EllipseSource(4)
    batch = next(iter(training(source, global_batch_size=1, jitter_range=(1.0, 1.0), flip_probability=0.0,
                               canvases=ORIENTATIONS)))
    index = int(batch["image_id"][0]) - 1000
    record = source[index]
    canvas = batch["image"].shape[1:3]
    geometry = transforms.evaluation_geometry(*record["image"].shape[:2], canvas_size=canvas, min_size=48,
                                              max_size=64)
    expected = transforms.transform_example(record, geometry, canvas_size=canvas, max_instances=4, mask_size=16)
    for key, value in expected.items():
        np.testing.assert_array_equal(batch[key][0], value, err_msg=key)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_iterator_sees_exactly_the_uninterrupted_batches(num_workers):
    # 7 records on two canvases, global batch 2: 4 or 5 batches an epoch; resumed mid-epoch 0,
    # the batches run into epoch 1.
    dataset = training(EllipseSource(7), num_workers=num_workers, canvases=ORIENTATIONS)
    iterator = iter(dataset)
    take(iterator, 3)
    state = iterator.get_state()
    uninterrupted = take(iterator, 4)
    resumed_iterator = iter(dataset)
    resumed_iterator.set_state(state)
    assert_same_batches(take(resumed_iterator, 4), uninterrupted)
    if num_workers:  # batches are made before the workers split the work: the same as in-process
        assert_same_batches(take(iter(training(EllipseSource(7), canvases=ORIENTATIONS)), 7)[3:], uninterrupted)
    for it in (iterator, resumed_iterator):
        if hasattr(it, "close"):
            it.close()


def test_iterator_state_round_trips_through_an_orbax_checkpoint(tmp_path):
    dataset = training(EllipseSource(7), canvases=ORIENTATIONS)
    iterator = iter(dataset)
    take(iterator, 2)
    with ocp.CheckpointManager(tmp_path) as manager:
        manager.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
        manager.wait_until_finished()
    uninterrupted = take(iterator, 3)
    fresh = iter(dataset)
    with ocp.CheckpointManager(tmp_path) as manager:
        restored = manager.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    assert_same_batches(take(restored["data"], 3), uninterrupted)


def evaluation(source, **overrides):
    arguments = dict(global_batch_size=4, canvas_size=CANVAS, **OPTIONS)
    arguments.update(overrides)
    return pipeline.evaluation_dataset(source, **arguments)


def test_evaluation_is_one_ordered_pass_padded_with_invalid_examples():
    batches = list(evaluation(EllipseSource(10)))
    assert len(batches) == 3
    valid = np.concatenate([b["valid"] for b in batches])
    ids = np.concatenate([b["image_id"] for b in batches])
    assert valid.tolist() == [True] * 10 + [False] * 2
    assert ids[valid].tolist() == list(range(1000, 1010))
    padding = batches[-1]
    assert not padding["gt_valid"][2:].any() and not padding["image"][2:].any()


def test_evaluation_shards_run_the_same_steps_and_cover_every_record_once():
    source = EllipseSource(10)
    per_shard = [list(evaluation(source, global_batch_size=4, shard_index=i, shard_count=2)) for i in range(2)]
    assert len(per_shard[0]) == len(per_shard[1]) == 3
    ids = np.concatenate([b["image_id"][b["valid"]] for shard in per_shard for b in shard])
    assert sorted(ids.tolist()) == list(range(1000, 1010))


def test_evaluation_on_orientation_canvases_groups_each_batch_and_covers_every_record_once():
    source = EllipseSource(13)
    per_shard = [list(evaluation(source, global_batch_size=4, canvases=ORIENTATIONS, shard_index=i, shard_count=2))
                 for i in range(2)]
    assert len(per_shard[0]) == len(per_shard[1])
    for parts in zip(*per_shard):
        (canvas,) = {part["image"].shape[1:3] for part in parts}
        for part in parts:
            sizes = part["original_size"][part["valid"]]
            assert all(ORIENTATIONS[grouping.canvas_index(h, w, ORIENTATIONS)] == canvas for h, w in sizes)
            # torchvision's resize, uncropped, on the canvas of its orientation
            assert (part["image_size"][part["valid"]] <= np.array(canvas)).all()
    assert sorted(valid_ids([b for shard in per_shard for b in shard])) == list(range(1000, 1013))


def test_broken_images_are_skipped_in_training_and_padded_in_evaluation():
    source = EllipseSource(8, broken={2, 5})
    batches = take(iter(training(source)), 8)  # two epochs
    assert sorted(valid_ids(batches)) == sorted(2 * [1000, 1001, 1003, 1004, 1006, 1007])
    assert sum((~b["valid"]).sum() for b in batches) == 4  # replaced by padding: the batches keep their size
    batches = list(evaluation(source))
    assert valid_ids(batches) == [1000, 1001, 1003, 1004, 1006, 1007]
    assert sum(len(b["valid"]) for b in batches) == 8


def test_coco_training_and_evaluation_pipelines_on_real_data():
    from maskrcnn_jax.data.coco import CocoSource
    directory = shared_data_path("coco_train2017_85")
    source = CocoSource(directory / "annotations.json", directory / "images")
    options = dict(min_size=256, max_size=320, max_instances=50, mask_size=28)
    canvases = [(256, 320), (320, 256)]  # landscape and portrait photos, sized from the json
    iterator = iter(pipeline.training_dataset(source, global_batch_size=4, seed=0, num_workers=2,
                                              jitter_range=(0.8, 1.25), canvases=canvases, **options))
    for batch in take(iterator, 3):
        canvas = batch["image"].shape[1:3]
        assert batch["image"].shape[0] == 4 and canvas in canvases and batch["valid"].all()
        assert ((batch["original_size"][:, 1] >= batch["original_size"][:, 0]) == (canvas == canvases[0])).all()
        counts = batch["gt_valid"].sum(1)
        boxes = batch["gt_boxes"][batch["gt_valid"]]
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert (boxes[:, 2] <= batch["image_size"][np.repeat(np.arange(4), counts), 1] + 1e-3).all()
        assert (batch["gt_classes"][batch["gt_valid"]] >= 1).all() and not batch["gt_classes"][~batch["gt_valid"]].any()
    iterator.close()
    evaluated = list(pipeline.evaluation_dataset(source, global_batch_size=8, canvas_size=(320, 320), **options))
    ids = np.concatenate([b["image_id"][b["valid"]] for b in evaluated])
    assert sorted(ids.tolist()) == sorted(entry.image_id for entry in source.entries)
    assert sum(len(b["valid"]) for b in evaluated) == 88
