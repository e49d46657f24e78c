"""Messages -> :class:`~selfi_ros.engine.types.Frame`: the one road from ``sensor_msgs`` image and
``CameraInfo`` messages to engine frames, used by the node (``selfi_node``) and by the offline tools
(:func:`selfi_ros.apps.reconstruct.frames_from_bag`), so that a bag gives the same frames online and offline.

:class:`FrameInput` is a plain class (no node, no clock of its own): it is fed image and CameraInfo
messages together with a clock value in seconds (the node: its steady receive time; a bag: the log time)
and returns :class:`InputEvent` s - accepted frames, rejections and drops with their reason. Rules:

* pairing: an image takes the CameraInfo whose stamp is nearest to its own within ``sync_threshold_ms``
  (approximate time synchronisation, as ``message_filters.ApproximateTimeSynchronizer`` with one slop;
  ROS 2 ``message_filters`` package, ``ApproximateTimeSynchronizer``), from the last 50 CameraInfos;
* wait: an image without a match waits; when a CameraInfo matching it arrives it is released (``synced``);
  images are released in stamp order: before an image goes, every older waiting image goes with its match
  or the latest CameraInfo, so that a lost CameraInfo never makes its image arrive after newer ones;
  after ``camera_info_wait_s`` it is released with the latest CameraInfo (``latest``, counted
  ``camera_info_unsynced``); when no CameraInfo at all arrived ``camera_info_timeout_s`` after the first
  image it is released with K unknown (``none``, counted ``no_camera_info``); more than
  ``max(2 * qos_depth, 4)`` waiting images: the oldest is dropped (``camera_info_wait_overflow``);
* validation (rejections, bad content): undecodable image or unsupported encoding (``bad_image``), a JPEG
  that decodes only with libjpeg warnings - truncated data, corrupt entropy-coded data, extraneous bytes
  (``corrupt_image``, :func:`jpeg_corruption`), invalid CameraInfo (``bad_camera_info``), image size
  differing from the size the CameraInfo sends - ``width x height``, or its ROI's size, divided by the
  binning - (``size_mismatch``), a CameraInfo whose distortion model cannot be rectified
  (``unsupported_camera_model``; only with ``rectify``), an image smaller than
  ``min_image_size_px`` on a side (``image_too_small``), a Frame that cannot be built (``bad_frame``);
* resolution change: an image whose size differs from the accepted frames' is rejected
  (``resolution_changed``) until ``resolution_change_frames`` consecutive images of that same new size
  arrived; the last of them starts a new map (a ``restart`` event ``resolution_change`` before it), so
  that a window never mixes sizes and a single odd frame never restarts the map;
* rectification (``rectify``, the default): each image is undistorted with its CameraInfo's K, D, R and
  P (``plumb_bob``, ``rational_polynomial``, ``equidistant``; :class:`selfi_ros.data.camera_model.Rectifier`,
  maps computed once per distinct CameraInfo) and ``Frame.K`` is the rectified image's intrinsics, P's 3x3
  with binning and ROI applied (ROS ``image_geometry.PinholeCameraModel``); a CameraInfo without distortion
  and with ``R = I`` costs nothing (the image is used as it is, with K). ``rectify=False``: the images are
  already rectified (``image_proc``'s ``image_rect`` next to the raw CameraInfo) and ``Frame.K`` is P's 3x3;
* order: a stamp more than ``time_jump_threshold_s`` before the last accepted one is a time jump (a bag
  replayed or looped, a simulated clock restarted, a driver restart, an NTP step): the stamp order is
  forgotten and a ``restart`` event ``time_jump`` precedes the frame (the node starts a new map, as
  ``~/reset`` does; cf. tf2's ``TransformListener``, which clears its buffer when time jumps back,
  ROS 2 ``tf2_ros`` package, ``transform_listener.cpp``); a smaller disorder - a late frame - is a drop
  (``stamp_repeated`` / ``stamp_out_of_order``).

:mod:`selfi_ros.ros.frame_queue` holds the node's bounded frame queue between the callbacks and the engine
worker and marks in it where a new map begins.
"""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from selfi_ros.data.camera_model import Rectifier, RectifierCache, UnsupportedCameraModel
from selfi_ros.engine.types import Frame
from selfi_ros.ros import conversions as cv

#: CameraInfo messages kept for pairing
CAMERA_INFO_HISTORY = 50


@dataclass
class InputConfig:
    """Pairing, wait, validation and order rules (the node's parameters of the same names; units in comments)."""

    sync_threshold_ms: float = 5.0  # max |image stamp - CameraInfo stamp| for a match (ms)
    camera_info_wait_s: float = 0.5  # wait this long for a matching CameraInfo, then take the latest (s)
    camera_info_timeout_s: float = 5.0  # no CameraInfo at all this long after the first image: K unknown (s)
    qos_depth: int = 10  # images waiting for a CameraInfo are bounded by max(2 * qos_depth, 4)
    camera_frame: str = ""  # frame_id of the frames; empty = the image header frame_id (or "camera")
    use_camera_info: bool = True  # False: no pairing, every image released at once with ``fixed_K``
    fixed_K: Optional[np.ndarray] = None  # (3, 3) intrinsics for ``use_camera_info=False`` (None: unknown)
    time_jump_threshold_s: float = 1.0  # a stamp this far before the last accepted one is a time jump (s)
    min_image_size_px: int = 1  # smaller width or height: rejected, image_too_small (px; the node: 32)
    resolution_change_frames: int = 5  # consecutive images of a new size that start a new map at that size
    rectify: bool = True  # undistort with the CameraInfo (D, R, P); False: images already rectified, K = P's 3x3

    @classmethod
    def from_node_config(cls, cfg: Any) -> "InputConfig":
        """The rules of a :class:`selfi_ros.ros.params.NodeConfig` (its fields of the same names)."""
        return cls(sync_threshold_ms=cfg.sync_threshold_ms, camera_info_wait_s=cfg.camera_info_wait_s,
                   camera_info_timeout_s=cfg.camera_info_timeout_s, qos_depth=cfg.qos_depth,
                   camera_frame=cfg.camera_frame, time_jump_threshold_s=cfg.time_jump_threshold_s,
                   min_image_size_px=cfg.min_image_size_px, resolution_change_frames=cfg.resolution_change_frames,
                   rectify=cfg.rectify)


@dataclass
class InputEvent:
    """One outcome of feeding :class:`FrameInput`.

    Attributes:
        kind: ``frame`` (accepted: ``frame`` set), ``rejected`` (bad content), ``dropped`` (order or
            overflow), ``note`` (counted, the frame goes on: ``no_camera_info``, ``camera_info_unsynced``),
            ``restart`` (counted: the frame of the next ``frame`` event starts a new map, reason
            ``time_jump`` or ``resolution_change``) or ``warning`` (logged only: ``bad_camera_info_msg``).
        reason: the counter name (for ``frame``: how it was paired, ``synced`` | ``latest`` | ``none``).
        detail: text for the log.
        frame: the accepted frame (``kind == "frame"``).
        recv_s: the clock value when its image arrived (s; latency of the node's outputs).
    """

    kind: str
    reason: str
    detail: str = ""
    frame: Optional[Frame] = None
    recv_s: float = float("nan")


@dataclass
class _Pending:
    """An image converted on arrival, waiting for a matching CameraInfo."""

    stamp_ns: int
    rgb: np.ndarray
    frame_id: str
    recv_s: float
    index: int


@dataclass
class _Info:
    stamp_ns: int
    model: Optional[cv.CameraModel]
    error: str  # why the message is invalid (model None)
    rectifier: Optional[Rectifier] = None  # (rectify) None with model set: unsupported, ``unsupported`` says why
    unsupported: str = ""


class FrameInput:
    """Image + CameraInfo messages -> validated frames (see the module docstring for the rules).

    Thread-safe (one lock): the node feeds it from its callbacks while its worker may call :meth:`reset`.

    Args:
        config: the rules (:class:`InputConfig`).
    """

    def __init__(self, config: Optional[InputConfig] = None) -> None:
        self.config = config if config is not None else InputConfig()
        self._lock = threading.RLock()
        self._pending: collections.deque = collections.deque()
        self._infos: collections.deque = collections.deque(maxlen=CAMERA_INFO_HISTORY)
        self._first_image_s: Optional[float] = None
        self._last_accepted: Optional[int] = None
        self._size: Optional[tuple[int, int]] = None  # (width, height) of the accepted frames (px)
        self._new_size: Optional[tuple[int, int]] = None  # a different size seen in a row ...
        self._new_size_count = 0  # ... this many times
        self.images_in = 0  # image messages fed (the index of the next frame)
        self.camera_frame = self.config.camera_frame  # frame_id of the frames (first image's when unset)
        self._rectifiers = RectifierCache(maxsize=4)  # maps per distinct CameraInfo

    # ------------------------------------------------------------------------------------ feeding
    def add_image(self, msg, now_s: float) -> list[InputEvent]:
        """Feed a ``sensor_msgs/Image`` or ``CompressedImage`` that arrived at ``now_s`` (s)."""
        with self._lock:
            index = self.images_in
            self.images_in += 1
            if self._first_image_s is None:
                self._first_image_s = now_s
            try:
                rgb = cv.compressed_to_rgb8(msg) if hasattr(msg, "format") else cv.image_to_rgb8(msg)
            except cv.ConversionError as e:
                return [InputEvent("rejected", "bad_image", str(e))]
            if hasattr(msg, "format"):
                bad = jpeg_corruption(cv.bytes_view(msg.data))
                if bad:
                    return [InputEvent("rejected", "corrupt_image", f"corrupt JPEG: {bad}")]
            frame_id = self.config.camera_frame or msg.header.frame_id or "camera"
            if not self.camera_frame:
                self.camera_frame = frame_id
            p = _Pending(cv.stamp_to_ns(msg.header.stamp), rgb, frame_id, now_s, index)
            if not self.config.use_camera_info:
                return self._release(p, None, "fixed")
            out = self.flush(now_s)
            info = self._match(p.stamp_ns)
            if info is not None:
                return out + self._release_older(p.stamp_ns) + self._release(p, info, "synced")
            self._pending.append(p)
            while len(self._pending) > max(2 * self.config.qos_depth, 4):
                old = self._pending.popleft()
                out.append(InputEvent("dropped", "camera_info_wait_overflow",
                                      f"image {old.stamp_ns} waited too long for CameraInfo"))
            return out

    def add_camera_info(self, msg, now_s: float) -> list[InputEvent]:
        """Feed a ``sensor_msgs/CameraInfo`` that arrived at ``now_s`` (s): waiting images it matches go."""
        with self._lock:
            out = self.flush(now_s)
            stamp = cv.stamp_to_ns(msg.header.stamp)
            try:
                info = _Info(stamp, cv.camera_info_to_model(msg), "")
            except cv.ConversionError as e:
                info = _Info(stamp, None, str(e))
                out.append(InputEvent("warning", "bad_camera_info_msg", f"bad CameraInfo: {e}"))
            if info.model is not None and self.config.rectify:
                try:
                    info.rectifier = self._rectifiers.get(info.model)
                except UnsupportedCameraModel as e:
                    info.unsupported = f"CameraInfo {e}: set rectify:=false if the images are already rectified"
            self._infos.append(info)
            matched = [p.stamp_ns for p in self._pending if self._match(p.stamp_ns) is not None]
            if matched:  # in stamp order: images older than a matched one go first (synced or the latest)
                out.extend(self._release_older(max(matched) + 1))
            return out

    def flush(self, now_s: float) -> list[InputEvent]:
        """Release images that waited ``camera_info_wait_s`` (latest CameraInfo), or with K unknown once
        ``camera_info_timeout_s`` passed since the first image without any CameraInfo (the node's timer)."""
        out: list[InputEvent] = []
        with self._lock:
            c = self.config
            while self._pending and now_s - self._pending[0].recv_s >= c.camera_info_wait_s:
                if self._infos:
                    out.extend(self._release(self._pending.popleft(), self._infos[-1], "latest"))
                elif self._first_image_s is not None and now_s - self._first_image_s >= c.camera_info_timeout_s:
                    out.extend(self._release(self._pending.popleft(), None, "none"))
                else:
                    break
        return out

    def finish(self) -> list[InputEvent]:
        """End of a finite stream (a bag): release every waiting image as if all wait times had passed."""
        return self.flush(float("inf"))

    def reset(self) -> None:
        """Forget the stamp order and the image size (``~/reset``): the next frame may have any stamp and size."""
        with self._lock:
            self._last_accepted = None
            self._size, self._new_size, self._new_size_count = None, None, 0

    def _release_older(self, stamp_ns: int) -> list[InputEvent]:
        """Release every waiting image stamped before ``stamp_ns``, in stamp order, each with its matching
        CameraInfo (``synced``) or else the latest one (``latest``): an image about to be released must not
        overtake older waiting ones, which would then be out of order (and, far enough back, a time jump)."""
        out: list[InputEvent] = []
        older = sorted((p for p in self._pending if p.stamp_ns < stamp_ns), key=lambda p: p.stamp_ns)
        if not older:
            return out
        self._pending = collections.deque(p for p in self._pending if p.stamp_ns >= stamp_ns)
        for p in older:
            m = self._match(p.stamp_ns)
            if m is not None:
                out.extend(self._release(p, m, "synced"))
            elif self._infos:
                out.extend(self._release(p, self._infos[-1], "latest"))
            else:
                out.append(InputEvent("dropped", "camera_info_wait_overflow",
                                      f"image {p.stamp_ns} had no CameraInfo when a newer image was released"))
        return out

    @property
    def waiting(self) -> int:
        """Images waiting for a CameraInfo."""
        return len(self._pending)

    # ----------------------------------------------------------------------------------- helpers
    def _match(self, stamp_ns: int) -> Optional[_Info]:
        best, best_dt = None, None
        thr = self.config.sync_threshold_ms * 1e6
        for info in self._infos:
            dt = abs(info.stamp_ns - stamp_ns)
            if dt <= thr and (best_dt is None or dt < best_dt):
                best, best_dt = info, dt
        return best

    def _release(self, p: _Pending, info: Optional[_Info], how: str) -> list[InputEvent]:
        """Validate an image against its CameraInfo and the stamp order."""
        out: list[InputEvent] = []
        h, w = p.rgb.shape[:2]
        K = self.config.fixed_K if how == "fixed" else None
        if how == "none":
            out.append(InputEvent("note", "no_camera_info", f"no CameraInfo after {self.config.camera_info_timeout_s}"
                                  " s: running with unknown intrinsics"))
        elif info is not None and info.model is None:
            return out + [InputEvent("rejected", "bad_camera_info", info.error)]
        elif info is not None:
            m = info.model
            want = m.image_size
            if want != (0, 0) and want != (w, h):
                how_sized = "" if want == (m.width, m.height) else f" ({m.width}x{m.height}, ROI and binning applied)"
                return out + [InputEvent("rejected", "size_mismatch",
                                         f"image {w}x{h} but CameraInfo {want[0]}x{want[1]}{how_sized}")]
            if self.config.rectify and info.rectifier is None:
                return out + [InputEvent("rejected", "unsupported_camera_model", info.unsupported)]
            rectifier = info.rectifier
            K = rectifier.K_rect if rectifier is not None else m.projection()[:, :3]
            if how == "latest":
                out.append(InputEvent("note", "camera_info_unsynced", f"image {p.stamp_ns} took the latest CameraInfo"))
        if min(h, w) < self.config.min_image_size_px:
            return out + [InputEvent("rejected", "image_too_small",
                                     f"image {w}x{h} smaller than min_image_size_px={self.config.min_image_size_px}")]
        restarts: list[InputEvent] = []
        size = (w, h)
        if self._size is not None and size != self._size:
            n = self._new_size_count + 1 if size == self._new_size else 1
            need = max(int(self.config.resolution_change_frames), 1)
            if n < need:
                self._new_size, self._new_size_count = size, n
                return out + [InputEvent("rejected", "resolution_changed", f"image {w}x{h} but the map's frames are "
                                         f"{self._size[0]}x{self._size[1]} ({n} of {need} in a row start a new map)")]
            restarts.append(InputEvent("restart", "resolution_change", f"image size {self._size[0]}x{self._size[1]} "
                                       f"-> {w}x{h} for {need} images in a row: new map"))
        last = self._last_accepted
        if last is not None and p.stamp_ns <= last:
            back_s = (last - p.stamp_ns) * 1e-9
            if back_s > self.config.time_jump_threshold_s:
                restarts.append(InputEvent("restart", "time_jump", f"stamps jumped back {back_s:.3f} s "
                                           f"({last} ns -> {p.stamp_ns} ns): new map"))
            else:
                reason = "stamp_repeated" if p.stamp_ns == last else "stamp_out_of_order"
                return out + [InputEvent("dropped", reason, f"stamp {p.stamp_ns} ns after {last} ns")]
        try:
            rgb = p.rgb
            if info is not None and info.rectifier is not None and how != "none":
                rgb, K = info.rectifier.rectify(rgb)
            frame = Frame(stamp_ns=p.stamp_ns, image=rgb, K=K, frame_id=p.frame_id, index=p.index)
        except ValueError as e:
            return out + [InputEvent("rejected", "bad_frame", str(e))]
        self._last_accepted = p.stamp_ns
        self._size, self._new_size, self._new_size_count = size, None, 0
        return out + restarts + [InputEvent("frame", how, frame=frame, recv_s=p.recv_s)]


def jpeg_corruption(data) -> str:
    """Why a JPEG decodes only with libjpeg warnings: ``""`` for a clean JPEG or data that is not a JPEG.

    OpenCV's ``imdecode`` returns an image for a truncated or corrupt JPEG (libjpeg fills the missing MCUs
    and prints "Corrupt JPEG data: ..." / "Premature end of JPEG file" to stderr), so the data are decoded
    a second time with libjpeg-turbo in strict mode, where every such warning is an error (``simplejpeg``
    package, ``decode_jpeg(strict=True)``; measured in ``test/test_ros_input.py``: a truncated JPEG,
    corrupted entropy-coded bytes and an end-of-image marker in the middle of the scan all fail). Without
    ``simplejpeg`` Pillow's decoder is the fallback (``Image.load`` with ``LOAD_TRUNCATED_IMAGES`` off):
    it sees truncation only.

    Args:
        data: the compressed bytes (bytes or a uint8 array); JPEG when they start with the SOI marker FF D8.

    Returns:
        libjpeg's message, or ``""``.
    """
    buf = bytes(data)
    if buf[:2] != b"\xff\xd8":
        return ""
    try:
        import simplejpeg
    except ImportError:
        simplejpeg = None
    if simplejpeg is not None:
        try:
            simplejpeg.decode_jpeg(buf, colorspace="GRAY", strict=True)
        except ValueError as e:
            msg = str(e)
            if "Corrupt" in msg or "Premature" in msg or "premature" in msg or "extraneous" in msg:
                return msg
            return ""  # a JPEG libjpeg-turbo cannot convert (e.g. CMYK) but OpenCV decoded: not corruption
        return ""
    import io

    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(io.BytesIO(buf)) as im:
            im.load()
    except (OSError, SyntaxError, ValueError) as e:
        return str(e)
    return ""
