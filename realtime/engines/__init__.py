"""Regressor networks (Mobile-FaceRNet, Deep3D) at run time: coefficient layout, crops, one engine runner.

Nothing in this package imports torch: the application runs the shipped ONNX files through TensorRT or
onnxruntime (`runtime.py`). Training code lives in ``realtime.training``.
"""
