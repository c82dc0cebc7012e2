"""Streaming reconstruction core (no ROS): frames -> sliding windows -> predictor -> Sim(3) chaining -> map.

See :mod:`da3_core.stream.pipeline` for the composition used by the ROS node and by offline replay.
"""

from da3_core.stream.chaining import ChainedFrame, ChainResult, WindowChainer
from da3_core.stream.frame import MAX_SIDE, Frame, FrameError, check_image_size, check_intrinsics, validate_frame
from da3_core.stream.pipeline import PipelineConfig, StreamPipeline, WindowResult
from da3_core.stream.predictor import DA3Predictor, OraclePredictor, Predictor, WindowPrediction
from da3_core.stream.voxel_map import VoxelMap
from da3_core.stream.window import SlidingWindow, Window
from da3_core.stream.worker import InferenceWorker

__all__ = ["MAX_SIDE", "ChainResult", "ChainedFrame", "DA3Predictor", "Frame", "FrameError", "InferenceWorker",
           "OraclePredictor", "PipelineConfig", "Predictor", "SlidingWindow", "StreamPipeline", "VoxelMap", "Window",
           "WindowChainer", "WindowPrediction", "WindowResult", "check_image_size", "check_intrinsics",
           "validate_frame"]
