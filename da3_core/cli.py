"""``da3`` command line: offline inference on an image folder or a video, and variant listing.

    da3 infer INPUT --weights PATH [--variant NAME] --out DIR [--process-res 504] [--ref-view saddle_balanced]
              [--use-ray-pose] [--intrinsics fx,fy,cx,cy] [--conf-percentile 40] [--max-points N]
              [--batch-views N] [--device cpu|cuda] [--fps F] [--max-frames N]
    da3 variants
    da3 export --onnx (--weights PATH [--variant NAME] | --recipe NAME) --views N
              (--height H --width W | --image-size WxH [--process-res 504]) [--ref-view first] [--conditioned]
              --out FILE.onnx

``infer`` writes ``DIR/results.npz``, ``DIR/points.ply``, ``DIR/depth/XXXX.png``, ``DIR/cameras.json`` and
``DIR/trajectory.tum`` (see :mod:`da3_core.export`). Nothing is downloaded: ``--weights`` is a local official
checkpoint folder / ``model.safetensors`` file or one of our checkpoints.

``--batch-views N`` bounds memory on long inputs: views are processed in windows of N that share one frame with the
previous window; each window is brought into the frame and depth scale of the first one through that shared frame
(relative pose of the window, translation scaled by the median depth ratio on the shared frame).
``--backend onnxruntime`` runs ``infer`` on ONNX Runtime (``--onnx`` exported graphs, else exported on demand into
``$DA3_CACHE``); ``torch_graph`` captures the window (CUDA graph / torch.compile).

``export --onnx`` writes the network for one fixed window (views x processed height x width; ``--image-size`` and
``--process-res`` compute the processed size of a camera's images as ``infer`` and the node do) with the
reference-view strategy inside the graph, or with camera inputs (``--conditioned``, pose-conditioned windows).
``--recipe NAME`` exports deterministic test weights of a variant (no checkpoint needed; benchmarks and tests).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class CliError(Exception):
    """A user-facing error: printed as ``da3: error: <message>`` with exit status 2."""


def _progress(iterable, **kwargs):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a runtime dependency
        return iterable
    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **kwargs)


# --- inputs --------------------------------------------------------------------------------------------------------


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` (not recursive), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_video(path: Path, fps: float, max_frames: int | None) -> tuple[list[np.ndarray], list[float]]:
    """Frames sampled at about ``fps`` (RGB uint8) and their timestamps in seconds."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise CliError(f"cannot open video {str(path)!r} with OpenCV; convert it to MP4 (H.264) or extract frames "
                       "into a folder")
    src_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    if not np.isfinite(src_fps) or src_fps <= 0:
        src_fps = 30.0
    step = max(1, int(round(src_fps / fps)))
    frames, stamps, index = [], [], 0
    try:
        while max_frames is None or len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(np.ascontiguousarray(frame[:, :, ::-1]))
                stamps.append(index / src_fps)
            index += 1
    finally:
        cap.release()
    if not frames:
        raise CliError(f"no frames could be read from {str(path)!r}")
    return frames, stamps


def load_inputs(input_path: Path, fps: float, max_frames: int | None
                ) -> tuple[list[np.ndarray], list[str], list[float] | None]:
    """Images (RGB uint8), frame names, timestamps (videos only) from a folder, an image file or a video file."""
    from da3_core.preprocess import load_image

    if not input_path.exists():
        raise CliError(f"input {str(input_path)!r} does not exist; pass an image folder or a video file")
    if input_path.is_dir():
        files = list_images(input_path)
        if not files:
            raise CliError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {str(input_path)!r}")
        if max_frames is not None:
            files = files[:max_frames]
        return [load_image(f, i) for i, f in enumerate(files)], [f.stem for f in files], None
    if input_path.suffix.lower() in IMAGE_EXTENSIONS:
        return [load_image(input_path)], [input_path.stem], None
    frames, stamps = read_video(input_path, fps, max_frames)
    return frames, [f"{i:04d}" for i in range(len(frames))], stamps


def parse_intrinsics(text: str | None, n: int) -> np.ndarray | None:
    """``"fx,fy,cx,cy"`` (input pixels) -> (n, 3, 3) float64."""
    if text is None:
        return None
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError:
        raise CliError(f"--intrinsics {text!r}: expected four numbers fx,fy,cx,cy in input pixels") from None
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return np.repeat(K[None], n, axis=0)


# --- windows -------------------------------------------------------------------------------------------------------


def window_starts(n: int, size: int) -> list[tuple[int, int]]:
    """[start, end) windows of ``size`` views covering ``n``, consecutive windows sharing one view."""
    if size >= n:
        return [(0, n)]
    if size < 2:
        raise CliError("--batch-views must be at least 2 (windows share one view)")
    spans, start = [], 0
    while True:
        end = min(start + size, n)
        spans.append((start, end))
        if end == n:
            return spans
        start = end - 1


def _chain(prev, cur):
    """Append window prediction ``cur`` (first view = last view of ``prev``) to ``prev`` in ``prev``'s frame/scale."""
    from da3_core.api import Prediction

    T_g = prev.extrinsics[-1]
    T_c = cur.extrinsics[0]
    d_g, d_c = prev.depth[-1], cur.depth[0]
    ok = np.isfinite(d_g) & np.isfinite(d_c) & (d_g > 0) & (d_c > 0)
    r = float(np.median(d_g[ok] / d_c[ok])) if ok.any() else 1.0
    ext = []
    for T in cur.extrinsics[1:]:
        A = T @ np.linalg.inv(T_c)
        A[:3, 3] *= r
        ext.append(A @ T_g)
    cat = lambda a, b: None if a is None or b is None else np.concatenate([a, b[1:]])  # noqa: E731
    return Prediction(depth=np.concatenate([prev.depth, cur.depth[1:] * np.float32(r)]), conf=cat(prev.conf, cur.conf),
                      sky=cat(prev.sky, cur.sky), extrinsics=np.concatenate([prev.extrinsics, np.stack(ext)]),
                      intrinsics=cat(prev.intrinsics, cur.intrinsics), is_metric=prev.is_metric,
                      scale_factor=prev.scale_factor, depth_units=prev.depth_units, images=cat(prev.images, cur.images),
                      processed_hw=prev.processed_hw, resolution=prev.resolution)


def predict_windows(model, images: list[np.ndarray], intrinsics: np.ndarray | None, batch_views: int | None,
                    **kwargs):
    """Run ``model.predict`` on the whole sequence or on chained windows (see the module docstring)."""
    spans = window_starts(len(images), batch_views or len(images))
    result = None
    for start, end in _progress(spans, desc="inference", unit="window"):
        K = intrinsics[start:end] if intrinsics is not None else None
        pred = model.predict(images[start:end], intrinsics=K, **kwargs)
        if result is None:
            result = pred
        elif pred.extrinsics is None or result.extrinsics is None:
            raise CliError("--batch-views needs a model that predicts poses (an any-view model)")
        else:
            result = _chain(result, pred)
    return result


# --- commands ------------------------------------------------------------------------------------------------------


def cmd_variants(_: argparse.Namespace) -> int:
    from da3_core.registry import list_variants

    for name in list_variants():
        print(name)
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from da3_core.api import CHECKPOINT_HELP, DA3
    from da3_core.export import save_depth_png, save_npz, write_cameras_json, write_ply, write_tum

    weights = Path(args.weights).expanduser()
    if not weights.exists():
        raise CliError(f"weights {str(weights)!r} not found. {CHECKPOINT_HELP}")
    images, names, stamps = load_inputs(Path(args.input), args.fps, args.max_frames)
    sizes = sorted({im.shape[:2] for im in images})
    if len(sizes) > 1 and args.output_res == "input":
        raise CliError(f"the images have different sizes {sizes}; resize them to one size or pass "
                       "--output-res processed")
    intrinsics = parse_intrinsics(args.intrinsics, len(images))
    print(f"da3: {len(images)} view(s) from {args.input}; loading {weights}", file=sys.stderr)
    model = DA3.from_pretrained(weights, variant=args.variant, device=args.device, backend=args.backend,
                                onnx=[args.onnx] if args.onnx else ())
    pred = predict_windows(model, images, intrinsics, args.batch_views, process_res=args.process_res,
                           process_res_method=args.process_res_method, ref_view=args.ref_view,
                           use_ray_pose=args.use_ray_pose, output=args.output_res)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_npz(out / "results.npz", pred)
    for i in _progress(range(len(pred)), desc="depth png", unit="frame"):
        save_depth_png(out / "depth" / f"{i:04d}.png", pred.depth[i], None if pred.sky is None else ~pred.sky[i])
    if pred.extrinsics is not None and pred.intrinsics is not None:
        pts, cols = pred.point_cloud(conf_percentile=args.conf_percentile, max_points=args.max_points)
        write_ply(out / "points.ply", pts, cols)
        write_cameras_json(out / "cameras.json", pred.extrinsics, pred.intrinsics, pred.depth.shape[1:], names,
                           extra={"is_metric": bool(pred.is_metric), "depth_units": pred.depth_units})
        write_tum(out / "trajectory.tum", pred.extrinsics, stamps)
        print(f"da3: wrote {out}/results.npz, points.ply ({len(pts)} points), depth/, cameras.json, trajectory.tum",
              file=sys.stderr)
    else:
        print(f"da3: wrote {out}/results.npz and depth/ (this model predicts no cameras; pass --intrinsics for a "
              "point cloud)", file=sys.stderr)
    return 0


def processed_size(image_size: str, process_res: int) -> tuple[int, int]:
    """(height, width) the network sees for camera images of ``image_size`` 'WxH' (as ``infer`` and the node)."""
    from da3_core.api import processed_hw

    try:
        w, h = (int(v) for v in image_size.lower().split("x"))
    except ValueError:
        raise CliError(f"--image-size {image_size!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    if w <= 0 or h <= 0:
        raise CliError(f"--image-size {image_size!r}: width and height must be positive")
    return processed_hw((h, w), process_res)


def cmd_export(args: argparse.Namespace) -> int:
    from da3_core.backends.onnx_export import INPUT_NAMES, export_onnx
    from da3_core.backends.split import GraphSpec

    if not args.onnx:
        raise CliError("choose an export format: --onnx")
    if (args.weights is None) == (args.recipe is None):
        raise CliError("pass exactly one of --weights (a checkpoint) or --recipe VARIANT (deterministic test weights)")
    if args.image_size:
        height, width = processed_size(args.image_size, args.process_res)
    elif args.height and args.width:
        height, width = args.height, args.width
    else:
        raise CliError("give the window size: --height H --width W (processed pixels, multiples of 14) or "
                       "--image-size WxH of the camera images (with --process-res)")
    spec = GraphSpec(args.views, height, width, args.conditioned, args.ref_view)
    if args.recipe:
        from da3_core.registry import build_network, canonical_variant
        from da3_core.weights.recipe import apply_recipe

        variant = canonical_variant(args.recipe)
        network = apply_recipe(build_network(variant))
    else:
        from da3_core.api import DA3

        model = DA3.from_pretrained(args.weights, variant=args.variant, device="cpu")
        variant, network = model.variant, model.network
    print(f"da3: exporting {variant} for {spec.describe()} to {args.out} (large models take minutes)",
          file=sys.stderr)
    info = export_onnx(network, spec, args.out, variant)
    inputs = ", ".join(INPUT_NAMES[: 3 if spec.conditioned else 1])
    print(f"da3: wrote {info.path} (inputs {inputs}; outputs {', '.join(info.outputs)})", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from da3_core.api import REF_VIEW_STRATEGIES
    from da3_core.backends import BACKENDS
    from da3_core.preprocess import PROCESS_RES_METHODS

    parser = argparse.ArgumentParser(prog="da3", description="Depth Anything 3 inference (offline, no downloads).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("infer", help="depth, cameras and a point cloud for an image folder or a video")
    p.add_argument("input", help="folder of images (png/jpg, sorted by name), one image, or a video file")
    p.add_argument("--weights", required=True, help="official checkpoint folder (model.safetensors + config.json), "
                   "a .safetensors file, or one of our checkpoints")
    p.add_argument("--variant", default=None, help="model variant when the checkpoint does not name it "
                   "(see `da3 variants`)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--process-res", type=int, default=504, help="processing resolution (default 504)")
    p.add_argument("--process-res-method", default="upper_bound_resize", choices=PROCESS_RES_METHODS)
    p.add_argument("--ref-view", default="saddle_balanced", choices=REF_VIEW_STRATEGIES)
    p.add_argument("--use-ray-pose", action="store_true", help="poses from the ray head (slower, more accurate)")
    p.add_argument("--intrinsics", default=None, help="known camera 'fx,fy,cx,cy' in input pixels (all frames)")
    p.add_argument("--conf-percentile", type=float, default=40.0, help="drop points below this confidence "
                   "percentile (default 40)")
    p.add_argument("--max-points", type=int, default=1_000_000, help="max points in points.ply (default 1e6)")
    p.add_argument("--batch-views", type=int, default=None, help="process long inputs in chained windows of N views")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--fps", type=float, default=1.0, help="video sampling rate in frames per second (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="use at most N frames/images")
    p.add_argument("--output-res", default="input", choices=("input", "processed"),
                   help="resolution of the outputs (default: the input resolution)")
    p.add_argument("--backend", default="torch", choices=BACKENDS, help="how the network runs (default torch)")
    p.add_argument("--onnx", default=None, help="--backend onnxruntime: exported graph(s), a .onnx file or a folder")
    p.set_defaults(func=cmd_infer)

    e = sub.add_parser("export", help="export a network for one fixed window (ONNX)")
    e.add_argument("--onnx", action="store_true", help="ONNX (opset 18) for ONNX Runtime / TensorRT")
    e.add_argument("--weights", default=None, help="checkpoint folder or file (as for infer)")
    e.add_argument("--variant", default=None, help="model variant when the checkpoint does not name it")
    e.add_argument("--recipe", default=None, help="export deterministic recipe weights of this variant instead")
    e.add_argument("--views", type=int, required=True, help="views per window (the node's window_size)")
    e.add_argument("--height", type=int, default=None, help="processed height (multiple of 14)")
    e.add_argument("--width", type=int, default=None, help="processed width (multiple of 14)")
    e.add_argument("--image-size", default=None, help="camera image size WxH; the processed size follows from "
                   "--process-res")
    e.add_argument("--process-res", type=int, default=504, help="with --image-size (default 504)")
    e.add_argument("--ref-view", default="first", choices=REF_VIEW_STRATEGIES,
                   help="reference view (default first, the node's); saddle_* are computed inside the graph")
    e.add_argument("--conditioned", action="store_true", help="camera inputs (pose-conditioned windows)")
    e.add_argument("--out", required=True, help="output .onnx file")
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("variants", help="list the model variants")
    v.set_defaults(func=cmd_variants)

    from da3_core.eval.cli import add_eval_parser

    add_eval_parser(sub)  # `da3 eval` (da3_core/eval/cli.py)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``da3`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "fps", 1.0) is not None and getattr(args, "fps", 1.0) <= 0:
        parser.error("--fps must be positive")
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"da3: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, KeyError) as exc:
        print(f"da3: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
