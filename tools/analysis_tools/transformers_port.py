"""transformers' CvT port (``CvtModel`` / ``CvtForImageClassification``) as a reference.

The benchmark measures it beside this package's CvT with the same weights, and the tests
compare against it as an independent implementation. It is built here, once:

* :func:`build_port`: a port of a given arch, randomly initialised (with non-trivial norm
  statistics when asked, :func:`randomize_norms`);
* :func:`port_of`: a port holding the weights of one of this package's CvTs.

Weights move between the two by the library's one key table
(:mod:`cvt_backbone.checkpoint.convert`). The port computes the exact GELU; the official
weights were trained with QuickGELU, which ``quick_gelu=True`` swaps in.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from cvt_backbone import CvT, QuickGELU
from cvt_backbone.checkpoint import to_transformers_state_dict


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


def transformers_config(arch: str | dict, num_labels: int = 0, kv_strides: list | None = None,
                        in_channels: int = 3):
    """The ``CvtConfig`` of a CvT arch (a preset name or a dict, as :class:`CvT` takes).

    Raises:
        ValueError: a stage ``i`` has ``i`` blocks or fewer: the port indexes its per-block
            stochastic-depth rates by the stage number and cannot be built (no preset is
            affected).
    """
    from transformers import CvtConfig

    arch = CvT.parse_arch(arch)
    n = len(arch['embed_dims'])
    if any(depth <= i for i, depth in enumerate(arch['depths'])):
        raise ValueError(f"transformers' CvtModel needs more than i blocks in stage i; "
                         f"depths {arch['depths']} cannot be ported")
    return CvtConfig(
        embed_dim=arch['embed_dims'], depth=arch['depths'], num_heads=arch['num_heads'],
        patch_sizes=arch['patch_sizes'], patch_stride=arch['patch_strides'],
        patch_padding=arch['patch_paddings'], stride_kv=kv_strides or [2] * n,
        cls_token=arch['cls_token'], mlp_ratio=[arch['mlp_ratio']] * n,
        drop_rate=[0.] * n, attention_drop_rate=[0.] * n, drop_path_rate=[0.] * n,
        qkv_bias=[True] * n, qkv_projection_method=['dw_bn'] * n, kernel_qkv=[3] * n,
        padding_kv=[1] * n, stride_q=[1] * n, padding_q=[1] * n, num_channels=in_channels,
        num_labels=max(num_labels, 1))


def _use_quick_gelu(port: nn.Module) -> None:
    for module in port.modules():
        if type(module).__name__ == 'CvtIntermediate':
            module.activation = QuickGELU()


def build_port(arch: str | dict, num_labels: int = 0, quick_gelu: bool = True, seed: int = 0,
               random_norms: bool = True) -> nn.Module:
    """A randomly initialised port: ``CvtForImageClassification`` with ``num_labels``, else
    ``CvtModel``; QuickGELU swapped in when asked; in eval mode."""
    from transformers import CvtForImageClassification, CvtModel

    torch.manual_seed(seed)
    config = transformers_config(arch, num_labels)
    port = CvtForImageClassification(config) if num_labels else CvtModel(config)
    if quick_gelu:
        _use_quick_gelu(port)
    if random_norms:
        randomize_norms(port, seed)
    return port.eval()


def port_of(model: CvT) -> nn.Module:
    """``CvtModel`` with the architecture and the weights of ``model``, in eval mode.

    QuickGELU is swapped in where ``model`` uses it, so that both compute the same function.
    """
    from transformers import CvtModel

    port = CvtModel(transformers_config(model.arch, kv_strides=model.kv_strides,
                                        in_channels=model.in_channels),
                    add_pooling_layer=False)
    port.load_state_dict(to_transformers_state_dict(model.state_dict(), port.state_dict()))
    if isinstance(model.stages[0].blocks[0].mlp.act, QuickGELU):
        _use_quick_gelu(port)
    return port.eval()
