"""Inference runtime: one ``Runner`` interface over PyTorch, ONNX Runtime and TensorRT.

Import the pieces from their modules (``runtime.predictor.Predictor``,
``runtime.torch_runner.TorchRunner``, ...); this package imports nothing heavy itself.
"""

INPUT_NAME = "images"
OUTPUT_NAMES = ("pred_logits", "pred_boxes", "features", "embedding", "attention")
