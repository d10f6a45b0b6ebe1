"""The bad-input corpus (issue 14): what a new user gives the commands, and what must come back.

Each case ends in one of: a one-line `error: ...` with exit code 2 (usage) or 1 (failure) and no
traceback, a counted skip or warning, or a correct result (checked against an independent
reference: pycocotools, the same pixels in another file format, hand-made expectations). The
scripts run in this process through their `main(argv)`, on the tiny config and 120x160 photos:
one padded shape, compiled once and then read from the persistent compilation cache.
"""

import contextlib
import importlib.util
import io
import json
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import shared_data_path
from maskrcnn_jax.checkpoint import save_checkpoint
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.models import build_model
from random_params import random_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLASS_NAMES = ("__background__", "circle", "square", "triangle", "star")
HEIGHT, WIDTH = 120, 160


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


predict = load_script("predict")
evaluate = load_script("evaluate")
convert_torchvision = load_script("convert_torchvision")
inspect_dataset = load_script("inspect_dataset")
make_shapes_dataset = load_script("make_shapes_dataset")
convert_via = load_script("convert_via")


def call(script, *arguments, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of script.main; never a traceback, and a failing run's last line is `error: ...`."""
    code = script.main([f"{script.__name__}.py", *map(str, arguments)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    if code != 0:
        error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert error_lines, err
    return code, out, err


def one_error(script, *arguments, code: int, match: str, capsys) -> str:
    """Runs a case that must end in exactly one `error:` line containing `match`, with exit code `code`."""
    exit_code, _, err = call(script, *arguments, capsys=capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_code == code, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """The scripts turn on the persistent cache; here it lives in a temporary folder, and is as before afterwards."""
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    yield
    jax.config.update("jax_compilation_cache_dir", previous)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = load_config_file(ROOT / "configs" / "mask_rcnn_tiny.py")
    config.test.score_threshold = 0.0  # random weights: keep what the model finds
    config.test.detections_per_image = 5
    directory = tmp_path_factory.mktemp("tiny") / "checkpoint"
    save_checkpoint(directory, random_params(build_model(config)), config, CLASS_NAMES)
    return directory


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo at 120x160, uint8 RGB."""
    path = shared_data_path("coco_val2014_43", "images", "000000000074.jpg")
    return np.asarray(Image.open(path).convert("RGB").resize((WIDTH, HEIGHT), Image.BILINEAR))


@pytest.fixture(scope="module")
def photos(tmp_path_factory, photo):
    """The photo in every format decode_image reads, two files of one name in two folders, and bad files."""
    folder = tmp_path_factory.mktemp("photos")
    for sub in ("formats", "a", "b", "bad"):
        (folder / sub).mkdir()
    rgb = Image.fromarray(photo)
    grey = rgb.convert("L")
    files = {
        "jpeg": ("formats/photo.jpg", lambda p: rgb.save(p, quality=95)),
        "png": ("formats/photo.png", lambda p: rgb.save(p)),
        "webp": ("formats/photo.webp", lambda p: rgb.save(p, lossless=True)),
        "tiff": ("formats/photo.tif", lambda p: rgb.save(p)),
        "bmp": ("formats/photo.bmp", lambda p: rgb.save(p)),
        "gif": ("formats/photo.gif", lambda p: rgb.save(p)),
        "rgba": ("formats/rgba.png", lambda p: rgb.convert("RGBA").save(p)),
        "grey": ("formats/grey.png", lambda p: grey.save(p)),
        "grey16": ("formats/grey16.png",
                   lambda p: Image.fromarray(np.asarray(grey).astype(np.uint16) << 8).save(p)),
        "palette": ("formats/palette.png", lambda p: rgb.convert("P").save(p)),
        # Stored turned by 90 degrees with EXIF orientation 6: a viewer shows it upright, 120x160.
        "exif": ("formats/turned.jpg", lambda p: rgb.transpose(Image.Transpose.ROTATE_90).save(
            p, quality=95, exif=_orientation(6))),
        "a": ("a/photo.jpg", lambda p: rgb.save(p, quality=95)),
        "b": ("b/photo.jpg", lambda p: rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(p, quality=95)),
    }
    paths = {}
    for key, (name, write) in files.items():
        write(folder / name)
        paths[key] = folder / name
    jpeg = (folder / "a" / "photo.jpg").read_bytes()
    (folder / "bad" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (folder / "bad" / "empty.jpg").write_bytes(b"")
    (folder / "bad" / "notes.jpg").write_text("not an image")
    paths.update(truncated=folder / "bad" / "truncated.jpg", empty=folder / "bad" / "empty.jpg",
                 text=folder / "bad" / "notes.jpg", folder=folder)
    return paths


def _orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _entries_by_file(detections_json: pathlib.Path) -> dict:
    by_file = {}
    for entry in json.loads(detections_json.read_text()):
        by_file.setdefault(entry["file_name"], []).append(entry)
    return by_file


# ---- predict.py: the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize("arguments, code, match", [
    (["--output", "{tmp}/out", "{photo}"], 2, "--checkpoint is required"),
    (["--checkpoint", "{tmp}/absent", "--output", "{tmp}/out", "{photo}"], 2, "no checkpoint at"),
    (["--checkpoint", "{tmp}/model.pth", "--output", "{tmp}/out", "{photo}"], 2,
     "is a torch file, not a checkpoint directory: convert it first"),
    (["--checkpoint", "{tmp}/empty_dir", "--output", "{tmp}/out", "{photo}"], 2, "is not a checkpoint"),
    (["--checkpoint", "{checkpoint}", "--output", "{tmp}/out", "--config.test.nope=1", "{photo}"], 2,
     "--config.test.nope: the config has no field 'nope'"),
    (["--checkpoint", "{checkpoint}", "--output", "{tmp}/out", "--config.test.detections_per_image=many", "{photo}"],
     2, "--config.test.detections_per_image=many"),
    (["--checkpoint", "{checkpoint}", "--output", "{tmp}/out", "--config", "{tmp}/absent.py", "{photo}"], 2,
     "no such config file"),
    (["--checkpoint", "{checkpoint}", "--output", "{tmp}/out", "--score_threshold=2", "{photo}"], 2,
     "not a number in the range [0.0, 1.0]"),
    (["--checkpoint", "{checkpoint}", "--output", "{tmp}/out", "--score_threshold=-1", "{photo}"], 2,
     "not a number in the range [0.0, 1.0]"),
    (["--checkpoint", "{checkpoint}", "--output", "{tmp}/out", "--score_threshold=nan", "{photo}"], 2, "not nan"),
    (["--checkpoint", "{checkpoint}", "--output", "{tmp}/out"], 2, "give one or more image files"),
    (["--checkpoint", "{checkpoint}", "--output", "{tmp}/a_file", "{photo}"], 2, "is a file; give a directory"),
    (["--checkpoint", "{checkpoint}", "--output", "{tmp}/a_file/below", "{photo}"], 2, "cannot write there"),
    (["--checkpoint", "{checkpoint}", "--output", "{tmp}/out", "{tmp}/absent.jpg"], 2,
     "none of the images given is a file: {tmp}/absent.jpg (no such file)"),
    (["--checkpoint", "{checkpoint}", "--output", "{tmp}/out", "--config.input.min_size=0", "{photo}"], 2,
     "config.input.min_size = 0: must be a number at least 1"),
])
def test_predict_usage_problems_are_one_line(tmp_path, checkpoint, photos, capsys, arguments, code, match):
    (tmp_path / "model.pth").write_bytes(b"torch")
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "a_file").write_text("x")
    values = {"tmp": tmp_path, "checkpoint": checkpoint, "photo": photos["a"]}
    one_error(predict, *(argument.format(**values) for argument in arguments), code=code,
              match=match.format(**values), capsys=capsys)


def test_predict_refuses_to_overwrite_an_earlier_run(tmp_path, checkpoint, photos, capsys):
    arguments = ["--checkpoint", checkpoint, "--output", tmp_path / "out", photos["a"]]
    assert call(predict, *arguments, capsys=capsys)[0] == 0
    first = (tmp_path / "out" / "detections.json").read_text()
    one_error(predict, *arguments, code=2, match="already holds detections.json", capsys=capsys)
    assert (tmp_path / "out" / "detections.json").read_text() == first
    assert call(predict, *arguments, "--overwrite", capsys=capsys)[0] == 0


def test_checkpoint_that_does_not_fit_the_config(tmp_path, checkpoint, photos, capsys):
    one_error(predict, "--checkpoint", checkpoint, "--output", tmp_path / "out", "--config.model.fpn_channels=32",
              photos["a"], code=1, match="the checkpoint's parameters do not fit the config's model", capsys=capsys)


def test_truncated_checkpoint_is_one_line(tmp_path, checkpoint, photos, capsys):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in checkpoint.rglob("*"):
        target = damaged / path.relative_to(checkpoint)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.write_bytes(path.read_bytes())
    largest = max((p for p in damaged.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[:1000])
    line = one_error(predict, "--checkpoint", damaged, "--output", tmp_path / "out", photos["a"], code=1,
                     match="a file may be truncated or damaged", capsys=capsys)
    assert "write or copy the checkpoint again" in line
    assert not (tmp_path / "out" / "detections.json").exists()  # a rerun needs no --overwrite


def test_verbose_adds_the_traceback(tmp_path, photos, capsys):
    code = predict.main(["predict.py", "--checkpoint", str(tmp_path), "--output", str(tmp_path / "out"),
                         "--verbose", str(photos["a"])])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: --checkpoint")


# ---- predict.py: images --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def format_run(tmp_path_factory, checkpoint, photos):
    """predict.py over every format, two same-named files in two folders, a repeat and bad files."""
    output = tmp_path_factory.mktemp("formats_out")
    images = [photos[key] for key in ("jpeg", "png", "webp", "tiff", "bmp", "gif", "rgba", "grey", "grey16",
                                      "palette", "exif", "a", "b")]
    bad = [photos["truncated"], photos["empty"], photos["text"], photos["folder"] / "absent.jpg"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = predict.main(["predict.py", "--checkpoint", str(checkpoint), "--output", str(output),
                             "--score_threshold=0", *map(str, images[:7] + bad + [images[0]] + images[7:])])
    return code, output, images, err.getvalue()


def test_bad_images_are_reported_one_line_each_and_the_rest_is_written(format_run, photos):
    code, output, images, err = format_run
    assert code == 1 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4
    assert any(str(photos["truncated"]) in line and "cannot decode" in line for line in errors)
    assert any(str(photos["empty"]) in line and "the file is empty" in line for line in errors)
    assert any(str(photos["text"]) in line and "not an image file" in line and "BytesIO" not in line for line in errors)
    assert any("absent.jpg: no such file" in line for line in errors)
    assert sum("given more than once" in line for line in err.splitlines()) == 1
    by_file = _entries_by_file(output / "detections.json")
    assert len(by_file) == len(images)  # every good image once, none lost to the failures


def test_output_names_do_not_collide(format_run):
    _, output, images, _ = format_run
    by_file = _entries_by_file(output / "detections.json")
    names = {"formats/photo.jpg", "formats/photo.png", "formats/photo.webp", "formats/photo.tif", "formats/photo.bmp",
             "formats/photo.gif", "a/photo.jpg", "b/photo.jpg"}
    assert names <= set(by_file)
    for name in by_file:
        assert (output / f"{name}.png").is_file()
    # Image ids number the images predicted, one id per file.
    ids = {name: {entry["image_id"] for entry in entries} for name, entries in by_file.items()}
    assert all(len(i) == 1 for i in ids.values()) and len(set.union(*ids.values())) == len(images)
    # The two photo.jpg are different pictures (one mirrored): their detections differ.
    assert by_file["a/photo.jpg"] != by_file["b/photo.jpg"]


def _boxes_and_scores(entries: list) -> list:
    return [(entry["bbox"], entry["score"], entry["category_id"], entry["segmentation"]) for entry in entries]


def test_lossless_formats_give_the_same_detections(format_run):
    _, output, _, _ = format_run
    by_file = _entries_by_file(output / "detections.json")
    png = _boxes_and_scores(by_file["formats/photo.png"])
    assert png  # score threshold 0: the tiny random model's 5 detections
    for name in ("formats/photo.webp", "formats/photo.tif", "formats/photo.bmp", "formats/rgba.png"):
        assert _boxes_and_scores(by_file[name]) == png, name
    assert _boxes_and_scores(by_file["formats/grey16.png"]) == _boxes_and_scores(by_file["formats/grey.png"])


def test_every_format_gives_masks_of_the_upright_size(format_run):
    _, output, _, _ = format_run
    for name, entries in _entries_by_file(output / "detections.json").items():
        assert all(entry["segmentation"]["size"] == [HEIGHT, WIDTH] for entry in entries), name
        assert Image.open(output / f"{name}.png").size == (WIDTH, HEIGHT), name


def test_an_image_that_fails_mid_run_loses_nothing(tmp_path, checkpoint, photos, capsys, monkeypatch):
    """Out of memory on the second of three images: the first and third are written, one line says why."""
    from maskrcnn_jax.inference.detector import Detector

    original = Detector.detect_with_mask_windows
    calls = []

    def second_runs_out_of_memory(self, image):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("Unable to allocate 9.65 GiB for an array with shape (100, 4000, 6000)")
        return original(self, image)

    monkeypatch.setattr(Detector, "detect_with_mask_windows", second_runs_out_of_memory)
    code, out, err = call(predict, "--checkpoint", checkpoint, "--output", tmp_path / "out",
                          photos["a"], photos["b"], photos["png"], capsys=capsys)
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {photos['b']}: MemoryError: Unable to allocate 9.65 GiB for an array with shape (100, 4000, 6000) "
        "(unexpected; rerun with --verbose for the traceback)"]
    assert set(_entries_by_file(tmp_path / "out" / "detections.json")) == {"a/photo.jpg", "formats/photo.png"}
    assert "for 2 of 3 images" in out


def test_results_file_is_complete_after_every_image(tmp_path):
    writer = predict.JsonListFile(tmp_path / "results.json")
    assert json.loads((tmp_path / "results.json").read_text()) == []
    written = []
    for batch in ([{"a": 1}], [], [{"b": 2}, {"c": float("inf")}]):
        writer.extend(batch)
        written += batch
        assert json.loads((tmp_path / "results.json").read_text()) == written
    writer.close()


def test_predicted_file_names_are_scored_against_a_coco_file_of_the_same_images(format_run, tmp_path, capsys):
    """detections.json against a COCO file listing its images under other ids, with its own detections as
    ground truth: every box found (AP 1), and segm AP equal to pycocotools' on the same pairs."""
    _, output, _, _ = format_run
    by_file = _entries_by_file(output / "detections.json")
    names = sorted(by_file)
    images = [{"id": 100 + i, "file_name": name, "height": HEIGHT, "width": WIDTH} for i, name in enumerate(names)]
    annotations = []
    for image in images:
        for entry in by_file[image["file_name"]]:
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": entry["category_id"],
                                "bbox": entry["bbox"], "segmentation": entry["segmentation"], "iscrowd": 0,
                                "area": float(mask_utils.area(entry["segmentation"]))})
    categories = [{"id": i, "name": name} for i, name in enumerate(CLASS_NAMES) if i]
    (tmp_path / "gt.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                  "categories": categories}))
    code, _, err = call(evaluate, "--annotations", tmp_path / "gt.json", "--results", output / "detections.json",
                        "--output", tmp_path / "scores", capsys=capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    assert metrics["bbox"]["AP"] == pytest.approx(1.0, abs=1e-12)

    reference = COCO()
    reference.dataset = json.loads((tmp_path / "gt.json").read_text())
    reference.createIndex()
    ids = {image["file_name"]: image["id"] for image in images}
    results = [dict(entry, image_id=ids[entry["file_name"]]) for entries in by_file.values() for entry in entries]
    for entry in results:
        entry.pop("bbox")
    coco_eval = COCOeval(reference, reference.loadRes(results), "segm")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    assert metrics["segm"]["AP"] == pytest.approx(coco_eval.stats[0], abs=1e-12)


# ---- the Python API --------------------------------------------------------------------------------------------------


def test_detector_accepts_float_grey_and_rgba_and_refuses_the_rest(checkpoint, photo):
    from maskrcnn_jax import Detector

    detector = Detector.from_checkpoint(checkpoint, score_threshold=0.0)
    grey = np.asarray(Image.fromarray(photo).convert("L"))
    expected = detector.detect([np.repeat(grey[:, :, None], 3, axis=2)])[0]
    rgba = np.concatenate([photo, np.zeros((HEIGHT, WIDTH, 1), np.uint8)], axis=2)
    found_grey, found_float, found_rgba = detector.detect([grey, grey.astype(np.float32) / 255, rgba])
    np.testing.assert_array_equal(found_grey["boxes"], expected["boxes"])
    np.testing.assert_allclose(found_float["scores"], expected["scores"], atol=1e-5)
    np.testing.assert_array_equal(found_rgba["boxes"], detector.detect([photo])[0]["boxes"])
    with pytest.raises(ValueError, match="float image must hold values in \\[0, 1\\]"):
        detector.detect([photo.astype(np.float32)])
    with pytest.raises(ValueError, match="channels first"):
        detector.detect([photo.transpose(2, 0, 1)])
    with pytest.raises(ValueError, match="score_threshold = 1.5"):
        Detector.from_checkpoint(checkpoint, score_threshold=1.5)


# ---- evaluate.py -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco_files(tmp_path_factory):
    """detectron2's tiny COCO case (1 image, 2 persons, 3 RLE detections) and a writer of variants."""
    folder = shared_data_path("cocoeval", "detectron2_tiny")
    ground_truth = json.loads((folder / "gt.json").read_text())
    detections = json.loads((folder / "dt.json").read_text())
    work = tmp_path_factory.mktemp("coco")

    def write(name: str, content) -> pathlib.Path:
        path = work / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    return {"gt": ground_truth, "dt": detections, "write": write, "gt_path": folder / "gt.json",
            "dt_path": folder / "dt.json"}


def _variant(detections: list, index: int, **changes) -> list:
    changed = [dict(entry) for entry in detections]
    changed[index].update(changes)
    return changed


@pytest.mark.parametrize("name, change, match", [
    ("nan_score", {"score": float("nan")}, "result 1 (image_id 139, category_id 1): score nan is not a finite number"),
    ("inf_score", {"score": float("inf")}, "score inf is not a finite number"),
    ("text_score", {"score": "0.9"}, "score '0.9' is not a finite number"),
    ("negative_width", {"bbox": [10.0, 10.0, -5.0, 20.0]}, "has a negative width or height"),
    ("nan_box", {"bbox": [10.0, float("nan"), 5.0, 20.0]}, "is not finite"),
    ("three_number_box", {"bbox": [10.0, 10.0, 5.0]}, "is not 4 numbers"),
    ("garbage_rle", {"segmentation": {"size": [426, 640], "counts": "\x7f\x7f\x7f"}}, "its segmentation cannot be scored"),
    ("short_rle", {"segmentation": {"size": [426, 640], "counts": "0"}}, "its runs cover 0 pixels, the image has 272640"),
    ("polygon", {"segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]]}, "not an RLE dict"),
    ("unknown_category", {"category_id": 99}, "category ids [99] in the results are not in the ground truth"),
    ("unknown_image", {"image_id": 7}, "image ids in the results are not in the ground truth, e.g. [7]"),
])
def test_results_that_would_be_scored_wrongly_are_one_line_errors(coco_files, capsys, name, change, match):
    results = coco_files["write"](f"{name}.json", _variant(coco_files["dt"], 1, **change))
    one_error(evaluate, "--annotations", coco_files["gt_path"], "--results", results, "--output",
              results.with_suffix(""), code=1, match=match, capsys=capsys)


def test_scores_outside_0_1_are_scored_as_pycocotools_does_with_a_counted_warning(coco_files, tmp_path, capsys):
    """COCOeval only sorts by score: scores of 3, 2, 1 give the AP of the file's own scores (the same order)."""
    ordered = sorted(coco_files["dt"], key=lambda entry: -entry["score"])
    rescored = [dict(entry, score=float(3 - i)) for i, entry in enumerate(ordered)]
    results = coco_files["write"]("rescored.json", rescored)
    code, _, err = call(evaluate, "--annotations", coco_files["gt_path"], "--results", results, "--output",
                        tmp_path / "rescored", capsys=capsys)
    assert code == 0 and "warning: 2 scores outside [0, 1] (only their order counts)" in err
    code, _, _ = call(evaluate, "--annotations", coco_files["gt_path"], "--results", coco_files["dt_path"],
                      "--output", tmp_path / "original", capsys=capsys)
    assert code == 0
    assert (json.loads((tmp_path / "rescored" / "metrics.json").read_text())
            == json.loads((tmp_path / "original" / "metrics.json").read_text()))


def test_the_same_results_file_twice_is_a_counted_warning(coco_files, tmp_path, capsys):
    path = coco_files["dt_path"]
    code, _, err = call(evaluate, "--annotations", coco_files["gt_path"], "--results", f"{path},{path}",
                        "--output", tmp_path, capsys=capsys)
    assert code == 0 and "warning: 3 entries repeating an earlier entry exactly" in err


@pytest.mark.parametrize("name, change, match", [
    ("duplicate_ids", lambda gt: gt["annotations"][1].update(id=gt["annotations"][0]["id"]),
     "1 annotation ids are used more than once"),
    ("nan_box", lambda gt: gt["annotations"][0].update(bbox=[1.0, float("nan"), 3.0, 4.0]), "is not finite"),
    ("no_area", lambda gt: gt["annotations"][0].pop("area"), "'area' None is not a finite number"),
    ("no_images", lambda gt: gt.pop("images"), "missing key(s) ['images']"),
])
def test_ground_truth_that_would_be_scored_wrongly_is_a_one_line_error(coco_files, capsys, name, change, match):
    ground_truth = json.loads(json.dumps(coco_files["gt"]))
    change(ground_truth)
    path = coco_files["write"](f"gt_{name}.json", ground_truth)
    line = one_error(evaluate, "--annotations", path, "--results", coco_files["dt_path"], "--output",
                     path.with_suffix(""), code=1, match=match, capsys=capsys)
    assert str(path) in line  # the annotation file is named, not the results


def test_ground_truth_without_iscrowd_is_scored_as_not_crowd_with_a_counted_warning(coco_files, tmp_path, capsys):
    ground_truth = json.loads(json.dumps(coco_files["gt"]))
    for annotation in ground_truth["annotations"]:
        annotation.pop("iscrowd", None)
    path = coco_files["write"]("gt_no_crowd.json", ground_truth)
    code, _, err = call(evaluate, "--annotations", path, "--results", coco_files["dt_path"], "--output",
                        tmp_path / "a", capsys=capsys)
    assert code == 0 and "warning: 2 ground-truth annotations have no 'iscrowd'" in err
    call(evaluate, "--annotations", coco_files["gt_path"], "--results", coco_files["dt_path"], "--output",
         tmp_path / "b", capsys=capsys)
    assert (json.loads((tmp_path / "a" / "metrics.json").read_text())
            == json.loads((tmp_path / "b" / "metrics.json").read_text()))


@pytest.mark.parametrize("arguments, code, match", [
    (["--annotations", "{tmp}/absent.json", "--results", "{dt}", "--output", "{tmp}/o"], 2, "no such file"),
    (["--annotations", "{gt}", "--results", "{tmp}/absent.json", "--output", "{tmp}/o"], 2,
     "--results {tmp}/absent.json: no such file"),
    (["--annotations", "{gt}", "--results", "{tmp}/not_json.json", "--output", "{tmp}/o"], 1, "cannot read results file"),
    (["--annotations", "{gt}", "--results", "{dt}", "--checkpoint", "{checkpoint}", "--images", "{tmp}", "--output",
      "{tmp}/o"], 2, "not both"),
    (["--annotations", "{gt}", "--output", "{tmp}/o"], 2, "give --results, or --checkpoint and --images"),
    (["--annotations", "{gt}", "--checkpoint", "{checkpoint}", "--images", "{tmp}", "--output", "{tmp}/o",
      "--batch_size=0"], 2, "0 is not a positive integer"),
    (["--annotations", "{gt}", "--checkpoint", "{checkpoint}", "--images", "{tmp}", "--output", "{tmp}/o",
      "--max_images=0"], 2, "0 is not a positive integer"),
    (["--annotations", "{gt}", "--checkpoint", "{tmp}", "--images", "{tmp}", "--output", "{tmp}/o"], 2,
     "is not a checkpoint"),
    (["--annotations", "{gt}", "--results", "{dt}", "--output", "{tmp}/a_file"], 2, "is a file"),
])
def test_evaluate_usage_problems_are_one_line(coco_files, checkpoint, tmp_path, capsys, arguments, code, match):
    (tmp_path / "not_json.json").write_text("[{")
    (tmp_path / "a_file").write_text("x")
    values = {"tmp": tmp_path, "gt": coco_files["gt_path"], "dt": coco_files["dt_path"], "checkpoint": checkpoint}
    one_error(evaluate, *(a.format(**values) for a in arguments), code=code, match=match.format(**values),
              capsys=capsys)


def test_results_naming_an_unknown_file_is_a_one_line_error(coco_files, capsys):
    results = coco_files["write"]("by_name.json", [dict(entry, file_name="holiday.jpg") for entry in coco_files["dt"]])
    one_error(evaluate, "--annotations", coco_files["gt_path"], "--results", results, "--output",
              results.with_suffix(""), code=1, match="file_name 'holiday.jpg', which is not an image", capsys=capsys)


# ---- the other scripts -----------------------------------------------------------------------------------------------


def test_converter_names_only_the_absent_key_and_never_advises_unsafe_loading(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from maskrcnn_jax.convert.torchvision import ConversionError, convert_state_dict

    with pytest.raises(ConversionError) as error:
        convert_state_dict({"rpn.head.cls_logits.weight": np.zeros(3)}, {})
    assert "roi_heads.mask_predictor.mask_fcn_logits.weight is absent" in str(error.value)
    assert "rpn.head.cls_logits.weight is" not in str(error.value)

    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")
    (tmp_path / "random.pth").write_bytes(np.random.default_rng(0).bytes(3000))
    for name, match in (("module.pth", "holds Python objects besides tensors (Unsupported global: GLOBAL "
                                       "torch.nn.modules.linear.Linear)"),
                        ("random.pth", "is not a torch checkpoint torch.load can read")):
        line = one_error(convert_torchvision, "--input", tmp_path / name, "--output", tmp_path / "out", code=1,
                         match=match, capsys=capsys)
        assert "weights_only" not in line.replace("weights_only=True", "")
    one_error(convert_torchvision, "--input", tmp_path / "random.pth", "--output", tmp_path, code=2,
              match="already exists", capsys=capsys)


def test_inspect_dataset_reports_duplicate_annotation_ids(tmp_path, capsys):
    annotation_file = shared_data_path("labelme_voc3", "annotations.json")
    dataset = json.loads(annotation_file.read_text())
    dataset["annotations"][3]["id"] = dataset["annotations"][2]["id"]
    (tmp_path / "a.json").write_text(json.dumps(dataset))
    code, out, _ = call(inspect_dataset, "--annotations", tmp_path / "a.json", "--images",
                        shared_data_path("labelme_voc3", "images"), "--num_drawn", "0", capsys=capsys)
    assert code == 0
    assert f"duplicate annotation ids: 1, e.g. {dataset['annotations'][2]['id']} (2 times)" in out
    one_error(inspect_dataset, "--annotations", tmp_path / "absent.json", "--images", tmp_path, code=2,
              match="--annotations", capsys=capsys)


@pytest.mark.parametrize("arguments, match", [
    (["--num_images", "-3"], "--num_images -3: give at least 1"),
    (["--num_images", "0"], "--num_images 0: give at least 1"),
    (["--num_images", "three"], "flag --num_images=three: invalid literal for int() with base 10: 'three'"),
    (["--num_images", "2", "--image_size", "4"], "--image_size takes one side or MIN,MAX, each at least 8"),
])
def test_make_shapes_dataset_checks_ranges(tmp_path, capsys, arguments, match):
    one_error(make_shapes_dataset, "--output", tmp_path / "shapes", *arguments, code=2, match=match, capsys=capsys)
    assert not (tmp_path / "shapes").exists()


def test_convert_via_with_the_wrong_image_folder_fails(tmp_path, capsys):
    via_file = shared_data_path("balloon", "raw", "val", "via_region_data.json")
    one_error(convert_via, "--via", via_file, "--images", tmp_path, "--output", tmp_path / "coco.json", code=1,
              match="none of the 13 images", capsys=capsys)
    assert not (tmp_path / "coco.json").exists()
    one_error(convert_via, "--via", via_file, "--images", tmp_path / "absent", "--output", tmp_path / "coco.json",
              code=2, match="no such folder", capsys=capsys)
