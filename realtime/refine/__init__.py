"""Background refinement of keyframes and snapshots (issue 7).

Modules, in data-flow order:

- ``keyframes``  — which live frames are worth refining (sharpness, fit confidence, yaw bins, expression
  peaks; manual snapshots first);
- ``worker``     — the low-priority worker process, its bounded priority queue and the pipeline sink;
- ``job``        — one job: landmarks → (joint) fit → ``snapshot`` → ``export``;
- ``twoview`` / ``landmark_bias`` — front + side joint fit with a shared identity;
- ``snapshot``   — coarse → medium (``medium``: Laplacian deformation) → fine (``sfs``: shape from shading)
  → detailed mesh and UV maps (``uv``, rasterised with ``raster``);
- ``export``     — OBJ/MTL/PNG, displacement/normal maps, PLY, GLB, JSON (docs/formats.md);
- ``detail``     — the DECA-style detail network (onnxruntime); ``detail_synth`` — synthetic wrinkle truth.
"""
