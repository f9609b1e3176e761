"""Compression: ONNX Runtime INT8 quantization by measurement, pruning, distillation."""
