"""ImageNet-style backbone checkpoints (maskrcnn_jax.convert.backbone) and config.init.mode="backbone":
what the checkpoint holds and records, one-line errors for files that do not fit the config's
backbone and for checkpoints that do not fit the model or the pipeline, and a few training steps on
the shapes from a converted backbone.

The converted file is a small random classification ResNet state_dict shaped like shapes_tiny's
backbone (random_params.classification_resnet_state_dict). Parity of converted ResNet-50/101 with
torchvision: test_backbone_parity_torchvision.py; the README's convert-then-train commands:
test_readme_commands.py.
"""

import hashlib
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from maskrcnn_jax.checkpoint import CheckpointError, load_metadata, load_params
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.convert.backbone import IMAGENET_INPUT, classification_resnet_stages, convert_backbone_checkpoint
from maskrcnn_jax.convert.torchvision import ConversionError
from maskrcnn_jax.models import build_model, frozen_parameter_mask
from maskrcnn_jax.models.resnet import resnet_stage_sizes
from maskrcnn_jax.training import initialization, train_and_evaluate
from random_params import classification_resnet_state_dict, random_params

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

CONFIG = "configs/shapes_tiny.py"
R50 = resnet_stage_sizes(50)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(state_dict written as a .pth, its path, the backbone checkpoint directory, the conversion)."""
    folder = tmp_path_factory.mktemp("backbone")
    config = load_config_file(CONFIG)
    state_dict = classification_resnet_state_dict(build_model(config), seed=1)
    path = folder / "resnet14-tiny.pth"
    torch.save({key: torch.from_numpy(value) for key, value in state_dict.items()}, path)
    done = convert_backbone_checkpoint(path, folder / "checkpoint", config)
    return state_dict, path, folder / "checkpoint", done


def test_checkpoint_holds_the_resnet_with_its_statistics_and_records_what_it_is(converted):
    state_dict, path, checkpoint, done = converted
    params = load_params(checkpoint)
    assert list(params) == ["backbone"] and done.dropped == ("fc.bias", "fc.weight")
    backbone = params["backbone"]
    np.testing.assert_array_equal(backbone["layer2"]["0"]["conv2"]["kernel"],
                                  state_dict["layer2.0.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(backbone["layer3"]["0"]["downsample_bn"]["var"],
                                  state_dict["layer3.0.downsample.1.running_var"])
    np.testing.assert_array_equal(backbone["bn1"]["mean"], state_dict["bn1.running_mean"])
    assert done.num_parameters == sum(v.size for k, v in state_dict.items() if not k.startswith("fc."))
    assert done.description == {
        "architecture": "resnet_v1.5", "depth": 14, "stage_sizes": [1, 1, 1, 1], "stem_width": 8, "bn_eps": 1e-5,
        "source": {"file": "resnet14-tiny.pth", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                   "format": "torchvision / timm classification ResNet state_dict"},
        "input": {"channels": "RGB", "range": [0.0, 1.0], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }
    assert json.loads((checkpoint / "metadata.json").read_text())["backbone"] == done.description
    with pytest.raises(CheckpointError, match="is a backbone checkpoint .* --config.init.mode=backbone"):
        load_metadata(checkpoint)  # what predict.py and Detector read


def state_dict_keys(builder, **kwargs) -> dict:
    """A torchvision model's state_dict keys (values unused), built on the meta device: no weights made."""
    with torch.device("meta"):
        return dict.fromkeys(builder(weights=None, **kwargs).state_dict())


@pytest.mark.parametrize("builder, kwargs, message", [
    (torchvision.models.detection.maskrcnn_resnet50_fpn, {"weights_backbone": None},
     r"this is a Mask R-CNN state_dict \(backbone\.body\.conv1\.weight, \.\.\.\), not an ImageNet classification "
     r"ResNet-50 \(blocks per stage \(3, 4, 6, 3\)\): convert it with scripts/convert_torchvision\.py"),
    (torchvision.models.resnet101, {},
     r"this is a ResNet-101 \(blocks per stage \(3, 4, 23, 3\)\), not an ImageNet classification ResNet-50 .*"
     r"add --config\.model\.backbone\.depth=101 here and when training"),
    (torchvision.models.resnet152, {}, r"this is a ResNet-152 .* config\.model\.backbone\.stage_sizes=\(3, 8, 36, 3\)"),
    (torchvision.models.resnet18, {}, r"this is a ResNet-18 of basic blocks \(layer1\.0\.conv3\.weight absent\), not "
                                      r"an ImageNet classification ResNet-50"),
    (torchvision.models.mobilenet_v3_small, {},
     r"this is not a torchvision / timm ResNet state_dict \(conv1\.weight and layer1\.0\.conv1\.weight absent; "
     r"first keys: features\.0\.0\.weight, .*expected an ImageNet classification ResNet-50"),
], ids=["maskrcnn", "resnet101", "resnet152", "resnet18", "mobilenet"])
def test_files_the_backbone_cannot_take_get_one_line_errors(builder, kwargs, message):
    with pytest.raises(ConversionError, match=message) as error:
        classification_resnet_stages(state_dict_keys(builder, **kwargs), R50)
    assert "\n" not in str(error.value)


def test_torchvisions_resnet50_and_101_fit_configs_of_their_depth():
    assert classification_resnet_stages(state_dict_keys(torchvision.models.resnet50), R50) == R50
    r101 = resnet_stage_sizes(101)
    assert classification_resnet_stages(state_dict_keys(torchvision.models.resnet101), r101) == r101


def test_init_loads_the_backbone_into_v2s_batchnorm_and_nothing_else(converted, capsys):
    config = load_config_file(CONFIG)
    config.model.architecture = "v2"  # BatchNorm in the backbone (trained), FPN and heads: the same leaves
    model_params = random_params(build_model(config))
    merged = flatten_dict(initialization.initial_params(jax.device_put(model_params), str(converted[2]), "backbone",
                                                        config.model.backbone))
    assert "init: backbone ResNet-14" in capsys.readouterr().out
    expected = {**flatten_dict(model_params), **flatten_dict(load_params(converted[2]))}
    assert merged.keys() == expected.keys()
    for path, value in expected.items():
        np.testing.assert_array_equal(merged[path], value, err_msg="/".join(path))


def test_init_refuses_a_backbone_checkpoint_that_does_not_fit_and_names_the_convert_command(converted, tmp_path):
    checkpoint = converted[2]
    model_params = None  # never read: each problem is found before any parameter
    r50 = load_config_file("configs/mask_rcnn_r50_fpn_coco.py").model.backbone
    r50.bn_eps = 0.0
    with pytest.raises(ValueError) as error:
        initialization.initial_params(model_params, str(checkpoint), "backbone", r50)
    assert str(error.value).count("\n") == 0
    assert ("blocks per stage: checkpoint (1, 1, 1, 1) (ResNet-14), config.model.backbone (3, 4, 6, 3) (ResNet-50); "
            "stem width: checkpoint 8, config.model.backbone.stem_width 64; BatchNorm eps: checkpoint 1e-05 "
            "(its statistics were trained with it), config.model.backbone.bn_eps 0.0") in str(error.value)

    # detectron2's MSRA weights take BGR in 0-255: a checkpoint recording that is refused.
    bgr = tmp_path / "bgr"
    shutil.copytree(checkpoint, bgr)
    metadata = json.loads((bgr / "metadata.json").read_text())
    metadata["backbone"]["input"] = {"channels": "BGR", "range": [0.0, 255.0], "mean": [103.53, 116.28, 123.675],
                                     "std": [1.0, 1.0, 1.0]}
    (bgr / "metadata.json").write_text(json.dumps(metadata))
    tiny = load_config_file(CONFIG).model.backbone
    with pytest.raises(ValueError, match=r"input: the weights expect BGR in \[0\.0, 255\.0\], .* the pipeline feeds "
                                         r"RGB in \[0\.0, 1\.0\], mean \[0\.485, 0\.456, 0\.406\], .*; refusing"):
        initialization.initial_params(model_params, str(bgr), "backbone", tiny)

    with pytest.raises(ValueError, match="is a backbone checkpoint .* set --config.init.mode=backbone, not 'all'"):
        initialization.initial_params(model_params, str(checkpoint), "all", tiny)
    with pytest.raises(ValueError, match=r"config.init.checkpoint /nowhere/resnet50 does not exist: .* `python "
                                         r"scripts/convert_backbone.py --input resnet50-0676ba61.pth --output "
                                         r"/nowhere/resnet50` .* or train from scratch with --config.init.mode=none"):
        initialization.initial_params(model_params, "/nowhere/resnet50", "backbone", tiny)
    assert IMAGENET_INPUT == initialization.PIPELINE_INPUT


def test_a_fresh_run_without_its_backbone_stops_before_reading_data(tmp_path):
    config = load_config_file("configs/mask_rcnn_r50_fpn_coco.py")  # expects /data/resnet50_imagenet
    config.init.checkpoint = str(tmp_path / "resnet50_imagenet")
    config.data.train_annotations = str(tmp_path / "no_coco.json")  # reading it would fail differently
    with pytest.raises(ValueError, match=r"config.init.checkpoint .*resnet50_imagenet does not exist: .*"
                                         r"scripts/convert_backbone.py"):
        train_and_evaluate(config, tmp_path / "run")


def recording_backbone_loss(recorded: list):
    """A loss_fn factory: the mean square of the backbone's C2..C5, which also appends the backbone
    parameters each step starts from to `recorded` (host numpy, jax.debug.callback).

    What is checked with it, the trainer's start and its frozen mask, does not depend on the loss:
    this one's step compiles in a few seconds, the detection losses' in about 20 on 2 cores.
    """

    def factory(config):
        model = build_model(config)

        def loss_fn(params, batch, key):
            jax.debug.callback(recorded.append, params["backbone"])
            levels = model.apply({"params": params}, batch["image"], method=lambda module, x: module.backbone(x))
            return sum(jnp.mean(jnp.square(level)) for level in levels), {}

        return loss_fn

    return factory


def test_training_starts_from_the_converted_backbone_and_keeps_its_frozen_layers(converted, tmp_path, capsys):
    """Three steps of the trainer on the shapes with torchvision's recipe (stem and layer1 frozen,
    FrozenBatchNorm fixed), from the converted backbone. About 10 s: the trainer compiles its init
    (5 s) and the step."""
    checkpoint = converted[2]
    config = load_config_file(CONFIG)
    config.init.mode, config.init.checkpoint = "backbone", str(checkpoint)
    config.train.trainable_backbone_layers = 3
    config.train.num_steps = 3
    config.train.eval_every = 0
    config.data.shapes.num_train_images = 8
    converted_leaves = flatten_dict(load_params(checkpoint)["backbone"])

    recorded = []
    state = jax.device_get(train_and_evaluate(config, tmp_path, loss_fn_factory=recording_backbone_loss(recorded)))
    assert "init: backbone ResNet-14 (resnet_v1.5, stem width 8) from resnet14-tiny.pth" in capsys.readouterr().out
    assert len(recorded) == 3
    first_step = flatten_dict(recorded[0])
    assert first_step.keys() == converted_leaves.keys()
    for path, value in converted_leaves.items():
        np.testing.assert_array_equal(first_step[path], value, err_msg="/".join(path))

    frozen = flatten_dict(frozen_parameter_mask(state.params, 3)["backbone"])
    after = flatten_dict(state.params["backbone"])
    assert {path[0] for path, is_frozen in frozen.items() if not is_frozen} == {"layer2", "layer3", "layer4"}
    for path, value in converted_leaves.items():
        if frozen[path]:
            np.testing.assert_array_equal(after[path], value, err_msg="/".join(path))
        else:
            assert not np.array_equal(after[path], value), f"{'/'.join(path)} did not train"
