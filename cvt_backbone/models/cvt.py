"""CvT: Convolutional vision Transformer (Wu et al., ICCV 2021) as an OpenMMLab backbone.

The network has three stages. Each stage embeds its input map with a strided convolution
(:class:`ConvEmbed`), runs a stack of pre-norm transformer blocks (:class:`CvTBlock`) whose
attention projects queries, keys and values through depthwise convolutions
(:class:`ConvProjection`), and hands the raw residual stream on as an NCHW map. There is no
positional encoding: the depthwise convolutions carry the spatial information, so any input
size works. The last stage carries a class token for classification.

Every detail that decides whether the official checkpoints reproduce the official outputs
(QuickGELU, the attention scale over the whole stage width, the class token bypassing the
depthwise projection, per-stage stochastic depth, LayerNorm eps 1e-5) follows the official
code; :mod:`cvt_backbone.checkpoint.convert` holds the weight names of the published
checkpoints. The attention runs either as the paper writes it or through PyTorch's fused
kernels (:mod:`.attention`), behind one switch (``fast_kernels``); :meth:`CvT.switch_to_deploy`
folds each projection's BatchNorm into its depthwise convolution for inference.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..checkpoint.loading import cvt_load_state_dict_pre_hook, load_cvt_weights
from .attention import attention, keep_bn_statistics

LN_EPS = 1e-5


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU, ``x * sigmoid(1.702 x)``.

    The official CvT checkpoints were trained with it (not with the exact, erf-based GELU).
    """

    alpha = 1.702

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.alpha * x)


def build_act(act_cfg: dict) -> nn.Module:
    """Build an activation layer; ``QuickGELU`` is ours, any other type comes from mmcv."""
    if act_cfg.get('type') == 'QuickGELU':
        return QuickGELU()
    return build_activation_layer(act_cfg)


def tokens_to_map(x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
    """View tokens ``(B, H*W, C)`` as a map ``(B, C, H, W)`` in channels-last memory (no copy).

    The map has the strides of a channels-last tensor, so convolutions keep it channels-last
    instead of copying it to NCHW and back (a full copy of the map each way).
    """
    return x.reshape(-1, *hw_shape, x.shape[-1]).permute(0, 3, 1, 2)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """Turn a map ``(B, C, H, W)`` into tokens ``(B, H*W, C)`` (a view for channels-last maps)."""
    return x.flatten(2).transpose(1, 2)


def conv_out_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis: ``floor((size + 2p - k) / s) + 1``."""
    return (size + 2 * padding - kernel_size) // stride + 1


class ConvEmbed(nn.Module):
    """Convolutional token embedding: a strided convolution followed by LayerNorm.

    Args:
        in_channels: Channels of the input map.
        embed_dims: Channels of the output tokens.
        kernel_size: Convolution kernel size.
        stride: Convolution stride.
        padding: Convolution zero padding.
    """

    def __init__(self, in_channels: int, embed_dims: int, kernel_size: int, stride: int,
                 padding: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(
            in_channels, embed_dims, kernel_size, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dims, eps=LN_EPS)

    def output_size(self, hw_shape: tuple[int, int]) -> tuple[int, int]:
        """``(H', W')`` for an input map of ``(H, W)``:
        ``H' = floor((H + 2 * padding - kernel_size) / stride) + 1`` (likewise ``W'``)."""
        conv = self.projection
        height, width = (conv_out_size(size, k, s, p) for size, k, s, p in zip(
            hw_shape, conv.kernel_size, conv.stride, conv.padding))
        return height, width

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int]
                ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Embed a map.

        The output size is computed from ``hw_shape``, not read from the convolution's
        output: sizes then follow the network's input through every stage, and an exported
        graph works at any input size (an exporter may freeze the shape of an intermediate
        tensor to the one it traced).

        Args:
            x: Map of shape ``(B, C_in, H, W)``.
            hw_shape: ``(H, W)``.

        Returns:
            Tokens of shape ``(B, H'*W', C)`` and ``(H', W')`` (see :meth:`output_size`).
        """
        return self.norm(map_to_tokens(self.projection(x))), self.output_size(hw_shape)


class DepthwiseConvBN(nn.Module):
    """A depthwise convolution (no bias) followed by BatchNorm: the ``dw_bn`` projection.

    :meth:`fuse` gives the one convolution that computes the same while the BatchNorm uses
    its running statistics (:meth:`CvT.switch_to_deploy` swaps it in).

    Args:
        channels: Channels in and out.
        kernel_size: Kernel size of the depthwise convolution.
        stride: Its stride.
        padding: Its zero padding.
    """

    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size, stride=stride, padding=padding,
                              groups=channels, bias=False)
        # The token maps are channels-last, and so is the weight's gradient: the weight is
        # kept in the same memory format, as DDP expects a gradient's strides to be its
        # parameter's (it warns at every step otherwise).
        self.conv.weight.data = self.conv.weight.data.to(memory_format=torch.channels_last)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, H, W)`` to ``(B, C, H', W')``, ``H' = floor((H + 2p - k) / s) + 1``."""
        return self.bn(self.conv(x))

    def fuse(self) -> nn.Conv2d:
        """A new depthwise convolution (with bias) equal to this layer in eval mode:
        ``weight * gamma / sqrt(var + eps)``, ``beta - mean * gamma / sqrt(var + eps)``."""
        return fuse_conv_bn_eval(self.conv.eval(), self.bn.eval())


class ConvProjection(nn.Module):
    """Convolutional projection of tokens into the query, key and value streams.

    The tokens are viewed as a map and passed through three independent depthwise
    convolutions with BatchNorm: stride 1 for queries and ``kv_stride`` for keys and values
    (the paper's lever for cost). A class token bypasses the convolutions and rejoins each
    stream at index 0.

    Args:
        channels: Token channels.
        kernel_size: Kernel size of the depthwise convolutions.
        kv_stride: Stride of the key and value convolutions.
        padding: Zero padding of all three convolutions.
    """

    def __init__(self, channels: int, kernel_size: int = 3, kv_stride: int = 2,
                 padding: int = 1) -> None:
        super().__init__()
        self.q: nn.Module = DepthwiseConvBN(channels, kernel_size, 1, padding)
        self.k: nn.Module = DepthwiseConvBN(channels, kernel_size, kv_stride, padding)
        self.v: nn.Module = DepthwiseConvBN(channels, kernel_size, kv_stride, padding)

    def switch_to_deploy(self) -> None:
        """Replace each :class:`DepthwiseConvBN` by its fused convolution (for inference)."""
        for name in ('q', 'k', 'v'):
            proj = getattr(self, name)
            if isinstance(proj, DepthwiseConvBN):
                setattr(self, name, proj.fuse())

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int], with_cls_token: bool
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project tokens.

        Args:
            x: Tokens ``(B, N, C)`` with ``N = H*W``, plus one leading class token when
                ``with_cls_token``.
            hw_shape: ``(H, W)`` of the token map.
            with_cls_token: Whether ``x[:, 0]`` is a class token.

        Returns:
            q ``(B, Nq, C)``, k and v ``(B, Nkv, C)`` with ``Nq = N`` and
            ``Nkv = H'*W' (+1)``, ``H' = floor((H + 2p - k) / kv_stride) + 1``.
        """
        if with_cls_token:
            cls_token, x = x[:, :1], x[:, 1:]
        x = tokens_to_map(x, hw_shape)
        q, k, v = (map_to_tokens(proj(x)) for proj in (self.q, self.k, self.v))
        if with_cls_token:
            q, k, v = (torch.cat((cls_token, t), dim=1) for t in (q, k, v))
        return q, k, v


class ConvAttention(nn.Module):
    """Multi-head self-attention over convolutional projections.

    With ``fast_kernels`` the attention runs through ``F.scaled_dot_product_attention``, whose
    fused kernels never hold the query-by-key matrix; without, as the explicit softmax
    (:func:`.attention.attention`). The logits are scaled by ``embed_dims ** -0.5`` (the whole
    stage width, as the official model does), not by the head width.

    Args:
        embed_dims: Token channels.
        num_heads: Number of attention heads; must divide ``embed_dims``.
        qkv_bias: Whether the q, k and v linear projections have a bias.
        kernel_size: Kernel size of the depthwise projections.
        kv_stride: Stride of the key and value projections.
        padding: Padding of the depthwise projections.
        attn_drop: Dropout on the attention weights.
        proj_drop: Dropout after the output projection.
    """

    def __init__(self, embed_dims: int, num_heads: int, qkv_bias: bool = True,
                 kernel_size: int = 3, kv_stride: int = 2, padding: int = 1,
                 attn_drop: float = 0., proj_drop: float = 0.) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = embed_dims ** -0.5
        self.attn_drop = attn_drop
        self.fast_kernels = True
        self.conv_proj = ConvProjection(embed_dims, kernel_size, kv_stride, padding)
        self.proj_q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.proj_k = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.proj_v = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int], with_cls_token: bool
                ) -> torch.Tensor:
        """Attend.

        Args:
            x: Normalised tokens ``(B, N, C)`` (class token first when ``with_cls_token``).
            hw_shape: ``(H, W)`` of the token map.
            with_cls_token: Whether ``x[:, 0]`` is a class token.

        Returns:
            Tokens ``(B, N, C)``.
        """
        q, k, v = self.conv_proj(x, hw_shape, with_cls_token)
        x = attention(self.proj_q(q), self.proj_k(k), self.proj_v(v), self.num_heads,
                          self.scale, self.attn_drop if self.training else 0.,
                          fast=self.fast_kernels)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """Two linear layers with an activation between them: ``fc2(act(fc1(x)))``.

    Args:
        embed_dims: Input and output channels.
        hidden_dims: Hidden channels.
        act_cfg: Activation config (QuickGELU by default, as the official checkpoints).
        drop: Dropout after the activation and after the second layer.
    """

    def __init__(self, embed_dims: int, hidden_dims: int, act_cfg: dict, drop: float = 0.
                 ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = build_act(act_cfg)
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, C) -> (B, N, C)``."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class CvTBlock(nn.Module):
    """A pre-norm transformer block with convolutional attention.

    ``x = x + drop_path(attn(norm1(x)))``, then ``x = x + drop_path(mlp(norm2(x)))``.

    Args:
        embed_dims: Token channels.
        num_heads: Attention heads.
        mlp_ratio: Hidden width of the MLP over ``embed_dims``.
        qkv_bias: Bias in the q, k, v linear projections.
        kv_stride: Stride of the key and value depthwise projections.
        drop_rate: Dropout in the MLP and after the attention projection.
        attn_drop_rate: Dropout on the attention weights.
        drop_path_rate: Stochastic depth rate of this block.
        act_cfg: MLP activation config.
    """

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float = 4.,
                 qkv_bias: bool = True, kv_stride: int = 2, drop_rate: float = 0.,
                 attn_drop_rate: float = 0., drop_path_rate: float = 0.,
                 act_cfg: dict | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=LN_EPS)
        self.attn = ConvAttention(embed_dims, num_heads, qkv_bias=qkv_bias, kv_stride=kv_stride,
                                  attn_drop=attn_drop_rate, proj_drop=drop_rate)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(embed_dims, eps=LN_EPS)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio),
                       act_cfg or dict(type='QuickGELU'), drop_rate)

    def attention_branch(self, x: torch.Tensor, hw_shape: tuple[int, int],
                         with_cls_token: bool) -> torch.Tensor:
        """``x + drop_path(attn(norm1(x)))``: ``(B, N, C) -> (B, N, C)``."""
        return x + self.drop_path(self.attn(self.norm1(x), hw_shape, with_cls_token))

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        """``x + drop_path(mlp(norm2(x)))``: ``(B, N, C) -> (B, N, C)``."""
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int], with_cls_token: bool
                ) -> torch.Tensor:
        """``(B, N, C) -> (B, N, C)``; ``N = H*W`` (+1 with a class token)."""
        return self.mlp_branch(self.attention_branch(x, hw_shape, with_cls_token))


class CvTStage(nn.Module):
    """One CvT stage: convolutional embedding, optional class token, transformer blocks.

    Args:
        in_channels: Channels of the input map.
        embed_dims: Token channels of this stage.
        depth: Number of blocks.
        num_heads: Attention heads.
        patch_size: Kernel of the embedding convolution.
        patch_stride: Its stride.
        patch_padding: Its padding.
        kv_stride: Stride of the key/value depthwise projections.
        with_cls_token: Whether the stage carries a class token.
        drop_path_rates: Stochastic depth rate of each block (``depth`` values).
        with_cp: Checkpoint the activations of each block's two residual branches.
        block_cfg: Further keyword arguments of :class:`CvTBlock`.
    """

    def __init__(self, in_channels: int, embed_dims: int, depth: int, num_heads: int,
                 patch_size: int, patch_stride: int, patch_padding: int, kv_stride: int,
                 with_cls_token: bool, drop_path_rates: Sequence[float], with_cp: bool = False,
                 **block_cfg) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.patch_embed = ConvEmbed(in_channels, embed_dims, patch_size, patch_stride,
                                     patch_padding)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims)) if with_cls_token else None
        self.blocks = ModuleList([
            CvTBlock(embed_dims, num_heads, kv_stride=kv_stride, drop_path_rate=rate,
                     **block_cfg) for rate in drop_path_rates
        ])

    @property
    def with_cls_token(self) -> bool:
        return self.cls_token is not None

    def _run_block(self, block: CvTBlock, x: torch.Tensor, hw_shape: tuple[int, int]
                   ) -> torch.Tensor:
        if not (self.with_cp and x.requires_grad):
            return block(x, hw_shape, self.with_cls_token)
        # One checkpoint per residual branch: the backward then holds the activations of
        # one branch at a time, not of the whole block.
        x = cp.checkpoint(
            block.attention_branch, x, hw_shape, self.with_cls_token, use_reentrant=False,
            context_fn=lambda: (contextlib.nullcontext(), keep_bn_statistics(block.attn)))
        return cp.checkpoint(block.mlp_branch, x, use_reentrant=False)

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int]
                ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        """Run the stage.

        Args:
            x: Map ``(B, C_in, H, W)``.
            hw_shape: ``(H, W)``.

        Returns:
            Tokens ``(B, H'*W', C)`` without the class token, ``(H', W')``, and the class
            token ``(B, 1, C)`` or None. ``H'`` follows :class:`ConvEmbed`.
        """
        x, hw_shape = self.patch_embed(x, hw_shape)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for block in self.blocks:
            x = self._run_block(block, x, hw_shape)
        if self.cls_token is not None:
            return x[:, 1:], hw_shape, x[:, :1]
        return x, hw_shape, None


@MODELS.register_module()
class CvT(BaseModule):
    """CvT backbone: Convolutional vision Transformer.

    A PyTorch implementation of `CvT: Introducing Convolutions to Vision Transformers
    <https://arxiv.org/abs/2103.15808>`_, faithful to the official code and checkpoints.
    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` (or ``load_state_dict``,
    ``load_from``, ``mmengine.runner.load_checkpoint``) loads the official ``.pth`` files, the
    transformers checkpoints (``.safetensors``, ``pytorch_model.bin`` or a
    ``save_pretrained`` folder), this package's and the OpenMMLab toolboxes' checkpoints,
    from a path or an ``http(s)://`` URL; foreign key names are converted on the way in.

    Output sizes: stage ``i`` has ``H_i = floor((H_{i-1} + 2 p_i - k_i) / s_i) + 1`` with
    ``H_{-1} = H`` and (k, s, p) = (7, 4, 2), (3, 2, 1), (3, 2, 1) for the presets, i.e. strides
    4, 8, 16 (224 -> 56, 28, 14; 800 -> 200, 100, 50). Inputs need at least 3 pixels per side.

    Args:
        arch: A preset name (``'cvt-13'``, ``'cvt-21'``, ``'cvt-w24'``) or a dict of the
            structure, one value per stage: ``embed_dims``, ``depths`` and ``num_heads``
            (required), ``patch_sizes``, ``patch_strides``, ``patch_paddings`` (default
            7/4/2 for the first stage and 3/2/1 for each further one), ``cls_token``
            (default: only the last stage) and ``mlp_ratio`` (one value, default 4).
        in_channels: Channels of the input image.
        out_indices: Stages whose outputs are returned. Default: all stages for
            ``out_type='featmap'``, the last stage for ``'cls_token'``.
        out_type: ``'featmap'``: a tuple of NCHW maps ``(B, C_i, H_i, W_i)``, each through its
            own LayerNorm (``norm{i}``, as mmdet's Swin). ``'cls_token'``: a 1-tuple with the
            final class token ``(B, C)`` through the final LayerNorm ``cls_norm``, as the
            official classifier feeds its head.
        kv_strides: Stride of the key/value projections, per stage (an int for all). Default
            2 everywhere, as the paper; larger strides cut the attention cost and keep the
            weights loadable.
        drop_path_rate: Stochastic depth, the rate of the last block of a stage; within a
            stage the rate rises linearly from 0 over its blocks, as the official code does.
            A float is the official pattern: that rate for the last stage, none for the
            earlier ones (``0.1`` is ``[0, 0, 0.1]`` for three stages); a list gives each
            stage's rate. Default: the official recipe of a preset (0.1 for CvT-13 and -21,
            0.3 for W24), none for a custom arch.
        drop_rate: Dropout in the MLPs and after the attention projections.
        attn_drop_rate: Dropout on attention weights.
        qkv_bias: Bias in the q, k, v projections.
        act_cfg: MLP activation. QuickGELU matches the official checkpoints; the ``GELU``
            of mmcv (exact, erf-based) matches the transformers port.
        frozen_stages: Stages ``0 .. frozen_stages - 1`` (with their output norms) are frozen:
            no gradients, eval mode. ``-1`` or ``0`` freezes nothing.
        norm_eval: Keep every BatchNorm in eval mode during training (use the running
            statistics, as detection and segmentation with small batches want).
        with_cp: Activation checkpointing per residual branch (attention, MLP) of every
            block: less memory, the same gradients, one more forward computation.
        fast_kernels: Attention through ``F.scaled_dot_product_attention`` (see
            :meth:`use_fast_kernels`); False: the explicit softmax, as the paper writes it.
        pretrained: A checkpoint to start from, as mmseg's segmentors pass it (the same as
            ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH_OR_URL)``, or None for the official
            truncated-normal initialisation.
    """

    arch_settings = {
        'cvt-13': dict(embed_dims=[64, 192, 384], depths=[1, 2, 10], num_heads=[1, 3, 6]),
        'cvt-21': dict(embed_dims=[64, 192, 384], depths=[1, 4, 16], num_heads=[1, 3, 6]),
        'cvt-w24': dict(embed_dims=[192, 768, 1024], depths=[2, 2, 20], num_heads=[3, 12, 16]),
    }
    #: The official recipe's stochastic depth (``DROP_PATH_RATE`` of the yamls) per preset.
    recipe_drop_path_rates = {'cvt-13': [0., 0., 0.1], 'cvt-21': [0., 0., 0.1],
                              'cvt-w24': [0., 0., 0.3]}
    required_arch_keys = ('embed_dims', 'depths', 'num_heads')
    optional_arch_keys = ('patch_sizes', 'patch_strides', 'patch_paddings', 'cls_token',
                          'mlp_ratio')
    out_types = ('featmap', 'cls_token')

    def __init__(self,
                 arch: str | dict = 'cvt-13',
                 in_channels: int = 3,
                 out_indices: Sequence[int] | int | None = None,
                 out_type: str = 'featmap',
                 kv_strides: Sequence[int] | int = 2,
                 drop_path_rate: float | Sequence[float] | None = None,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 qkv_bias: bool = True,
                 act_cfg: dict | None = None,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 fast_kernels: bool = True,
                 pretrained: str | None = None,
                 init_cfg: dict | list | None = None) -> None:
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('CvT got both pretrained and init_cfg: pass one of them '
                                 '(pretrained=X means init_cfg=dict(type="Pretrained", '
                                 'checkpoint=X))')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        self.arch = self.parse_arch(arch)
        self.num_stages = len(self.arch['embed_dims'])
        self.embed_dims = list(self.arch['embed_dims'])
        self.in_channels = in_channels
        self.kv_strides = self._per_stage('kv_strides', kv_strides, self.num_stages, int, 1)
        stage_rates = self._parse_drop_path_rate(arch, drop_path_rate)

        if out_type not in self.out_types:
            raise ValueError(f'out_type must be one of {self.out_types}, got {out_type!r}')
        self.out_type = out_type
        self.out_indices = self.parse_out_indices(self.arch, out_indices, out_type)
        self.feature_info = self.describe_outputs(self.arch, self.out_indices, out_type)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {self.num_stages}] for a '
                             f'{self.num_stages}-stage CvT, got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        self.stages = ModuleList()
        channels = in_channels
        for i in range(self.num_stages):
            depth = self.arch['depths'][i]
            self.stages.append(CvTStage(
                in_channels=channels,
                embed_dims=self.embed_dims[i],
                depth=depth,
                num_heads=self.arch['num_heads'][i],
                patch_size=self.arch['patch_sizes'][i],
                patch_stride=self.arch['patch_strides'][i],
                patch_padding=self.arch['patch_paddings'][i],
                kv_stride=self.kv_strides[i],
                with_cls_token=self.arch['cls_token'][i],
                drop_path_rates=[stage_rates[i] * j / max(depth - 1, 1) for j in range(depth)],
                with_cp=with_cp,
                mlp_ratio=self.arch['mlp_ratio'],
                qkv_bias=qkv_bias,
                drop_rate=drop_rate,
                attn_drop_rate=attn_drop_rate,
                act_cfg=act_cfg or dict(type='QuickGELU')))
            channels = self.embed_dims[i]

        if out_type == 'featmap':
            for i in self.out_indices:
                self.add_module(f'norm{i}', nn.LayerNorm(self.embed_dims[i], eps=LN_EPS))
        else:
            self.cls_norm = nn.LayerNorm(self.embed_dims[-1], eps=LN_EPS)
        self._freeze_stages()
        self.use_fast_kernels(fast_kernels)
        # Official and transformers names, and whole-model checkpoints, load everywhere.
        self._register_load_state_dict_pre_hook(cvt_load_state_dict_pre_hook,
                                                with_module=True)

    # ------------------------------------------------------------------ argument parsing
    @staticmethod
    def _per_stage(name: str, value: object, num_stages: int, kind: type, minimum: float
                   ) -> list:
        values = [value] * num_stages if isinstance(value, (int, float, bool)) else value
        if not isinstance(values, (list, tuple)) or len(values) != num_stages:
            raise ValueError(f'{name} needs one value per stage ({num_stages}; embed_dims has '
                             f'{num_stages} entries), got {value!r}')
        if kind is bool:
            if not all(isinstance(v, bool) for v in values):
                raise ValueError(f'{name} must be True or False per stage, got {value!r}')
            return list(values)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= minimum
                   and (kind is float or float(v).is_integer()) for v in values):
            kind_name = 'integers' if kind is int else 'numbers'
            raise ValueError(f'{name} must be {kind_name} >= {minimum}, got {value!r}')
        return [kind(v) for v in values]

    @classmethod
    def parse_arch(cls, arch: str | dict) -> dict:
        """Fill in and check an arch: a preset name or a dict (see the class docstring).

        Returns:
            A dict with every key of :attr:`required_arch_keys` and
            :attr:`optional_arch_keys`, one value per stage (one ``mlp_ratio``).

        Raises:
            ValueError: an unknown preset or key, a missing key, or a field of the wrong
                length or value; the message names it.
        """
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_settings:
                raise ValueError(f'Unknown CvT arch {arch!r}; valid presets are '
                                 f'{sorted(cls.arch_settings)}, or pass a dict with the keys '
                                 f'{list(cls.required_arch_keys)}')
            arch = cls.arch_settings[arch.lower()]
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a preset name or a dict, got {type(arch).__name__}')
        missing = [k for k in cls.required_arch_keys if k not in arch]
        if missing:
            raise ValueError(f'Custom CvT arch is missing the keys {missing}; it needs '
                             f'{list(cls.required_arch_keys)}')
        unknown = sorted(set(arch) - set(cls.required_arch_keys) - set(cls.optional_arch_keys))
        if unknown:
            raise ValueError(f'Unknown keys {unknown} in the CvT arch; valid keys: '
                             f'{sorted(cls.required_arch_keys + cls.optional_arch_keys)}')
        if not isinstance(arch['embed_dims'], (list, tuple)) or not arch['embed_dims']:
            raise ValueError(f"arch field 'embed_dims' must list the width of each stage, got "
                             f"{arch['embed_dims']!r}")
        n = len(arch['embed_dims'])
        defaults = dict(patch_sizes=[7] + [3] * (n - 1), patch_strides=[4] + [2] * (n - 1),
                        patch_paddings=[2] + [1] * (n - 1),
                        cls_token=[False] * (n - 1) + [True])
        filled = {**defaults, **arch}
        parsed = {key: cls._per_stage(f'arch field {key!r}', filled[key], n, int, minimum)
                  for key, minimum in (('embed_dims', 1), ('depths', 1), ('num_heads', 1),
                                       ('patch_sizes', 1), ('patch_strides', 1),
                                       ('patch_paddings', 0))}
        parsed['cls_token'] = cls._per_stage("arch field 'cls_token'", filled['cls_token'], n,
                                             bool, 0)
        parsed['mlp_ratio'] = float(arch.get('mlp_ratio', 4.))
        for i, (dims, heads) in enumerate(zip(parsed['embed_dims'], parsed['num_heads'])):
            if dims % heads:
                raise ValueError(f'arch stage {i}: embed_dims {dims} is not divisible by '
                                 f'num_heads {heads}')
        return parsed

    @classmethod
    def parse_out_indices(cls, arch: dict, out_indices: Sequence[int] | int | None,
                          out_type: str = 'featmap') -> tuple[int, ...]:
        """Normalise ``out_indices`` for a parsed arch (negative indices count from the end).

        Raises:
            ValueError: an index out of range, or a ``'cls_token'`` output of a stage
                without a class token.
        """
        num_stages = len(arch['embed_dims'])
        if out_indices is None:
            out_indices = (range(num_stages) if out_type == 'featmap' else (num_stages - 1,))
        elif isinstance(out_indices, int):
            out_indices = (out_indices,)
        parsed = []
        for index in out_indices:
            if not isinstance(index, int) or not -num_stages <= index < num_stages:
                raise ValueError(f'out_indices entry {index!r} is out of range for a '
                                 f'{num_stages}-stage CvT (valid: 0..{num_stages - 1} or '
                                 f'negative from the end)')
            parsed.append(index % num_stages)
        if out_type == 'cls_token':
            no_token = [i for i in parsed if not arch['cls_token'][i]]
            if no_token:
                raise ValueError(f"out_type='cls_token' needs stages with a class token, but "
                                 f"stages {no_token} have none (cls_token: {arch['cls_token']})")
        return tuple(parsed)

    @classmethod
    def describe_outputs(cls, arch: str | dict, out_indices: Sequence[int] | int | None = None,
                         out_type: str = 'featmap') -> list[dict]:
        """What each output is, without building anything (as timm's ``feature_info``).

        Args:
            arch: A preset name, a dict arch or a parsed arch.
            out_indices: As for :class:`CvT`.
            out_type: As for :class:`CvT`.

        Returns:
            One dict per output: ``num_chs`` (channels), ``reduction`` (stride against the
            input; for ``'cls_token'`` the stride of the stage's map), ``stage`` and
            ``module`` (the norm that produces it).
        """
        arch = cls.parse_arch(arch)
        indices = cls.parse_out_indices(arch, out_indices, out_type)
        return [dict(num_chs=arch['embed_dims'][i], stage=i,
                     reduction=math.prod(arch['patch_strides'][:i + 1]),
                     module=f'norm{i}' if out_type == 'featmap' else 'cls_norm')
                for i in indices]

    def _parse_drop_path_rate(self, arch: str | dict,
                              rate: float | Sequence[float] | None) -> list[float]:
        if rate is None:
            preset = arch.lower() if isinstance(arch, str) else None
            rate = self.recipe_drop_path_rates.get(preset, [0.] * self.num_stages)
        elif isinstance(rate, (int, float)) and not isinstance(rate, bool):
            rate = [0.] * (self.num_stages - 1) + [rate]
        rates = self._per_stage('drop_path_rate', rate, self.num_stages, float, 0.)
        if any(r >= 1 for r in rates):
            raise ValueError(f'drop_path_rate must be in [0, 1), got {rates}')
        return rates

    # ------------------------------------------------------------------ training state
    def _freeze_stages(self) -> None:
        for i in range(max(self.frozen_stages, 0)):
            modules = [self.stages[i]]
            if hasattr(self, f'norm{i}'):
                modules.append(getattr(self, f'norm{i}'))
            for module in modules:
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> 'CvT':
        """Set train mode, keeping frozen stages and (with ``norm_eval``) BatchNorms in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def use_fast_kernels(self, enabled: bool = True) -> 'CvT':
        """Switch the attention between PyTorch's fused kernels and the plain reference.

        Fast: ``F.scaled_dot_product_attention``, which never holds the query-by-key score
        matrix. Reference: ``softmax(q @ k^T * scale) @ v`` written out. Every other layer
        is the same module either way (convolution, BatchNorm, LayerNorm, Linear,
        activation), so the state dict, checkpoints and training are unaffected and the
        switch may be flipped at any time. Both compute the same function up to float
        rounding.

        Args:
            enabled: True for the fused kernels, False for the reference.

        Returns:
            The model itself.
        """
        for module in self.modules():
            if isinstance(module, ConvAttention):
                module.fast_kernels = enabled
        return self

    def switch_to_deploy(self) -> 'CvT':
        """Fold each projection's BatchNorm into its depthwise convolution, for inference.

        Each :class:`DepthwiseConvBN` becomes one ``nn.Conv2d`` with a bias (its running
        statistics and affine parameters folded in), the same function as the pair in eval
        mode. This is one-way: the model then has no projection BatchNorms to train, and
        its state dict holds ``conv_proj.{q,k,v}.weight`` / ``.bias`` instead of
        ``conv_proj.{q,k,v}.conv.*`` / ``.bn.*``, so load weights before switching. Calling
        it again does nothing.

        Returns:
            The model itself.
        """
        for module in self.modules():
            if isinstance(module, ConvProjection):
                module.switch_to_deploy()
        return self

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """Load a checkpoint (``init_cfg`` of type Pretrained) or apply the official init.

        The official init: truncated normal (std 0.02) for every Linear weight and the class
        token, zero Linear biases, unit/zero LayerNorm and BatchNorm; convolutions keep
        PyTorch's default initialisation.
        """
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            load_cvt_weights(self, self.init_cfg['checkpoint'],
                             prefix=self.init_cfg.get('prefix'))
            self._is_init = True
            return
        if self.init_cfg is not None:
            super().init_weights()
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, _BatchNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for stage in self.stages:
            if stage.cls_token is not None:
                trunc_normal_(stage.cls_token, std=.02)

    # ------------------------------------------------------------------ forward
    def output_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Spatial size ``(H_i, W_i)`` of each stage's map for an input of ``height x width``."""
        shapes = [(height, width)]
        for stage in self.stages:
            shapes.append(stage.patch_embed.output_size(shapes[-1]))
        return shapes[1:]

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'CvT expects a torch.Tensor of shape (B, C, H, W), got '
                            f'{type(x).__name__}')
        if x.dim() != 4:
            raise ValueError(f'CvT expects a 4-D input (B, C, H, W), got shape '
                             f'{tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'CvT was built with in_channels={self.in_channels}, but the input '
                             f'has {x.shape[1]} channels (shape {tuple(x.shape)})')
        if x.shape[0] == 0:
            raise ValueError(f'CvT got an empty batch (shape {tuple(x.shape)})')
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return  # sizes are symbolic in an export; the checks above are shape-free
        H, W = x.shape[2:]
        for i, (h, w) in enumerate(self.output_shapes(H, W)):
            if h < 1 or w < 1:
                raise ValueError(f'Input of {H}x{W} pixels is too small for CvT: stage {i} '
                                 f'would have a {h}x{w} map. Each side must be at least '
                                 f'{self.min_input_size()} pixels')

    def min_input_size(self) -> int:
        """Smallest input side for which every stage has at least one position."""
        size = 1
        while any(h < 1 for h, _ in self.output_shapes(size, size)):
            size += 1
        return size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Extract features.

        Args:
            x: Images ``(B, in_channels, H, W)``, any ``H, W`` of at least 3 pixels
                (see :meth:`output_shapes`).

        Returns:
            ``out_type='featmap'``: a tuple of maps ``(B, C_i, H_i, W_i)``, one per
            ``out_indices``. ``out_type='cls_token'``: a tuple of ``(B, C)`` class tokens.
        """
        self._check_input(x)
        outs = []
        hw_shape = (x.shape[2], x.shape[3])
        for i, stage in enumerate(self.stages):
            tokens, hw_shape, cls_token = stage(x, hw_shape)
            x = tokens_to_map(tokens, hw_shape)
            if i not in self.out_indices:
                continue
            if self.out_type == 'featmap':
                normed = getattr(self, f'norm{i}')(tokens)
                outs.append(tokens_to_map(normed, hw_shape).contiguous())
            else:
                outs.append(self.cls_norm(cls_token[:, 0]))
        return tuple(outs)
