"""Procedural synthetic scenes rendered by exact ray casting (numpy), for training, evaluation and tests.

Conventions: world +z up (metres); cameras OpenCV world-to-camera ``w2c`` (4, 4) float64; K (3, 3) in pixels;
depth = z-depth (inf on sky); pixel (row v, col u) is the ray through image point (u, v) (the project's
integer-pixel convention, as ``da3_core.geometry.points.depth_to_points``).

    scene = make_scene("room", seed=3)
    K = intrinsics_from_fov((378, 504), 70.0)
    w2cs = make_trajectory(scene, 8, "walk", seed=1)
    frames = render_sequence(scene, w2cs, K, (378, 504))   # list[Frame]: rgb, depth, sky, K, w2c, normals, ids
"""

from da3_core.data.synthetic.camera import (
    camera_centers,
    camera_rays,
    intrinsics_from_fov,
    invert_rigid,
    look_at,
    pixel_grid_uv,
)
from da3_core.data.synthetic.paths import (
    TRAJECTORY_KINDS,
    handheld_jitter,
    make_trajectory,
    orbit,
    pan,
    path_clearance,
    walkthrough,
)
from da3_core.data.synthetic.primitives import Box, Plane, Room, Sphere
from da3_core.data.synthetic.render import Frame, RayHits, cast_rays, render, render_sequence
from da3_core.data.synthetic.scene import SCENE_KINDS, Scene, Sky, make_scene
from da3_core.data.synthetic.textures import Material, make_material

__all__ = [
    "SCENE_KINDS",
    "TRAJECTORY_KINDS",
    "Box",
    "Frame",
    "Material",
    "Plane",
    "RayHits",
    "Room",
    "Scene",
    "Sky",
    "Sphere",
    "camera_centers",
    "camera_rays",
    "cast_rays",
    "handheld_jitter",
    "intrinsics_from_fov",
    "invert_rigid",
    "look_at",
    "make_material",
    "make_scene",
    "make_trajectory",
    "orbit",
    "pan",
    "path_clearance",
    "pixel_grid_uv",
    "render",
    "render_sequence",
    "walkthrough",
]
