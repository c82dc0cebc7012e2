"""Evaluation metrics (paper §6.2): depth, camera poses, point clouds."""
