"""The transformers port of CvT (``CvtModel``) as an independent reference.

Its weights are renamed to the official CvT key names, so a test goes
port -> official names -> ``convert_official_cvt`` -> ours, exercising the converter too.
"""
from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn as nn

from cvt_backbone import QuickGELU

_HF_RULES = (
    (r'^cvt\.', ''),
    (r'^layernorm\.', 'norm.'),
    (r'^classifier\.', 'head.'),
    (r'^encoder\.stages\.(\d+)\.embedding\.convolution_embeddings\.projection\.',
     r'stage\1.patch_embed.proj.'),
    (r'^encoder\.stages\.(\d+)\.embedding\.convolution_embeddings\.normalization\.',
     r'stage\1.patch_embed.norm.'),
    (r'^encoder\.stages\.(\d+)\.cls_token$', r'stage\1.cls_token'),
    (r'^encoder\.stages\.(\d+)\.layers\.(\d+)\.', r'stage\1.blocks.\2.'),
    (r'attention\.attention\.convolution_projection_(q)uery\.convolution_projection\.'
     r'convolution\.', r'attn.conv_proj_\1.conv.'),
    (r'attention\.attention\.convolution_projection_(k)ey\.convolution_projection\.'
     r'convolution\.', r'attn.conv_proj_\1.conv.'),
    (r'attention\.attention\.convolution_projection_(v)alue\.convolution_projection\.'
     r'convolution\.', r'attn.conv_proj_\1.conv.'),
    (r'attention\.attention\.convolution_projection_(q)uery\.convolution_projection\.'
     r'normalization\.', r'attn.conv_proj_\1.bn.'),
    (r'attention\.attention\.convolution_projection_(k)ey\.convolution_projection\.'
     r'normalization\.', r'attn.conv_proj_\1.bn.'),
    (r'attention\.attention\.convolution_projection_(v)alue\.convolution_projection\.'
     r'normalization\.', r'attn.conv_proj_\1.bn.'),
    (r'attention\.attention\.projection_(q)uery\.', r'attn.proj_\1.'),
    (r'attention\.attention\.projection_(k)ey\.', r'attn.proj_\1.'),
    (r'attention\.attention\.projection_(v)alue\.', r'attn.proj_\1.'),
    (r'attention\.output\.dense\.', 'attn.proj.'),
    (r'intermediate\.dense\.', 'mlp.fc1.'),
    (r'\.output\.dense\.', '.mlp.fc2.'),
    (r'layernorm_before\.', 'norm1.'),
    (r'layernorm_after\.', 'norm2.'),
)


def hf_to_official(state_dict: dict) -> OrderedDict:
    """Rename a ``CvtModel`` / ``CvtForImageClassification`` state dict to official keys."""
    out = OrderedDict()
    for key, value in state_dict.items():
        new = key
        for pattern, replacement in _HF_RULES:
            new = re.sub(pattern, replacement, new)
        out[new] = value
    return out


def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every LayerNorm/BatchNorm non-trivial affine parameters and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def build_hf_cvt(arch: dict, num_labels: int = 0, quick_gelu: bool = True, seed: int = 0):
    """A randomly initialised port with the given arch; QuickGELU swapped in when asked."""
    from transformers import CvtConfig, CvtForImageClassification, CvtModel

    torch.manual_seed(seed)
    n = len(arch['embed_dims'])
    config = CvtConfig(
        embed_dim=arch['embed_dims'], depth=arch['depths'], num_heads=arch['num_heads'],
        patch_sizes=[7, 3, 3][:n], patch_stride=[4, 2, 2][:n], patch_padding=[2, 1, 1][:n],
        cls_token=[False] * (n - 1) + [True], mlp_ratio=[4.0] * n, qkv_bias=[True] * n,
        drop_rate=[0.0] * n, attention_drop_rate=[0.0] * n, drop_path_rate=[0.0] * n,
        stride_kv=[2] * n, padding_kv=[1] * n, stride_q=[1] * n, padding_q=[1] * n,
        kernel_qkv=[3] * n, qkv_projection_method=['dw_bn'] * n,
        num_labels=max(num_labels, 1))
    model = CvtForImageClassification(config) if num_labels else CvtModel(config)
    if quick_gelu:
        for m in model.modules():
            if type(m).__name__ == 'CvtIntermediate':
                m.activation = QuickGELU()
    randomize_norms(model, seed)
    return model.eval()
