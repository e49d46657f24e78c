"""Loading VGGT / SAIL-Recon weights: local .pt / .safetensors files or Hugging Face repo ids.

Known repos (files tried in order):
- ``facebook/VGGT-1B``: model.safetensors, model.pt (weights licence CC BY-NC 4.0)
- ``facebook/VGGT-1B-Commercial`` (gated; accept the licence on the Hub and log in): same files
- ``HKUST-SAIL/SAIL-Recon``: sailrecon.pt

Repo ids go through :func:`huggingface_hub.hf_hub_download`, which honours ``HF_HOME`` /
``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=1`` (then only the local cache is used). Loading is strict by
default; a mismatch raises :class:`CheckpointMismatchError` naming missing, unexpected and mis-shaped
tensors. With no weights, :class:`WeightsNotFoundError` explains how to get them; there is never a silent
random fall-back. A file that cannot be read (empty, truncated, corrupt, random bytes, a pickle holding
objects that ``torch.load(weights_only=True)`` refuses, no tensors) raises
:class:`~selfi_ros.model.errors.CheckpointError` with one line naming the file, what is wrong and what to do;
all three errors are ``CheckpointError`` (a ``ValueError``). ``random_weights=True`` builds an untrained model for plumbing tests only, logs
"RANDOM WEIGHTS - plumbing only" at WARNING level and sets ``model.random_weights = True``.

The SAIL-Recon layout is auto-detected from ``aggregator.global_reloc_blocks.*`` keys, a missing track
head from the absence of ``track_head.*`` keys. Checkpoints written by :func:`save_checkpoint` carry
their :class:`VGGTConfig` (safetensors metadata / a ``config`` entry), so reduced shapes load back too.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from selfi_ros.atomic import save_safetensors, torch_save
from selfi_ros.model.config import VGGTConfig
from selfi_ros.model.errors import CheckpointError

log = logging.getLogger(__name__)

KNOWN_REPOS: Dict[str, Tuple[str, ...]] = {
    "facebook/VGGT-1B": ("model.safetensors", "model.pt"),
    "facebook/VGGT-1B-Commercial": ("model.safetensors", "model.pt"),
    "HKUST-SAIL/SAIL-Recon": ("sailrecon.pt",),
}
_DEFAULT_FILES = ("model.safetensors", "model.pt", "sailrecon.pt")
_CONFIG_KEY = "selfi_vggt_config"

INSTRUCTIONS = """No VGGT / SAIL-Recon weights found{detail}.
Get them with one of:
  * huggingface-cli download facebook/VGGT-1B model.pt          (CC BY-NC 4.0, ~5 GB)
  * huggingface-cli download facebook/VGGT-1B-Commercial         (gated: accept the licence, `huggingface-cli login`)
  * huggingface-cli download HKUST-SAIL/SAIL-Recon sailrecon.pt  (anchors + localization)
then pass the repo id (uses the hub cache; works with HF_HUB_OFFLINE=1 once cached) or the local file path
as `checkpoint`. For plumbing tests only, pass random_weights=True / allow_random_weights=True."""

#: what to do about a missing or unusable file, in one line
GET_WEIGHTS = ("get weights with `huggingface-cli download facebook/VGGT-1B model.pt` (or HKUST-SAIL/SAIL-Recon "
               "sailrecon.pt) and pass the file, its directory or the repo id as checkpoint")
_REDOWNLOAD = "the file is truncated or corrupt: download or save it again, or " + GET_WEIGHTS


class WeightsNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint could be found (message says how to get one; one line for a missing path)."""


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """A checkpoint's tensors do not match the model (missing / unexpected / mis-shaped keys).

    Attributes: missing, unexpected (lists of names), mismatched (list of (name, ckpt_shape, model_shape)).
    """

    def __init__(self, missing, unexpected, mismatched, source=""):
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)

        def fmt(items, n=20):
            items = list(items)
            s = ", ".join(map(str, items[:n]))
            return s + (f", ... (+{len(items) - n} more)" if len(items) > n else "")

        parts = [f"checkpoint {source!s} does not match the model:"]
        if self.missing:
            parts.append(f"  missing {len(self.missing)}: {fmt(self.missing)}")
        if self.unexpected:
            parts.append(f"  unexpected {len(self.unexpected)}: {fmt(self.unexpected)}")
        if self.mismatched:
            parts.append(f"  mis-shaped {len(self.mismatched)}: " + fmt(
                f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched))
        super().__init__("\n".join(parts))
        self.path = str(source)


# ---------------------------------------------------------------------------------------------------
def _config_to_json(cfg: VGGTConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg))


def _config_from_json(s: str) -> VGGTConfig:
    d = json.loads(s)
    for k in ("dpt_layers", "dpt_out_channels"):
        if k in d:
            d[k] = tuple(d[k])
    return VGGTConfig(**d)


def save_checkpoint(model: torch.nn.Module, path: Union[str, Path]) -> Path:
    """Write ``model.state_dict()`` to ``path`` (.safetensors or .pt) with its config embedded, atomically."""
    path = Path(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    cfg = getattr(model, "cfg", None)
    if path.suffix == ".safetensors":
        save_safetensors(str(path), sd, {_CONFIG_KEY: _config_to_json(cfg)} if cfg else None)
    else:
        obj = {"model": sd}
        if cfg is not None:
            obj["config"] = _config_to_json(cfg)
        torch_save(str(path), obj)
    return path


def read_state_dict(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Optional[VGGTConfig]]:
    """Read tensors (CPU) and an embedded config (or None) from a .safetensors or .pt file.

    A .pt may be a bare state_dict or wrap it under "model" / "state_dict"; a "module." prefix is removed.
    A .pt is read with ``torch.load(weights_only=True)`` (tensors and plain containers only, never
    arbitrary pickled objects), memory-mapped where the file format allows it.

    Raises:
        WeightsNotFoundError: ``path`` is not a file (one line).
        CheckpointError: the file is empty, truncated, corrupt or not a weights file, holds objects that
            weights-only loading refuses, holds no tensors, or its embedded config is unreadable (one line
            naming the file, what is wrong and what to do).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError.about(path, "no such file", GET_WEIGHTS)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointError.about(path, "cannot be read", "check the path and its permissions", e) from e
    if size == 0:
        raise CheckpointError.about(path, "is empty (0 bytes)", _REDOWNLOAD)
    if path.suffix == ".safetensors":
        sd, meta = _read_safetensors(path)
        raw_cfg = meta.get(_CONFIG_KEY)
    else:
        obj = _torch_load_weights_only(path)
        raw_cfg = obj.get("config") if isinstance(obj, dict) and isinstance(obj.get("config"), str) else None
        for key in ("model", "state_dict"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if not isinstance(obj, dict):
            raise CheckpointError.about(path, f"holds a {type(obj).__name__}, not a state_dict",
                                        "save the weights with torch.save(model.state_dict(), path)")
        sd = obj
    cfg = None
    if raw_cfg is not None:
        try:
            cfg = _config_from_json(raw_cfg)
        except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError; unknown / bad fields
            raise CheckpointError.about(path, "has an unreadable embedded model config", _REDOWNLOAD, e) from e
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError.about(path, "holds no tensors", "pass a VGGT / SAIL-Recon weights file; " + GET_WEIGHTS)
    return sd, cfg


def _read_safetensors(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Tensors (CPU) and the header metadata of a .safetensors file; library errors -> CheckpointError."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path), device="cpu"), meta
    except MemoryError:
        raise
    except Exception as e:  # SafetensorError (header too small / too large, incomplete metadata), OSError
        raise CheckpointError.about(path, "is not a readable safetensors file", _REDOWNLOAD, e) from e


def _torch_load_weights_only(path: Path):
    """``torch.load(path, map_location="cpu", weights_only=True)``, memory-mapped when the file allows it.

    Warnings raised while reading (e.g. about the pickle protocol) are re-emitted only when the load
    succeeds, so that a bad file gives one line. Raises CheckpointError (never advising an unsafe load).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) formats cannot be memory-mapped; corrupt files neither
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except MemoryError:
            raise
        except pickle.UnpicklingError as e:
            text = str(e)
            after = text.split("WeightsUnpickler error:", 1)[-1]
            reason = next((ln.strip() for ln in after.splitlines() if ln.strip()), "").split(". ")[0]
            if "Unsupported global" in text:
                raise CheckpointError.about(
                    path, f"holds Python objects that safe (weights-only) loading refuses ({reason})",
                    "re-save only the tensors: torch.save(model.state_dict(), path) or a .safetensors file"
                ) from e
            raise CheckpointError.about(
                path, f"cannot be read as PyTorch weights (weights-only unpickler: {reason})",
                "if it is a real checkpoint, re-save its tensors with torch.save(model.state_dict(), path) "
                "or as .safetensors; otherwise " + _REDOWNLOAD) from e
        except Exception as e:  # RuntimeError (zip archive), EOFError (cut short), ValueError, OSError, ...
            raise CheckpointError.about(path, "is not a readable PyTorch checkpoint", _REDOWNLOAD, e) from e
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return obj


def detect_config(sd: Dict[str, torch.Tensor], base: Optional[VGGTConfig] = None) -> VGGTConfig:
    """Adjust ``base`` (default VGGT-1B) to the heads / SAIL layout present in ``sd``."""
    base = base or VGGTConfig()
    has = lambda prefix: any(k.startswith(prefix) for k in sd)  # noqa: E731
    return base.with_(sail_reloc=has("aggregator.global_reloc_blocks."),
                      enable_track=has("track_head."), enable_camera=has("camera_head."),
                      enable_depth=has("depth_head."), enable_point=has("point_head."))


def resolve_checkpoint(source: Union[str, Path]) -> Path:
    """A local file for ``source`` (path, or HF repo id via the hub cache; honours HF_HUB_OFFLINE).

    Raises:
        WeightsNotFoundError: nothing found (message has instructions; one line for a local path or
            directory).
    """
    p = Path(os.path.expanduser(str(source)))
    if p.exists():
        if p.is_dir():
            for name in _DEFAULT_FILES:
                if (p / name).is_file():
                    return p / name
            raise WeightsNotFoundError.about(p, f"is a directory holding none of {', '.join(_DEFAULT_FILES)}",
                                             GET_WEIGHTS)
        return p
    s = str(source)
    if s.count("/") != 1 or s.endswith((".pt", ".safetensors", ".pth")):
        raise WeightsNotFoundError.about(s, "no such file or directory (and not a Hugging Face repo id)",
                                         GET_WEIGHTS)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover
        raise WeightsNotFoundError(INSTRUCTIONS.format(detail=" (huggingface_hub is not installed)")) from e
    errors = []
    for fname in KNOWN_REPOS.get(s, _DEFAULT_FILES):
        try:
            return Path(hf_hub_download(repo_id=s, filename=fname))
        except Exception as e:  # EntryNotFound, LocalEntryNotFound (offline), GatedRepo, network errors
            errors.append(f"{fname}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    detail = (f" for repo {s!r}" + (" (HF_HUB_OFFLINE is set: only the local hub cache was searched)"
                                     if offline else "") + "; tried " + "; ".join(errors))
    raise WeightsNotFoundError(INSTRUCTIONS.format(detail=detail))


def check_state_dict(model: torch.nn.Module, sd: Dict[str, torch.Tensor], source: str = "") -> None:
    """Raise :class:`CheckpointMismatchError` unless ``sd`` has exactly the model's names and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [(k, tuple(sd[k].shape), tuple(v.shape)) for k, v in own.items()
                  if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(missing, unexpected, mismatched, source)


def build_model(cfg: Optional[VGGTConfig] = None, device: Union[str, torch.device] = "cpu", meta: bool = False):
    """Construct :class:`~selfi_ros.model.vggt.VGGT` (on the meta device when ``meta``)."""
    from selfi_ros.model.vggt import VGGT

    if meta:
        with torch.device("meta"):
            return VGGT(cfg)
    with torch.device(device):
        return VGGT(cfg)


def _restore_buffers(model: torch.nn.Module, device) -> None:
    """Re-create non-persistent buffers left on the meta device after ``load_state_dict(assign=True)``."""
    agg = model.aggregator
    from selfi_ros.model.aggregator import _IMAGENET_MEAN, _IMAGENET_STD

    agg._mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1)
    agg._std = torch.tensor(_IMAGENET_STD, device=device).view(1, 1, 3, 1, 1)
    left = [n for n, b in model.named_buffers() if b.is_meta]
    if left:
        raise RuntimeError(f"buffers still on the meta device after loading: {left}")


def load_model(checkpoint: Union[None, str, Path] = None, *, config: Optional[VGGTConfig] = None,
               device: Union[str, torch.device] = "cpu", dtype: Optional[torch.dtype] = None,
               strict: bool = True, random_weights: bool = False, seed: int = 0):
    """Load VGGT / SAIL-Recon for inference (eval mode).

    Args:
        checkpoint: local .pt / .safetensors file, a directory holding one, or a HF repo id; None only
            together with ``random_weights=True``.
        config: network shape; default: the config embedded in the file, else VGGT-1B. Either way the
            layout flags (SAIL reloc blocks, which heads exist) follow the keys present (:func:`detect_config`).
        device: target device; dtype: optional parameter dtype (default: keep the checkpoint's fp32).
        strict: require exactly matching names and shapes (default). With False, matching tensors are
            loaded, the rest keep their random init and a warning lists them.
        random_weights: build an untrained model (plumbing only; warns loudly, ``model.random_weights``).
        seed: init seed for ``random_weights``.
    Returns:
        the model, in eval mode, with attribute ``random_weights``.
    Raises:
        WeightsNotFoundError: no checkpoint given / found. CheckpointMismatchError: strict mismatch.
        CheckpointError: a file that cannot be read (one line; see :func:`read_state_dict`).
        All three are :class:`~selfi_ros.model.errors.CheckpointError`.
    """
    if checkpoint is None:
        if not random_weights:
            raise WeightsNotFoundError(INSTRUCTIONS.format(detail=" (no checkpoint given)"))
        log.warning("RANDOM WEIGHTS - plumbing only: building an untrained VGGT (%s); every output is "
                    "meaningless", "reduced size" if config and config.embed_dim < 1024 else "full size")
        torch.manual_seed(seed)
        model = build_model(config, device=device)
        model.random_weights = True
        if dtype is not None:
            model = model.to(dtype)
        return model.eval()
    path = resolve_checkpoint(checkpoint)
    sd, embedded = read_state_dict(path)
    cfg = detect_config(sd, config or embedded)
    model = build_model(cfg, meta=True)
    if strict:
        check_state_dict(model, sd, str(path))
        model.load_state_dict(sd, strict=True, assign=True)
    else:
        own = model.state_dict()
        good = {k: v for k, v in sd.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        missing = [k for k in own if k not in good]
        if missing:
            log.warning("non-strict load of %s: %d tensors keep a random init: %s", path, len(missing),
                        ", ".join(missing[:10]))
        model = build_model(cfg, device="cpu")
        model.load_state_dict(good, strict=False)
        model.random_weights = bool(missing)
    if strict:
        _restore_buffers(model, "cpu")
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype)
    model.random_weights = getattr(model, "random_weights", False)
    log.info("loaded %s (%d tensors, sail_reloc=%s, track=%s)", path, len(sd), cfg.sail_reloc, cfg.enable_track)
    return model.eval()
