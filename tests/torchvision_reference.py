"""A seeded, randomly initialised torchvision Mask R-CNN that makes confident detections.

A test helper (also used by scripts/benchmark.py): the reference for the parity tests and the
convert-then-predict walkthrough. Needs torch and torchvision (the `test` extra); they are imported
only when the function runs.
"""


def confident_random_torchvision_maskrcnn(seed: int = 0, min_size: int = 800, max_size: int = 1333, class_logit_scale: float = 2.0, box_regression_scale: float = 0.1):
    """torchvision `maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)` in eval mode, seeded.

    The class-logit layer is scaled by `class_logit_scale` (more confident scores) and both box
    regression layers (RPN and box head) by `box_regression_scale`: unscaled random deltas stretch
    boxes into slivers a tenth of a pixel wide, whose IoU is dominated by float32 rounding. Built
    without weights, the backbone normalises with BatchNorm2d (eps 1e-5, frozen in eval mode); its
    statistics are drawn at random too (torchvision leaves them at 1/0/0/1), so the converter's
    handling of all four buffers is exercised. They stay within 10% of 1/0/0/1: wider ranges compound
    over the 53 layers and saturate every score at 1.0.
    """
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=min_size, max_size=max_size
    ).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torchvision.ops.FrozenBatchNorm2d)):
                channels = module.weight.shape[0]
                module.weight.copy_(0.9 + 0.2 * torch.rand(channels, generator=generator))
                module.bias.copy_(0.1 * torch.rand(channels, generator=generator) - 0.05)
                module.running_mean.copy_(0.1 * torch.rand(channels, generator=generator) - 0.05)
                module.running_var.copy_(0.9 + 0.2 * torch.rand(channels, generator=generator))
        model.roi_heads.box_predictor.cls_score.weight.mul_(class_logit_scale)
        model.rpn.head.bbox_pred.weight.mul_(box_regression_scale)
        model.roi_heads.box_predictor.bbox_pred.weight.mul_(box_regression_scale)
    return model


def trainable_torchvision_maskrcnn(seed: int = 0, min_size: int = 800, max_size: int = 1333):
    """torchvision Mask R-CNN R50-FPN (91 classes) as its COCO recipe trains it, in train mode:
    FrozenBatchNorm2d (eps 1e-5) with random statistics, stem and layer1 frozen
    (trainable_backbone_layers=3), random weights.

    The RPN's and the classifier's output layers are scaled down so that they look trained:
    unscaled random deltas stretch every proposal to the image border (NMS then leaves a few
    hundred, not 2000), and objectness logits of +-30 saturate the sigmoid into ties that no two
    sorts order alike.
    """
    import torch
    import torchvision
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    torch.manual_seed(seed)
    body = torchvision.models.resnet50(weights=None, norm_layer=torchvision.ops.FrozenBatchNorm2d)
    model = torchvision.models.detection.MaskRCNN(
        _resnet_fpn_extractor(body, 3), num_classes=91, min_size=min_size, max_size=max_size
    )
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torchvision.ops.FrozenBatchNorm2d):
                channels = module.weight.shape[0]
                module.weight.copy_(0.8 + 0.4 * torch.rand(channels, generator=generator))
                module.bias.copy_(0.2 * torch.rand(channels, generator=generator) - 0.1)
                module.running_mean.copy_(0.2 * torch.rand(channels, generator=generator) - 0.1)
                module.running_var.copy_(0.5 + torch.rand(channels, generator=generator))
        model.rpn.head.bbox_pred.weight.mul_(0.01)
        model.rpn.head.cls_logits.weight.mul_(0.1)
        model.roi_heads.box_predictor.cls_score.weight.mul_(0.1)
    return model.train()
