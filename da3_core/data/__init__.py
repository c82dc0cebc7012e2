"""Data sources for training and evaluation (``synthetic``: procedural ray-cast scenes with exact geometry)."""
