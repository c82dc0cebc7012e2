"""Camera geometry for DA3: quaternions, rigid transforms, the 9-d pose encoding, the ray-map pose solver,
metric depth scaling and depth <-> point conversions.

Conventions (see ``docs/architecture.md``): OpenCV axes, extrinsics are world-to-camera (``w2c``) unless the name
says otherwise, quaternions are xyzw (scalar last), depth is z-depth. Import the sub-modules directly, e.g.
``from da3_core.geometry.pose_encoding import encoding_to_cameras``.
"""
