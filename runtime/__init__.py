"""Torch-free bundle runtime shared by the serving app and the pipeline: load and verify a bundle, tokenize, run
the ONNX model (`runtime.predictor`, which needs onnxruntime + tokenizers + numpy).

This module itself imports nothing, so that settings can read the runtime's defaults without loading ONNX Runtime.
"""

THREADS_ENV = "COLA_ORT_THREADS"  # ONNX Runtime intra-op threads per session (default 1)
# Padded tokens per ONNX Runtime call: on the test split, small length-sorted groups beat one padded call
# (fewer padded tokens, activations that stay in cache); measured in the benchmark stage's bundle variants.
MAX_BATCH_TOKENS = 256
