#!/usr/bin/env python3
"""Render the README pictures with the product's headless renderer (EGL, 4x MSAA).

``live_view.png``: a real video frame through the product's own pipeline (MediaPipe landmarks, landmark fit
over the preceding frames so that the identity has settled):

    [ camera view: frame + fitted face + landmarks | 3D view, lit | 3D view, wireframe ]

This picture contains pixels of the input video: check the video's licence before publishing it (the
shared test videos are for evaluation only and are not committed).

``synthetic_fit.png`` (``--synthetic SEED --out docs/images/synthetic_fit.png``): the same views on a
synthetic head-turn clip of the face model; every pixel is the project's own.

``render_modes.png`` (``--modes``): the ICT-FaceKit mean face (MIT) in the display modes
lit | wireframe | normals | depth | heatmap; no third-party pixels.

    .venv/bin/python tools/render_readme_image.py [--video PATH] [--frame N] [--out docs/images/live_view.png]
    .venv/bin/python tools/render_readme_image.py --modes [--out docs/images/render_modes.png]
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")


def fitted_frame(video: Path, frame_index: int) -> Any:
    """The FrameResult of ``frame_index`` after fitting every frame before it (temporal identity)."""
    from realtime.capture import VideoSource
    from realtime.fitting import FitStage
    from realtime.landmarks import LandmarkStage
    from realtime.pipeline import Pipeline

    kept: list[Any] = []

    class Keep:
        def consume(self, r: Any) -> None:
            kept[:] = [r]

        def close(self) -> None:
            pass

    fit = FitStage()
    with Pipeline(VideoSource(str(video)), [LandmarkStage(), fit], [Keep()], max_frames=frame_index + 1) as p:
        p.run()
    if not kept or not kept[0].faces or kept[0].faces[0].fit is None:
        raise SystemExit(f"no fitted face in frame {frame_index} of {video}")
    return kept[0], fit


def synthetic_video(path: Path, seed: int, n_frames: int = 90) -> Path:
    """A synthetic head-turn clip of the face model (project-owned pixels, safe to publish)."""
    import av

    from realtime.facemodel import load_face_model
    from realtime.synthetic import SyntheticGenerator

    gen = SyntheticGenerator(load_face_model(), width=640, height=480, seed=seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for sample in gen.sequence(n_frames, yaw_amplitude_deg=25.0, period_frames=n_frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(sample.image, format="rgb24")))
        container.mux(stream.encode())
    return path


def render_modes(height: int) -> np.ndarray:
    """The ICT mean face, three-quarter view, in five display modes side by side."""
    from realtime.facemodel import load_face_model
    from realtime.overlay import MeshDisplay, ViewStyle, orbit_view_params
    from realtime.render import OffscreenRenderer
    from realtime.results import FRONTAL_ROTATION

    model = load_face_model()
    display = MeshDisplay.from_model(model)
    v = (model.mean_mm @ FRONTAL_ROTATION.T + np.array([0.0, 0.0, 600.0])).astype(np.float32)
    n = height
    modes = ("lit", "wireframe", "normals", "depth", "heatmap")
    canvas = np.empty((n, n * len(modes), 3), np.uint8)
    with OffscreenRenderer(n * len(modes), n, samples=4) as r:
        for i, mode in enumerate(modes):
            style = ViewStyle(mode=mode, orbit_yaw_deg=-30.0, orbit_pitch_deg=6.0)
            params = orbit_view_params(v, (i * n, 0, n, n), style, zoom=1.2,
                                       scalars=model.mean_mm[:, 0], scalar_range=(-80.0, 80.0),
                                       hidden_edges=display.view_hidden_edges)
            r.render(v, display.view_triangles, **params, out=canvas)
    return canvas


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from realtime.overlay import MeshDisplay, ViewStyle, draw_orbit_view
    from realtime.paths import shared_dir
    from realtime.render import OffscreenRenderer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", type=Path, default=shared_dir() / "data" / "videos" / "talking_720p.mp4")
    parser.add_argument("--frame", type=int, default=120)
    parser.add_argument("--out", type=Path, help="default docs/images/live_view.png or render_modes.png")
    parser.add_argument("--height", type=int, default=480, help="height of the picture in pixels")
    parser.add_argument("--modes", action="store_true", help="the display modes of the ICT mean face")
    parser.add_argument("--synthetic", type=int, metavar="SEED",
                        help="fit a synthetic head-turn clip of the face model instead of --video")
    args = parser.parse_args(argv)
    if args.modes:
        out = args.out or Path("docs/images/render_modes.png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_modes(args.height // 2 * 2)).save(out, optimize=True)
        print(f"wrote {out}")
        return 0
    args.out = args.out or Path("docs/images/live_view.png")
    if args.synthetic is not None:
        import tempfile

        tmp = tempfile.TemporaryDirectory()
        args.video = synthetic_video(Path(tmp.name) / f"synthetic_{args.synthetic}.mp4", args.synthetic)
        args.frame = min(args.frame, 89)

    result, fit_stage = fitted_frame(args.video, args.frame)
    fit = result.faces[0].fit
    image = result.frame.image
    h, w = image.shape[:2]
    intr = fit_stage.intrinsics.for_size(w, h)
    display = MeshDisplay.from_model(fit_stage.model)
    style = ViewStyle(overlay_opacity=0.5, orbit_follows_head=False, orbit_yaw_deg=-30.0, orbit_pitch_deg=6.0)

    # Camera view: the full frame rendered, then a square crop around the face.
    with OffscreenRenderer(w, h, samples=4) as r:
        camera = r.render(fit.vertices_mm, display.overlay_triangles, intr, "lit", background=image,
                          opacity=style.overlay_opacity, specular=style.specular,
                          points_px=result.faces[0].track.landmarks_px[:, :2], point_size=2.5,
                          point_color=(0.3, 1.0, 0.55, 0.85))
    x0, y0, x1, y1 = result.faces[0].track.box_px
    side = min(h, w, round(1.9 * max(x1 - x0, y1 - y0)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(np.clip(round(cx - side / 2), 0, w - side))
    top = int(np.clip(round(cy - side / 2), 0, h - side))
    panels = [camera[top:top + side, left:left + side]]

    # 3D views of the same fitted mesh, face-relative three-quarter view.
    n = side
    with OffscreenRenderer(2 * n, n, samples=4) as r:
        canvas = np.empty((n, 2 * n, 3), np.uint8)
        draw_orbit_view(r, fit.vertices_mm, display.view_triangles, (0, 0, n, n), style,
                        face_pose=fit.pose, zoom=1.2, out=canvas)
        wire = replace(style, mode="wireframe")
        draw_orbit_view(r, fit.vertices_mm, display.view_triangles, (n, 0, n, n), wire, face_pose=fit.pose,
                        zoom=1.2, hidden_edges=display.view_hidden_edges, reuse_mesh=True, out=canvas)
    panels += [canvas[:, :n], canvas[:, n:]]
    picture = Image.fromarray(np.hstack(panels))
    picture = picture.resize((args.height * 3, args.height), Image.Resampling.LANCZOS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.out, optimize=True)
    print(f"wrote {args.out} (frame {args.frame} of {args.video.name}, "
          f"fit residual {fit.residual_px:.1f} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
