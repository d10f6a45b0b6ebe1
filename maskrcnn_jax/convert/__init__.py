"""Weights trained elsewhere as our checkpoints: torchvision's Mask R-CNN state_dicts, v1 and v2
(`torchvision.py`, scripts/convert_torchvision.py), and ImageNet classification ResNets for the
backbone (`backbone.py`, scripts/convert_backbone.py). torch is imported only to read a .pth file."""
