"""Weights: strict loading of official and our own checkpoints, and deterministic test weights."""
