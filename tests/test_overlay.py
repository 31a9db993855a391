"""The composed views in the products: the ``--output`` video and ``reconstruct --render``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from realtime.overlay import PANEL_COLOR

pytestmark = pytest.mark.slow  # MediaPipe + fitting on real media


def _panel_fraction(picture: np.ndarray) -> float:
    """Share of pixels in ``picture`` that show the 3D view's background colour."""
    bg = np.round(np.array(PANEL_COLOR) * 255)
    return float((np.abs(picture.astype(np.float64) - bg).max(axis=-1) <= 3).mean())


def test_output_video_shows_the_fitted_face_and_a_3d_view(talking_video, tmp_path: Path) -> None:
    import av

    from realtime.cli import main

    out = tmp_path / "out.mp4"
    assert main(["run", "--headless", "--video", str(talking_video), "--output", str(out),
                 "--max-frames", "12"]) == 0
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(talking_video)) as c:
        source = [f.to_ndarray(format="rgb24") for _, f in zip(range(12), c.decode(video=0), strict=False)]
    assert len(frames) == 12
    h, w = frames[-1].shape[:2]
    side = round(0.38 * h)
    inset = frames[-1][h - side:, w - side:]
    # The 3D view: mostly its own background with a lit face in it (not the video).
    assert 0.4 < _panel_fraction(inset) < 0.95
    assert _panel_fraction(source[-1][h - side:, w - side:]) < 0.01
    # The face area is covered by the semi-transparent mesh; the far left of the frame is the video.
    diff = np.abs(frames[-1].astype(np.int16) - source[-1].astype(np.int16)).max(axis=-1)
    assert diff[200:400, 600:800].mean() > 15.0
    assert np.median(diff[300:700, 0:300]) < 12.0   # H.264 noise only


def test_reconstruct_render_png(images_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    from realtime.cli import main

    photo = images_dir / "lfpw_image_0010.jpg"
    png = tmp_path / "render.png"
    assert main(["reconstruct", str(photo), "--out", str(tmp_path / "rec"), "--render", str(png)]) == 0
    picture = np.asarray(Image.open(png).convert("RGB"))
    original = np.asarray(Image.open(photo).convert("RGB"))
    h, w = original.shape[:2]
    assert picture.shape == (h, w + h, 3)
    left, right = picture[:, :w], picture[:, w:]
    changed = np.abs(left.astype(np.int16) - original.astype(np.int16)).max(axis=-1) > 20
    assert 0.02 < changed.mean() < 0.3      # the face, not the whole photo
    assert 0.5 < _panel_fraction(right) < 0.95
    # A .jpg render path is refused before any work (exit code 3).
    assert main(["reconstruct", str(photo), "--out", str(tmp_path / "rec2"), "--render",
                 str(tmp_path / "x.jpg")]) == 3
