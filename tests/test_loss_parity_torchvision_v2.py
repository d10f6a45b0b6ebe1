"""Loss, gradient and training-step parity with torchvision's Mask R-CNN R50-FPN v2 (BatchNorm in train mode
everywhere, every layer trainable): the tests of loss_parity_torchvision.py on this architecture's fixture."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

from loss_parity_torchvision import (  # noqa: E402, F401 (collected here, on this module's `parity`)
    compute_parity,
    test_parity_proposals_equal_torchvision_training_proposals,
    test_parity_matcher_labels_of_our_samples_equal_torchvision,
    test_parity_full_matcher_labels_and_sample_counts_equal_torchvision,
    test_parity_loss_equals_torchvision,
    test_our_crop_mask_targets_change_loss_mask_and_gradients_by_at_most_the_bound,
    test_parity_grad_of_every_trainable_parameter_equals_torchvision,
    test_parity_batch_norm_running_statistics_equal_torchvision_after_the_step,
    test_parity_training_steps_equal_torchvision_sgd_with_warmup,
)


@pytest.fixture(scope="module")
def parity():
    return compute_parity("v2")
