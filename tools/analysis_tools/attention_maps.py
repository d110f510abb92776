"""What ``vis_attention.py`` and the demo's picture share: a CvT and its input from a preset
or a config, and attention rows drawn as heat maps over the image.

The rows themselves come from :mod:`attention_rows`.
"""
from __future__ import annotations

import os.path as osp
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from attention_rows import BlockInputs, attention_rows, capture_block_inputs, key_grid, query_index
from cvt_backbone import CvT
from cvt_backbone.apis import build_model, load_checkpoint
from cvt_backbone.checkpoint import load_cvt_weights

#: ImageNet's RGB mean and std (0-255), the official CvT preprocessing.
IMAGENET_MEAN, IMAGENET_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


@dataclass
class Backbone:
    """A CvT and how its images are normalised.

    Attributes:
        model: The backbone, eval mode.
        mean: Per-channel mean ``(3,)``, in the channel order the model takes.
        std: Per-channel std ``(3,)``.
        rgb: Whether the model takes RGB (else BGR).
    """
    model: CvT
    mean: torch.Tensor
    std: torch.Tensor
    rgb: bool = True

    def inputs(self, image: np.ndarray) -> torch.Tensor:
        """An RGB uint8 image ``(H, W, 3)`` as the model's input ``(1, 3, H, W)``."""
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()
        if not self.rgb:
            x = x.flip(0)
        return ((x - self.mean.view(3, 1, 1)) / self.std.view(3, 1, 1))[None]


def _converts_to_rgb(preprocessor: torch.nn.Module) -> bool:
    # mmpretrain, mmdet and mmseg name the BGR -> RGB switch of their preprocessors each
    # their own way; images are loaded as BGR by all three.
    return bool(getattr(preprocessor, 'to_rgb', False)
                or getattr(preprocessor, '_channel_conversion', False)
                or getattr(preprocessor, 'channel_conversion', False))


def load_backbone(model: str, checkpoint: str) -> Backbone:
    """The CvT of a preset (with any CvT checkpoint) or of a config (with its checkpoint).

    Raises:
        ValueError: ``model`` is neither a preset nor a config file, or the config's
            backbone is not a CvT.
        FileNotFoundError, CheckpointError: the checkpoint is missing or does not fit.
    """
    if model.lower() in CvT.arch_settings:
        backbone = CvT(arch=model.lower()).eval()
        load_cvt_weights(backbone, checkpoint)
        return Backbone(backbone, torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD))
    if not osp.isfile(model):
        raise ValueError(f'{model!r} is neither a CvT preset ({", ".join(CvT.arch_settings)}) '
                         f'nor a config file')
    built, _ = build_model(model)
    if not isinstance(built.backbone, CvT):
        raise ValueError(f'{model}: the backbone is {type(built.backbone).__name__}, not CvT')
    load_checkpoint(built, checkpoint)
    pre = built.data_preprocessor
    return Backbone(built.backbone.eval(), pre.mean.flatten(), pre.std.flatten(),
                    _converts_to_rgb(pre))


@dataclass
class AttentionMaps:
    """Each head's attention of some queries over the image.

    Attributes:
        maps: ``(R, heads, H', W')`` weights over the key grid (the class-token key left
            out), one row per query.
        cls_key: ``(R, heads)`` weight on the class-token key (zeros without one).
        queries: Token index of each row (0: the class token, in a stage that has one).
    """
    maps: np.ndarray
    cls_key: np.ndarray
    queries: list[int]


def attention_maps(backbone: Backbone, image: np.ndarray, stage: int, block: int,
                   queries: list[int] | None = None, points: list[tuple[float, float]] = ()
                   ) -> tuple[AttentionMaps, BlockInputs]:
    """The attention of ``stages[stage].blocks[block]`` for token ``queries`` and image
    ``points``, each head's row as a map over the key grid."""
    inputs = capture_block_inputs(backbone.model, backbone.inputs(image), stage, block)
    rows = list(queries or []) + [query_index(p, image.shape[:2], inputs) for p in points]
    attn = backbone.model.stages[stage].blocks[block].attn
    weights = attention_rows(attn, inputs, rows)[0]            # (h, R, M)
    grid = key_grid(attn, inputs.hw_shape)
    offset = int(inputs.with_cls_token)
    maps = weights[..., offset:].unflatten(-1, grid).transpose(0, 1)  # (R, h, H', W')
    cls_key = (weights[..., 0].T if offset else torch.zeros(weights.shape[1::-1]))
    return AttentionMaps(maps.numpy(), cls_key.numpy(), rows), inputs


def heat_map(weights: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map of weights ``(H', W')`` resized (bilinear) to ``size = (H, W)`` and scaled to
    0..1 by its maximum, for drawing over the image."""
    resized = F.interpolate(torch.from_numpy(weights)[None, None].float(), size=size,
                            mode='bilinear', align_corners=False)[0, 0].numpy()
    return resized / max(float(resized.max()), 1e-12)


def draw_heat_map(ax, image: np.ndarray, weights: np.ndarray, title: str) -> None:
    """Draw ``image`` with ``weights`` as a half-transparent heat map on a matplotlib axis."""
    ax.imshow(image)
    ax.imshow(heat_map(weights, image.shape[:2]), cmap='jet', alpha=0.5, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis('off')
