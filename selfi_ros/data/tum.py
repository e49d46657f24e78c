"""Sequences in the TUM RGB-D benchmark's own layout (no ROS): image lists, ground truth, camera YAML.

Layout (Sturm, Engelhard, Endres, Burgard, Cremers, "A Benchmark for the Evaluation of RGB-D SLAM Systems",
IROS 2012; file formats as documented on the benchmark's "File Formats" page)::

    DIR/rgb.txt           '# comment' lines, then 'timestamp filename' (timestamp: seconds since the epoch,
                          decimal; filename relative to DIR, e.g. rgb/1305031229.528748.jpg)
    DIR/rgb/*.png|jpg     the colour images (as recorded: NOT undistorted)
    DIR/groundtruth.txt   'timestamp tx ty tz qx qy qz qw': pose of the colour camera's optical centre in
                          the motion-capture world (camera-to-world, optical axes x right / y down /
                          z forward), metres; 100 Hz, not synchronised with the images
    DIR/camera_info.yaml  (optional, not part of TUM's own layout) the calibration in the ROS
                          camera_calibration YAML format (K, distortion model and D, R, P)

Stamps are turned into integer nanoseconds from their decimal text (no float rounding), so
``1305031229.528748`` is ``1305031229528748000`` ns wherever it appears (bag headers, trajectories).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from selfi_ros.engine.types import Frame

log = logging.getLogger(__name__)

#: camera YAML names looked for in a TUM folder, first found wins
CAMERA_YAML_NAMES = ("camera_info.yaml", "camera.yaml", "calibration.yaml")


def parse_stamp_ns(text: str) -> int:
    """Decimal seconds text (``'1305031229.528748'``, ``'17'``, ``'-0.5'`` refused) -> int nanoseconds, exact
    up to 9 decimals (more are truncated).

    Raises:
        ValueError: not a non-negative decimal number.
    """
    t = text.strip()
    whole, _, frac = t.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"not a TUM timestamp (non-negative decimal seconds): {text!r}")
    return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])


@dataclass(frozen=True)
class TumImage:
    """One line of ``rgb.txt``.

    Attributes:
        stamp_ns: the image's timestamp (int ns since the epoch).
        path: absolute path of the image file.
        name: the file name as written in ``rgb.txt`` (relative to the sequence folder).
    """

    stamp_ns: int
    path: str
    name: str


def _data_lines(path: str):
    """The data lines of a TUM text file: ``(line number, stripped line, whitespace-split fields)`` for every
    line that is neither empty nor a ``#`` comment."""
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                yield lineno, line, line.split()


def read_image_list(path: str) -> list[TumImage]:
    """Parse a TUM image list (``rgb.txt`` / ``depth.txt``): ``#`` comments, then ``timestamp filename``.

    Returns the entries in file order (TUM writes them in time order). Paths are resolved against the
    list's folder.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed line (names the file and line number), stamps going backwards or repeated,
            or no entry at all.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TUM image list not found: {path}")
    base = os.path.dirname(os.path.abspath(path))
    out: list[TumImage] = []
    for lineno, line, parts in _data_lines(path):
        if len(parts) < 2:
            raise ValueError(f"{path}:{lineno}: expected 'timestamp filename', got {line!r}")
        try:
            stamp = parse_stamp_ns(parts[0])
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
        if out and stamp <= out[-1].stamp_ns:
            raise ValueError(f"{path}:{lineno}: timestamp {parts[0]} not after the previous one")
        out.append(TumImage(stamp, os.path.join(base, parts[1]), parts[1]))
    if not out:
        raise ValueError(f"{path}: no images listed")
    return out


def read_groundtruth(path: str) -> tuple[np.ndarray, np.ndarray]:
    """TUM ground truth ``timestamp tx ty tz qx qy qz qw`` -> ((N,) int64 stamps ns, (N, 4, 4) float64
    camera-to-world poses). Quaternions are Hamilton, order x y z w (TUM's and ROS's); a quaternion that is
    not of unit norm (|1 - |q|| > 1e-3) is an error, not silently normalised.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed line (names the file and line number) or no pose.
    """
    from scipy.spatial.transform import Rotation

    if not os.path.isfile(path):
        raise FileNotFoundError(f"TUM ground truth not found: {path}")
    stamps: list[int] = []
    rows: list[list[float]] = []
    for lineno, line, parts in _data_lines(path):
        if len(parts) != 8:
            raise ValueError(f"{path}:{lineno}: expected 8 fields 'timestamp tx ty tz qx qy qz qw', "
                             f"got {len(parts)}")
        try:
            stamps.append(parse_stamp_ns(parts[0]))
            rows.append([float(x) for x in parts[1:]])
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
        q = np.asarray(rows[-1][3:])
        if not np.all(np.isfinite(rows[-1])) or abs(np.linalg.norm(q) - 1.0) > 1e-3:
            raise ValueError(f"{path}:{lineno}: non-finite value or non-unit quaternion {q.tolist()}")
    if not stamps:
        raise ValueError(f"{path}: no poses")
    v = np.asarray(rows, dtype=np.float64)
    T = np.tile(np.eye(4), (len(v), 1, 1))
    T[:, :3, :3] = Rotation.from_quat(v[:, 3:]).as_matrix()  # scipy: scalar-last (x, y, z, w)
    T[:, :3, 3] = v[:, :3]
    return np.asarray(stamps, dtype=np.int64), T


@dataclass
class TumSequence:
    """A TUM RGB-D sequence folder (see the module docstring).

    Attributes:
        root: the folder.
        images: the ``rgb.txt`` entries, in time order.
        groundtruth_path: ``groundtruth.txt`` when present, else None.
        camera_yaml: the camera YAML (:data:`CAMERA_YAML_NAMES`) when present, else None.
    """

    root: str
    images: list[TumImage]
    groundtruth_path: Optional[str]
    camera_yaml: Optional[str]

    @classmethod
    def open(cls, root: str) -> "TumSequence":
        """Read ``root/rgb.txt`` and look for the ground truth and a camera YAML.

        Raises:
            FileNotFoundError: no folder or no ``rgb.txt`` in it; ValueError: a malformed ``rgb.txt``.
        """
        if not os.path.isdir(root):
            raise FileNotFoundError(f"TUM sequence folder not found: {root}")
        images = read_image_list(os.path.join(root, "rgb.txt"))
        gt = os.path.join(root, "groundtruth.txt")
        yamls = [os.path.join(root, n) for n in CAMERA_YAML_NAMES if os.path.isfile(os.path.join(root, n))]
        return cls(os.path.abspath(root), images, gt if os.path.isfile(gt) else None, yamls[0] if yamls else None)

    def select(self, start_s: float = 0.0, duration_s: float = 0.0, every: int = 1) -> list[TumImage]:
        """Images from ``start_s`` seconds after the first image, for ``duration_s`` seconds (0: to the end),
        every ``every``-th of them (1: all).

        Raises:
            ValueError: negative start/duration, ``every`` < 1, or nothing selected.
        """
        if start_s < 0 or duration_s < 0 or every < 1:
            raise ValueError(f"start_s >= 0, duration_s >= 0 and every >= 1 needed, got "
                             f"{start_s}, {duration_s}, {every}")
        t0 = self.images[0].stamp_ns + int(round(start_s * 1e9))
        t1 = t0 + int(round(duration_s * 1e9)) if duration_s > 0 else None
        sel = [im for im in self.images if im.stamp_ns >= t0 and (t1 is None or im.stamp_ns < t1)][::every]
        if not sel:
            raise ValueError(f"{self.root}: no image between {start_s} s and "
                             f"{'the end' if t1 is None else f'{start_s + duration_s} s'}")
        return sel

    @property
    def rate_hz(self) -> float:
        """Mean image rate over the whole list (Hz; 0 for a single image)."""
        if len(self.images) < 2:
            return 0.0
        return (len(self.images) - 1) / ((self.images[-1].stamp_ns - self.images[0].stamp_ns) * 1e-9)


def load_rgb(path: str) -> Optional[np.ndarray]:
    """(H, W, 3) uint8 RGB of an image file (OpenCV), or None when it cannot be read."""
    import cv2

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    return None if bgr is None else np.ascontiguousarray(bgr[:, :, ::-1])


def frames_from_tum(images: list[TumImage], K: Optional[np.ndarray] = None, frame_id: str = "camera",
                    rectify=None) -> Iterator[Frame]:
    """Yield a :class:`Frame` per readable image (stamp = the ``rgb.txt`` timestamp, ``index`` = position in
    ``images``, ``source`` = the file name of ``rgb.txt``). Unreadable files, and images ``rectify`` refuses
    (ValueError: another size than the calibration's), are skipped with a warning.

    Args:
        K: (3, 3) intrinsics of the images as given (None: unknown).
        rectify: optional callable ``image -> (image_rect, K_rect)`` applied to each image (e.g. a
            :class:`selfi_ros.data.camera_model.Rectifier`'s ``rectify``); its K_rect replaces ``K``.
    """
    for i, im in enumerate(images):
        rgb = load_rgb(im.path)
        if rgb is None:
            log.warning("skipping unreadable image %s", im.path)
            continue
        K_i = K
        if rectify is not None:
            try:
                rgb, K_i = rectify(rgb)
            except ValueError as e:  # e.g. an image of another size than the calibration's
                log.warning("skipping %s: %s", im.path, e)
                continue
        yield Frame(stamp_ns=im.stamp_ns, image=rgb, K=K_i, frame_id=frame_id, index=i, source=im.name)
