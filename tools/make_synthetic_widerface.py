#!/usr/bin/env python
"""Write a small synthetic face dataset in the WIDER FACE layout, to try the whole pipeline without WIDER FACE.

    python tools/make_synthetic_widerface.py --out dataset/wider_face [--train 100 --val 25 --size 512 --seed 0]
        [--scenes empty,portraits] [--clutter none]

writes ``DIR/wider_face_split/wider_face_{train,val}_bbx_gt.txt``, ``DIR/WIDER_{train,val}/images/<event>/*.jpg`` and
the val ground truth of the official evaluation, ``DIR/WIDER_val/ground_truth/wider_{face,easy,medium,hard}_val.mat``.
What is drawn and how: ``ppdet/utils/synthetic.py``. The same arguments give byte-identical files, whatever
``--workers``.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.synthetic import CLUTTER, SCENES, make_dataset  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='dataset directory to write (e.g. dataset/wider_face)')
    parser.add_argument('--train', type=int, default=100, help='training images (default 100)')
    parser.add_argument('--val', type=int, default=25, help='validation images (default 25)')
    parser.add_argument('--size', type=int, default=512, help='long side of each image in pixels (default 512)')
    parser.add_argument('--seed', type=int, default=0, help='random seed; the same seed gives the same files')
    parser.add_argument('--workers', type=int, default=None, help='processes (default: CPU count, at most 4)')
    parser.add_argument('--scenes', default=','.join(SCENES),
                        help='kinds of image to draw, comma-separated from {} (default: all)'.format(
                            ', '.join(SCENES)))
    parser.add_argument('--clutter', default='full', choices=sorted(CLUTTER),
                        help='background shapes, occlusion and blur: full (WIDER-like, default), light or none')
    args = parser.parse_args(argv)
    args.scenes = tuple(s.strip() for s in args.scenes.split(',') if s.strip())
    unknown = [s for s in args.scenes if s not in SCENES]
    if unknown or not args.scenes:
        parser.error('--scenes {}: choose from {}'.format(','.join(unknown) or '(none)', ', '.join(SCENES)))
    for name in ('train', 'val'):
        if getattr(args, name) < 0:
            parser.error('--{} must be >= 0'.format(name))
    if args.size < 32:
        parser.error('--size must be at least 32 pixels')
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    made = make_dataset(args.out, args.train, args.val, args.size, args.seed, args.workers, args.scenes,
                        args.clutter)
    total = sum(n for n, _ in made.values())
    seconds = time.time() - start
    for split, (n, faces) in made.items():
        print('{}: {} images, {} faces -> {}'.format(split, n, faces, os.path.join(args.out, 'WIDER_' + split)))
    print('{} images in {:.1f} s ({:.0f} images/minute)'.format(total, seconds, 60 * total / max(seconds, 1e-9)))


if __name__ == '__main__':
    sys.exit(main())
