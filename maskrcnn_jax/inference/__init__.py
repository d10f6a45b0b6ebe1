"""Prediction on the host side of the model: photos in, detections out. `preprocess.py` (torchvision's
transform into the batch schema), `predictor.py` (`load_predictor`: config checked, model built,
parameters loaded, checked and placed, predict jitted), `mask_windows.py` (each kept detection's mask
pasted within its box, in numpy) and `detector.py` (`Detector`, also `maskrcnn_jax.Detector`).
Nothing is imported here: the evaluation's worker processes import `mask_windows` alone."""
