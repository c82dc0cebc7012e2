"""Training building blocks for DA3 (paper §3.3-3.4, §4.1-4.2); the official code has no training code.

- :mod:`~da3_core.train.targets`: normalised depth / point / ray / camera targets (``build_targets``).
- :mod:`~da3_core.train.losses`: student losses (``student_loss`` and its terms).
- :mod:`~da3_core.train.teacher`: monocular teacher network and its losses (``TeacherNetwork``, ``teacher_loss``).
- :mod:`~da3_core.train.alignment`: RANSAC scale/shift alignment of teacher depth (Eq. 8).
- :mod:`~da3_core.train.batching`: resolution buckets and the token-budget batch sampler.
- :mod:`~da3_core.train.data`: synthetic dataset, generic folder / TUM RGB-D / COLMAP readers, view-set dataset.

Submodules are imported lazily by their users; this package imports nothing heavy itself.
"""
