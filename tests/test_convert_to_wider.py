"""tools/convert_to_wider.py: COCO, Pascal VOC (as labelImg writes it) and YOLO (as Ultralytics lays it out) sets
converted to the WIDER FACE layout, read back by the project's own reader with the boxes that were written, the val
ground truth loadable, --category, and one-line errors (exit 2) for bad input."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from scipy.io import loadmat

import tools.convert_to_wider as convert
from conftest import REPO, run_tool_main
from ppdet.data.source.widerface import WIDERFaceDataSet

TOOL = os.path.join(REPO, 'tools', 'convert_to_wider.py')
SUBSETS = ('easy', 'medium', 'hard')


def write_image(path, width, height, seed):
    """A small noise image (distinct bytes per seed), written with cv2 as a user's camera would have."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


def source_name(wider_path):
    """The source image's file stem of a converted image: the tool names it ``<event number>_<stem>``."""
    return os.path.splitext(os.path.basename(wider_path))[0].split('_', 1)[1]


def read_back(out):
    """{source stem: (split, x1 y1 x2 y2 boxes, image file)} as the project's reader (WIDERFaceDataSet) reads the
    converted set."""
    found = {}
    for split in ('train', 'val'):
        dataset = WIDERFaceDataSet(str(out), 'WIDER_{}/images'.format(split),
                                   'wider_face_split/wider_face_{}_bbx_gt.txt'.format(split))
        for record in dataset.get_roidb():
            assert os.path.isfile(record['im_file'])
            found[source_name(record['im_file'])] = (split, record['gt_bbox'].tolist(), record['im_file'])
    assert {split for split, _, _ in found.values()} == {'train', 'val'}
    return found


def check_boxes(out, expected, sources):
    """Every image of ``expected`` ({stem: x1 y1 x2 y2 boxes}) is in the set once, with exactly those boxes, and is
    the source image's bytes (``sources``: {stem: path})."""
    found = read_back(out)
    assert sorted(found) == sorted(expected)
    for stem, (_, boxes, im_file) in found.items():
        assert sorted(boxes) == sorted(expected[stem]), stem
        with open(im_file, 'rb') as a, open(sources[stem], 'rb') as b:
            assert a.read() == b.read()
    return found


def check_ground_truth(out, found):
    """The four .mat files load with scipy and list exactly the val images, with their boxes as x y w h, and each
    subset's 1-based face indices nested as the official ones are."""
    folder = os.path.join(str(out), 'WIDER_val', 'ground_truth')
    face = loadmat(os.path.join(folder, 'wider_face_val.mat'))
    subsets = {s: loadmat(os.path.join(folder, 'wider_{}_val.mat'.format(s)))['gt_list'] for s in SUBSETS}
    listed = {}
    for e, event in enumerate(face['event_list'][:, 0]):
        for j, name in enumerate(face['file_list'][e, 0][:, 0]):
            stem = str(name[0]).split('_', 1)[1]
            assert str(name[0]).split('_')[0] == str(event[0]).split('--')[0]  # WIDER's naming
            listed[stem] = face['face_bbx_list'][e, 0][j, 0].reshape(-1, 4)
            kept = [set(subsets[s][e, 0][j, 0].reshape(-1).astype(int)) for s in SUBSETS]
            assert kept[0] <= kept[1] <= kept[2] <= set(range(1, len(listed[stem]) + 1))
    val = {stem: boxes for stem, (split, boxes, _) in found.items() if split == 'val'}
    assert sorted(listed) == sorted(val)
    for stem, boxes in val.items():
        xywh = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in boxes]
        assert sorted(listed[stem].tolist()) == sorted(xywh)


def clipped(box, width, height):
    """x1 y1 x2 y2 clipped to the image, the tool's documented rule."""
    x1, y1, x2, y2 = box
    return [max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)]


# ---- COCO -------------------------------------------------------------------------------------------------------

COCO_IMAGES = [  # file name, width, height
    ('000001.jpg', 80, 60), ('000002.jpg', 64, 96), ('group photo.jpg', 96, 72), ('000004.png', 72, 72),
    ('000005.jpg', 60, 60), ('000006.jpg', 88, 64)]
COCO_BOXES = [  # image id, category id, bbox x y w h: faces (1) and persons (2)
    (1, 1, [10, 12, 20, 24]), (1, 2, [5, 5, 60, 50]), (2, 1, [3, 40, 30, 36]), (3, 1, [4, 4, 10, 12]),
    (3, 1, [50, 20, 16, 16]), (3, 1, [80, 60, 30, 20]),  # the last one cut by the image's corner
    (3, 2, [0, 0, 90, 70]), (4, 1, [30, 30, 0, 12]),  # a face of zero width: dropped with a warning
    (5, 2, [10, 10, 30, 30]), (6, 1, [0, 0, 88, 64])]  # image 5 has no face, image 6 is all face


@pytest.fixture
def coco(tmp_path):
    """COCO's own layout: train2017/*.jpg and annotations/instances_train2017.json, read back with pycocotools."""
    from pycocotools.coco import COCO

    root = tmp_path / 'coco'
    for i, (name, width, height) in enumerate(COCO_IMAGES):
        write_image(root / 'train2017' / name, width, height, i)
    data = {'info': {'description': 'faces'}, 'licenses': [],
            'images': [{'id': i + 1, 'file_name': name, 'width': w, 'height': h}
                       for i, (name, w, h) in enumerate(COCO_IMAGES)],
            'annotations': [{'id': k + 1, 'image_id': image, 'category_id': category, 'bbox': bbox,
                             'area': bbox[2] * bbox[3], 'iscrowd': 0, 'segmentation': []}
                            for k, (image, category, bbox) in enumerate(COCO_BOXES)],
            'categories': [{'id': 1, 'name': 'face', 'supercategory': 'person'},
                           {'id': 2, 'name': 'person', 'supercategory': 'person'}]}
    path = root / 'annotations' / 'instances_train2017.json'
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    return root, path, COCO(str(path))


def coco_expected(api, categories):
    """{stem: x1 y1 x2 y2} from pycocotools' view of the file: the boxes of ``categories``, clipped, non-empty."""
    expected, sources = {}, {}
    for image in api.loadImgs(api.getImgIds()):
        stem = os.path.splitext(image['file_name'])[0].replace(' ', '_')
        anns = api.loadAnns(api.getAnnIds(imgIds=[image['id']], catIds=api.getCatIds(catNms=categories)))
        boxes = [clipped([x, y, x + w, y + h], image['width'], image['height']) for x, y, w, h in
                 (a['bbox'] for a in anns)]
        expected[stem] = [b for b in boxes if b[2] > b[0] and b[3] > b[1]]
        sources[stem] = image['file_name']
    return expected, sources


def test_coco_command_as_documented(coco, tmp_path):
    root, path, api = coco
    out = tmp_path / 'out'
    result = subprocess.run([sys.executable, 'tools/convert_to_wider.py', '--from', 'coco', '--annotations',
                             str(path), '--images', str(root / 'train2017'), '--out', str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected, names = coco_expected(api, ['face', 'person'])
    found = check_boxes(out, expected, {s: str(root / 'train2017' / n) for s, n in names.items()})
    check_ground_truth(out, found)
    assert 'train: 5 images' in result.stdout and 'val: 1 images' in result.stdout  # 0.2 of 6
    assert '1 degenerate boxes dropped' in result.stdout
    assert 'boxes of 2 classes (face, person) all taken as faces' in result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        'next: python -u train_nas.py -c blazeface.yml -o TrainReader.dataset.dataset_dir={0} '
        'EvalReader.dataset.dataset_dir={0}'.format(out))
    # the WIDER layout: event folder, WIDER-style names without spaces, hard links, the PNG kept as it is
    assert os.path.isfile(out / 'WIDER_train' / 'images' / '0--train2017' / '0_group_photo.jpg') or os.path.isfile(
        out / 'WIDER_val' / 'images' / '0--train2017' / '0_group_photo.jpg')
    linked = found['000001'][2]
    assert os.stat(linked).st_ino == os.stat(root / 'train2017' / '000001.jpg').st_ino
    assert found['000004'][2].endswith('0_000004.png')


def test_coco_category_keeps_that_class(coco, tmp_path, capsys):
    root, path, api = coco
    out = tmp_path / 'out'
    code, stdout, _ = run_tool_main(convert.main, ['--from', 'coco', '--annotations', str(path), '--images',
                                                   str(root / 'train2017'), '--out', str(out), '--category', 'face',
                                                   '--val-fraction', '0.5'], capsys)
    assert code == 0
    expected, names = coco_expected(api, ['face'])
    assert expected['000005'] == [] and len(expected['group_photo']) == 3
    found = check_boxes(out, expected, {s: str(root / 'train2017' / n) for s, n in names.items()})
    check_ground_truth(out, found)
    assert '3 boxes of other categories' in stdout


# ---- Pascal VOC, as labelImg writes it ----------------------------------------------------------------------------

def labelimg_xml(folder, filename, path, width, height, objects):
    """An annotation file in labelImg's pascal_voc_io output format (tab-indented, no XML declaration)."""
    obj = ('\t<object>\n\t\t<name>{}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n'
           '\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{}</xmin>\n\t\t\t<ymin>{}</ymin>\n'
           '\t\t\t<xmax>{}</xmax>\n\t\t\t<ymax>{}</ymax>\n\t\t</bndbox>\n\t</object>\n')
    return ('<annotation>\n\t<folder>{}</folder>\n\t<filename>{}</filename>\n\t<path>{}</path>\n\t<source>\n'
            '\t\t<database>Unknown</database>\n\t</source>\n\t<size>\n\t\t<width>{}</width>\n'
            '\t\t<height>{}</height>\n\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{}'
            '</annotation>\n').format(folder, filename, path, width, height,
                                      ''.join(obj.format(name, *box) for name, box in objects))


VOC_IMAGES = {  # stem: (width, height, [(name, (xmin, ymin, xmax, ymax))]), 1-based inclusive pixels
    'img_001': (80, 60, [('face', (11, 13, 30, 36)), ('hand', (50, 20, 70, 40))]),
    'img_002': (64, 64, [('face', (1, 1, 64, 64))]),  # the whole image: x 0, w 64
    'img_003': (96, 64, [('face', (5, 5, 20, 24)), ('face', (40, 30, 71, 60)), ('face', (80, 2, 96, 14))]),
    'img_004': (70, 50, []),  # saved without a box
    'img_005': (50, 70, [('hand', (3, 3, 20, 20))]),
    'img_006': (60, 80, [('face', (30, 40, 30, 60))]),  # xmax = xmin: one pixel wide, inclusive
}


@pytest.fixture
def voc(tmp_path):
    """VOC's layout: JPEGImages/*.jpg and Annotations/*.xml as labelImg saves them, plus one XML whose image is
    missing."""
    root = tmp_path / 'VOC'
    for i, (stem, (width, height, objects)) in enumerate(VOC_IMAGES.items()):
        write_image(root / 'JPEGImages' / (stem + '.jpg'), width, height, 10 + i)
        (root / 'Annotations').mkdir(exist_ok=True)
        (root / 'Annotations' / (stem + '.xml')).write_text(labelimg_xml(
            'JPEGImages', stem + '.jpg', '/home/someone/VOC/JPEGImages/{}.jpg'.format(stem), width, height, objects))
    (root / 'Annotations' / 'gone.xml').write_text(labelimg_xml('JPEGImages', 'gone.jpg', '/x/gone.jpg', 40, 40,
                                                                [('face', (1, 1, 10, 10))]))
    return root


def voc_expected(names):
    """x1 y1 x2 y2 of the tool's VOC rule: x1 = xmin - 1, x2 = xmax (1-based inclusive pixels)."""
    return {stem: [[xmin - 1, ymin - 1, xmax, ymax] for name, (xmin, ymin, xmax, ymax) in objects if name in names]
            for stem, (_, _, objects) in VOC_IMAGES.items()}


@pytest.mark.parametrize('category', [None, 'face'])
def test_voc_from_labelimg(voc, tmp_path, capsys, category):
    out = tmp_path / 'out'
    argv = ['--from', 'voc', '--annotations', str(voc / 'Annotations'), '--images', str(voc / 'JPEGImages'),
            '--out', str(out), '--val-fraction', '0.34'] + (['--category', category] if category else [])
    code, stdout, stderr = run_tool_main(convert.main, argv, capsys)
    assert code == 0, stderr
    expected = voc_expected({'face'} if category else {'face', 'hand'})
    found = check_boxes(out, expected, {s: str(voc / 'JPEGImages' / (s + '.jpg')) for s in expected})
    check_ground_truth(out, found)
    assert 'val: 2 images' in stdout
    assert 'warnings: 1 missing images' in stdout and 'gone.jpg not found' in stderr  # counted, not a crash
    assert ('2 boxes of other categories' in stdout) == bool(category)


# ---- YOLO, as Ultralytics lays it out -----------------------------------------------------------------------------

YOLO_IMAGES = {  # (split, stem): (width, height, [(class, (x, y, w, h) in pixels)]); names: 0 person, 1 face
    ('train', 'a1'): (80, 60, [(1, (8, 6, 20, 30)), (0, (2, 2, 70, 50))]),
    ('train', 'a2'): (100, 50, [(1, (60, 10, 40, 40)), (1, (0, 0, 10, 10))]),
    ('train', 'a3'): (64, 64, [(1, (4, 8, 16, 16)), (1, (56, 56, 16, 16))]),  # the second cut by the corner
    ('train', 'a4'): (48, 80, []),  # an image with no label file: no faces, as in Ultralytics
    ('val', 'b1'): (80, 80, [(1, (20, 20, 40, 40))]),
    ('val', 'b2'): (60, 40, [(0, (10, 10, 20, 20))]),
}


@pytest.fixture
def yolo(tmp_path):
    """Ultralytics' layout: images/{train,val}/*.jpg, labels/{train,val}/*.txt, data.yaml with names."""
    root = tmp_path / 'dataset'
    for i, ((split, stem), (width, height, boxes)) in enumerate(YOLO_IMAGES.items()):
        write_image(root / 'images' / split / (stem + '.jpg'), width, height, 20 + i)
        if stem == 'a4':
            continue
        lines = ['{} {:.6f} {:.6f} {:.6f} {:.6f}'.format(c, (x + w / 2) / width, (y + h / 2) / height, w / width,
                                                          h / height) for c, (x, y, w, h) in boxes]
        (root / 'labels' / split).mkdir(parents=True, exist_ok=True)
        (root / 'labels' / split / (stem + '.txt')).write_text('\n'.join(lines) + '\n' if lines else '')
    (root / 'data.yaml').write_text('path: ../dataset\ntrain: images/train\nval: images/val\n\nnames:\n'
                                    '  0: person\n  1: face\n')
    return root


def yolo_expected(classes):
    return {stem: [clipped([x, y, x + w, y + h], width, height) for c, (x, y, w, h) in boxes if c in classes]
            for (_, stem), (width, height, boxes) in YOLO_IMAGES.items()}


@pytest.mark.parametrize('category', [None, 'face', '1'])
def test_yolo_from_ultralytics(yolo, tmp_path, capsys, category):
    out = tmp_path / 'out'
    argv = ['--from', 'yolo', '--annotations', str(yolo / 'labels'), '--images', str(yolo / 'images'),
            '--out', str(out), '--val-fraction', '0.34'] + (['--category', category] if category else [])
    code, stdout, stderr = run_tool_main(convert.main, argv, capsys)
    assert code == 0, stderr
    expected = yolo_expected({1} if category else {0, 1})
    sources = {stem: str(yolo / 'images' / split / (stem + '.jpg')) for split, stem in YOLO_IMAGES}
    found = check_boxes(out, expected, sources)
    check_ground_truth(out, found)
    assert '1 images without a label file (no faces)' in stdout
    assert ('2 boxes of other categories' in stdout) == bool(category)
    events = {os.path.basename(os.path.dirname(im_file)) for _, _, im_file in found.values()}
    assert events == {'0--train', '1--val'}  # one WIDER event per source folder


def test_yolo_one_split_finds_data_yaml_two_folders_up(yolo, tmp_path, capsys):
    out = tmp_path / 'out'
    code, _, stderr = run_tool_main(convert.main, [
        '--from', 'yolo', '--annotations', str(yolo / 'labels' / 'train'), '--images', str(yolo / 'images' / 'train'),
        '--out', str(out), '--category', 'face'], capsys)
    assert code == 0, stderr
    expected = {stem: boxes for stem, boxes in yolo_expected({1}).items() if stem.startswith('a')}
    check_boxes(out, expected, {stem: str(yolo / 'images' / 'train' / (stem + '.jpg')) for stem in expected})


# ---- the split and the names ------------------------------------------------------------------------------------

def test_split_is_deterministic_and_names_are_unique(tmp_path, capsys):
    """The same seed gives the same split, another seed another; two images of one stem in one folder, the same
    name in two folders and a folder with a space get distinct, space-free WIDER names."""
    images = tmp_path / 'images'
    names = ['my pics/p{}.jpg'.format(i) for i in range(10)] + ['x.jpg', 'x.png', 'other/x.jpg']
    for i, name in enumerate(names):
        write_image(images / name, 40, 40, 40 + i)
    anno = tmp_path / 'instances.json'
    anno.write_text(json.dumps({'images': [{'id': i, 'file_name': n} for i, n in enumerate(names)],
                                'annotations': [{'id': i, 'image_id': i, 'bbox': [5, 5, 20, 20], 'category_id': 1}
                                                for i in range(len(names))],
                                'categories': [{'id': 1, 'name': 'face'}]}))

    def convert_with(seed, name):
        out = tmp_path / name
        code, _, stderr = run_tool_main(convert.main, ['--from', 'coco', '--annotations', str(anno), '--images',
                                                       str(images), '--out', str(out), '--seed', str(seed)], capsys)
        assert code == 0, stderr
        text = (out / 'wider_face_split' / 'wider_face_val_bbx_gt.txt').read_text()
        paths = [line for line in text.splitlines() if line.endswith(('.jpg', '.png'))]
        train = (out / 'wider_face_split' / 'wider_face_train_bbx_gt.txt').read_text()
        return paths, paths + [line for line in train.splitlines() if line.endswith(('.jpg', '.png'))]

    val_a, every = convert_with(0, 'a')
    val_b, _ = convert_with(0, 'b')
    val_c, _ = convert_with(5, 'c')
    assert val_a == val_b and sorted(val_a) != sorted(val_c) and len(val_a) == 3  # 0.2 of 13
    assert all(' ' not in p for p in every) and len(every) == 13
    stems = [os.path.splitext(os.path.basename(p))[0] for p in every]
    assert len(set(stems)) == len(stems)  # unique over the set: PaddleDetection's eval matches by name
    assert {os.path.dirname(p) for p in every} == {'0--images', '1--my_pics', '2--other'}


# ---- bad input --------------------------------------------------------------------------------------------------

def bad_inputs(tmp_path, coco, voc, yolo):
    """(argv, text the one line must hold) of each kind of bad input."""
    root, path, _ = coco
    images = str(root / 'train2017')
    not_coco = tmp_path / 'not_coco.json'
    not_coco.write_text(json.dumps({'faces': [[1, 2, 3, 4]]}))
    broken = tmp_path / 'broken.json'
    broken.write_text('{"images": [')
    (voc / 'Annotations' / 'img_001.xml').write_text('<annotation><filename>img_001.jpg</filename>')
    (yolo / 'labels' / 'val' / 'b1.txt').write_text('1 0.5 0.5 0.2\n')
    return [
        (['--from', 'coco', '--annotations', str(tmp_path / 'missing.json'), '--images', images], 'missing.json'),
        (['--from', 'coco', '--annotations', str(not_coco), '--images', images], 'no "images" list'),
        (['--from', 'coco', '--annotations', str(broken), '--images', images], 'not JSON'),
        (['--from', 'coco', '--annotations', str(path), '--images', images, '--category', 'cat'],
         "--category 'cat': no category of that name"),
        (['--from', 'coco', '--annotations', str(path), '--images', str(tmp_path / 'nowhere')], 'nowhere'),
        (['--from', 'voc', '--annotations', str(voc / 'Annotations'), '--images', str(voc / 'JPEGImages')],
         'img_001.xml: not well-formed XML'),
        (['--from', 'voc', '--annotations', str(tmp_path / 'no_such_dir'), '--images', images], 'no_such_dir'),
        (['--from', 'yolo', '--annotations', str(yolo / 'labels'), '--images', str(yolo / 'images')],
         'b1.txt:1:'),
        (['--from', 'yolo', '--annotations', str(yolo / 'labels' / 'train'), '--images', str(yolo / 'images' / 'train'),
          '--category', 'dog'], "--category 'dog': no class of that name"),
    ]


def test_bad_input_is_one_line_and_exit_2(tmp_path, coco, voc, yolo, capsys):
    for argv, message in bad_inputs(tmp_path, coco, voc, yolo):
        out = tmp_path / 'out'
        code, _, stderr = run_tool_main(convert.main, argv + ['--out', str(out)], capsys)
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], (argv, stderr)
        assert not out.exists()  # nothing written


def test_existing_output_is_refused(coco, tmp_path, capsys):
    root, path, _ = coco
    argv = ['--from', 'coco', '--annotations', str(path), '--images', str(root / 'train2017'), '--out',
            str(tmp_path / 'out')]
    assert run_tool_main(convert.main, argv, capsys)[0] == 0
    code, _, stderr = run_tool_main(convert.main, argv, capsys)
    assert code == 2 and 'exists already' in stderr and len(stderr.strip().splitlines()) == 1
