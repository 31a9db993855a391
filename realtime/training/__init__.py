"""Training of the regressor engines (torch): networks, differentiable renderer, losses, data, export.

Only the training scripts (``tools/train_*.py``), the Deep3D importer and the tests import this package;
the application runs the exported ONNX files through ``realtime.engines`` without torch.
"""
