"""The torchvision converter: layouts, a round trip through a checkpoint, old key names, the
BatchNorm eps it records, v2 state_dicts (layouts, the architecture it detects and records), and
clear errors. (The script itself runs in test_predict_script.py; v2's outputs in
test_model_v2_parity_torchvision.py.)"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskrcnn_jax.checkpoint import load_checkpoint, save_checkpoint
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.convert.torchvision import (
    ConversionError,
    batchnorm_eps,
    convert_state_dict,
    convert_torchvision_checkpoint,
    state_dict_architecture,
)
from maskrcnn_jax.detector.coco_classes import COCO_CLASS_NAMES
from maskrcnn_jax.models import build_model

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision_reference import confident_random_torchvision_maskrcnn  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mask_rcnn_r50_fpn_coco.py"
V2_CONFIG = ROOT / "configs" / "mask_rcnn_r50_fpn_v2_coco.py"


def expected_params(num_classes=91, config_path=CONFIG):
    config = load_config_file(config_path)
    config.model.num_classes = num_classes
    model = build_model(config)
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]


@pytest.fixture(scope="module")
def state_dict():
    return {key: value.numpy() for key, value in confident_random_torchvision_maskrcnn(seed=3).state_dict().items()}


def test_layouts_and_checkpoint_round_trip(state_dict, tmp_path):
    params = convert_state_dict(state_dict, expected_params())
    # Spot-check each layout conversion against torchvision's tensors.
    np.testing.assert_array_equal(params["backbone"]["layer2"]["0"]["conv2"]["kernel"], state_dict["backbone.body.layer2.0.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["backbone"]["layer3"]["0"]["downsample_bn"]["var"], state_dict["backbone.body.layer3.0.downsample.1.running_var"])
    np.testing.assert_array_equal(params["box_predictor"]["cls_score"]["kernel"], state_dict["roi_heads.box_predictor.cls_score.weight"].T)
    fc6 = state_dict["roi_heads.box_head.fc6.weight"].reshape(1024, 256, 7, 7)
    np.testing.assert_array_equal(params["box_mlp"]["fc6"]["kernel"][(2 * 7 + 3) * 256 + 5], fc6[:, 5, 2, 3])
    deconv = state_dict["roi_heads.mask_predictor.conv5_mask.weight"]
    np.testing.assert_array_equal(params["mask_predictor"]["conv5_mask"]["kernel"][0, 1], deconv[:, :, 1, 0])

    config = load_config_file(CONFIG)
    save_checkpoint(tmp_path / "checkpoint", params, config, COCO_CLASS_NAMES)
    restored, restored_config, class_names = load_checkpoint(tmp_path / "checkpoint")
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(params)
    for mine, theirs in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(mine, theirs)
    assert restored_config == config and class_names == COCO_CLASS_NAMES


def test_older_torchvision_key_names_are_accepted(state_dict):
    renamed = {
        key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        .replace("fpn.inner_blocks.1.0.", "fpn.inner_blocks.1.")
        .replace("roi_heads.mask_head.2.0.", "roi_heads.mask_head.mask_fcn3."): value
        for key, value in state_dict.items()
    }
    assert "roi_heads.mask_head.mask_fcn3.weight" in renamed
    expected = expected_params()
    current, older = convert_state_dict(state_dict, expected), convert_state_dict(renamed, expected)
    for mine, theirs in zip(jax.tree_util.tree_leaves(older), jax.tree_util.tree_leaves(current)):
        np.testing.assert_array_equal(mine, theirs)


def test_missing_and_unexpected_keys_are_named(state_dict):
    broken = dict(state_dict)
    del broken["backbone.body.layer3.4.bn2.running_mean"]
    broken["roi_heads.extra_head.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError, match=r"1 missing keys: backbone\.body\.layer3\.4\.bn2\.running_mean.*unexpected keys: roi_heads\.extra_head\.weight"):
        convert_state_dict(broken, expected_params())


def test_shape_mismatch_names_the_key_and_the_shapes(state_dict):
    with pytest.raises(ConversionError, match=r"cls_score\.weight: torchvision shape \(91, 1024\).*model expects \(1024, 5\)"):
        convert_state_dict(state_dict, expected_params(num_classes=5))


def test_batchnorm_eps_follows_the_buffers(state_dict):
    # A model built with weights=None has BatchNorm2d, whose buffers include num_batches_tracked.
    assert any(key.endswith("num_batches_tracked") for key in state_dict)
    assert batchnorm_eps(state_dict)[0] == torch.nn.BatchNorm2d(3).eps == 1e-5
    # torchvision's pretrained models use FrozenBatchNorm2d (no such buffer), eps 0.0 for COCO_V1.
    frozen_keys = torchvision.ops.FrozenBatchNorm2d(3).state_dict().keys()
    assert not any(key.endswith("num_batches_tracked") for key in frozen_keys)
    frozen = {key: value for key, value in state_dict.items() if not key.endswith("num_batches_tracked")}
    assert batchnorm_eps(frozen)[0] == 0.0
    assert batchnorm_eps(frozen, bn_eps=1e-3) == (1e-3, "as given")


def test_rejects_a_classifier_state_dict_and_writes_nothing(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(ConversionError, match="not a torchvision Mask R-CNN state_dict"):
        convert_torchvision_checkpoint(tmp_path / "resnet18.pth", tmp_path / "out", load_config_file(CONFIG))
    assert not (tmp_path / "out").exists()


def test_refuses_to_unpickle_arbitrary_objects(tmp_path):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled_module.pth")  # a whole module, not tensors
    with pytest.raises(ConversionError, match=r"holds Python objects besides tensors \(Unsupported global: GLOBAL "
                                              r"torch\.nn\.modules\.linear\.Linear\)") as error:
        convert_torchvision_checkpoint(tmp_path / "pickled_module.pth", tmp_path / "out", load_config_file(CONFIG))
    assert "weights_only" not in str(error.value)  # torch's advice to load it unsafely is not passed on


def test_a_head_other_than_cocos_needs_its_class_names(tmp_path):
    config = load_config_file(CONFIG)
    config.model.num_classes = 5
    with pytest.raises(ConversionError, match="5 class slots needs its class names"):
        convert_torchvision_checkpoint(tmp_path / "any.pth", tmp_path / "out", config)
    with pytest.raises(ConversionError, match="3 class names for a model with 5 class slots"):
        convert_torchvision_checkpoint(tmp_path / "any.pth", tmp_path / "out", config, ["__background__", "a", "b"])


@pytest.fixture(scope="module")
def v2_state_dict():
    torch.manual_seed(4)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None)
    return {key: value.numpy() for key, value in model.state_dict().items()}


def test_v2_layouts(v2_state_dict):
    params = convert_state_dict(v2_state_dict, expected_params(config_path=V2_CONFIG))
    sd = v2_state_dict
    np.testing.assert_array_equal(params["fpn"]["inner_2"]["kernel"], sd["backbone.fpn.inner_blocks.2.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["fpn"]["layer_bn_1"]["var"], sd["backbone.fpn.layer_blocks.1.1.running_var"])
    np.testing.assert_array_equal(params["rpn_head"]["conv_1"]["bias"], sd["rpn.head.conv.1.0.bias"])
    np.testing.assert_array_equal(params["box_conv_fc"]["conv3"]["kernel"], sd["roi_heads.box_head.2.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["box_conv_fc"]["bn4"]["scale"], sd["roi_heads.box_head.3.1.weight"])
    fc = sd["roi_heads.box_head.5.weight"].reshape(1024, 256, 7, 7)  # after 4 conv blocks and Flatten
    np.testing.assert_array_equal(params["box_conv_fc"]["fc"]["kernel"][(4 * 7 + 1) * 256 + 9], fc[:, 9, 4, 1])
    np.testing.assert_array_equal(params["mask_convs"]["mask_bn2"]["mean"], sd["roi_heads.mask_head.1.1.running_mean"])
    np.testing.assert_array_equal(params["backbone"]["layer1"]["0"]["downsample_bn"]["bias"], sd["backbone.body.layer1.0.downsample.1.bias"])


def test_architecture_is_read_from_the_keys(state_dict, v2_state_dict):
    assert state_dict_architecture(state_dict)[0] == "v1"
    assert state_dict_architecture(v2_state_dict)[0] == "v2"
    # v2's norms are BatchNorm2d in every torchvision build, pretrained or not: eps 1e-5 without num_batches_tracked too.
    without_counts = {key: value for key, value in v2_state_dict.items() if not key.endswith("num_batches_tracked")}
    assert batchnorm_eps(without_counts, architecture="v2")[0] == 1e-5
    # A state_dict against the other architecture's model says so instead of listing 88 keys.
    with pytest.raises(ConversionError, match=r"the state_dict is v2 .* but the model is v1: set config\.model\.architecture = 'v2'"):
        convert_state_dict(v2_state_dict, expected_params())
    with pytest.raises(ConversionError, match=r"the state_dict is v1 .* but the model is v2"):
        convert_state_dict(state_dict, expected_params(config_path=V2_CONFIG))


def test_v2_checkpoint_records_the_architecture_whatever_the_config(v2_state_dict, tmp_path):
    torch.save({key: torch.from_numpy(value) for key, value in v2_state_dict.items()}, tmp_path / "v2.pth")
    done = convert_torchvision_checkpoint(tmp_path / "v2.pth", tmp_path / "checkpoint", load_config_file(CONFIG))
    assert (done.architecture, done.bn_eps) == ("v2", 1e-5) and "FastRCNNConvFCHead" in done.architecture_reason
    params, config, _ = load_checkpoint(tmp_path / "checkpoint")
    assert config.model.architecture == "v2" and config.model.backbone.bn_eps == 1e-5
    np.testing.assert_array_equal(params["rpn_head"]["conv_1"]["kernel"], v2_state_dict["rpn.head.conv.1.0.weight"].transpose(2, 3, 1, 0))
