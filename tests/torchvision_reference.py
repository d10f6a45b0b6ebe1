"""A seeded, randomly initialised torchvision Mask R-CNN that makes confident detections, and a
classification ResNet with BatchNorm statistics of the size of its activations.

A test helper (also used by benchmarks/benchmark.py): the reference for the parity tests and the
convert-then-predict walkthrough. Needs torch and torchvision (the `test` extra); they are imported
only when the function runs.
"""


def confident_random_torchvision_maskrcnn(seed: int = 0, min_size: int = 800, max_size: int = 1333, class_logit_scale: float = 2.0,
                                          box_regression_scale: float = 0.1, architecture: str = "v1", statistics_images=None):
    """torchvision `maskrcnn_resnet50_fpn` (architecture "v1") or `maskrcnn_resnet50_fpn_v2` ("v2")
    with weights=None, weights_backbone=None, in eval mode, seeded.

    The class-logit layer is scaled by `class_logit_scale` (more confident scores) and both box
    regression layers (RPN and box head) by `box_regression_scale`: unscaled random deltas stretch
    boxes into slivers a tenth of a pixel wide, whose IoU is dominated by float32 rounding. Built
    without weights, every norm is BatchNorm2d (eps 1e-5, fixed in eval mode); its statistics are
    drawn at random too (torchvision leaves them at 1/0/0/1), so the converter's handling of all four
    buffers is exercised:
      v1: within 10% of 1/0/0/1 (random_batchnorm_near_identity): wider ranges compound over the 53
          layers and saturate every score at 1.0;
      v2: from the activations of `statistics_images` (a list of [3, H, W] float tensors in [0, 1]),
          see random_batchnorm_from_activations. v2 needs a larger class_logit_scale (about 8) for
          confident scores.
    """
    import torch
    import torchvision

    builders = {"v1": torchvision.models.detection.maskrcnn_resnet50_fpn,
                "v2": torchvision.models.detection.maskrcnn_resnet50_fpn_v2}
    torch.manual_seed(seed)
    model = builders[architecture](weights=None, weights_backbone=None, min_size=min_size, max_size=max_size).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        if architecture == "v1":
            random_batchnorm_near_identity(model, generator)
        else:
            random_batchnorm_from_activations(model, lambda: _run_every_maskrcnn_layer(model, statistics_images),
                                              generator)
        model.roi_heads.box_predictor.cls_score.weight.mul_(class_logit_scale)
        model.rpn.head.bbox_pred.weight.mul_(box_regression_scale)
        model.roi_heads.box_predictor.bbox_pred.weight.mul_(box_regression_scale)
    return model


def random_batchnorm_near_identity(model, generator) -> None:
    """Every BatchNorm2d / FrozenBatchNorm2d of `model`: weight, running_var in [0.9, 1.1], bias,
    running_mean in [-0.05, 0.05]."""
    import torch
    import torchvision

    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm2d, torchvision.ops.FrozenBatchNorm2d)):
            channels = module.weight.shape[0]
            module.weight.copy_(0.9 + 0.2 * torch.rand(channels, generator=generator))
            module.bias.copy_(0.1 * torch.rand(channels, generator=generator) - 0.05)
            module.running_mean.copy_(0.1 * torch.rand(channels, generator=generator) - 0.05)
            module.running_var.copy_(0.9 + 0.2 * torch.rand(channels, generator=generator))


def random_batchnorm_from_activations(model, run, generator):
    """Random BatchNorm2d statistics of the size of the activations they normalise, for a model
    with BatchNorm after (nearly) every conv, as torchvision's v2 and its classification ResNets.

    Statistics drawn far from the activations (e.g. var in [0.5, 2] when a layer's outputs have
    variance 100) compound layer after layer and saturate every score. So one pass, `run()`, which
    must run every BatchNorm2d of `model`, sets each layer just before it runs, from the channel mean
    m and variance v of its input: running_mean = m + U(-0.1, 0.1) sqrt(v), running_var = v U(0.5, 2),
    weight U(0.5, 1.5), bias U(-0.1, 0.1). The statistics then span orders of magnitude across
    layers, each off by up to 2x from what a layer sees ("tempered").

    Returns what `run()` returned: in eval mode each layer already normalises with its new statistics
    in that pass, so its outputs are the model's with them.
    """
    import torch

    def set_statistics(module, inputs):
        (value,) = inputs
        channels = value.shape[1]
        mean, var = value.mean(dim=(0, 2, 3)), value.var(dim=(0, 2, 3))
        module.weight.copy_(0.5 + torch.rand(channels, generator=generator))
        module.bias.copy_(0.2 * torch.rand(channels, generator=generator) - 0.1)
        module.running_mean.copy_(mean + (0.2 * torch.rand(channels, generator=generator) - 0.1) * var.sqrt())
        module.running_var.copy_(var * (0.5 + 1.5 * torch.rand(channels, generator=generator)))
        hooks.pop(module).remove()

    hooks = {module: module.register_forward_pre_hook(set_statistics)
             for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)}
    outputs = run()
    assert not hooks, f"{len(hooks)} BatchNorm2d layers did not run"
    return outputs


def _run_every_maskrcnn_layer(model, images) -> None:
    """Backbone, RPN, then box and mask heads on the proposals of `images` (a list of [3, H, W] in [0, 1])."""
    image_list, _ = model.transform(images)
    features = model.backbone(image_list.tensors)
    proposals, _ = model.rpn(image_list, features)
    heads = model.roi_heads
    heads.box_head(heads.box_roi_pool(features, proposals, image_list.image_sizes))
    heads.mask_head(heads.mask_roi_pool(features, proposals, image_list.image_sizes))


RESNET_LEVELS = {"layer1": "C2", "layer2": "C3", "layer3": "C4", "layer4": "C5"}  # IntermediateLayerGetter's names


def random_resnet_from_activations(depth: int, images, seed: int = 0):
    """(model, C2..C5): torchvision's classification `resnet{depth}` (weights=None, BatchNorm2d, eval
    mode), seeded, with BatchNorm statistics set from the activations of `images` ([B, 3, H, W],
    normalised as its ImageNet weights expect) by random_batchnorm_from_activations, a stand-in for
    ImageNet weights; and the outputs of layer1..layer4 for `images` ([B, C, H/s, W/s], s = 4..32),
    torchvision's IntermediateLayerGetter's, from the same pass."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    getter = torchvision.models._utils.IntermediateLayerGetter(model, RESNET_LEVELS)
    with torch.no_grad():
        features = random_batchnorm_from_activations(model, lambda: getter(images),
                                                     torch.Generator().manual_seed(seed + 1))
    return model, list(features.values())


def trainable_torchvision_maskrcnn(seed: int = 0, min_size: int = 800, max_size: int = 1333, architecture: str = "v1"):
    """torchvision Mask R-CNN R50-FPN (91 classes) as its COCO recipes train it, in train mode, random weights.

    v1 (maskrcnn_resnet50_fpn's recipe): FrozenBatchNorm2d (eps 1e-5) with random statistics, stem
    and layer1 frozen (trainable_backbone_layers=3).
    v2 (`maskrcnn_resnet50_fpn_v2`, built without weights as PR 5773 trains it from scratch):
    BatchNorm2d everywhere, normalising with batch statistics in train mode, every layer trainable
    (torchvision's default without backbone weights); random affine parameters and running statistics.

    The RPN's and the classifier's output layers are scaled down so that they look trained:
    unscaled random deltas stretch every proposal to the image border (NMS then leaves a few
    hundred, not 2000), and objectness logits of +-30 saturate the sigmoid into ties that no two
    sorts order alike.
    """
    import torch
    import torchvision
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    torch.manual_seed(seed)
    if architecture == "v2":
        model = torchvision.models.detection.maskrcnn_resnet50_fpn_v2(
            weights=None, weights_backbone=None, num_classes=91, min_size=min_size, max_size=max_size)
        norm_type = torch.nn.BatchNorm2d
    else:
        body = torchvision.models.resnet50(weights=None, norm_layer=torchvision.ops.FrozenBatchNorm2d)
        model = torchvision.models.detection.MaskRCNN(
            _resnet_fpn_extractor(body, 3), num_classes=91, min_size=min_size, max_size=max_size
        )
        norm_type = torchvision.ops.FrozenBatchNorm2d
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, norm_type):
                channels = module.weight.shape[0]
                module.weight.copy_(0.8 + 0.4 * torch.rand(channels, generator=generator))
                module.bias.copy_(0.2 * torch.rand(channels, generator=generator) - 0.1)
                module.running_mean.copy_(0.2 * torch.rand(channels, generator=generator) - 0.1)
                module.running_var.copy_(0.5 + torch.rand(channels, generator=generator))
        model.rpn.head.bbox_pred.weight.mul_(0.01)
        model.rpn.head.cls_logits.weight.mul_(0.1)
        model.roi_heads.box_predictor.cls_score.weight.mul_(0.1)
    return model.train()
