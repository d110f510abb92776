"""Generate the synthetic shapes datasets that the demo configs train on.

    python tools/demo/make_demo_data.py                 # both, into data/
    python tools/demo/make_demo_data.py --only scenes --num-train 200

Writes ``data/shapes_cls`` (mmpretrain CustomDataset tree, 64x64, one shape per image) and
``data/shapes`` (128x128 scenes: COCO instance json with RLE masks, and mmseg label maps).
"""
import argparse
import os.path as osp
import time

from demo_shapes import make_classification_set, make_scene_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data', help='parent folder (default: data)')
    parser.add_argument('--only', choices=['cls', 'scenes'], help='make one dataset only')
    parser.add_argument('--num-train', type=int, help='training images (default per dataset)')
    parser.add_argument('--num-val', type=int, help='validation images')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    sizes = {k: v for k, v in (('num_train', args.num_train), ('num_val', args.num_val)) if v}
    jobs = [('cls', 'shapes_cls', make_classification_set),
            ('scenes', 'shapes', make_scene_set)]
    for name, folder, make in jobs:
        if args.only and args.only != name:
            continue
        root = osp.join(args.out, folder)
        start = time.time()
        print(f'writing {root} ...', flush=True)
        counts = make(root, seed=args.seed, **sizes)
        print(f'  {counts} images in {time.time() - start:.1f} s', flush=True)


if __name__ == '__main__':
    main()
