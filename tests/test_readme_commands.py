"""Every command in README.md runs as written.

The fenced `bash` blocks are split into commands (a trailing backslash continues a line). Each
command must match exactly one rule below, by its leading words:
  RUN       run here, as written, in the repository, with /tmp/ pointing into pytest's tmp_path
            (and the README's placeholder names A.json / DIR given the shapes dataset the README
            makes first);
  COVERED   exercised by the named test, which runs the same code path on small inputs (the
            command itself takes minutes, or needs data the suite makes elsewhere);
  ELSEWHERE cannot run here, for the reason named: it needs a pod, a GPU or a download.
A README command that no rule names fails `test_every_readme_command_has_one_rule`, so a new
command must be given one. The README's Python API snippet runs in `test_python_api_snippet_runs`.
"""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"

RUN, COVERED, ELSEWHERE = "run", "covered", "elsewhere"
COCO_TRAIN_COMMAND = ("python scripts/train.py --config configs/mask_rcnn_r50_fpn_coco.py "
                      "--workdir /data/runs/r50_coco --config.init.checkpoint=/data/resnet50_imagenet")
BACKBONE_TEST = "tests/test_readme_commands.py::test_coco_backbone_commands_run_with_a_small_random_resnet"
# (leading words, kind, the test that covers it or why it cannot run here); first match wins.
RULES = [
    ("python scripts/make_shapes_dataset.py", RUN, ""),
    ("python scripts/inspect_dataset.py", RUN, ""),
    ("make demo", COVERED, "tests/test_demo.py::test_demo_on_a_few_steps_writes_scores_pictures_and_curves"),
    ("make test", COVERED, "this suite is what it runs"),
    ("python scripts/train.py --config configs/shapes_tiny.py", COVERED,
     "tests/test_training_resume.py::test_resume_after_sigkill_ends_with_the_parameters_of_an_uninterrupted_run"),
    ("python examples/dice_mask_loss.py", COVERED, "tests/test_examples.py::test_variant_trains_through_the_library_trainer"),
    ("python scripts/convert_via.py", COVERED, "tests/test_via.py::test_script_converts_balloon_val"),
    ("python scripts/build_tfds.py", COVERED,
     "tests/test_tfds.py::test_tfds_records_equal_coco_source_and_broken_image_is_left_out_and_listed"),
    ("python scripts/predict.py", COVERED,
     "tests/test_predict_script.py::test_predict_script_with_only_the_checkpoint_gives_torchvisions_detections"),
    ("python scripts/export.py", COVERED, "tests/test_export.py::test_the_json_beside_the_artifact_describes_it"),
    ("python examples/serve_exported.py", COVERED,
     "tests/test_export.py::test_loader_without_maskrcnn_jax_flax_or_torch_writes_predict_scripts_detections"),
    ("python scripts/evaluate.py --checkpoint", COVERED,
     "tests/test_bad_inputs.py::test_predicted_file_names_are_scored_against_a_coco_file_of_the_same_images"),
    ("python scripts/evaluate.py --annotations", COVERED,
     "tests/test_bad_inputs.py::test_predicted_file_names_are_scored_against_a_coco_file_of_the_same_images"),
    ("python scripts/convert_backbone.py", COVERED, BACKBONE_TEST),
    (COCO_TRAIN_COMMAND, COVERED, BACKBONE_TEST),
    ("python scripts/convert_torchvision.py", ELSEWHERE,
     "needs torchvision's COCO weights (a download); the converter runs in tests/test_convert_torchvision.py"),
    ("python scripts/compile_report.py --config configs/mask_rcnn_tiny.py", COVERED,
     "tests/test_compile_report.py::test_report_has_every_field_for_eight_cpu_devices"),
    ("python scripts/compile_report.py", ELSEWHERE,
     "compiles R50 for a TPU topology: libtpu (the tpu extra) and about 5 minutes; docs/benchmarks.md has its runs"),
    ("python benchmarks/benchmark.py", ELSEWHERE,
     "an R50 benchmark of minutes on a photo at 800x1216; docs/benchmarks.md records its runs"),
    ("python scripts/train.py --config configs/mask_rcnn_r50_fpn_coco.py", ELSEWHERE,
     "needs COCO or torchvision's weights (downloads) and a GPU or TPU"),
    ("python scripts/train.py --config configs/mask_rcnn_r50_fpn_v2_coco.py", ELSEWHERE,
     "needs COCO (a download) and a pod: 400 epochs of 64 images per step"),
    ("pip install", ELSEWHERE, "installs jax for a GPU or a TPU (a download)"),
    ("gcloud", ELSEWHERE, "needs a Cloud TPU pod"),
    ("srun", ELSEWHERE, "needs a SLURM cluster"),
]
# Placeholder names the README uses for "your dataset", given the shapes the README makes first.
PLACEHOLDERS = {"A.json": "/tmp/shapes/annotations.json", "--images DIR": "--images /tmp/shapes/images"}


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.MULTILINE | re.DOTALL)


def readme_commands() -> list[str]:
    """Each command of the README's bash blocks, continuation lines joined."""
    commands = []
    for block in readme_blocks("bash"):
        for command in re.sub(r"\s*\\\n\s*", " ", block).splitlines():
            if command.strip() and not command.lstrip().startswith("#"):
                commands.append(command.strip())
    return commands


def rule_of(command: str):
    matches = [rule for rule in RULES if command.startswith(rule[0] + " ") or command == rule[0]]
    return matches[0] if matches else None


def test_every_readme_command_has_one_rule():
    commands = readme_commands()
    assert len(commands) >= 10, "the README's commands were not found"
    assert not [command for command in commands if rule_of(command) is None], "README commands without a rule"
    used = {rule_of(command)[0] for command in commands}
    assert not [rule[0] for rule in RULES if rule[0] not in used], "rules for commands the README no longer has"


def test_covering_tests_exist():
    for _, kind, detail in RULES:
        if kind == COVERED and "::" in detail:
            path, name = detail.split("::")
            assert f"def {name}(" in (REPO / path).read_text(), detail


def command_environment() -> dict[str, str]:
    """The environment a README command runs in: this Python first on PATH, JAX on the CPU."""
    return {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "JAX_PLATFORMS": "cpu"}


def test_runnable_readme_commands_run_as_written(tmp_path):
    environment = command_environment()
    ran = []
    for command in readme_commands():
        if rule_of(command)[1] != RUN:
            continue
        for placeholder, value in PLACEHOLDERS.items():
            command = command.replace(placeholder, value)
        command = command.replace("/tmp/", f"{tmp_path}/")
        process = subprocess.run(["bash", "-c", command], cwd=REPO, env=environment, capture_output=True, text=True,
                                 timeout=300)
        assert process.returncode == 0, f"{command}\n{process.stdout[-2000:]}\n{process.stderr[-2000:]}"
        ran.append(command)
    assert len(ran) >= 2
    assert (tmp_path / "shapes" / "annotations.json").is_file() and any((tmp_path / "look").iterdir())


def test_python_api_snippet_runs(tmp_path):
    snippet = next(block for block in readme_blocks("python") if "make_predict_fn(model, spec)" in block)
    process = subprocess.run([sys.executable, "-c", snippet], cwd=REPO, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert process.returncode == 0, process.stderr[-3000:]
    assert "'masks': (2, 10, 28, 28)" in process.stdout and "'boxes': (2, 10, 4)" in process.stdout


# Appended to the README's convert-then-train pair: a ResNet with one block per stage and an 8-channel
# stem stands in for the downloaded ResNet-50, and the run stops after its start (0 steps, no evaluation,
# two shapes images in COCO format for data).
SMALL_BACKBONE = ["--config.model.backbone.stage_sizes=(1,1,1,1)", "--config.model.backbone.stem_width=8"]


def test_coco_backbone_commands_run_with_a_small_random_resnet(tmp_path):
    """The README's two COCO commands, as written but for the flags appended above: the converter reads
    a small random classification ResNet saved as resnet50-0676ba61.pth, and the trainer starts from
    what it wrote and says so. About 20 s of CPU: two processes importing jax (and torch), and the
    trainer compiling its init."""
    torch = pytest.importorskip("torch")
    from maskrcnn_jax.command_line import load_config_file
    from maskrcnn_jax.data.shapes import write_shapes_dataset
    from maskrcnn_jax.models import build_model
    from random_params import classification_resnet_state_dict

    by_rule = {rule_of(command)[0]: command for command in readme_commands() if rule_of(command)}
    convert, train = by_rule["python scripts/convert_backbone.py"], by_rule[COCO_TRAIN_COMMAND]
    config = load_config_file(REPO / "configs" / "mask_rcnn_r50_fpn_coco.py")
    config.model.backbone.stage_sizes, config.model.backbone.stem_width = (1, 1, 1, 1), 8
    state_dict = classification_resnet_state_dict(build_model(config))
    torch.save({key: torch.from_numpy(value) for key, value in state_dict.items()}, tmp_path / "resnet50-0676ba61.pth")
    annotations = write_shapes_dataset(tmp_path / "shapes", 2, min_size=64, max_size=64, max_shapes=1)
    train_flags = [*SMALL_BACKBONE, f"--config.data.train_annotations={annotations}",
                   f"--config.data.train_images={annotations.parent / 'images'}", "--config.data.num_workers=0",
                   "--config.train.num_steps=0", "--config.train.eval_every=0"]
    printed = []
    for command, flags in ((convert, SMALL_BACKBONE), (train, train_flags)):
        command = command.replace("/data/", f"{tmp_path}/data/").replace("resnet50-0676ba61.pth",
                                                                         str(tmp_path / "resnet50-0676ba61.pth"))
        command += " " + " ".join(shlex.quote(flag) for flag in flags)
        process = subprocess.run(["bash", "-c", command], cwd=REPO, env=command_environment(), capture_output=True,
                                 text=True, timeout=300)
        assert process.returncode == 0, f"{command}\n{process.stdout[-2000:]}\n{process.stderr[-2000:]}"
        printed.append(process.stdout)
    assert "(dropped the classifier: fc.bias, fc.weight)" in printed[0]
    assert ("init: backbone ResNet-14 (resnet_v1.5, stem width 8) from resnet50-0676ba61.pth" in printed[1]
            and f"from {tmp_path}/data/resnet50_imagenet into backbone/" in printed[1]), printed[1]
