"""ppdet/utils/synthetic.py and its tool, tools/make_synthetic_widerface.py: the real WIDER layout and val ground
truth, varied drawn faces, determinism."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from ppdet.data.source.widerface import WIDERFaceDataSet
from ppdet.utils import synthetic

TOOL = os.path.join(REPO, 'tools', 'make_synthetic_widerface.py')


@pytest.fixture(scope='module')
def rendered():
    """Annotations of 60 images (160 px), enough to meet every kind of face."""
    return [synthetic.render(7, 'train', i, 160) for i in range(60)]


def files(root):
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, 'rb') as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


def test_command_writes_the_wider_layout(tmp_path):
    result = subprocess.run([sys.executable, TOOL, '--out', str(tmp_path), '--train', '6', '--val', '3',
                             '--size', '96', '--seed', '3'], capture_output=True, text=True, check=True)
    assert 'train: 6 images' in result.stdout and 'val: 3 images' in result.stdout
    for split, count in (('train', 6), ('val', 3)):
        anno = tmp_path / 'wider_face_split' / 'wider_face_{}_bbx_gt.txt'.format(split)
        lines = anno.read_text().splitlines()
        paths = [line for line in lines if line.endswith('.jpg')]
        assert len(paths) == count and all('--' in p.split('/')[0] for p in paths)
        assert all((tmp_path / 'WIDER_{}'.format(split) / 'images' / p).is_file() for p in paths)
        faces = [line for line in lines if not line.endswith('.jpg') and ' ' in line.strip()]
        assert faces and all(len(line.split()) == 10 for line in faces)
        records = WIDERFaceDataSet(str(tmp_path), 'WIDER_{}/images'.format(split),
                                   'wider_face_split/' + anno.name).get_roidb()
        assert len(records) == count


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    for name, seed, workers in (('a', 1, 1), ('b', 1, 2), ('c', 2, 1)):
        synthetic.make_dataset(str(tmp_path / name), train=4, val=2, size=80, seed=seed, workers=workers)
    a, b, c = (files(tmp_path / n) for n in 'abc')
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_faces_vary_like_wider(rendered):
    faces = np.array([f for _, fs in rendered for f in fs])
    counts = [len(fs) for _, fs in rendered]
    assert 0 in counts and max(counts) >= 8  # images without faces, and crowds
    heights = faces[:, 3]
    assert heights.min() <= 8 and heights.max() >= 60  # a wide range of sizes, small ones included
    assert set(faces[:, 4]) == {0, 1, 2}  # blur levels
    assert {1, 2} <= set(faces[:, 8])  # partial and heavy occlusion
    assert faces[:, 9].any() and faces[:, 5].any() and faces[:, 6].any()  # pose, expression, illumination
    touching = [f for im, fs in rendered for f in fs
                if f[0] == 0 or f[1] == 0 or f[0] + f[2] == im.shape[1] or f[1] + f[3] == im.shape[0]]
    assert touching  # faces cut by the image border


def test_faces_are_drawn_inside_their_boxes(rendered):
    """Clear, unoccluded face centres are skin (red well above blue), unlike the scene around them."""
    faces, around = [], []
    for im, fs in rendered:
        for x, y, w, h, _, _, _, _, occlusion, _ in fs:
            if h >= 24 and not occlusion:
                faces.append(im[y + h // 3:y + 2 * h // 3, x + w // 3:x + 2 * w // 3].reshape(-1, 3).mean(axis=0))
                around.append(im.reshape(-1, 3).mean(axis=0))
    assert len(faces) >= 10
    red_minus_blue = np.array(faces)[:, 2] - np.array(faces)[:, 0]
    assert red_minus_blue.mean() > 30 and np.median(red_minus_blue) > 30
    assert np.mean(np.array(around)[:, 2] - np.array(around)[:, 0]) < 20


def test_rendering_fills_the_requested_size():
    """The long side is --size, the short side 62-100% of it, in either orientation; boxes lie inside the image."""
    shapes = []
    for i in range(12):
        img, faces = synthetic.render(0, 'train', i, 128)
        shapes.append(img.shape)
        assert img.dtype == np.uint8 and img.shape[2] == 3 and max(img.shape[:2]) == 128
        assert min(img.shape[:2]) >= int(128 * 0.62)
        assert all(x >= 0 and y >= 0 and x + w <= img.shape[1] and y + h <= img.shape[0] and w > 0 and h > 0
                   for x, y, w, h, *_ in faces)
    assert len({s[:2] for s in shapes}) > 1  # sizes vary from image to image


def test_val_ground_truth_is_the_official_layout(tmp_path):
    """wider_face_val.mat and the easy/medium/hard gt_list files as the eval_tools hold them, read as
    PaddleDetection's WIDERFaceValDataset reads them (scipy loadmat, the same nesting)."""
    from scipy.io import loadmat

    synthetic.make_dataset(str(tmp_path), train=0, val=12, size=160, seed=5, workers=1)
    folder = tmp_path / 'WIDER_val' / 'ground_truth'
    face = loadmat(str(folder / 'wider_face_val.mat'))
    records = WIDERFaceDataSet(str(tmp_path), 'WIDER_val/images', 'wider_face_split/wider_face_val_bbx_gt.txt')
    by_name = {os.path.splitext(os.path.basename(r['im_file']))[0]: r for r in records.get_roidb()}
    subsets = {s: loadmat(str(folder / 'wider_{}_val.mat'.format(s)))['gt_list'] for s in synthetic.SUBSET_MIN_HEIGHT}
    found = {}
    for e, event in enumerate(face['event_list'][:, 0]):
        for j, name in enumerate(face['file_list'][e, 0][:, 0]):
            name = str(name[0])
            assert name.split('_')[0] == str(event[0]).split('--')[0]
            boxes = face['face_bbx_list'][e, 0][j, 0]
            found[name] = boxes
            kept = [set(subsets[s][e, 0][j, 0].reshape(-1).astype(int)) for s in ('easy', 'medium', 'hard')]
            assert kept[0] <= kept[1] <= kept[2] <= set(range(1, len(boxes) + 1))  # nested, 1-based
            heights = boxes[:, 3]
            assert all(heights[i - 1] >= 10 * 160 / 640. for i in kept[2])
            assert all(heights[i - 1] >= 50 * 160 / 640. for i in kept[0])
    assert found.keys() == by_name.keys()
    for name, boxes in found.items():  # the same faces as the annotation file (x y w h, before its x2 = x + w)
        gt = by_name[name]['gt_bbox']
        assert boxes.shape == (len(gt), 4)
        np.testing.assert_allclose(boxes[:, :2], gt[:, :2], atol=1)
    assert sum(len(b) for b in found.values()) > 12


def test_scenes_limit_what_is_drawn():
    """The demo draws portraits and empty images only: few, large faces that a short training can learn."""
    easy = [synthetic.render(3, 'train', i, 96, ('empty', 'portraits')) for i in range(40)]
    assert all(len(faces) <= 3 for _, faces in easy)
    assert any(len(faces) == 0 for _, faces in easy) and any(len(faces) > 0 for _, faces in easy)
    small = min(min(f[2], f[3]) for _, faces in easy for f in faces)
    crowd = [synthetic.render(3, 'train', i, 96, ('crowds',)) for i in range(10)]
    assert all(len(faces) >= 4 for _, faces in crowd)
    assert small > max(max(f[2], f[3]) for _, faces in crowd for f in faces) / 2


def test_unknown_scene_is_a_clear_error():
    out = subprocess.run([sys.executable, TOOL, '--out', '/tmp/never', '--scenes', 'portraits,parties'],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and 'parties' in out.stderr.strip().splitlines()[-1]
