"""Issue 9, lens distortion on the woodbox sample, offline engine + colmap backend: ATE with and without rectification.

The sample's pinhole renders are distorted synthetically: a raw camera with the issue's barrel distortion
(plumb_bob D = [-0.35, 0.12, 0.001, -0.002, 0]) and intrinsics K_d = K scaled by s about the principal point,
s the smallest focal scale whose raw image lies wholly inside the pinhole render (so no raw pixel is black);
each raw pixel samples the render where its undistorted ray falls (cv2.undistortPoints + cv2.remap). The
raw camera's CameraInfo has P = cv2.getOptimalNewCameraMatrix(K_d, D, alpha=0) as camera_calibration writes.

Runs (same poses, same ground truth):
  pinhole    the original frames (K)
  raw_as_K   distorted images with K_d as a pinhole camera (the behaviour before rectification)
  rectified  distorted images + CameraInfo through ros.input.FrameInput (rectify, Frame.K = P's 3x3)
"""
import cv2  # noqa: I001  (before pycolmap)
import argparse
import json
import os
import time

import numpy as np

ISSUE_D = np.array([-0.35, 0.12, 0.001, -0.002, 0.0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="build/bench/distortion")
    ap.add_argument("--runs", default="pinhole,raw_as_K,rectified")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--offsets", default="0", help="runs on frames[k:] for each k (spread across subsets)")
    ap.add_argument("--scale", type=float, default=0.0, help="raw focal = scale * K (0: smallest with no black pixel)")
    args = ap.parse_args()

    from selfi_ros.apps.evaluate import evaluate
    from selfi_ros.apps.reconstruct import frames_from_bag, reconstruct
    from selfi_ros.data import SAMPLE_BAG, SAMPLE_GT_TUM
    from selfi_ros.data.camera_model import CameraModel
    from selfi_ros.engine.types import Frame
    from selfi_ros.ros.conversions import camera_model_to_camera_info, rgb8_to_image
    from selfi_ros.ros.input import FrameInput, InputConfig
    from selfi_ros.ros.params import NodeConfig

    frames = list(frames_from_bag(SAMPLE_BAG))
    K = frames[0].K
    H, W = frames[0].image.shape[:2]
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    border = np.concatenate([np.stack([u[0], v[0]], 1), np.stack([u[-1], v[-1]], 1),
                             np.stack([u[:, 0], v[:, 0]], 1), np.stack([u[:, -1], v[:, -1]], 1)])

    def K_d_of(s):
        Kd = K.copy()
        Kd[0, 0] *= s
        Kd[1, 1] *= s
        return Kd

    def inside(s):
        p = cv2.undistortPoints(border.reshape(-1, 1, 2), K_d_of(s), ISSUE_D, P=K).reshape(-1, 2)
        return p[:, 0].min() >= 0 and p[:, 0].max() <= W - 1 and p[:, 1].min() >= 0 and p[:, 1].max() <= H - 1

    lo, hi = 0.5, 4.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if inside(mid) else (mid, hi)
    s = args.scale or hi
    K_d = K_d_of(s)
    grid = np.stack([u.ravel(), v.ravel()], 1).reshape(-1, 1, 2)
    src = cv2.undistortPoints(grid, K_d, ISSUE_D, P=K).reshape(H, W, 2).astype(np.float32)
    P3, _ = cv2.getOptimalNewCameraMatrix(K_d, ISSUE_D, (W, H), 0.0)
    P = np.hstack([P3, np.zeros((3, 1))])
    model = CameraModel(W, H, "plumb_bob", K_d, D=ISSUE_D, P=P)
    raw_imgs = [cv2.remap(f.image, src[..., 0], src[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
                for f in frames]
    print(f"{len(frames)} frames {W}x{H}; K fx {K[0, 0]:.2f}; raw K_d = {s:.4f} K; P fx {P[0, 0]:.2f} fy {P[1, 1]:.2f} "
          f"cx {P[0, 2]:.2f} cy {P[1, 2]:.2f}; max raw->pinhole shift "
          f"{np.hypot(src[..., 0] - (K[0, 0] / K_d[0, 0] * (u - K[0, 2]) + K[0, 2]), src[..., 1] - (K[1, 1] / K_d[1, 1] * (v - K[1, 2]) + K[1, 2])).max():.1f} px")
    os.makedirs(args.out, exist_ok=True)
    cv2.imwrite(os.path.join(args.out, "raw0.png"), cv2.cvtColor(raw_imgs[0], cv2.COLOR_RGB2BGR))
    model.save_yaml(os.path.join(args.out, "camera_info.yaml"), "woodbox_barrel")

    def make(run):
        if run == "pinhole":
            return frames
        if run == "raw_as_K":
            return [Frame(stamp_ns=f.stamp_ns, image=r, K=K_d, frame_id=f.frame_id, index=f.index)
                    for f, r in zip(frames, raw_imgs)]
        fi = FrameInput(InputConfig.from_node_config(NodeConfig()))
        out = []
        for f, r in zip(frames, raw_imgs):
            evs = fi.add_camera_info(camera_model_to_camera_info(model, f.stamp_ns, f.frame_id), 0.0)
            evs += fi.add_image(rgb8_to_image(r, f.stamp_ns, f.frame_id), 0.0)
            out += [e.frame for e in evs if e.kind == "frame"]
        cv2.imwrite(os.path.join(args.out, "rectified0.png"), cv2.cvtColor(out[0].image, cv2.COLOR_RGB2BGR))
        return out

    results = {}
    gt = np.loadtxt(SAMPLE_GT_TUM)[:, 1:4]
    diag = float(np.linalg.norm(gt.max(0) - gt.min(0)))
    for run in args.runs.split(","):
        fr_all = make(run)
        for k in [int(x) for x in args.offsets.split(",")]:
            fr = fr_all[k:]
            d = os.path.join(args.out, f"{run}_{k}")
            t0 = time.perf_counter()
            summ = reconstruct(fr, d, "colmap", backend_options={"num_threads": args.threads})
            dt = time.perf_counter() - t0
            res = evaluate(os.path.join(d, "trajectory.tum"), SAMPLE_GT_TUM)
            results[f"{run}_{k}"] = dict(frames=len(fr), poses=summ["poses"], matched=res.matched,
                                         ate_rmse=res.ate_rmse, ate_pct_bbox_diag=100 * res.ate_rmse / diag,
                                         rpe_trans=res.rpe_trans_rmse, rpe_rot_deg=res.rpe_rot_rmse_deg,
                                         K0=np.round(fr[0].K, 3).tolist(), run_s=round(dt, 1),
                                         windows=summ["status"].get("windows"))
            print(run, k, json.dumps(results[f"{run}_{k}"]), flush=True)
    print(f"ATE % of the ground truth's bounding-box diagonal ({diag:.4f} scene units), mean / min / max over offsets")
    for run in args.runs.split(","):
        a = np.array([v["ate_pct_bbox_diag"] for key, v in results.items() if key.rsplit("_", 1)[0] == run])
        m = np.array([v["ate_rmse"] for key, v in results.items() if key.rsplit("_", 1)[0] == run])
        sel = [v for key, v in results.items() if key.rsplit("_", 1)[0] == run]
        rt = np.array([v["rpe_trans"] for v in sel])
        rr = np.array([v["rpe_rot_deg"] for v in sel])
        wins = [v["windows"] for v in sel]
        print(f"  {run:10s} {a.mean():.3f} % ({a.min():.3f} .. {a.max():.3f}); ATE RMSE {m.mean():.4f} "
              f"({m.min():.4f} .. {m.max():.4f}) median {np.median(m):.4f}; RPE trans {rt.mean():.4f}, "
              f"rot {rr.mean():.3f} deg; windows {min(wins)}..{max(wins)}; over {len(a)} runs", flush=True)
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
