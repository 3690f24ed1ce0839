"""create_reader on a small synthetic WIDER set: batch layout, epochs and seeds, workers, and bad data."""
import logging
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO
from ppdet.core.workspace import ConfigError, load_config
from ppdet.data.reader import check_reader, create_reader
from ppdet.data.source.widerface import DatasetError

# slim/nas/blazeface.yml's reader sections, at 64 px so that the tests stay fast
CONFIG = """\
TrainReader:
  inputs_def: {{image_shape: [3, 64, 64], fields: ['image', 'gt_bbox', 'gt_class', 'im_id']}}
  dataset: !WIDERFaceDataSet {{dataset_dir: {data}, anno_path: wider_face_split/{train_anno},
                              image_dir: WIDER_train/images}}
  sample_transforms:
  - !DecodeImage {{to_rgb: true}}
  - !NormalizeBox {{}}
  - !RandomDistort {{brightness_lower: 0.875, brightness_upper: 1.125, is_order: true}}
  - !ExpandImage {{max_ratio: 4, prob: 0.5}}
  - !RandomInterpImage {{target_size: 64}}
  - !RandomFlipImage {{is_normalized: true}}
  - !Permute {{}}
  - !NormalizeImage {{is_scale: false, mean: [104, 117, 123], std: [127.502231, 127.502231, 127.502231]}}
  batch_size: 4
  use_process: True
  worker_num: 8
  shuffle: true
  memsize: 6G
EvalReader:
  inputs_def: {{fields: ['image', 'im_id', 'im_shape', 'gt_bbox']}}
  dataset: !WIDERFaceDataSet {{dataset_dir: {data}, anno_path: wider_face_split/wider_face_val_bbx_gt.txt,
                              image_dir: WIDER_val/images}}
  sample_transforms:
  - !DecodeImage {{to_rgb: true}}
  - !NormalizeBox {{}}
  - !Permute {{}}
  - !NormalizeImage {{is_scale: false, mean: [104, 117, 123], std: [127.502231, 127.502231, 127.502231]}}
  batch_size: 1
"""


@pytest.fixture(scope='module')
def wider(tmp_path_factory):
    """12 training and 4 validation images made by the generator, as a newcomer would make them."""
    out = tmp_path_factory.mktemp('wider')
    subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'make_synthetic_widerface.py'), '--out', str(out),
                    '--train', '12', '--val', '4', '--size', '96', '--seed', '5'], check=True, capture_output=True)
    return out


def config(tmp_path, data, train_anno='wider_face_train_bbx_gt.txt'):
    path = tmp_path / 'reader.yml'
    path.write_text(CONFIG.format(data=data, train_anno=train_anno))
    return load_config(str(path))


def batches(section, mode, **kwargs):
    kwargs.setdefault('worker_num', 0)
    return list(create_reader(section, mode, **kwargs))


def test_train_batches_have_the_agreed_layout(tmp_path, wider):
    cfg = config(tmp_path, wider)
    out = batches(cfg['TrainReader'], 'train')
    assert [len(b['image']) for b in out] == [4, 4, 4]
    for b in out:
        assert set(b) == {'image', 'gt_bbox', 'gt_class', 'gt_num', 'im_id'}
        assert b['image'].shape == (4, 3, 64, 64) and b['image'].dtype == np.float32
        n, g = b['gt_class'].shape
        assert b['gt_bbox'].shape == (n, g, 4) and b['gt_bbox'].dtype == np.float32 and g >= 1
        assert b['gt_class'].dtype == np.int32 and b['gt_num'].dtype == np.int32
        real = np.arange(g)[None, :] < b['gt_num'][:, None]
        assert np.all(b['gt_class'][real] == 1) and np.all(b['gt_class'][~real] == 0)
        assert np.all(b['gt_bbox'][~real] == 0) and np.all((b['gt_bbox'] >= 0) & (b['gt_bbox'] <= 1))
        boxes = b['gt_bbox'][real]
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        assert abs(b['image'].mean()) < 1.5  # (pixel - mean) / 127.5
    assert sorted(np.concatenate([b['im_id'] for b in out]).tolist()) == list(range(12))


def test_max_iters_cycles_reshuffled_epochs_deterministically(tmp_path, wider, caplog):
    section = config(tmp_path, wider)['TrainReader']
    with caplog.at_level(logging.INFO, logger='ppdet.data.reader'):
        first = batches(section, 'train', max_iters=7, seed=3)
    assert len(first) == 7
    ids = [b['im_id'].tolist() for b in first]
    assert sorted(sum(ids[:3], [])) == sorted(sum(ids[3:6], [])) == list(range(12))
    assert ids[:3] != ids[3:6]  # each epoch is reshuffled
    assert 'TrainReader epoch 0: 12 images used, 0 skipped' in caplog.text
    assert 'TrainReader epoch 2: 4 images used' in caplog.text  # the partial epoch at max_iters
    again = batches(section, 'train', max_iters=7, seed=3)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(first, again) for k in a)
    other = batches(section, 'train', max_iters=7, seed=4)
    assert not all(np.array_equal(a['image'], b['image']) for a, b in zip(first, other))


def test_worker_processes_give_the_same_batches(tmp_path, wider, caplog):
    """The section's worker_num 8 with use_process is capped to the CPUs and runs real DataLoader workers."""
    section = config(tmp_path, wider)['TrainReader']
    with caplog.at_level(logging.INFO, logger='ppdet.data.reader'):
        check_reader(section, 'train')
        reader = create_reader(section, 'train', max_iters=4, seed=1)
        parallel = list(reader)
    cpus = len(os.sched_getaffinity(0))
    assert reader.num_workers == min(8, cpus)
    if cpus < 8:
        assert 'worker_num 8 capped to {}'.format(cpus) in caplog.text
    assert 'memsize is ignored' in caplog.text
    serial = batches(section, 'train', max_iters=4, seed=1)
    assert len(parallel) == 4
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(parallel, serial) for k in a)


def test_eval_batches_keep_native_size_and_original_boxes(tmp_path, wider):
    cfg = config(tmp_path, wider)
    out = batches(cfg['EvalReader'], 'eval')
    assert len(out) == 4
    with open(os.path.join(wider, 'wider_face_split', 'wider_face_val_bbx_gt.txt')) as f:
        lines = f.read().splitlines()
    im = cv2.imread(os.path.join(wider, 'WIDER_val', 'images', lines[0]))
    b = out[0]
    assert set(b) == {'image', 'im_id', 'im_shape', 'gt_bbox', 'gt_num'}
    assert b['image'].shape == (1, 3) + im.shape[:2] and b['im_id'].dtype == np.int64 and b['im_id'][0] == 0
    np.testing.assert_array_equal(b['im_shape'], [im.shape[:2]])
    count = int(lines[1])
    x, y, w, h = (float(v) for v in lines[2].split()[:4])
    assert b['gt_num'][0] == count
    np.testing.assert_allclose(b['gt_bbox'][0, 0], np.array([x, y, x + w, y + h]) / np.tile(im.shape[1::-1], 2),
                               rtol=1e-6)
    np.testing.assert_allclose(b['image'][0, :, 0, 0], (im[0, 0] - np.array([104, 117, 123])) / 127.502231,
                               rtol=1e-5)  # BGR order, as the original's Permute(to_bgr) leaves it


def test_eval_batches_of_two_are_zero_padded(tmp_path, wider):
    section = config(tmp_path, wider)['EvalReader']
    single = batches(section, 'eval')
    section['batch_size'] = 2
    pair = batches(section, 'eval')[0]
    h = max(b['image'].shape[2] for b in single[:2])
    w = max(b['image'].shape[3] for b in single[:2])
    assert pair['image'].shape == (2, 3, h, w)
    for i, b in enumerate(single[:2]):
        _, _, bh, bw = b['image'].shape
        assert np.array_equal(pair['image'][i, :, :bh, :bw], b['image'][0])
        assert not pair['image'][i, :, bh:, :].any() and not pair['image'][i, :, :, bw:].any()
        np.testing.assert_array_equal(pair['im_shape'][i], b['im_shape'][0])


def test_bad_samples_are_skipped_warned_and_summarised(tmp_path, wider, caplog):
    data = tmp_path / 'broken'
    shutil.copytree(wider, data)
    anno = data / 'wider_face_split' / 'wider_face_val_bbx_gt.txt'
    lines = anno.read_text().splitlines()
    images = [line for line in lines if line.endswith('.jpg')]
    os.remove(data / 'WIDER_val' / 'images' / images[0])
    (data / 'WIDER_val' / 'images' / images[1]).write_bytes(b'\xff\xd8 this is not a jpeg')
    anno.write_text('\n'.join(lines + ['9--Press/cut.jpg', '2', '1 1 5 5 0 0 0 0 0 0']) + '\n')
    with caplog.at_level(logging.INFO):
        out = batches(config(tmp_path, data)['EvalReader'], 'eval')
    assert len(out) == 2
    assert 'missing image file' in caplog.text and images[0] in caplog.text
    assert 'unreadable image' in caplog.text and images[1] in caplog.text
    assert '9--Press/cut.jpg' in caplog.text
    summary = [r.message for r in caplog.records if 'EvalReader epoch 0' in r.message]
    assert len(summary) == 1 and '2 images used, 3 skipped' in summary[0]
    assert 'missing image file: 1' in summary[0] and 'truncated annotation: 1' in summary[0]


def test_empty_annotation_and_missing_dataset_are_clear_errors(tmp_path, wider):
    (tmp_path / 'empty').mkdir()
    shutil.copytree(wider / 'WIDER_train', tmp_path / 'empty' / 'WIDER_train')
    (tmp_path / 'empty' / 'wider_face_split').mkdir()
    (tmp_path / 'empty' / 'wider_face_split' / 'wider_face_train_bbx_gt.txt').write_text('')
    with pytest.raises(DatasetError, match='wider_face_train_bbx_gt.txt is empty'):
        create_reader(config(tmp_path, tmp_path / 'empty')['TrainReader'], 'train')
    with pytest.raises(DatasetError, match='expected layout'):
        create_reader(config(tmp_path, tmp_path / 'absent')['TrainReader'], 'train')


@pytest.mark.parametrize('key, value, message', [
    ('worker_nums', 2, "no key 'worker_nums'"),
    ('mixup_epoch', 10, 'mixup_epoch: not supported'),
    ('inputs_def', {'fields': ['image', 'gt_mask']}, "'gt_mask' is not produced"),
    ('sample_transforms', [], 'add !DecodeImage'),
])
def test_section_mistakes_are_config_errors(tmp_path, wider, key, value, message):
    section = config(tmp_path, wider)['TrainReader']
    section[key] = value
    with pytest.raises(ConfigError, match=message):
        create_reader(section, 'train')


def test_train_without_normalize_box_or_fixed_size_is_refused(tmp_path, wider):
    section = config(tmp_path, wider)['TrainReader']
    ops = section['sample_transforms']
    section['sample_transforms'] = [ops[0]] + ops[2:]
    with pytest.raises(ConfigError, match='NormalizeBox'):
        create_reader(section, 'train')
    section['sample_transforms'] = ops[:2] + ops[6:]  # no resize: images of different sizes
    with pytest.raises(ConfigError, match='RandomInterpImage'):
        batches(section, 'train')


def test_faceless_images_flow_and_empty_boxes_never_reach_the_batch(tmp_path, wider):
    anno = (wider / 'wider_face_split' / 'wider_face_train_bbx_gt.txt').read_text().splitlines()
    first = next(line for line in anno if line.endswith('.jpg'))
    (tmp_path / 'wider_face_split').mkdir()
    (tmp_path / 'wider_face_split' / 'odd.txt').write_text(
        '{0}\n0\n0 0 0 0 0 0 0 0 0 0 \n{0}\n2\n5000 10 20 20 0 0 0 0 0 0 \n10 10 0 30 0 0 0 0 0 0 \n'.format(first))
    os.symlink(wider / 'WIDER_train', tmp_path / 'WIDER_train')
    section = config(tmp_path, tmp_path, train_anno='odd.txt')['TrainReader']
    section['sample_transforms'] = section['sample_transforms'][:2] + section['sample_transforms'][4:]
    (b,) = batches(section, 'train')  # drop_empty: the image whose only face fell outside it is dropped
    assert b['gt_num'].tolist() == [0] and b['gt_bbox'].shape == (1, 1, 4) and not b['gt_class'].any()
    section['drop_empty'] = False
    (b,) = batches(section, 'train')
    assert b['gt_num'].tolist() == [0, 0] and b['gt_bbox'].shape == (2, 1, 4)
    assert not b['gt_class'].any() and np.isfinite(b['gt_bbox']).all()
