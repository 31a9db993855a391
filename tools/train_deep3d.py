#!/usr/bin/env python
"""Train the Deep3D regressor (ResNet-50) on the same synthetic data and export engines/deep3d.onnx.

Deep3D is a GPU job (224 px, full width). The CPU configuration shipped here uses a reduced input (96 px)
and half width (``--width 32``) with float16 weights in the ONNX so that the file stays small:
``tools/train_deep3d.py --no-build --minutes 45 --threads 1 --input-size 96 --fp16-weights``.
"""

from __future__ import annotations

import sys

from realtime.training.recipe import main

if __name__ == "__main__":
    sys.exit(main("deep3d", input_size=96, minutes=45.0))
