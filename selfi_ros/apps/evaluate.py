"""`selfi-ros eval EST.tum GT.txt [--max-diff S]`: trajectory accuracy with evo, and a top-view plot.

Metrics (Sturm et al., "A Benchmark for the Evaluation of RGB-D SLAM Systems", IROS 2012; computed with
evo, https://github.com/MichaelGrupp/evo):

* ATE: RMSE of the translation differences after associating poses by stamp (``max_diff`` seconds) and
  aligning the estimate to the ground truth with the Sim(3) of Umeyama (1991) (``correct_scale``: the
  monocular estimate has no metric scale). Units: ground-truth units.
  ``ate_trivial`` is the RMS distance of the associated ground-truth positions to their mean: the ATE a
  constant estimate would get (a Sim(3) with free scale can shrink a wild estimate to a point, so an ATE
  near it means no information, however small it looks).
* Association (evo ``sync.associate_trajectories``, nearest stamp): each pose of the sparser trajectory is
  paired with the nearest pose of the other within ``max_diff`` seconds, or dropped; ``matched`` counts the
  pairs. With TUM's 100 Hz motion capture the nearest ground-truth pose is at most 5 ms away.
* RPE: RMSE of the translation part of relative poses between consecutive associated frames (delta 1
  frame) and of their rotation angle (degrees, also its median), on the scale-aligned estimate;
  ``rpe_rot_trivial_deg`` is the rotation RPE of a constant estimate (the ground truth's own rotation per
  step). On a sequence that mostly rotates (TUM fr1_rpy) the rotations carry the information.

The plot (matplotlib, Agg) shows the top view (x-y plane of the ground-truth frame, REP-103 z up) of the
ground truth and the aligned estimate, and, when a map PLY is given, the top view of its points moved by
the same Sim(3).
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np


@dataclass
class EvalResult:
    """Trajectory metrics of an estimate against ground truth.

    Attributes:
        matched: number of stamp-associated pose pairs used.
        est_poses, gt_poses: poses in the two files.
        ate_rmse, ate_mean, ate_median, ate_max: absolute translation error after Sim(3) alignment (GT units).
        rpe_trans_rmse: relative translation error RMSE per frame step (GT units).
        rpe_rot_rmse_deg: relative rotation error RMSE per frame step (degrees).
        scale: Sim(3) scale applied to the estimate (GT units per estimate unit).
        rotation, translation: the Sim(3) rotation (3x3) and translation (3,) applied to the estimate.
        gt_path_length: length of the matched ground-truth path (GT units), to put the ATE in proportion.
        ate_trivial: RMS distance of the matched ground-truth positions to their mean (GT units): the ATE of
            a constant estimate.
        max_diff: the association tolerance used (s).
        rpe_rot_median_deg: median of the per-step relative rotation errors (degrees): robust to a few map
            discontinuities, which dominate the RMSE.
        rpe_rot_trivial_deg: RMS rotation angle of the ground truth's own per-step relative rotations
            (degrees): the rotation RPE of a constant estimate.
    """

    matched: int
    est_poses: int
    gt_poses: int
    ate_rmse: float
    ate_mean: float
    ate_median: float
    ate_max: float
    rpe_trans_rmse: float
    rpe_rot_rmse_deg: float
    scale: float
    rotation: list = field(default_factory=list)
    translation: list = field(default_factory=list)
    gt_path_length: float = float("nan")
    ate_trivial: float = float("nan")
    max_diff: float = float("nan")
    rpe_rot_median_deg: float = float("nan")
    rpe_rot_trivial_deg: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def _read(path: str):
    from evo.tools import file_interface

    if not os.path.exists(path):
        raise FileNotFoundError(f"trajectory not found: {path}")
    return file_interface.read_tum_trajectory_file(path)


def evaluate(est_path: str, gt_path: str, max_diff: float = 0.02, plot_path: Optional[str] = None,
             map_path: Optional[str] = None, title: str = "") -> EvalResult:
    """ATE (Sim(3)-aligned) and RPE of TUM trajectory ``est_path`` against ``gt_path`` (see module doc).

    Args:
        max_diff: largest stamp difference (s) for associating an estimate pose with a ground-truth pose.
        plot_path: write the top-view PNG there when given.
        map_path: optional PLY map (estimate frame) drawn in the plot after the same alignment.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: fewer than 3 associated poses (Sim(3) alignment is undetermined).
    """
    import copy

    from evo.core import metrics, sync

    ref = _read(gt_path)
    est = _read(est_path)
    n_est, n_ref = est.num_poses, ref.num_poses
    if n_est < 3:
        raise ValueError(f"{est_path}: {n_est} poses, need >= 3 for a Sim(3) alignment")
    try:
        ref_m, est_m = sync.associate_trajectories(ref, est, max_diff=max_diff)
    except sync.SyncException as e:
        raise ValueError(f"no poses of {est_path} match {gt_path} within {max_diff} s: {e}") from e
    if est_m.num_poses < 3:
        raise ValueError(f"only {est_m.num_poses} poses of {est_path} match {gt_path} within {max_diff} s")
    est_a = copy.deepcopy(est_m)
    R, t, s = est_a.align(ref_m, correct_scale=True)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref_m, est_a))
    st = ape.get_all_statistics()
    rpe_t = metrics.RPE(metrics.PoseRelation.translation_part, delta=1, delta_unit=metrics.Unit.frames,
                        all_pairs=False)
    rpe_t.process_data((ref_m, est_a))
    rpe_r = metrics.RPE(metrics.PoseRelation.rotation_angle_deg, delta=1, delta_unit=metrics.Unit.frames,
                        all_pairs=False)
    rpe_r.process_data((ref_m, est_a))
    P = ref_m.positions_xyz
    Rg = np.asarray(ref_m.poses_se3)[:, :3, :3]
    rel = np.einsum("nji,njk->nik", Rg[:-1], Rg[1:])  # R_i^T R_{i+1}
    steps_deg = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)))
    res = EvalResult(
        matched=int(est_m.num_poses), est_poses=int(n_est), gt_poses=int(n_ref),
        ate_rmse=float(st["rmse"]), ate_mean=float(st["mean"]), ate_median=float(st["median"]),
        ate_max=float(st["max"]),
        rpe_trans_rmse=float(rpe_t.get_statistic(metrics.StatisticsType.rmse)),
        rpe_rot_rmse_deg=float(rpe_r.get_statistic(metrics.StatisticsType.rmse)),
        scale=float(s), rotation=np.asarray(R).tolist(), translation=np.asarray(t).tolist(),
        gt_path_length=float(np.sum(np.linalg.norm(np.diff(P, axis=0), axis=1))),
        ate_trivial=float(np.sqrt(np.mean(np.sum((P - P.mean(axis=0)) ** 2, axis=1)))),
        max_diff=float(max_diff),
        rpe_rot_median_deg=float(rpe_r.get_statistic(metrics.StatisticsType.median)),
        rpe_rot_trivial_deg=float(np.sqrt(np.mean(steps_deg ** 2))),
    )
    if plot_path:
        plot_top_view(plot_path, ref.positions_xyz, est_a.positions_xyz, res, map_path, title)
    return res


def plot_top_view(path: str, gt_xyz: np.ndarray, est_xyz: np.ndarray, res: EvalResult,
                  map_path: Optional[str] = None, title: str = "", max_map_points: int = 50_000) -> str:
    """Write a PNG: left, top view (x-y) of ground truth and aligned estimate; right (with ``map_path``),
    top view of the map cloud after the estimate's Sim(3) alignment, with both trajectories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = cols = None
    if map_path and os.path.exists(map_path):
        from selfi_ros.engine.io import read_ply

        pts, cols = read_ply(map_path)
        if len(pts):
            if len(pts) > max_map_points:
                idx = np.random.default_rng(0).choice(len(pts), max_map_points, replace=False)
                pts = pts[idx]
                cols = None if cols is None else cols[idx]
            R = np.asarray(res.rotation, dtype=np.float64)
            pts = res.scale * pts.astype(np.float64) @ R.T + np.asarray(res.translation, dtype=np.float64)
        else:
            pts = None
    ncol = 2 if pts is not None else 1
    fig, axes = plt.subplots(1, ncol, figsize=(6.5 * ncol, 6), squeeze=False)
    ax = axes[0, 0]
    ax.plot(gt_xyz[:, 0], gt_xyz[:, 1], "-", color="0.3", lw=2, label=f"ground truth ({len(gt_xyz)})")
    ax.plot(est_xyz[:, 0], est_xyz[:, 1], ".-", color="tab:red", ms=4, lw=1,
            label=f"estimate, Sim(3)-aligned ({len(est_xyz)})")
    ax.plot(gt_xyz[:1, 0], gt_xyz[:1, 1], "o", color="k", label="start")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"trajectory (top view)  ATE RMSE {res.ate_rmse:.4g}, "
                 f"RPE {res.rpe_trans_rmse:.3g} / {res.rpe_rot_rmse_deg:.3g} deg", fontsize=9)
    if pts is not None:
        ax2 = axes[0, 1]
        c = None if cols is None else np.asarray(cols, np.float64) / 255.0
        order = np.argsort(pts[:, 2])  # draw higher points last
        ax2.scatter(pts[order, 0], pts[order, 1], s=4, c=None if c is None else c[order], marker=".",
                    linewidths=0)
        ax2.plot(gt_xyz[:, 0], gt_xyz[:, 1], "-", color="0.3", lw=2)
        ax2.plot(est_xyz[:, 0], est_xyz[:, 1], "-", color="tab:red", lw=1)
        ax2.set_aspect("equal", adjustable="datalim")
        ax2.set_xlabel("x")
        ax2.set_ylabel("y")
        ax2.grid(alpha=0.3)
        ax2.set_title(f"map cloud (top view, {len(pts)} points, aligned)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("estimate", help="estimated trajectory (TUM)")
    parser.add_argument("groundtruth", help="ground-truth trajectory (TUM format, e.g. a TUM RGB-D groundtruth.txt)")
    parser.add_argument("--max-diff", type=float, default=0.02, help="stamp association tolerance (s)")
    parser.add_argument("--plot", default=None, help="write a top-view PNG here")
    parser.add_argument("--map", default=None, help="PLY map to draw in the plot (estimate frame)")
    parser.add_argument("--json", default=None, help="write the metrics as JSON here")


def run(args: argparse.Namespace) -> int:
    res = evaluate(args.estimate, args.groundtruth, args.max_diff, args.plot, args.map)
    d = res.to_dict()
    if args.json:
        from selfi_ros.engine.io import write_json

        write_json(args.json, d)
    print(f"associated {res.matched} of {res.est_poses} estimated / {res.gt_poses} ground-truth poses "
          f"(nearest stamp within {res.max_diff:g} s)")
    print(f"ATE RMSE (Sim(3)-aligned): {res.ate_rmse:.6g}  (mean {res.ate_mean:.4g}, max {res.ate_max:.4g}; "
          f"GT path length {res.gt_path_length:.4g}, scale {res.scale:.4g}; a constant estimate: "
          f"{res.ate_trivial:.4g})")
    print(f"RPE (1 frame): translation RMSE {res.rpe_trans_rmse:.6g}, rotation RMSE {res.rpe_rot_rmse_deg:.4g} deg "
          f"(median {res.rpe_rot_median_deg:.4g} deg; a constant estimate: {res.rpe_rot_trivial_deg:.4g} deg)")
    print(json.dumps({k: d[k] for k in ("ate_rmse", "rpe_trans_rmse", "rpe_rot_rmse_deg", "matched", "scale",
                                         "ate_trivial")}))
    return 0
