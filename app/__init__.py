"""Torch-free serving of the CoLA ONNX bundle (FastAPI + onnxruntime + tokenizers)."""
