"""Camera calibrations as ROS describes them (``sensor_msgs/CameraInfo``, the camera_calibration YAML) and the
rectification that turns a raw, distorted image into a pinhole image the engine can use. No ROS import.

Semantics follow ROS's ``image_geometry.PinholeCameraModel`` (ROS 2 ``vision_opencv`` repository,
``image_geometry/src/pinhole_camera_model.cpp``) and the ``CameraInfo`` message definition:

* ``K`` (3x3), ``D``, ``R`` (3x3) and ``P`` (3x4) describe the FULL-resolution sensor image of
  ``width x height`` pixels. ``K`` and ``D`` are the raw (distorted) camera; ``R`` rotates the camera frame
  into the rectified frame (identity for a monocular camera); ``P``'s left 3x3 are the intrinsics of the
  rectified image (``P[:, 3]`` is a stereo baseline term, irrelevant to a single image).
* ``binning_x`` / ``binning_y`` (0 or 1: none) and the ``roi`` (a region of the full image, offsets and
  size in full-resolution pixels; size 0 = the full image) describe the image actually sent: it has
  ``(roi width or width) // binning_x`` x ``(roi height or height) // binning_y`` pixels. The intrinsics of
  that image are K (raw) or P (rectified) with the principal point shifted by the ROI offset, then
  ``fx, cx`` divided by ``binning_x`` and ``fy, cy`` by ``binning_y`` (as ``intrinsicMatrix()`` /
  ``projectionMatrix()`` of image_geometry; :meth:`CameraModel.intrinsics`, :meth:`CameraModel.projection`).
* Distortion models (``sensor_msgs/distortion_models.hpp``): ``plumb_bob`` (k1 k2 p1 p2 k3, Brown-Conrady)
  and ``rational_polynomial`` (k1 k2 p1 p2 k3 k4 k5 k6) are OpenCV's standard model
  (``cv2.initUndistortRectifyMap``, ``cv2.undistortPoints``); ``equidistant`` (k1 k2 k3 k4,
  Kannala-Brandt as OpenCV's fisheye module: theta_d = theta (1 + k1 theta^2 + ... + k4 theta^8)) uses
  ``cv2.fisheye.initUndistortRectifyMap`` / ``cv2.fisheye.undistortPoints``. Any other model is refused
  (:class:`UnsupportedCameraModel`) rather than used as a pinhole. An empty model name with no (or only
  zero) coefficients is a pinhole camera.

:class:`Rectifier` remaps images of one calibration into the rectified image (``cv2.remap``, bilinear,
black outside the raw image), its maps computed once (OpenCV's fixed-point maps, ``cv2.CV_16SC2``). It
computes the maps directly at the size of the image sent, with the binning- and ROI-adjusted K and P; this
is the same mapping as image_geometry's full-resolution maps cropped to the ROI. A calibration without
distortion (``plumb_bob`` / ``rational_polynomial`` / pinhole with D all zero) and with ``R = I`` needs no
remap: its images are pinhole images already, passed through untouched (no copy, no cost), with the adjusted
K as their intrinsics. ``equidistant`` with D all zero is still a fisheye projection (r = f theta) and is
remapped (image_geometry treats it as undistorted).
"""
from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

#: distortion models this module rectifies (ROS ``sensor_msgs/distortion_models.hpp`` names)
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
#: coefficient counts OpenCV's standard model accepts (0: no distortion)
_STANDARD_D_LENGTHS = (0, 4, 5, 8, 12, 14)


class CameraModelError(ValueError):
    """An invalid calibration (one line naming the field, or for a YAML file the file and the key).

    Attributes:
        field: the offending field (``K``, ``D``, ``R``, ``P``, ``width``, ``roi``, ...) or ``""``.
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class UnsupportedCameraModel(CameraModelError):
    """A distortion model this module cannot rectify (not one of :data:`DISTORTION_MODELS`)."""


@dataclass(frozen=True)
class Roi:
    """``sensor_msgs/RegionOfInterest``: the region of the full-resolution image that is sent, in full-resolution
    pixels; ``width == height == 0`` means the full image. ``do_rectify`` is carried, not used."""

    x_offset: int = 0
    y_offset: int = 0
    width: int = 0
    height: int = 0
    do_rectify: bool = False


def _matrix(value: Any, shape: tuple, name: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64).reshape(shape)
    except (TypeError, ValueError) as e:
        raise CameraModelError(f"{name} must have {int(np.prod(shape))} numbers {shape}: {e}", name) from None
    if not np.all(np.isfinite(a)):
        raise CameraModelError(f"{name} has NaN/inf: {a.ravel().tolist()}", name)
    return a


@dataclass(eq=False)
class CameraModel:
    """One camera calibration (a ``CameraInfo`` without header), validated on construction.

    Attributes:
        width, height: full-resolution calibrated image size (px; 0 when the driver left them unset: then
            sizes are not checked and the image sent is taken as the full image).
        distortion_model: ``plumb_bob`` | ``rational_polynomial`` | ``equidistant`` (rectifiable), ``""``
            (pinhole when D is zero) or any other name (kept; :class:`Rectifier` refuses it).
        K: (3, 3) float64 raw camera intrinsics (px of the full image).
        D: (n,) float64 distortion coefficients of ``distortion_model`` (empty = none).
        R: (3, 3) float64 rotation camera -> rectified camera (all zero, an unset field, becomes I).
        P: (3, 4) float64 projection of the rectified camera (all zero, an unset field, becomes [K | 0]).
        binning_x, binning_y: pixel binning (0 or 1: none).
        roi: the region sent (:class:`Roi`).

    Raises:
        CameraModelError: non-finite values, fx/fy <= 0, K or P not of the upper-triangular intrinsics
            form, principal point outside the image, R not a rotation, a D length the model does not
            have, negative binning, an ROI outside the image.
    """

    width: int
    height: int
    distortion_model: str
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    R: Optional[np.ndarray] = None
    P: Optional[np.ndarray] = None
    binning_x: int = 0
    binning_y: int = 0
    roi: Roi = field(default_factory=Roi)

    def __post_init__(self) -> None:
        try:
            self.width, self.height = int(self.width), int(self.height)
        except (TypeError, ValueError):
            raise CameraModelError(f"width/height must be integers, got {self.width!r} x {self.height!r}",
                                   "width") from None
        if not (0 <= self.width <= 100_000 and 0 <= self.height <= 100_000):
            raise CameraModelError(f"image size {self.width}x{self.height} out of range", "width")
        self.distortion_model = str(self.distortion_model)
        K = self.K = _matrix(self.K, (3, 3), "K")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise CameraModelError(f"K has fx={K[0, 0]}, fy={K[1, 1]} (must be > 0; 0 = uncalibrated)", "K")
        if abs(K[2, 2] - 1.0) > 1e-6 or np.any(K[2, :2] != 0) or K[1, 0] != 0:
            raise CameraModelError(f"K is not an upper-triangular intrinsics matrix: {K.ravel().tolist()}", "K")
        if self.size_known and not (0 <= K[0, 2] <= self.width and 0 <= K[1, 2] <= self.height):
            raise CameraModelError(f"principal point ({K[0, 2]}, {K[1, 2]}) outside {self.width}x{self.height}", "K")
        D = self.D = _matrix(self.D if self.D is not None else [], (-1,), "D")
        n, model = D.size, self.distortion_model
        if model in ("plumb_bob", "rational_polynomial") and n not in _STANDARD_D_LENGTHS:
            raise CameraModelError(f"D has {n} coefficients; {model} takes 5 (OpenCV: 4, 5, 8, 12 or 14)", "D")
        if model == "equidistant" and n not in (0, 4):
            raise CameraModelError(f"D has {n} coefficients; equidistant takes 4 (k1..k4)", "D")
        R = self.R = np.eye(3) if self.R is None else _matrix(self.R, (3, 3), "R")
        if not np.any(R):
            self.R = R = np.eye(3)
        if np.abs(R @ R.T - np.eye(3)).max() > 1e-4 or np.linalg.det(R) <= 0:
            raise CameraModelError(f"R is not a rotation matrix: {R.ravel().tolist()}", "R")
        P = np.hstack([K, np.zeros((3, 1))]) if self.P is None else _matrix(self.P, (3, 4), "P")
        if not np.any(P):
            P = np.hstack([K, np.zeros((3, 1))])
        self.P = P
        if P[0, 0] <= 0 or P[1, 1] <= 0 or abs(P[2, 2] - 1.0) > 1e-6 or np.any(P[2, [0, 1, 3]] != 0) or P[1, 0] != 0:
            raise CameraModelError(f"P is not a projection [fx' s cx' Tx; 0 fy' cy' Ty; 0 0 1 0]: "
                                   f"{P.ravel().tolist()}", "P")
        for name in ("binning_x", "binning_y"):
            b = getattr(self, name)
            if not isinstance(b, (int, np.integer)) or isinstance(b, bool) or b < 0 or b > 64:
                raise CameraModelError(f"{name} must be an integer in 0..64, got {b!r}", name)
            setattr(self, name, int(b))
        r = self.roi
        if not isinstance(r, Roi):
            raise CameraModelError(f"roi must be a Roi, got {type(r).__name__}", "roi")
        if min(r.x_offset, r.y_offset, r.width, r.height) < 0 or (bool(r.width) != bool(r.height)):
            raise CameraModelError(f"roi {r} has a negative field or only one of width/height", "roi")
        if self.size_known and (r.x_offset + (r.width or self.width) > self.width
                                or r.y_offset + (r.height or self.height) > self.height):
            raise CameraModelError(f"roi {r} outside the {self.width}x{self.height} image", "roi")

    # ----------------------------------------------------------------------------------- geometry
    @property
    def size_known(self) -> bool:
        """Whether ``width`` and ``height`` were set (both > 0)."""
        return self.width > 0 and self.height > 0

    @property
    def binning(self) -> tuple[int, int]:
        """(bx, by) >= 1 (0 counts as 1)."""
        return max(self.binning_x, 1), max(self.binning_y, 1)

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) px of the images sent: the ROI's (or the full) size divided by the binning
        (integer division, as image_geometry); (0, 0) when the size is unknown."""
        bx, by = self.binning
        w = self.roi.width or self.width
        h = self.roi.height or self.height
        return (w // bx, h // by) if w > 0 and h > 0 else (0, 0)

    def _adjust(self, M: np.ndarray) -> np.ndarray:
        """Shift a (3, n) intrinsics/projection by the ROI offset, then scale its rows by the binning."""
        M = np.array(M, dtype=np.float64)
        M[0, 2] -= self.roi.x_offset
        M[1, 2] -= self.roi.y_offset
        bx, by = self.binning
        M[0] /= bx
        M[1] /= by
        return M

    def intrinsics(self) -> np.ndarray:
        """(3, 3) float64 K of the raw images sent (binning and ROI applied; image_geometry
        ``intrinsicMatrix()``)."""
        return self._adjust(self.K)

    def projection(self) -> np.ndarray:
        """(3, 4) float64 P of the rectified images (binning and ROI applied; image_geometry
        ``projectionMatrix()``); its left 3x3 are their intrinsics."""
        return self._adjust(self.P)

    @property
    def supported(self) -> bool:
        """Whether :class:`Rectifier` handles this model (a known name, or ``""`` with D all zero)."""
        return self.distortion_model in DISTORTION_MODELS or (self.distortion_model == "" and not np.any(self.D))

    @property
    def needs_remap(self) -> bool:
        """Whether raw images differ from rectified ones: distortion (D not all zero, or any ``equidistant``)
        or a rectifying rotation R != I."""
        return bool(np.any(self.D) or self.distortion_model == "equidistant"
                    or np.abs(self.R - np.eye(3)).max() > 1e-12)

    def signature(self) -> tuple:
        """A hashable value equal for equal calibrations (the key of :class:`RectifierCache`)."""
        return (self.width, self.height, self.distortion_model, self.K.tobytes(), self.D.tobytes(),
                self.R.tobytes(), self.P.tobytes(), self.binning_x, self.binning_y, self.roi)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CameraModel) and self.signature() == other.signature()

    def __hash__(self) -> int:
        return hash(self.signature())

    # ------------------------------------------------------------------------------------ YAML
    @classmethod
    def from_yaml(cls, path: str) -> "CameraModel":
        """Read a calibration in the ROS camera_calibration YAML format (``camera_calibration`` /
        ``camera_info_manager`` write it): ``image_width``, ``image_height``, ``camera_matrix``,
        ``distortion_model``, ``distortion_coefficients``, optional ``rectification_matrix`` (default I) and
        ``projection_matrix`` (default [K | 0]); matrices as ``{rows, cols, data}``. Optional, not written by
        camera_calibration: ``binning_x``, ``binning_y``, ``roi`` ({x_offset, y_offset, width, height}).

        Raises:
            CameraModelError: unreadable file, bad YAML, a missing or malformed key, an invalid value,
                one line naming the file and the key.
            UnsupportedCameraModel: a distortion model other than :data:`DISTORTION_MODELS` (and ``""``
                with zero coefficients).
        """
        import yaml

        try:
            with open(path, encoding="utf-8") as fh:
                doc = yaml.safe_load(fh)
        except OSError as e:
            raise CameraModelError(f"{path}: cannot read camera YAML: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise CameraModelError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(doc, dict):
            raise CameraModelError(f"{path}: not a camera_calibration YAML (top level is not a mapping)")

        def need(key: str) -> Any:
            if key not in doc or doc[key] is None:
                raise CameraModelError(f"{path}: missing key '{key}'", key)
            return doc[key]

        def mat(key: str, shape: tuple) -> Optional[np.ndarray]:
            m = doc.get(key)
            if m is None:
                return None
            if not isinstance(m, dict) or "data" not in m:
                raise CameraModelError(f"{path}: {key}: expected {{rows, cols, data}}, got {m!r}", key)
            data = m["data"]
            rows, cols = m.get("rows"), m.get("cols")
            if not isinstance(data, list) or (rows is not None and cols is not None and rows * cols != len(data)):
                got = len(data) if isinstance(data, list) else repr(data)
                raise CameraModelError(f"{path}: {key}: rows x cols = {rows} x {cols} but data has {got} values", key)
            if shape != (-1,) and len(data) != int(np.prod(shape)):
                raise CameraModelError(f"{path}: {key}: {len(data)} values, expected {shape[0]}x{shape[1]}", key)
            try:
                return np.asarray(data, dtype=np.float64).reshape(shape)
            except (TypeError, ValueError):
                raise CameraModelError(f"{path}: {key}: not numbers: {data!r}", key) from None

        keys = {"width": "image_width", "height": "image_height", "K": "camera_matrix",
                "D": "distortion_coefficients", "R": "rectification_matrix", "P": "projection_matrix",
                "distortion_model": "distortion_model", "roi": "roi", "binning_x": "binning_x",
                "binning_y": "binning_y"}
        for k in ("image_width", "image_height", "camera_matrix", "distortion_model", "distortion_coefficients"):
            need(k)
        for k in ("image_width", "image_height", "binning_x", "binning_y"):
            if k in doc and (not isinstance(doc[k], int) or isinstance(doc[k], bool)):
                raise CameraModelError(f"{path}: {k}: expected an integer, got {doc[k]!r}", k)
        roi = doc.get("roi") or {}
        if not isinstance(roi, dict):
            raise CameraModelError(f"{path}: roi: expected a mapping, got {roi!r}", "roi")
        try:
            model = cls(width=doc["image_width"], height=doc["image_height"],
                        distortion_model=str(doc["distortion_model"]), K=mat("camera_matrix", (3, 3)),
                        D=mat("distortion_coefficients", (-1,)), R=mat("rectification_matrix", (3, 3)),
                        P=mat("projection_matrix", (3, 4)), binning_x=doc.get("binning_x", 0),
                        binning_y=doc.get("binning_y", 0),
                        roi=Roi(**{k: int(roi.get(k, 0)) for k in ("x_offset", "y_offset", "width", "height")},
                                do_rectify=bool(roi.get("do_rectify", False))))
        except CameraModelError as e:
            raise CameraModelError(f"{path}: {keys.get(e.field, e.field)}: {e}", e.field) from None
        except (TypeError, ValueError) as e:
            raise CameraModelError(f"{path}: roi: {e}", "roi") from None
        if not model.supported:
            raise UnsupportedCameraModel(f"{path}: distortion_model: {model.distortion_model!r} is not supported "
                                         f"(supported: {', '.join(DISTORTION_MODELS)})", "distortion_model")
        return model

    def to_yaml(self, camera_name: str = "camera") -> str:
        """This calibration as camera_calibration YAML text (read back by :meth:`from_yaml`; binning and ROI
        written only when set)."""
        def m(a: np.ndarray, rows: int, cols: int) -> str:
            vals = ", ".join(repr(float(v)) for v in np.asarray(a).ravel())
            return f"\n  rows: {rows}\n  cols: {cols}\n  data: [{vals}]"

        lines = [f"image_width: {self.width}", f"image_height: {self.height}", f"camera_name: {camera_name}",
                 f"camera_matrix:{m(self.K, 3, 3)}", f"distortion_model: {self.distortion_model}",
                 f"distortion_coefficients:{m(self.D, 1, self.D.size)}",
                 f"rectification_matrix:{m(self.R, 3, 3)}", f"projection_matrix:{m(self.P, 3, 4)}"]
        if self.binning_x or self.binning_y:
            lines += [f"binning_x: {self.binning_x}", f"binning_y: {self.binning_y}"]
        if self.roi != Roi():
            r = self.roi
            lines.append(f"roi: {{x_offset: {r.x_offset}, y_offset: {r.y_offset}, width: {r.width}, "
                         f"height: {r.height}, do_rectify: {str(r.do_rectify).lower()}}}")
        return "\n".join(lines) + "\n"

    def save_yaml(self, path: str, camera_name: str = "camera") -> str:
        """Write :meth:`to_yaml` atomically to ``path`` (parent folders created); returns the path."""
        from selfi_ros.atomic import atomic_write_text

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return atomic_write_text(path, self.to_yaml(camera_name))


class Rectifier:
    """Raw images of one calibration -> rectified pinhole images (see the module docstring).

    Args:
        model: the calibration.

    Raises:
        UnsupportedCameraModel: ``model.supported`` is False.
    """

    def __init__(self, model: CameraModel) -> None:
        if not model.supported:
            raise UnsupportedCameraModel(f"distortion model {model.distortion_model!r} with D = {model.D.tolist()} "
                                         f"is not supported (supported: {', '.join(DISTORTION_MODELS)})",
                                         "distortion_model")
        self.model = model
        self._K_raw = model.intrinsics()
        self._P = model.projection()
        self._lock = threading.Lock()
        self._maps: Optional[tuple[tuple[int, int], np.ndarray, np.ndarray]] = None  # ((w, h), map1, map2)

    @property
    def is_identity(self) -> bool:
        """True when images need no remap (no distortion, R = I): :meth:`rectify` returns them untouched."""
        return not self.model.needs_remap

    @property
    def K_rect(self) -> np.ndarray:
        """(3, 3) float64 intrinsics of the images :meth:`rectify` returns, px: P's left 3x3 with binning and
        ROI applied, or (:attr:`is_identity`) the raw K with binning and ROI applied."""
        return (self._K_raw if self.is_identity else self._P[:, :3]).copy()

    def _D(self) -> np.ndarray:
        D = self.model.D
        if self.model.distortion_model == "equidistant":
            return D if D.size == 4 else np.zeros(4)
        return D if D.size else np.zeros(5)

    def maps(self, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The ``cv2.remap`` maps (``CV_16SC2`` + ``CV_16UC1`` fixed point) for images of ``size`` = (w, h) px,
        computed on the first call for that size and kept (one size)."""
        with self._lock:
            if self._maps is None or self._maps[0] != tuple(size):
                import cv2

                w, h = int(size[0]), int(size[1])
                if self.model.distortion_model == "equidistant":
                    m1, m2 = cv2.fisheye.initUndistortRectifyMap(self._K_raw, self._D(), self.model.R,
                                                                 self._P[:, :3], (w, h), cv2.CV_16SC2)
                else:
                    m1, m2 = cv2.initUndistortRectifyMap(self._K_raw, self._D(), self.model.R, self._P[:, :3],
                                                         (w, h), cv2.CV_16SC2)
                self._maps = ((w, h), m1, m2)
            return self._maps[1], self._maps[2]

    def rectify(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rectify one raw image.

        Args:
            image: (H, W) or (H, W, C) array (uint8 RGB for frames) of the size the calibration sends
                (``model.image_size``; any size when it is unknown).

        Returns:
            (rectified image of the same shape and dtype - ``image`` itself when :attr:`is_identity` -,
            :attr:`K_rect`).

        Raises:
            ValueError: the image size differs from ``model.image_size``.
        """
        h, w = image.shape[:2]
        want = self.model.image_size
        if want != (0, 0) and want != (w, h):
            raise ValueError(f"image {w}x{h} but the calibration sends {want[0]}x{want[1]} images")
        if self.is_identity:
            return image, self.K_rect
        import cv2

        m1, m2 = self.maps((w, h))
        out = cv2.remap(np.ascontiguousarray(image), m1, m2, interpolation=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out.reshape(image.shape), self.K_rect

    def rectify_points(self, uv: np.ndarray) -> np.ndarray:
        """Raw pixel positions -> rectified pixel positions (the inverse of the lens model, iterated to
        convergence: ``cv2.undistortPoints`` (OpenCV 4: ``undistortPointsIter``) / ``cv2.fisheye.undistortPoints``,
        100 iterations, eps 1e-12).

        Args:
            uv: (N, 2) float pixel coordinates in the raw images sent.

        Returns:
            (N, 2) float64 pixel coordinates in the rectified images (intrinsics :attr:`K_rect`).
        """
        import cv2

        pts = np.asarray(uv, dtype=np.float64).reshape(-1, 1, 2)
        if self.is_identity or len(pts) == 0:
            return pts.reshape(-1, 2).copy()
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        P = self._P[:, :3]
        if self.model.distortion_model == "equidistant":
            out = cv2.fisheye.undistortPoints(pts, self._K_raw, self._D(), R=self.model.R, P=P, criteria=crit)
        else:
            it = getattr(cv2, "undistortPointsIter", None)  # OpenCV 4; OpenCV 5 folded it into undistortPoints
            out = (it(pts, self._K_raw, self._D(), self.model.R, P, crit) if it is not None else
                   cv2.undistortPoints(pts, self._K_raw, self._D(), R=self.model.R, P=P, criteria=crit))
        return out.reshape(-1, 2).astype(np.float64)


class RectifierCache:
    """A few :class:`Rectifier` s by calibration (:meth:`CameraModel.signature`), least recently used dropped
    beyond ``maxsize``: a CameraInfo repeated at camera rate costs one dictionary look-up, its maps are
    computed once. Thread-safe.

    Args:
        maxsize: calibrations kept (>= 1).
    """

    def __init__(self, maxsize: int = 4) -> None:
        self.maxsize = max(int(maxsize), 1)
        self._d: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: CameraModel) -> Rectifier:
        """The Rectifier of ``model`` (made on first use). Raises :class:`UnsupportedCameraModel` as
        :class:`Rectifier` does."""
        key = model.signature()
        with self._lock:
            r = self._d.get(key)
            if r is not None:
                self._d.move_to_end(key)
                return r
        r = Rectifier(model)
        with self._lock:
            self._d[key] = r
            while len(self._d) > self.maxsize:
                self._d.popitem(last=False)
        return r

    def __len__(self) -> int:
        return len(self._d)
