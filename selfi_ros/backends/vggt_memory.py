"""Window memories of the VGGT / SAIL-Recon backend: what is kept of one reconstructed window so that frames
can be localized against it later (relocalization, loop closure, map save / load), and the global image
descriptor used to retrieve it.

The scene representation is SAIL-Recon's (Deng et al., arXiv 2508.17972, Sec. 3; official repository
HKUST-SAIL/sail-recon, ``sailrecon/models/sail_recon.py``): the anchors' cached per-layer keys / values and
last-layer camera tokens (:class:`~selfi_ros.model.scene_memory.SceneMemory`); a query pass against them
(:func:`~selfi_ros.model.scene_memory.query_pass`) localizes any later image in that window's frame. A
:class:`VGGTWindowMemory` adds the anchors' global descriptors, poses, intrinsics and subsampled point maps
(window frame) and, with a Selfi adapter, the anchors' aligned-feature store of the pose check
(:class:`~selfi_ros.backends.vggt_alignment.AnchorFeatureStore`), so a pose against an old window can be
verified by PnP (inliers) as one against the current window is.

Global descriptor (:func:`gem_descriptor`): generalized-mean (GeM) pooling (Radenovic, Tolias, Chum,
"Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI 2019, Sec. 3.1) with p = 3 of the
backbone's own DINOv2 patch tokens (the final-normed ``x_norm_patchtokens`` of the aggregator's
``patch_embed``, VGGT Sec. 3.2; DINOv2 patch features for place recognition: AnyLoc, Keetha et al., RA-L
2023). GeM needs non-negative activations and LayerNormed tokens are signed, so the positive and the negative
parts are pooled separately and concatenated (D = 2C), then L2-normalised. These tokens depend on the image
alone (not on the other frames of a pass), so an anchor's descriptor taken from the anchor pass
(:class:`DescriptorTap`, a forward hook: no second forward) equals :func:`describe_images` of the same image
up to floating-point rounding.

On disk (:meth:`VGGTWindowMemory.save`, :func:`load_window_memory`): ``scene_memory.safetensors`` (the
SceneMemory, :func:`~selfi_ros.backends.memory_store.save_scene_memory`), ``anchors.safetensors``
(descriptors, stamps, frame indices, poses, intrinsics, subsampled points, the feature store) and
``memory.json`` (format, backend, window id, map signature, sizes of both files), written last.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from selfi_ros.atomic import atomic_write_text, save_safetensors
from selfi_ros.backends.memory_store import load_scene_memory, save_scene_memory
from selfi_ros.backends.vggt_alignment import AnchorFeatureStore, unproject_depth
from selfi_ros.engine.backend import BackendError
from selfi_ros.model.scene_memory import SceneMemory
from selfi_ros.model.vggt import autocast_context

#: format tag of ``memory.json``
FORMAT = "selfi_ros.vggt_window_memory/1"
#: GeM exponent (Radenovic et al. use p = 3 as their fixed-p setting)
GEM_P = 3.0
#: kind of global descriptor, part of the map signature
DESCRIPTOR_KIND = "dinov2-patch-gem3-posneg"
#: stride of the stored anchor point maps (network pixels): sample j of a row is pixel STRIDE*j + STRIDE//2
POINT_STRIDE = 4
SCENE_FILE = "scene_memory.safetensors"
ANCHORS_FILE = "anchors.safetensors"
META_FILE = "memory.json"


# ------------------------------------------------------------------------------------------ descriptors
def gem_descriptor(tokens: torch.Tensor, p: float = GEM_P, eps: float = 1e-6) -> torch.Tensor:
    """Global descriptors from patch tokens: signed GeM pooling (see the module docstring).

    Args:
        tokens: (N, P, C) patch tokens of N images (any float dtype).
        p: GeM exponent (1 = average pooling, large = max pooling).
    Returns:
        (N, 2C) float32, rows L2-normalised: [GeM_p(max(x, 0)), GeM_p(max(-x, 0))] over the P tokens.
    """
    x = tokens.float()
    parts = [t.clamp(min=eps).pow(p).mean(dim=1).pow(1.0 / p) for t in (x, -x)]
    return torch.nn.functional.normalize(torch.cat(parts, dim=-1), dim=-1)


class DescriptorTap:
    """Context manager collecting :func:`gem_descriptor` of every ``aggregator.patch_embed`` output computed
    in the entering thread (a forward hook; other threads, e.g. online adapter training, are ignored).

    After the block, :meth:`result` gives the (N, 2C) float32 numpy descriptors of all images seen, in order.
    """

    def __init__(self, model):
        self._module = model.aggregator.patch_embed
        self._parts: List[torch.Tensor] = []
        self._thread = None
        self._handle = None

    def _hook(self, module, inputs, output):
        if threading.get_ident() == self._thread:
            self._parts.append(gem_descriptor(output).cpu())

    def __enter__(self) -> "DescriptorTap":
        self._thread = threading.get_ident()
        self._handle = self._module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def result(self) -> Optional[np.ndarray]:
        """(N, 2C) float32 descriptors, or None when no patch embedding ran."""
        if not self._parts:
            return None
        return torch.cat(self._parts).numpy().astype(np.float32, copy=False)


def describe_images(model, images: torch.Tensor, autocast_dtype: Optional[torch.dtype],
                    batch_size: int = 8) -> np.ndarray:
    """Descriptors of images (n, 3, H, W) RGB in [0, 1], ``batch_size`` at a time: only the DINOv2 patch
    embedding runs (one frame per batch element, as in the query pass). Returns (n, 2C) float32, rows unit
    norm. Raises torch.cuda.OutOfMemoryError."""
    device = next(model.parameters()).device
    with DescriptorTap(model) as tap, torch.inference_mode(), autocast_context(autocast_dtype):
        for b0 in range(0, images.shape[0], max(1, int(batch_size))):
            model.aggregator.embed(images[b0:b0 + batch_size].to(device).unsqueeze(1), "other")
    return tap.result()


# ------------------------------------------------------------------------------------------ signature
_SHA_CACHE: Dict[Tuple[str, int, int], str] = {}
_SHA_LOCK = threading.Lock()


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, cached per (real path, size, mtime) for the process (a 5 GB checkpoint takes a
    few seconds once). Raises OSError."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, int(st.st_size), int(st.st_mtime_ns))
    with _SHA_LOCK:
        if key in _SHA_CACHE:
            return _SHA_CACHE[key]
    h = hashlib.sha256()
    with open(real, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    with _SHA_LOCK:
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


class BackgroundSha256:
    """:func:`sha256_file` of ``path`` computed in a daemon thread started at construction; :meth:`result`
    waits for it and gives the hex digest, or "unreadable (<error>)" when the file could not be read."""

    def __init__(self, path: str):
        self.path = str(path)
        self._value = ""
        self._thread = threading.Thread(target=self._run, name="vggt-checkpoint-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = sha256_file(self.path)
        except OSError as e:
            self._value = f"unreadable ({e})"

    def result(self) -> str:
        self._thread.join()
        return self._value


def adapter_fingerprint(adapter) -> str:
    """Hex sha256 (first 16 digits) of an adapter's parameters (names, shapes, dtypes, bytes): memories keep
    it, so their stored aligned features are compared only with features of the same adapter."""
    if adapter is None:
        return ""
    h = hashlib.sha256()
    for name, t in sorted(adapter.state_dict().items()):
        a = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(a.shape)}:{a.dtype};".encode())
        h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h.hexdigest()[:16]


def model_signature(model, checkpoint_sha256: str, has_adapter: bool, image_width: int,
                    preprocess_mode: str) -> Dict[str, str]:
    """The vggt map signature (every value a str; compared key by key when a map or memory is loaded):
    backend, network shape (embed dim, depth, heads, patch size, training image size, SAIL reloc blocks),
    ``checkpoint_sha256`` ("random" for random weights), adapter presence, descriptor kind and the network
    input (width, preprocessing mode) the anchor tokens were computed at."""
    c = model.cfg
    return {"backend": "vggt", "model_embed_dim": str(c.embed_dim), "model_depth": str(c.depth),
            "model_num_heads": str(c.num_heads), "model_patch_size": str(c.patch_size),
            "model_img_size": str(c.img_size), "model_sail_reloc": str(bool(c.sail_reloc)).lower(),
            "checkpoint_sha256": checkpoint_sha256, "adapter": "present" if has_adapter else "none",
            "descriptor": DESCRIPTOR_KIND, "image_width": str(int(image_width)),
            "preprocess_mode": str(preprocess_mode)}


# ------------------------------------------------------------------------------------------ the memory
def subsample_points(points: Optional[np.ndarray], conf: Optional[np.ndarray], depth: Optional[np.ndarray],
                     K: np.ndarray, extrinsics: np.ndarray, stride: int = POINT_STRIDE
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Anchor point maps on a grid of step ``stride`` (pixel ``stride*j + stride//2``; no averaging across
    depth edges).

    Args:
        points: (S, H, W, 3) window-frame point map or None (then ``depth`` is unprojected with ``K`` (S, 3, 3)
            network pixels and ``extrinsics`` (S, 3, 4) camera-from-window); conf: (S, H, W) or None; depth:
            (S, H, W) or None.
    Returns:
        ((S, h, w, 3) float32 points, 0 where invalid; (S, h, w) float32 confidence, 0 where invalid).
    """
    o = stride // 2
    if points is None:
        if depth is None:
            S = len(extrinsics)
            return np.zeros((S, 0, 0, 3), np.float32), np.zeros((S, 0, 0), np.float32)
        points = unproject_depth(np.asarray(depth, np.float32), np.asarray(K, np.float64),
                                 np.asarray(extrinsics, np.float64))
    p = np.array(points[:, o::stride, o::stride], np.float32)
    c = (np.array(conf[:, o::stride, o::stride], np.float32) if conf is not None
         else np.ones(p.shape[:3], np.float32))
    bad = ~np.isfinite(p).all(-1) | ~np.isfinite(c)
    p[bad] = 0.0
    c[bad] = 0.0
    return p, c


def window_memory(window_id: int, scene: SceneMemory, descriptors: np.ndarray, anchors, extrinsics, K_net,
                  image_size_hw, points, points_conf, depth, depth_conf, anchor_store=None,
                  adapter_fp: str = "") -> "VGGTWindowMemory":
    """The (live, not copied) :class:`VGGTWindowMemory` of a window just reconstructed: ``anchors`` its frames,
    extrinsics (S, 3, 4) camera-from-window, K_net (S, 3, 3) network pixels, the full-grid point map (S, H, W, 3)
    with its confidence, or None (then depth (S, H, W) with its confidence is unprojected), the pose check's
    anchor store (or None) and its adapter's fingerprint."""
    pts, conf = subsample_points(points, points_conf if points is not None else depth_conf, depth, K_net,
                                 extrinsics)
    return VGGTWindowMemory(int(window_id), scene, np.asarray(descriptors, np.float32),
                            np.array([f.stamp_ns for f in anchors], np.int64),
                            np.array([f.index for f in anchors], np.int64),
                            np.array(extrinsics, np.float64), np.array(K_net, np.float64),
                            tuple(int(v) for v in image_size_hw), pts, conf, anchor_store=anchor_store,
                            adapter_fingerprint=adapter_fp, random_weights=bool(scene.random_weights))


def clone_scene_memory(m: SceneMemory, device="cpu") -> SceneMemory:
    """A copy of ``m`` on ``device`` sharing no storage with it (layers that shared one positions tensor
    still share one copy)."""
    memo: Dict[int, torch.Tensor] = {}

    def cp(t):
        if id(t) not in memo:
            memo[id(t)] = t.detach().to(device=device, copy=True)
        return memo[id(t)]

    return SceneMemory([cp(k) for k in m.keys], [cp(v) for v in m.values], [cp(p) for p in m.positions],
                       cp(m.anchor_camera_tokens), m.num_anchors, m.tokens_per_anchor, m.num_patch_tokens,
                       tuple(m.image_size_hw), m.kv_source, m.query_special, m.random_weights)


@dataclass
class VGGTWindowMemory:
    """One window of the vggt backend, as the engine's window database keeps it (implements
    :class:`~selfi_ros.engine.backend.WindowMemory`). Geometry in the window frame (first anchor's camera,
    OpenCV axes, VGGT-normalised scale).

    Attributes:
        window_id: the window it was exported from; backend: "vggt".
        scene: the anchors' :class:`SceneMemory` (SAIL-Recon K/V cache; CPU unless exported elsewhere).
        descriptors: (S, D) float32 unit-norm global descriptors of the anchors (:func:`gem_descriptor`).
        stamps_ns, frame_indices: (S,) int64 of the anchors.
        extrinsics: (S, 3, 4) float64 camera-from-window; intrinsics: (S, 3, 3) float64 in network pixels of
            the full ``image_size_hw`` grid.
        image_size_hw: (H, W) network input of the anchors.
        points: (S, h, w, 3) float32 window-frame points at network pixels ``point_stride*j + point_stride//2``
            (0 where invalid); points_conf: (S, h, w) float32 (0 = invalid or padding).
        point_stride: the grid step (px).
        signature: the producing backend's :meth:`map_signature`.
        anchor_store: the Selfi pose check's anchor features (with an adapter), else None;
        adapter_fingerprint: :func:`adapter_fingerprint` of the adapter that computed them ("" without).
        random_weights: made by a random-weight model (plumbing only).
    """

    window_id: int
    scene: SceneMemory
    descriptors: np.ndarray
    stamps_ns: np.ndarray
    frame_indices: np.ndarray
    extrinsics: np.ndarray
    intrinsics: np.ndarray
    image_size_hw: Tuple[int, int]
    points: np.ndarray
    points_conf: np.ndarray
    point_stride: int = POINT_STRIDE
    signature: Mapping[str, str] = dataclasses.field(default_factory=dict)
    anchor_store: Optional[AnchorFeatureStore] = None
    adapter_fingerprint: str = ""
    random_weights: bool = False
    backend: str = "vggt"

    @property
    def num_anchors(self) -> int:
        return int(len(self.stamps_ns))

    def nbytes(self) -> int:
        """Bytes held in RAM: the scene memory, the arrays and the feature store."""
        arrays = (self.descriptors, self.stamps_ns, self.frame_indices, self.extrinsics, self.intrinsics,
                  self.points, self.points_conf)
        extra = self.anchor_store.nbytes if self.anchor_store is not None else 0
        return int(self.scene.nbytes + sum(a.nbytes for a in arrays) + extra)

    def detached(self, device="cpu") -> "VGGTWindowMemory":
        """A deep copy (scene memory on ``device``; arrays and feature store copied)."""
        st = self.anchor_store
        if st is not None:
            st = AnchorFeatureStore(st.features.detach().cpu().clone(), st.points.copy(), st.valid.copy(),
                                    st.centres.copy(), float(st.scene_scale), int(st.downsample))
        return dataclasses.replace(
            self, scene=clone_scene_memory(self.scene, device), descriptors=self.descriptors.copy(),
            stamps_ns=self.stamps_ns.copy(), frame_indices=self.frame_indices.copy(),
            extrinsics=self.extrinsics.copy(), intrinsics=self.intrinsics.copy(), points=self.points.copy(),
            points_conf=self.points_conf.copy(), signature=dict(self.signature), anchor_store=st)

    def save(self, directory: str) -> None:
        """Write the three files into ``directory`` (created if missing); ``memory.json`` last. The caller
        makes the folder write atomic. Raises OSError on I/O failure."""
        os.makedirs(directory, exist_ok=True)
        save_scene_memory(self.scene, os.path.join(directory, SCENE_FILE), {"window_id": int(self.window_id)})
        t = {"descriptors": torch.from_numpy(np.ascontiguousarray(self.descriptors, np.float32)),
             "stamps_ns": torch.from_numpy(np.ascontiguousarray(self.stamps_ns, np.int64)),
             "frame_indices": torch.from_numpy(np.ascontiguousarray(self.frame_indices, np.int64)),
             "extrinsics": torch.from_numpy(np.ascontiguousarray(self.extrinsics, np.float64)),
             "intrinsics": torch.from_numpy(np.ascontiguousarray(self.intrinsics, np.float64)),
             "points": torch.from_numpy(np.ascontiguousarray(self.points, np.float32)),
             "points_conf": torch.from_numpy(np.ascontiguousarray(self.points_conf, np.float32))}
        st = self.anchor_store
        if st is not None:
            t.update({"align.features": st.features.detach().cpu().contiguous(),
                      "align.points": torch.from_numpy(np.ascontiguousarray(st.points, np.float32)),
                      "align.valid": torch.from_numpy(np.ascontiguousarray(st.valid, bool)),
                      "align.centres": torch.from_numpy(np.ascontiguousarray(st.centres, np.float64))})
        save_safetensors(os.path.join(directory, ANCHORS_FILE), t)
        meta = {"format": FORMAT, "backend": self.backend, "window_id": int(self.window_id),
                "signature": dict(self.signature), "image_size_hw": [int(v) for v in self.image_size_hw],
                "point_stride": int(self.point_stride), "num_anchors": self.num_anchors,
                "random_weights": bool(self.random_weights), "adapter_fingerprint": self.adapter_fingerprint,
                "align": (None if st is None else {"scene_scale": float(st.scene_scale),
                                                   "downsample": int(st.downsample)}),
                "files": {n: os.path.getsize(os.path.join(directory, n)) for n in (SCENE_FILE, ANCHORS_FILE)}}
        atomic_write_text(os.path.join(directory, META_FILE), json.dumps(meta, indent=1))


def signature_differences(theirs: Mapping[str, str], ours: Mapping[str, str]) -> List[str]:
    """``key: 'a' in the memory, 'b' here`` for every key whose values differ (a missing key is ``None``)."""
    return [f"{k}: {theirs.get(k)!r} in the memory, {ours.get(k)!r} here"
            for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]


def _fail(directory: str, what: str) -> BackendError:
    return BackendError(f"vggt window memory {directory}: {what}")


def load_window_memory(directory: str, signature: Mapping[str, str], model_cfg,
                       device: Optional[str] = None) -> VGGTWindowMemory:
    """Read a folder written by :meth:`VGGTWindowMemory.save`.

    Args:
        signature: the loading backend's map signature: the memory's must equal it key by key.
        model_cfg: the loading model's :class:`~selfi_ros.model.config.VGGTConfig` (tensor shapes are checked
            against it). device: where the scene memory goes (default CPU).
    Raises:
        BackendError: one line naming the folder or file and the problem: missing folder or file, unreadable
            or truncated file, another format or backend, another model / checkpoint / adapter / input size
            (the differing signature keys), inconsistent shapes.
    """
    if not os.path.isdir(directory):
        raise _fail(directory, "no such folder")
    meta_path = os.path.join(directory, META_FILE)
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise _fail(directory, f"{META_FILE} is missing (not a window memory, or its write was cut short)")
    except (OSError, ValueError) as e:
        raise _fail(directory, f"{META_FILE} is unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(directory, f"{META_FILE} is not of format {FORMAT!r} "
                               f"(got {meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r})")
    if meta.get("backend") != "vggt":
        raise _fail(directory, f"made by backend {meta.get('backend')!r}, not 'vggt'")
    diff = signature_differences(meta.get("signature") or {}, signature)
    if diff:
        raise _fail(directory, "made by another model or configuration, refused (" + "; ".join(diff) + ")")
    sizes = meta.get("files") or {}
    for name in (SCENE_FILE, ANCHORS_FILE):
        p = os.path.join(directory, name)
        if not os.path.isfile(p):
            raise _fail(directory, f"{name} is missing")
        if name in sizes and os.path.getsize(p) != int(sizes[name]):
            raise _fail(directory, f"{name} has {os.path.getsize(p)} bytes, {META_FILE} says {sizes[name]} "
                                   "(truncated or replaced)")
    try:
        scene, _ = load_scene_memory(os.path.join(directory, SCENE_FILE), device or "cpu")
    except Exception as e:  # SafetensorError, ValueError, KeyError, OSError: a corrupt file
        raise _fail(directory, f"{SCENE_FILE} is unreadable ({type(e).__name__}: {e})") from e
    try:
        from safetensors.torch import load_file

        t = load_file(os.path.join(directory, ANCHORS_FILE), device="cpu")
        arr = {k: t[k].numpy() for k in ("descriptors", "stamps_ns", "frame_indices", "extrinsics",
                                         "intrinsics", "points", "points_conf")}
    except Exception as e:
        raise _fail(directory, f"{ANCHORS_FILE} is unreadable ({type(e).__name__}: {e})") from e
    _check_shapes(directory, scene, arr, model_cfg)
    store = None
    align = meta.get("align")
    if align is not None:
        try:
            store = AnchorFeatureStore(t["align.features"], t["align.points"].numpy(), t["align.valid"].numpy(),
                                       t["align.centres"].numpy(), float(align["scene_scale"]),
                                       int(align["downsample"]))
        except (KeyError, TypeError, ValueError) as e:
            raise _fail(directory, f"{ANCHORS_FILE} lacks the aligned-feature store ({e})") from e
    try:
        hw = tuple(int(v) for v in meta["image_size_hw"])
        return VGGTWindowMemory(int(meta["window_id"]), scene, arr["descriptors"], arr["stamps_ns"],
                                arr["frame_indices"], arr["extrinsics"], arr["intrinsics"], (hw[0], hw[1]),
                                arr["points"], arr["points_conf"], int(meta["point_stride"]),
                                dict(meta["signature"]), store, str(meta.get("adapter_fingerprint", "")),
                                bool(meta.get("random_weights", False)))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise _fail(directory, f"{META_FILE} lacks a field or has a bad value ({type(e).__name__}: {e})") from e


def _check_shapes(directory: str, scene: SceneMemory, arr: Dict[str, np.ndarray], cfg) -> None:
    """Raise BackendError unless the loaded tensors fit each other and the model ``cfg``."""
    S = scene.num_anchors
    heads, hd = cfg.num_heads, cfg.embed_dim // cfg.num_heads
    M = S * scene.tokens_per_anchor
    problems = []
    if len(scene.keys) != cfg.depth or len(scene.values) != cfg.depth:
        problems.append(f"{len(scene.keys)} layers, the model has {cfg.depth}")
    for k in scene.keys + scene.values:
        if tuple(k.shape) != (1, heads, M, hd):
            problems.append(f"K/V of shape {tuple(k.shape)}, expected {(1, heads, M, hd)}")
            break
    if tuple(scene.anchor_camera_tokens.shape) != (S, 2 * cfg.embed_dim):
        problems.append(f"camera tokens {tuple(scene.anchor_camera_tokens.shape)}, expected {(S, 2 * cfg.embed_dim)}")
    want = {"descriptors": (S, 2 * cfg.embed_dim), "stamps_ns": (S,), "frame_indices": (S,),
            "extrinsics": (S, 3, 4), "intrinsics": (S, 3, 3)}
    for k, shape in want.items():
        if arr[k].shape != shape:
            problems.append(f"{k} of shape {arr[k].shape}, expected {shape}")
    if arr["points"].shape[:1] != (S,) or arr["points"].shape[:3] != arr["points_conf"].shape:
        problems.append(f"points {arr['points'].shape} / points_conf {arr['points_conf'].shape} for {S} anchors")
    if problems:
        raise _fail(directory, "inconsistent contents: " + "; ".join(problems))
