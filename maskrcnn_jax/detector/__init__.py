"""Pure jnp around the learned layers (anchors, proposals, post-processing, training targets and
losses); configured by a `DetectorSpec`, never by an ml_collections config."""

from maskrcnn_jax.detector.spec import DetectorSpec, ProposalSpec, SamplerSpec, spec_from_config

__all__ = ["DetectorSpec", "ProposalSpec", "SamplerSpec", "spec_from_config"]
