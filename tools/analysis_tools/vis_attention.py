"""Draw a CvT block's attention for chosen queries, each head's weights as a heat map.

    python tools/analysis_tools/vis_attention.py cvt-13 CvT-13-224x224-IN-1k.pth cat.jpg
    python tools/analysis_tools/vis_attention.py configs/demo/cvt-tiny_shapes-cls.py \\
        work_dirs/demo/cls/epoch_12.pth data/shapes_cls/val/circle/00001.png --points 20,30

One row per query: the class token (in a stage that has one: the last of the presets) and
each ``--points x,y`` (image pixels; default the image centre), and one column per head:
its weights over the keys (the stride-2 key grid of the stage, upsampled onto the image).
The class token's own key is not a place in the image; its weight is given in the titles.
Only the asked rows of ``softmax(q k^T * scale)`` are computed (at 1333x800 the whole
matrix of stage 1 would be 67k x 17k per head). The picture goes to
``work_dirs/attention/attention.png`` unless ``--out`` names another file.
"""
from __future__ import annotations

import argparse
import io
import os.path as osp

import numpy as np

from attention_maps import AttentionMaps, attention_maps, draw_heat_map, load_backbone
from cvt_backbone import ConfigError
from cvt_backbone.checkpoint.write import atomic_write_bytes
from cvt_backbone.errors import run_main


def point(text: str) -> tuple[float, float]:
    """``'x,y'`` -> ``(x, y)``."""
    try:
        x, y = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'a point is x,y in image pixels, e.g. 40,25; got '
                                         f'{text!r}') from None
    return x, y


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('model', help='a CvT preset (cvt-13, cvt-21, cvt-w24) or a config file')
    parser.add_argument('checkpoint', help='weights: any CvT checkpoint for a preset, the '
                                           'model checkpoint for a config')
    parser.add_argument('image', help='the image')
    parser.add_argument('--stage', type=int, default=-1, help='stage (default: the last)')
    parser.add_argument('--block', type=int, default=-1,
                        help='block of the stage (default: its last)')
    parser.add_argument('--points', type=point, nargs='+', metavar='X,Y',
                        help='query positions in image pixels (default: the image centre)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='resize the image to this size first (default: as it is)')
    parser.add_argument('--out', default=osp.join('work_dirs', 'attention', 'attention.png'),
                        help='the PNG to write (default: work_dirs/attention/attention.png)')
    return parser.parse_args()


def read_image(path: str, shape: list[int] | None) -> np.ndarray:
    """An RGB uint8 image ``(H, W, 3)``, resized (bilinear) to ``shape = (H, W)`` if given."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path).convert('RGB')
    except (FileNotFoundError, UnidentifiedImageError) as err:
        raise ConfigError(f'cannot read image {path!r}: {err}') from None
    if shape:
        image = image.resize((shape[1], shape[0]), Image.BILINEAR)
    return np.array(image)


def query_label(index: int, with_cls_token: bool, point: tuple[float, float] | None) -> str:
    if with_cls_token and index == 0:
        return 'class token'
    return f'query ({point[0]:g}, {point[1]:g})'


def figure(image: np.ndarray, maps: AttentionMaps, labels: list[str],
           points: list[tuple[float, float] | None], title: str) -> bytes:
    """The grid (queries x [image, heads]) as PNG bytes."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows, heads = maps.maps.shape[:2]
    fig, axes = plt.subplots(rows, heads + 1, figsize=(2.4 * (heads + 1), 2.5 * rows + 0.4),
                             squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(image)
        if points[r] is not None:
            axes[r, 0].plot(*points[r], marker='+', color='white', markersize=14, mew=3)
            axes[r, 0].plot(*points[r], marker='+', color='black', markersize=12, mew=1.5)
        axes[r, 0].set_title(labels[r], fontsize=9)
        axes[r, 0].axis('off')
        for h in range(heads):
            cls = (f', class-token key {maps.cls_key[r, h]:.0%}'
                   if maps.cls_key.any() else '')
            draw_heat_map(axes[r, h + 1], image, maps.maps[r, h], f'head {h}{cls}')
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def main() -> None:
    args = parse_args()
    if not args.out.endswith('.png'):
        raise ConfigError(f'--out must name a .png file, got {args.out!r}')
    image = read_image(args.image, args.shape)
    try:
        backbone = load_backbone(args.model, args.checkpoint)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    num_stages = len(backbone.model.stages)
    if not -num_stages <= args.stage < num_stages:
        raise ConfigError(f'--stage {args.stage}: this CvT has stages 0..{num_stages - 1}')
    stage = args.stage % num_stages
    depth = len(backbone.model.stages[stage].blocks)
    if not -depth <= args.block < depth:
        raise ConfigError(f'--block {args.block}: stage {stage} has blocks 0..{depth - 1}')
    block = args.block % depth
    height, width = image.shape[:2]
    points = args.points or [((width - 1) / 2, (height - 1) / 2)]
    cls_query = [0] if backbone.model.stages[stage].with_cls_token else []
    try:
        maps, inputs = attention_maps(backbone, image, stage, block, cls_query, points)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    drawn_points = [None] * len(cls_query) + list(points)
    labels = [query_label(i, inputs.with_cls_token, p) for i, p in zip(maps.queries,
                                                                       drawn_points)]
    title = (f'{osp.basename(args.model)}: stage {stage} block {block}, {inputs.hw_shape[0]}x'
             f'{inputs.hw_shape[1]} queries, {maps.maps.shape[2]}x{maps.maps.shape[3]} keys'
             f'{" + class token" if inputs.with_cls_token else ""}; '
             f'{osp.basename(args.checkpoint)}')
    atomic_write_bytes(figure(image, maps, labels, drawn_points, title), args.out)
    for label, row in zip(labels, maps.maps):
        peaks = ', '.join(f'head {h}: {tuple(map(int, np.unravel_index(m.argmax(), m.shape)))}'
                          for h, m in enumerate(row))
        print(f'{label}: strongest key cell (row, col) {peaks}')
    print(f'Wrote {args.out}')


if __name__ == '__main__':
    run_main(main)
