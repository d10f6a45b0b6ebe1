"""The torchvision converter: a full round trip through Orbax, old key names, and clear errors."""

import pathlib
import runpy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskrcnn_jax.checkpoint import load_params, save_params
from maskrcnn_jax.config_file import load_config
from maskrcnn_jax.convert_torchvision import ConversionError, convert_state_dict
from maskrcnn_jax.models import build_model

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from maskrcnn_jax.torchvision_reference import confident_random_torchvision_maskrcnn  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mask_rcnn_r50_fpn_coco.py"


def expected_params(overrides=()):
    model = build_model(load_config(CONFIG, overrides))
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]


@pytest.fixture(scope="module")
def state_dict():
    return {key: value.numpy() for key, value in confident_random_torchvision_maskrcnn(seed=3).state_dict().items()}


def run_converter(*args: str) -> int:
    """scripts/convert_torchvision.py main() in this process; returns its exit code."""
    namespace = runpy.run_path(str(ROOT / "scripts" / "convert_torchvision.py"), run_name="converter")
    return namespace["main"](list(args))


def test_layouts_and_orbax_round_trip(state_dict, tmp_path):
    params = convert_state_dict(state_dict, expected_params())
    # Spot-check each layout conversion against torchvision's tensors.
    np.testing.assert_array_equal(params["backbone"]["layer2"]["0"]["conv2"]["kernel"], state_dict["backbone.body.layer2.0.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["backbone"]["layer3"]["0"]["downsample_bn"]["var"], state_dict["backbone.body.layer3.0.downsample.1.running_var"])
    np.testing.assert_array_equal(params["box_predictor"]["cls_score"]["kernel"], state_dict["roi_heads.box_predictor.cls_score.weight"].T)
    fc6 = state_dict["roi_heads.box_head.fc6.weight"].reshape(1024, 256, 7, 7)
    np.testing.assert_array_equal(params["box_mlp"]["fc6"]["kernel"][(2 * 7 + 3) * 256 + 5], fc6[:, 5, 2, 3])
    deconv = state_dict["roi_heads.mask_predictor.conv5_mask.weight"]
    np.testing.assert_array_equal(params["mask_predictor"]["conv5_mask"]["kernel"][0, 1], deconv[:, :, 1, 0])

    save_params(tmp_path / "checkpoint", params)
    restored = load_params(tmp_path / "checkpoint")
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(params)
    for mine, theirs in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(mine, theirs)


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
        convert_state_dict(state_dict, expected_params(["model.num_classes=5"]))


def test_script_rejects_a_classifier_state_dict(tmp_path, capsys):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    assert run_converter("--input", str(tmp_path / "resnet18.pth"), "--output", str(tmp_path / "out")) == 1
    assert "not a torchvision Mask R-CNN state_dict" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_script_refuses_to_unpickle_arbitrary_objects(tmp_path, capsys):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled_module.pth")  # a whole module, not tensors
    assert run_converter("--input", str(tmp_path / "pickled_module.pth"), "--output", str(tmp_path / "out")) == 1
    assert "weights_only=True" in capsys.readouterr().err


def test_help_says_which_eps_to_set(capsys):
    with pytest.raises(SystemExit):
        run_converter("--help")
    text = capsys.readouterr().out
    assert "eps = 0.0" in text and "model.backbone.bn_eps=1e-5" in text
