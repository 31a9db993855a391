"""``realtime-face reconstruct IMAGE --out DIR``: a metric 3D face from one photo.

Writes ``mesh.obj`` (+ ``mesh.mtl``, ``texture.png``), ``landmarks68.json`` and ``params.json`` (formats in
``docs/formats.md``, "Reconstruction folder"). This module also holds the fitting command-line options
shared with ``run`` (``--fov``, ``--calibration``, smoothing), kept here so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from realtime.errors import BadInputError, OutputError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
TEXTURE_SIZE = 1024


# --- options shared with `run` ---------------------------------------------------------------------------

def add_camera_arguments(g: Any) -> None:
    cam = g.add_mutually_exclusive_group()
    cam.add_argument("--fov", type=float, metavar="DEG",
                     help="camera horizontal field of view in degrees (default 60, a typical webcam)")
    cam.add_argument("--calibration", metavar="FILE",
                     help="camera calibration: JSON {fx, fy, cx, cy, width, height} or OpenCV YAML")


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    """``--fov``, ``--calibration``, ``--no-fit``, ``--no-smooth`` and the One Euro parameters."""
    from realtime.smoothing import SmoothingOptions

    g = p.add_argument_group("fitting")
    add_camera_arguments(g)
    g.add_argument("--no-fit", action="store_true", help="track landmarks only (no 3D face fit)")
    g.add_argument("--no-smooth", action="store_true", help="raw per-frame fits (no temporal smoothing)")
    d = SmoothingOptions()
    for name, mc, beta, unit in (
        ("rotation", d.rotation_min_cutoff_hz, d.rotation_beta, "rad/s"),
        ("translation", d.translation_min_cutoff_hz, d.translation_beta, "mm/s"),
        ("expression", d.expression_min_cutoff_hz, d.expression_beta, "weight/s"),
    ):
        g.add_argument(f"--smooth-{name}", type=float, nargs=2, metavar=("MIN_CUTOFF_HZ", "BETA"),
                       default=None, help=f"One Euro filter for {name}: minimum cutoff in Hz and beta "
                       f"(Hz per {unit}); default {mc} {beta}")


def smoothing_options_from_args(args: argparse.Namespace) -> Any:
    from realtime.smoothing import SmoothingOptions

    kw: dict[str, float] = {}
    for name in ("rotation", "translation", "expression"):
        pair = getattr(args, f"smooth_{name}", None)
        if pair is not None:
            mc, beta = float(pair[0]), float(pair[1])
            if mc <= 0 or beta < 0:
                raise BadInputError(f"--smooth-{name}: the cutoff must be > 0 and beta >= 0")
            kw[f"{name}_min_cutoff_hz"] = mc
            kw[f"{name}_beta"] = beta
    return replace(SmoothingOptions(), **kw)


def intrinsics_resolver_from_args(args: argparse.Namespace) -> Any:
    from realtime.fitting import IntrinsicsResolver

    return IntrinsicsResolver(fov_deg=getattr(args, "fov", None),
                              calibration=getattr(args, "calibration", None))


def fit_stages_from_args(args: argparse.Namespace) -> list[Any]:
    """[FitStage, SmoothingStage] as the arguments ask (empty with --no-fit)."""
    if getattr(args, "no_fit", False):
        return []
    from realtime.facemodel import load_face_model
    from realtime.fitting import FitStage
    from realtime.smoothing import SmoothingStage

    resolver = intrinsics_resolver_from_args(args)
    smoothing = smoothing_options_from_args(args)
    model = load_face_model()
    smooth = not getattr(args, "no_smooth", False)
    # With smoothing, the smoother forms the (smoothed) mesh; the fit stage skips its own.
    stages: list[Any] = [FitStage(model, intrinsics=resolver, mesh=not smooth)]
    if smooth:
        stages.append(SmoothingStage(model, resolver, smoothing))
    return stages


# --- the command ------------------------------------------------------------------------------------------

def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "reconstruct",
        help="3D face from one image: mesh.obj (+ texture), landmarks68.json, params.json",
        description="Fit the face model to the most prominent face in IMAGE and write a metric mesh "
        "(camera space, mm, OpenCV axes) with a texture sampled from the image.",
    )
    p.add_argument("image", metavar="IMAGE", help="photo (JPEG, PNG, ...)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    add_camera_arguments(p)
    p.add_argument("--texture-size", type=int, default=TEXTURE_SIZE, metavar="PX",
                   help=f"texture.png size (default {TEXTURE_SIZE})")
    p.add_argument("--render", metavar="OUT.png",
                   help="also write a picture: the photo with the fitted face in place | the 3D face")
    p.add_argument("--no-photometric", action="store_true",
                   help="keep the landmark fit's identity (skip the ≈ 1-2 s analysis-by-synthesis refinement "
                        "of identity and pose against the image's shading)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import numpy as np

    from realtime.correspondence import load_correspondence
    from realtime.facemodel import load_face_model
    from realtime.fitting import FaceFitter, FitOptions
    from realtime.landmarks import FaceMeshTracker, quiet_native_logs

    quiet_native_logs()
    t_start = time.perf_counter()
    image_path = Path(args.image)
    out = Path(args.out)
    from realtime.capture import load_rgb
    from realtime.paths import ensure_writable_dir

    image = load_rgb(image_path)
    ensure_writable_dir(out)
    if args.render:
        from realtime.overlay import check_render_path

        check_render_path(args.render)
    if args.texture_size < 16 or args.texture_size > 8192:
        raise BadInputError("--texture-size must be between 16 and 8192")
    h, w = image.shape[:2]
    intr = intrinsics_resolver_from_args(args).for_size(w, h)
    model = load_face_model()
    corr = load_correspondence(model)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with FaceMeshTracker(max_faces=4, static=True) as tracker:
        tracks = tracker.track(image)
    timings["landmarks"] = (time.perf_counter() - t0) * 1e3
    if not tracks:
        raise BadInputError(f"no face found in {image_path}")
    track = max(tracks, key=lambda t: (t.box_px[2] - t.box_px[0]) * (t.box_px[3] - t.box_px[1]))
    t0 = time.perf_counter()
    fitter = FaceFitter(model, corr, intr, FitOptions.single_image(cold_iterations=20))
    fit = fitter.fit(track)
    timings["fit"] = (time.perf_counter() - t0) * 1e3
    photometric_rms: tuple[float, float] | None = None
    if not args.no_photometric:
        # The landmarks carry little identity information; the image's shading carries more (200 synthetic
        # renders: shape error −22 % -> −30 % against the mean face, tools/bench_fitting.py).
        from realtime.refine.photometric import PhotometricFitter, PhotoView

        t0 = time.perf_counter()
        try:
            photo = PhotometricFitter(model, corr).fit_views([PhotoView(image, intr, fit, track)])
        except ValueError as exc:   # too little visible skin: keep the landmark fit
            log.warning("reconstruct: photometric refinement skipped (%s)", exc)
        else:
            fit = photo.fits[0]
            photometric_rms = photo.photometric_rms
        timings["photometric"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    texture = sample_texture(model, fit.vertices_mm, intr, image, args.texture_size)
    timings["texture"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    write_reconstruction(out, model, fit, intr, texture, image_path, timings, photometric_rms)
    timings["write"] = (time.perf_counter() - t0) * 1e3
    if args.render:
        from realtime.overlay import render_reconstruction_png

        t0 = time.perf_counter()
        render_reconstruction_png(image, fit, model, intr, args.render)
        timings["render"] = (time.perf_counter() - t0) * 1e3
    total = (time.perf_counter() - t_start) * 1e3
    log.info("reconstruct: %s", ", ".join(f"{k} {v:.0f} ms" for k, v in timings.items()))
    yaw, pitch, roll = fit.pose.euler_deg()
    print(f"face fitted: yaw {yaw:.0f}°, pitch {pitch:.0f}°, roll {roll:.0f}°, distance "
          f"{float(np.linalg.norm(fit.pose.translation_mm)):.0f} mm, residual {fit.residual_px:.1f} px "
          f"({total:.0f} ms)")
    for name in ("mesh.obj", "mesh.mtl", "texture.png", "landmarks68.json", "params.json"):
        print(f"wrote {out / name}")
    if args.render:
        print(f"wrote {args.render}")
    return 0


def sample_texture(model: Any, vertices_cam: Any, intr: Any, image: Any, size: int) -> Any:
    """Texture (size x size RGB) in the model's UV layout, sampled from the image where the face is seen.

    Each UV corner gets its vertex's projected pixel; a piecewise-linear interpolation over the UV points
    fills the texels, and ``cv2.remap`` samples the photo there. Texels of back-facing surface (not seen)
    get the mean colour of the seen face, so the texture has no smeared silhouette colours.
    """
    import cv2
    import numpy as np
    from scipy.interpolate import LinearNDInterpolator

    if model.uv is None or model.triangle_uv is None:
        raise BadInputError(f"face model '{model.name}' has no texture coordinates")
    v = np.asarray(vertices_cam, np.float64)
    px = intr.project(v)
    # Per-vertex visibility from the normals (facing the camera), on the camera-space mesh.
    tri = model.triangles
    fn = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
    vn = np.zeros_like(v)
    for i in range(3):
        np.add.at(vn, tri[:, i], fn)
    vn /= np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-9)
    facing = -np.einsum("ij,ij->i", vn, v / np.linalg.norm(v, axis=1, keepdims=True))
    # UV point -> vertex, through the per-corner tables.
    uv_vertex = np.zeros(model.uv.shape[0], np.int64)
    uv_vertex[model.triangle_uv.ravel()] = tri.ravel()
    used = np.zeros(model.uv.shape[0], bool)
    used[model.triangle_uv.ravel()] = True
    uv = model.uv[used].astype(np.float64)
    vals = np.column_stack([px[uv_vertex[used]], facing[uv_vertex[used]]])
    interp = LinearNDInterpolator(uv, vals, fill_value=np.nan)
    g = (np.arange(size) + 0.5) / size
    gu, gv = np.meshgrid(g, 1.0 - g)  # OBJ: v points up, image rows go down
    res = interp(gu.ravel(), gv.ravel()).reshape(size, size, 3)
    map_x = np.nan_to_num(res[..., 0], nan=-1).astype(np.float32)
    map_y = np.nan_to_num(res[..., 1], nan=-1).astype(np.float32)
    tex = cv2.remap(np.ascontiguousarray(image), map_x, map_y, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    seen = np.nan_to_num(res[..., 2], nan=-1.0) > 0.1
    inside = (map_x >= 0) & (map_y >= 0) & (map_x <= image.shape[1] - 1) & (map_y <= image.shape[0] - 1)
    ok = seen & inside
    fill = tex[ok].mean(axis=0) if ok.any() else np.array([128, 128, 128])
    tex[~ok] = fill.astype(np.uint8)
    return tex


def write_reconstruction(out: Path, model: Any, fit: Any, intr: Any, texture: Any, image_path: Path,
                         timings: dict[str, float], photometric_rms: tuple[float, float] | None = None) -> None:
    import cv2
    import numpy as np

    v = np.asarray(fit.vertices_mm, np.float64)
    tri = model.triangles + 1
    tuv = model.triangle_uv + 1
    lines = [f"# realtime-face reconstruct (format {FORMAT_VERSION}): camera space, mm, OpenCV axes "
             "(x right, y down, z forward)", "mtllib mesh.mtl"]
    lines += [f"v {x:.4f} {y:.4f} {z:.4f}" for x, y, z in v]
    lines += [f"vt {a:.6f} {b:.6f}" for a, b in model.uv]
    lines.append("usemtl face")
    # Camera space is right-handed with y down: the model's counter-clockwise-from-outside order is kept
    # (a rigid transform does not change orientation), so normals point out of the face.
    lines += [f"f {a}/{ta} {b}/{tb} {c}/{tc}" for (a, b, c), (ta, tb, tc) in zip(tri, tuv, strict=True)]
    try:
        (out / "mesh.obj").write_text("\n".join(lines) + "\n")
        (out / "mesh.mtl").write_text("newmtl face\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\n"
                                      "map_Kd texture.png\n")
        if not cv2.imwrite(str(out / "texture.png"), np.ascontiguousarray(texture[..., ::-1])):
            raise OutputError(f"cannot write {out / 'texture.png'}")
        (out / "landmarks68.json").write_text(json.dumps({
            "format_version": FORMAT_VERSION,
            "points_2d_px": np.round(fit.landmarks68_px.astype(np.float64), 3).tolist(),
            "points_3d_mm": np.round(fit.landmarks68_mm.astype(np.float64), 3).tolist(),
        }, indent=1))
        yaw, pitch, roll = fit.pose.euler_deg()
        params = {
            "format_version": FORMAT_VERSION,
            "model": model.name,
            "image": {"path": str(image_path), "width": intr.width, "height": intr.height},
            "identity": [round(float(x), 6) for x in fit.identity],
            "expression": {n: round(float(x), 6) for n, x in zip(model.expression_names, fit.expression,
                                                                  strict=True)},
            "pose": {
                "rotation": np.asarray(fit.pose.rotation, np.float64).round(8).tolist(),
                "translation_mm": np.asarray(fit.pose.translation_mm, np.float64).round(4).tolist(),
                "yaw_deg": round(yaw, 3), "pitch_deg": round(pitch, 3), "roll_deg": round(roll, 3),
            },
            "intrinsics": intr.to_dict(),
            "scale_source": fit.scale_source,
            "residual_px": round(float(fit.residual_px), 4),
            "confidence": round(float(fit.confidence), 4),
            "photometric_fit_rms_grey": (None if photometric_rms is None else
                                         {"landmark_fit": round(float(photometric_rms[0]), 3),
                                          "refined": round(float(photometric_rms[1]), 3)}),
            "timings_ms": {k: round(t, 2) for k, t in timings.items()},
        }
        (out / "params.json").write_text(json.dumps(params, indent=1))
    except OSError as exc:
        raise OutputError(f"cannot write to {out}: {exc.strerror or exc}") from None
