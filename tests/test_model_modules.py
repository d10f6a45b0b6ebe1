"""Model pieces against independent references: torchvision's FrozenBatchNorm2d (eps 0), nearest
upsampling, ResNet-101 sizes, trainable-layer freezing (v1 and v2), v2's parameter count; v2's
RoI-head BatchNorm leaving padding RoIs out; and the jitted predict's shapes and compile count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.detector import make_predict_fn, spec_from_config
from maskrcnn_jax.models import build_model, frozen_parameter_mask
from maskrcnn_jax.models.fpn import upsample_nearest
from maskrcnn_jax.models.resnet import FrozenBatchNorm, ResNet
from random_params import random_params

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

CONFIG = "configs/mask_rcnn_r50_fpn_coco.py"
V2_CONFIG = "configs/mask_rcnn_r50_fpn_v2_coco.py"
TINY_CONFIG = "configs/mask_rcnn_tiny.py"


def test_frozen_batchnorm_matches_torchvision_with_eps_zero():
    channels = 6
    generator = torch.Generator().manual_seed(0)
    reference = torchvision.ops.FrozenBatchNorm2d(channels, eps=0.0)
    reference.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
    reference.bias.copy_(torch.randn(channels, generator=generator))
    reference.running_mean.copy_(torch.randn(channels, generator=generator))
    reference.running_var.copy_(torch.rand(channels, generator=generator) * 1e-4)  # small: eps would matter
    x = torch.randn(2, channels, 5, 4, generator=generator)
    expected = reference(x).numpy().transpose(0, 2, 3, 1)
    params = {"scale": reference.weight.numpy(), "bias": reference.bias.numpy(), "mean": reference.running_mean.numpy(), "var": reference.running_var.numpy()}
    ours = FrozenBatchNorm(eps=0.0).apply({"params": params}, x.numpy().transpose(0, 2, 3, 1))
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    with_default_eps = FrozenBatchNorm(eps=1e-5).apply({"params": params}, x.numpy().transpose(0, 2, 3, 1))
    assert np.abs(with_default_eps - expected).max() > 1e-2  # so the eps=0 agreement above is not luck


@pytest.mark.parametrize("in_size,out_size", [((3, 5), (6, 10)), ((4, 7), (7, 13)), ((3, 5), (6, 11)), ((2, 3), (6, 3))])
def test_upsample_nearest_matches_torch_interpolate(in_size, out_size):
    x = np.random.default_rng(0).normal(size=(1, 2) + in_size).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(x), size=out_size, mode="nearest").numpy()
    ours = upsample_nearest(jnp.asarray(x.transpose(0, 2, 3, 1)), *out_size)
    np.testing.assert_array_equal(np.asarray(ours).transpose(0, 3, 1, 2), expected)


def test_resnet101_has_torchvisions_parameter_count():
    shapes = jax.eval_shape(ResNet((3, 4, 23, 3)).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    ours = sum(leaf.size for leaf in jax.tree_util.tree_leaves(shapes))
    reference = torchvision.models.resnet101().state_dict()
    theirs = sum(v.numel() for k, v in reference.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked"))
    assert ours == theirs


def test_frozen_mask_matches_torchvision_trainable_layers_3():
    params = jax.eval_shape(build_model(load_config_file(CONFIG)).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    frozen = traverse_util.flatten_dict(frozen_parameter_mask(params, trainable_backbone_layers=3))
    body = torchvision.models.detection.backbone_utils._resnet_fpn_extractor(torchvision.models.resnet50(norm_layer=torchvision.ops.misc.FrozenBatchNorm2d), 3).body
    frozen_convs = {name for name, p in body.named_parameters() if not p.requires_grad}
    ours_frozen_convs = {".".join(path[1:-1]).replace("downsample_conv", "downsample.0") + ".weight" for path, is_frozen in frozen.items() if is_frozen and path[-1] == "kernel"}
    assert ours_frozen_convs == frozen_convs
    # Every norm constant is frozen; nothing outside the backbone is.
    assert all(is_frozen for path, is_frozen in frozen.items() if path[-1] in ("mean", "var", "scale"))
    assert not any(is_frozen for path, is_frozen in frozen.items() if path[0] != "backbone")


def test_v2_frozen_mask_matches_torchvision_trainable_layers_3():
    params = jax.eval_shape(build_model(load_config_file(V2_CONFIG)).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    frozen = traverse_util.flatten_dict(frozen_parameter_mask(params, trainable_backbone_layers=3, norm="batch"))
    # torchvision's v2 backbone: plain BatchNorm2d, requires_grad off outside the top 3 stages.
    body = torchvision.models.detection.backbone_utils._resnet_fpn_extractor(
        torchvision.models.resnet50(), 3, norm_layer=torch.nn.BatchNorm2d).body
    frozen_torch = {name for name, p in body.named_parameters() if not p.requires_grad}
    torch_names = {"kernel": "weight", "scale": "weight", "bias": "bias"}
    ours_frozen = {".".join(path[1:-1]).replace("downsample_conv", "downsample.0").replace("downsample_bn", "downsample.1")
                   + "." + torch_names[path[-1]] for path, is_frozen in frozen.items() if is_frozen and path[-1] in torch_names}
    assert ours_frozen == frozen_torch
    # Statistics never take gradients; every other leaf outside the backbone trains, heads' norms included.
    assert all(is_frozen for path, is_frozen in frozen.items() if path[-1] in ("mean", "var"))
    assert not any(is_frozen for path, is_frozen in frozen.items() if path[0] != "backbone" and path[-1] not in ("mean", "var"))
    assert not frozen[("box_conv_fc", "bn1", "scale")] and not frozen[("fpn", "inner_bn_0", "bias")]


def test_v2_has_torchvisions_parameter_count():
    params = jax.eval_shape(build_model(load_config_file(V2_CONFIG)).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    ours = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).state_dict()
    assert ours == sum(v.numel() for k, v in reference.items() if not k.endswith("num_batches_tracked"))


@pytest.mark.parametrize("head", ["box_head", "mask_head"])
def test_v2_head_batch_statistics_leave_padding_rois_out(head):
    config = load_config_file(TINY_CONFIG)
    config.model.architecture = "v2"
    model = build_model(config)
    params = random_params(model)
    size = config.model.box_roi_size if head == "box_head" else config.model.mask_roi_size
    rng = np.random.default_rng(0)
    real = rng.normal(size=(2, 3, size, size, config.model.fpn_channels)).astype(np.float32)
    valid = np.asarray([[True, True, False], [True, False, False]])
    padded = np.where(valid[..., None, None, None], real, 1e3)  # padding RoIs hold garbage

    def run(features, mask):
        return model.apply({"params": params}, features, mask, True, method=head, mutable=["norm_statistics"])

    outputs, statistics = run(padded, valid)
    kept_outputs, kept_statistics = run(real[valid][None], np.ones((1, 3), bool))
    first = outputs[0] if head == "box_head" else outputs
    kept = kept_outputs[0] if head == "box_head" else kept_outputs
    np.testing.assert_allclose(first[valid], kept[0], rtol=1e-4, atol=1e-5)
    for mine, theirs in zip(jax.tree_util.tree_leaves(statistics), jax.tree_util.tree_leaves(kept_statistics)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    assert len(jax.tree_util.tree_leaves(statistics)) == 2 * 4  # mean and var of the head's 4 norms
    inference = model.apply({"params": params}, padded, method=head)
    assert not np.allclose(inference[0] if head == "box_head" else inference, first)  # train uses batch statistics


def test_parameter_tree_reads_like_torchvision():
    params = jax.eval_shape(build_model(load_config_file(CONFIG)).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    paths = {"/".join(path) for path in traverse_util.flatten_dict(params)}
    for path in ("backbone/layer1/0/conv1/kernel", "backbone/layer4/2/bn3/var", "fpn/inner_3/kernel", "rpn_head/cls_logits/bias",
                 "box_mlp/fc6/kernel", "box_predictor/bbox_pred/kernel", "mask_convs/mask_fcn4/kernel", "mask_predictor/conv5_mask/kernel"):
        assert path in paths


@pytest.fixture(scope="module")
def tiny_predict():
    config = load_config_file(TINY_CONFIG)
    config.test.score_threshold = 0.0  # random weights: keep every detection
    model = build_model(config)
    return make_predict_fn(model, spec_from_config(config)), random_params(model), config


def test_predict_shapes_valid_padding_and_one_compile_per_canvas(tiny_predict):
    predict, params, config = tiny_predict
    rng = np.random.default_rng(0)
    image_sizes = np.asarray([[96, 128], [80, 100]], np.int32)
    original_sizes = np.asarray([[192, 256], [40, 50]], np.int32)
    batch = {"image": rng.normal(size=(2, 96, 128, 3)).astype(np.float32), "image_size": image_sizes,
             "original_size": original_sizes}
    outputs = jax.device_get(predict(params, batch))
    detections = config.test.detections_per_image
    assert outputs["boxes"].shape == (2, detections, 4)
    assert outputs["masks"].shape == (2, detections, 28, 28)
    assert outputs["classes"].dtype == np.int32 and outputs["valid"].dtype == bool
    for b in range(2):
        valid = outputs["valid"][b]
        assert valid.any()
        scores = outputs["scores"][b][valid]
        assert np.all(np.diff(scores) <= 0)
        boxes = outputs["boxes"][b][valid]
        height, width = original_sizes[b]
        # Clipped to the resized image, then scaled: inside the original image.
        assert boxes.min() >= 0 and np.all(boxes[:, [0, 2]] <= width + 1e-3) and np.all(boxes[:, [1, 3]] <= height + 1e-3)
        assert np.all((outputs["classes"][b][valid] >= 1) & (outputs["classes"][b][valid] < config.model.num_classes))
        assert np.all(outputs["boxes"][b][~valid] == 0) and np.all(outputs["masks"][b][~valid] == 0)
        masks = outputs["masks"][b][valid]
        assert masks.min() >= 0 and masks.max() <= 1
    predict(params, dict(batch, image=batch["image"] + 1))
    assert predict._cache_size() == 1
    predict(params, dict(batch, image=np.zeros((2, 64, 96, 3), np.float32), image_size=image_sizes // 2))
    assert predict._cache_size() == 2
