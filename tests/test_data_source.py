"""WIDERFaceDataSet: the original annotation rules, and clear handling of bad annotation files."""
import logging

import numpy as np
import pytest

from ppdet.core.workspace import ConfigError, build, load_config
from ppdet.data.source.widerface import DatasetError, WIDERFaceDataSet

ANNOTATION = """\
0--Parade/a.jpg
2
10 20 30 40 0 0 0 0 0 0 
-5 -3 10 12 1 0 0 0 1 0 
1--Handshaking/none.jpg
0
0 0 0 0 0 0 0 0 0 0 
2--Demonstration/b.jpg
3
1 2 -3 4 0 0 0 0 0 0 
5 5 0 8 0 0 0 0 0 0 
7 8 9 10 2 1 1 0 2 1 
"""


def dataset(tmp_path, text, **kwargs):
    split = tmp_path / 'wider_face_split'
    split.mkdir(exist_ok=True)
    (split / 'gt.txt').write_text(text)
    return WIDERFaceDataSet(dataset_dir=str(tmp_path), image_dir='WIDER_train/images',
                            anno_path='wider_face_split/gt.txt', **kwargs)


def test_records_follow_the_original_rules(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        records = dataset(tmp_path, ANNOTATION).get_roidb()
    assert [r['im_file'] for r in records] == [str(tmp_path / 'WIDER_train/images' / p) for p in
                                               ('0--Parade/a.jpg', '1--Handshaking/none.jpg', '2--Demonstration/b.jpg')]
    assert [int(r['im_id'][0]) for r in records] == [0, 1, 2]
    # x, y clipped at 0 while the width is kept, as the original does
    np.testing.assert_array_equal(records[0]['gt_bbox'], [[10, 20, 40, 60], [0, 0, 10, 12]])
    assert records[0]['gt_bbox'].dtype == np.float32 and records[0]['gt_class'].tolist() == [[1], [1]]
    assert records[1]['gt_bbox'].shape == (0, 4) and records[1]['gt_class'].shape == (0, 1)
    # negative width skipped with a warning naming image and line; zero width dropped; the last face kept
    np.testing.assert_array_equal(records[2]['gt_bbox'], [[7, 8, 16, 18]])
    assert 'gt.txt:10:' in caplog.text and '2--Demonstration/b.jpg' in caplog.text and 'w=-3' in caplog.text


def test_sample_num_and_without_background(tmp_path):
    records = dataset(tmp_path, ANNOTATION, sample_num=2, with_background=False).get_roidb()
    assert len(records) == 2 and records[0]['gt_class'].tolist() == [[0], [0]]


def test_record_cut_short_at_the_end_is_skipped_and_counted(tmp_path, caplog):
    text = ANNOTATION + '3--Riot/c.jpg\n4\n1 1 5 5 0 0 0 0 0 0\n'
    with caplog.at_level(logging.WARNING):
        data = dataset(tmp_path, text)
        records = data.get_roidb()
    assert len(records) == 3 and data.skipped == {'truncated annotation': 1}
    assert 'gt.txt:13:' in caplog.text and '3--Riot/c.jpg' in caplog.text and '1 of its 4' in caplog.text


def test_record_cut_short_in_the_middle_does_not_eat_the_next(tmp_path):
    text = '0--Parade/a.jpg\n3\n1 1 5 5 0 0 0 0 0 0\n0--Parade/b.jpg\n1\n2 2 4 4 0 0 0 0 0 0\n'
    data = dataset(tmp_path, text)
    records = data.get_roidb()
    assert [r['im_file'].rsplit('/', 1)[1] for r in records] == ['b.jpg']
    np.testing.assert_array_equal(records[0]['gt_bbox'], [[2, 2, 6, 6]])
    assert data.skipped == {'truncated annotation': 1}


def test_empty_annotation_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(DatasetError, match=r'wider_face_split/gt.txt is empty'):
        dataset(tmp_path, '\n  \n').get_roidb()
    assert issubclass(DatasetError, ConfigError)  # printed as one line by the command-line tools


def test_missing_dataset_directory_names_the_expected_layout(tmp_path):
    data = WIDERFaceDataSet(dataset_dir=str(tmp_path / 'nowhere'), image_dir='WIDER_train/images',
                            anno_path='wider_face_split/wider_face_train_bbx_gt.txt')
    with pytest.raises(DatasetError, match='nowhere not found; expected layout: .*wider_face_split/'
                                           r'wider_face_\{train,val\}_bbx_gt.txt .*make_synthetic_widerface'):
        data.get_roidb()


def test_dataset_from_yaml_tag(tmp_path):
    dataset(tmp_path, ANNOTATION)
    config = tmp_path / 'c.yml'
    config.write_text('d: !WIDERFaceDataSet {{dataset_dir: {}, anno_path: wider_face_split/gt.txt, '
                      'image_dir: WIDER_train/images, sample_num: 1}}\n'.format(tmp_path))
    data = build(load_config(str(config))['d'])
    assert isinstance(data, WIDERFaceDataSet) and len(data.get_roidb()) == 1
