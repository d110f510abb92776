"""This package's CvT beside transformers' port on the same weights: how far apart they are.

    python tools/analysis_tools/compare_port.py cvt-13
    python tools/analysis_tools/compare_port.py cvt-13 --checkpoint path/to/microsoft-cvt-13
    python tools/analysis_tools/compare_port.py cvt-21 --shape 320 480

The port (``CvtForImageClassification``) computes the exact, erf-based GELU; the published
weights were trained with QuickGELU, which this package uses. The table gives the largest
difference of each stage map, the class token and the logits, relative to the reference's
largest value, between this package's CvT and the port as shipped, and the port with
QuickGELU swapped in. Without ``--checkpoint`` the weights are random (non-trivial norm
statistics); with it, any form of CvT checkpoint (official, transformers, this project's).
"""
from __future__ import annotations

import argparse

import torch

from cvt_backbone import ConfigError, CvT
from cvt_backbone.checkpoint import (
    read_checkpoint,
    to_cvt_keys,
    to_transformers_state_dict,
    unwrap_state_dict,
)
from cvt_backbone.errors import run_main
from transformers_port import build_port


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('arch', choices=sorted(CvT.arch_settings), help='CvT preset')
    parser.add_argument('--checkpoint', help='weights (random when not given)')
    parser.add_argument('--shape', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    parser.add_argument('--classes', type=int, default=1000,
                        help='classifier width when the weights are random')
    return parser.parse_args()


def relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours - reference).abs().max() / reference.abs().max()).item()


def outputs(port, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = port.cvt(x, output_hidden_states=True)
        return [*out.hidden_states, port.layernorm(out.cls_token_value)[:, 0], port(x).logits]


def main() -> None:
    args = parse_args()
    if min(args.shape) < 3:
        raise ConfigError('--shape must be at least 3 pixels per side')
    quick = build_port(args.arch, num_labels=args.classes, quick_gelu=True)
    if args.checkpoint:
        state, _ = to_cvt_keys(unwrap_state_dict(read_checkpoint(args.checkpoint),
                                                 repr(args.checkpoint)))
        if 'head.weight' not in state:
            raise ConfigError(f'{args.checkpoint!r} has no classifier head to compare logits '
                              f'with')
        quick = build_port(args.arch, num_labels=state['head.weight'].shape[0],
                           quick_gelu=True, random_norms=False)
        quick.load_state_dict(to_transformers_state_dict(state, quick.state_dict()))
    shipped = build_port(args.arch, num_labels=quick.config.num_labels, quick_gelu=False,
                         random_norms=False)
    shipped.load_state_dict(quick.state_dict())
    ours = CvT(arch=args.arch, out_type='featmap').eval()
    ours.load_state_dict(quick.state_dict())
    head = CvT(arch=args.arch, out_type='cls_token').eval()
    head.load_state_dict(quick.state_dict())

    x = torch.randn(1, 3, *args.shape, generator=torch.Generator().manual_seed(0))
    maps = []
    hooks = [s.register_forward_hook(lambda _m, _i, out: maps.append(
        out[0].transpose(1, 2).reshape(1, -1, *out[1]))) for s in ours.stages]
    with torch.no_grad():
        ours(x)
        token = head(x)[0]
        logits = torch.nn.functional.linear(token, quick.classifier.weight,
                                            quick.classifier.bias)
    for hook in hooks:
        hook.remove()
    mine = [*maps, token, logits]
    names = [f'stage {i} map' for i in range(len(maps))] + ['class token', 'logits']
    weights = args.checkpoint or 'random (norm statistics randomised)'
    print(f'{args.arch} at {args.shape[0]}x{args.shape[1]}, weights: {weights}\n')
    print('| output | vs the port as shipped (GELU) | vs the port with QuickGELU |')
    print('| --- | --- | --- |')
    for name, a, b, c in zip(names, mine, outputs(shipped, x), outputs(quick, x)):
        print(f'| {name} | {relative(a, b):.2e} | {relative(a, c):.2e} |')


if __name__ == '__main__':
    run_main(main)
