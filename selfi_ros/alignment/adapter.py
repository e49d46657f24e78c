"""The Selfi feature adapter: a DPT-style head over a frozen VGGT backbone (Selfi, Deng et al. 2025,
arXiv 2512.08930, Sec. "feature alignment").

The adapter reads four aggregator layers (4, 11, 17, 23 for VGGT-1B, the layers VGGT's own DPT heads
read), fuses them with a feature-only :class:`~selfi_ros.model.heads.dpt_head.DPTHead` (reassemble +
RefineNet fusion + UV position embedding, upsampled to the input resolution), and a small output block
(3x3 conv, ReLU, 1x1 conv) maps the fused map to ``out_dim`` channels (24 by default, as in Selfi). The
result is L2-normalised per pixel so cosine similarity is a dot product.

Optional (not in Selfi, off by default): ``image_skip`` adds a shallow convolutional encoding of the RGB
input before the output block, giving the features pixel-level detail that 14-px tokens lack.

Weights are saved as safetensors with the :class:`AdapterConfig` (JSON) in the metadata; loading checks
the key set and shapes strictly.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from selfi_ros.atomic import save_safetensors
from selfi_ros.model.heads.dpt_head import DPTHead

ADAPTER_FORMAT = "selfi_ros.adapter.v1"


@dataclass
class AdapterConfig:
    """Shape of a :class:`FeatureAdapter`.

    Attributes:
        dim_in: token channels of the aggregator outputs (2 x embed_dim: 2048 for VGGT-1B).
        patch_size: backbone patch size (14).
        layers: the four aggregator layers read ((4, 11, 17, 23) for VGGT-1B).
        features: DPT fusion width.
        out_channels: widths of the four reassembled levels.
        out_dim: output feature channels (Selfi: 24).
        pos_embed: DPT UV position embedding.
        image_skip: add a shallow RGB encoder before the output block (not in Selfi).
        skip_channels: channels of that encoder.
    """

    dim_in: int = 2048
    patch_size: int = 14
    layers: Tuple[int, ...] = (4, 11, 17, 23)
    features: int = 128
    out_channels: Tuple[int, ...] = (96, 192, 384, 384)
    out_dim: int = 24
    pos_embed: bool = True
    image_skip: bool = False
    skip_channels: int = 16

    def __post_init__(self) -> None:
        self.layers = tuple(int(i) for i in self.layers)
        self.out_channels = tuple(int(i) for i in self.out_channels)
        if len(self.layers) != 4 or len(self.out_channels) != 4:
            raise ValueError(f"AdapterConfig needs 4 layers and 4 out_channels, got {self.layers}, {self.out_channels}")
        if self.out_dim < 1 or self.features < 1:
            raise ValueError("out_dim and features must be positive")

    @classmethod
    def for_backbone(cls, vggt_cfg, **overrides) -> "AdapterConfig":
        """Default adapter for a :class:`~selfi_ros.model.config.VGGTConfig`: same layers as its DPT heads;
        widths scaled down for small (test) backbones."""
        kw: dict = dict(dim_in=2 * vggt_cfg.embed_dim, patch_size=vggt_cfg.patch_size, layers=vggt_cfg.dpt_layers)
        if vggt_cfg.embed_dim < 512:
            kw.update(features=32, out_channels=(16, 32, 64, 64))
        kw.update(overrides)
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "AdapterConfig":
        d = json.loads(s)
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown AdapterConfig fields in metadata: {sorted(unknown)}")
        return cls(**d)


class FeatureAdapter(nn.Module):
    """Per-pixel geometric features from aggregator tokens (Selfi adapter).

    Input: ``aggregated_tokens_list`` as returned by :class:`~selfi_ros.model.aggregator.Aggregator`
    (list indexed by layer, entries (B, S, P, dim_in), None where not kept), ``images`` (B, S, 3, H, W)
    in [0, 1] (H, W multiples of the patch size; only used for the size unless ``image_skip``), and
    ``patch_start_idx``.
    Output: (B, S, out_dim, H, W) float32 features, L2-normalised along the channel axis.
    """

    def __init__(self, cfg: Optional[AdapterConfig] = None):
        super().__init__()
        self.cfg = cfg = cfg or AdapterConfig()
        self.dpt = DPTHead(dim_in=cfg.dim_in, patch_size=cfg.patch_size, features=cfg.features,
                           out_channels=list(cfg.out_channels), intermediate_layer_idx=list(cfg.layers),
                           pos_embed=cfg.pos_embed, feature_only=True, down_ratio=1)
        c_in = cfg.features
        if cfg.image_skip:
            k = cfg.skip_channels
            self.skip = nn.Sequential(nn.Conv2d(3, k, 3, 1, 1), nn.ReLU(), nn.Conv2d(k, k, 3, 1, 1), nn.ReLU())
            c_in += k
        else:
            self.skip = None
        hidden = max(cfg.features // 2, cfg.out_dim)
        self.out = nn.Sequential(nn.Conv2d(c_in, hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(hidden, cfg.out_dim, 1))

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, aggregated_tokens_list: List[Optional[torch.Tensor]], images: torch.Tensor,
                patch_start_idx: int, frames_chunk_size: Optional[int] = 8) -> torch.Tensor:
        f = self.dpt(aggregated_tokens_list, images=images, patch_start_idx=patch_start_idx,
                     frames_chunk_size=frames_chunk_size)  # (B, S, F, H, W)
        B, S = f.shape[:2]
        x = f.reshape(B * S, *f.shape[2:])
        if self.skip is not None:
            x = torch.cat([x, self.skip(images.reshape(B * S, *images.shape[2:]).to(x.dtype))], dim=1)
        y = self.out(x).float()
        y = F.normalize(y, dim=1, eps=1e-8)
        return y.reshape(B, S, *y.shape[1:])


# ------------------------------------------------------------------------------------------- persistence
def save_adapter(adapter: FeatureAdapter, path: Union[str, Path], extra_metadata: Optional[Dict[str, str]] = None
                 ) -> Path:
    """Save adapter weights (fp32) to safetensors with its config and ``extra_metadata`` (str -> str).

    Metadata keys: ``format`` = "selfi_ros.adapter.v1", ``adapter_config`` (JSON), plus the extras
    (e.g. ``random_backbone``, ``step``, ``pseudo_gt``).
    """
    path = Path(path)
    sd = {k: v.detach().float().cpu().contiguous() for k, v in adapter.state_dict().items()}
    meta = {"format": ADAPTER_FORMAT, "adapter_config": adapter.cfg.to_json()}
    for k, v in (extra_metadata or {}).items():
        meta[str(k)] = str(v)
    save_safetensors(str(path), sd, meta)
    return path


def read_adapter_metadata(path: Union[str, Path]) -> Dict[str, str]:
    """The safetensors metadata of a saved adapter."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_adapter(path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                 expect_dim_in: Optional[int] = None) -> FeatureAdapter:
    """Load an adapter saved by :func:`save_adapter`, checking keys and shapes strictly.

    Args:
        expect_dim_in: if given, the backbone token width the adapter must match.
    Raises:
        FileNotFoundError: no file. ValueError: not an adapter file, config mismatch, or any missing /
        unexpected / mis-shaped tensor (all named).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter weights not found: {path}")
    meta = read_adapter_metadata(path)
    if meta.get("format") != ADAPTER_FORMAT or "adapter_config" not in meta:
        raise ValueError(f"{path} is not a selfi_ros adapter file (metadata format={meta.get('format')!r})")
    cfg = AdapterConfig.from_json(meta["adapter_config"])
    if expect_dim_in is not None and cfg.dim_in != expect_dim_in:
        raise ValueError(f"adapter expects backbone tokens of width {cfg.dim_in}, backbone has {expect_dim_in}")
    model = FeatureAdapter(cfg)
    sd = load_file(str(path))
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or bad:
        raise ValueError(f"adapter state mismatch in {path}: missing {missing[:10]}, unexpected {unexpected[:10]}, "
                         f"shape mismatch {bad[:10]}")
    model.load_state_dict(sd, strict=True)
    model.metadata = meta
    return model.to(device).eval()


def raw_backbone_features(aggregated_tokens_list: Sequence[Optional[torch.Tensor]], images: torch.Tensor,
                          patch_start_idx: int, layer: int = -1, patch_size: int = 14) -> torch.Tensor:
    """Baseline features: one aggregator layer's patch tokens, bilinearly upsampled to the input size and
    L2-normalised. Returns (B, S, dim_in, H, W) float32.

    Raises:
        ValueError: layer not kept or token count not matching the (H/patch, W/patch) grid.
    """
    tokens = aggregated_tokens_list[layer]
    if tokens is None:
        raise ValueError(f"aggregator layer {layer} was not kept")
    B, S, _, H, W = images.shape
    ph, pw = H // patch_size, W // patch_size
    x = tokens[:, :, patch_start_idx:].float()
    if x.shape[2] != ph * pw:
        raise ValueError(f"{x.shape[2]} patch tokens do not form a {ph}x{pw} grid for a {H}x{W} image")
    x = x.reshape(B * S, ph, pw, -1).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
    x = F.normalize(x, dim=1)
    return x.reshape(B, S, *x.shape[1:])
