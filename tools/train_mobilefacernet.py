#!/usr/bin/env python
"""Train Mobile-FaceRNet (64x64) on synthetic renders of the face model; export engines/mobile_facernet.onnx.

CPU configuration (the shipped model): ``tools/train_mobilefacernet.py --minutes 45 --threads 1``; the data
(9000 renders, 2 crops each) is cached under the user cache folder and reused. ``--help`` lists the options.
"""

from __future__ import annotations

import sys

from realtime.training.recipe import main

if __name__ == "__main__":
    sys.exit(main("mobile-facernet", input_size=64, minutes=45.0))
