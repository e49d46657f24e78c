"""Selfi geometric feature alignment (Deng et al. 2025, arXiv 2512.08930) on a frozen VGGT backbone.

Modules (imported lazily by their users; torch-free ones stay importable without torch):

- :mod:`.adapter`: the DPT-style feature adapter (4 aggregator layers -> 24-channel L2-normalised
  per-pixel features), strict safetensors save/load.
- :mod:`.pseudo_gt`: pseudo-ground-truth correspondences from depth, intrinsics and relative poses with the
  depth-consistency visibility test.
- :mod:`.loss`: soft-argmax correspondence loss (temperature 100) and PCK match metrics.
- :mod:`.train`: the ``selfi-ros train-adapter`` trainer (resumable, bf16 on GPU).
- :mod:`.online`: background per-scene refinement that swaps weights in only when they match better.
- :mod:`.matching`: mutual-NN / cycle / ratio dense matching on aligned features.
- :mod:`.localizer`: PnP localization against anchors' point maps and the learned-vs-geometric pose check.
- :mod:`.bundle_adjustment`: sparse Huber BA (poses, points, optional shared focal) with gauge handling.
- :mod:`.depth_correction`: Selfi's per-frame affine depth-drift correction from BA points.
"""
