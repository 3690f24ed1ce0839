#!/usr/bin/env python
"""Convert face boxes annotated as COCO JSON, Pascal VOC XML or YOLO txt into the WIDER FACE layout the search reads.

    python tools/convert_to_wider.py --from coco|voc|yolo --annotations PATH --images DIR --out DIR [--category NAME]
        [--val-fraction 0.2] [--seed 0]

PATH is the COCO JSON file, or the folder of VOC XML files, or the folder of YOLO txt files (searched recursively).
Every box is a face unless --category names the one class to keep: a COCO category name, a VOC <object><name>, or
a YOLO class name (looked up in a classes.txt or data.yaml ``names`` in PATH, its parent or grandparent) or index.

Writes OUT/WIDER_{train,val}/images/<event>/*, OUT/wider_face_split/wider_face_{train,val}_bbx_gt.txt and the
evaluation ground truth OUT/WIDER_val/ground_truth/wider_{face,easy,medium,hard}_val.mat (docs/data.md). Choices:

- Split: the images are pooled (a source's own train/val folders included) and split again, --val-fraction of them
  (default 0.2, at least one image each side) to val, drawn with --seed from the images sorted by output path: the
  same input and seed give the same split.
- Images are hard-linked (copied where a link cannot be made, e.g. across file systems): the output takes no room,
  and editing an output image edits the source. JPEG, PNG and BMP are kept as they are, named .jpg/.png/.bmp (what
  the readers and PaddleDetection's evaluation take: it cuts a 4-character suffix); other formats cv2 reads (WebP,
  TIFF) are written as PNG.
- Events: WIDER keeps images in event folders ``<n>--<name>`` and its evaluation groups results by them. Each
  source folder (relative to --images; the --images folder itself for images at its top) becomes one event, numbered
  in sorted order; an image is named ``<n>_<its name>`` (characters outside [A-Za-z0-9._-], spaces included, become
  ``_``; a clash gets ``_1``, ``_2``), so names are unique over the set, as PaddleDetection's evaluation requires.
- Boxes are whole pixels, 0-based, clipped to the image: COCO ``bbox`` x y w h as given; VOC as the classic
  devkit's 1-based inclusive pixels (x = xmin - 1, w = xmax - xmin + 1); YOLO's normalised centre and size times the
  image size (read with cv2). A box empty once clipped is dropped with a warning; COCO crowd regions (``iscrowd``)
  are not one face and are left out. The six WIDER attributes are 0; the Easy/Medium/Hard subsets go by face height,
  as for the synthetic set (ppdet/utils/synthetic.py, write_ground_truth).

Exit code 2, with one line naming the file, key or value at fault: input that cannot be read as the format, an
unknown --category, an --out that already holds a converted set. A missing or unreadable image is a counted warning.
"""
import argparse
import collections
import dataclasses
import itertools
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import xml.etree.ElementTree as ET

import cv2
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.logs import quiet_libraries, setup_logging  # noqa: E402
quiet_libraries()  # before paddle is imported (glog reads its level then)

from ppdet.core.cli import run_cli  # noqa: E402
from ppdet.core.workspace import ConfigError  # noqa: E402
from ppdet.utils.synthetic import annotation_text, write_ground_truth  # noqa: E402
from tools.download_widerface import next_command  # noqa: E402

logger = logging.getLogger('convert_to_wider')

# Suffixes kept as they are, and the one written: what both readers take, 4 characters long (PaddleDetection's eval
# names its result files image_name[:-4]).
KEPT_SUFFIXES = {'.jpg': '.jpg', '.jpeg': '.jpg', '.png': '.png', '.bmp': '.bmp'}
IMAGE_SUFFIXES = tuple(KEPT_SUFFIXES) + ('.webp', '.tif', '.tiff')  # what a YOLO image may be
OTHER_CATEGORIES, CROWDS, UNLABELLED = ('boxes of other categories', 'crowd regions (not one face)',
                                        'images without a label file (no faces)')


@dataclasses.dataclass
class Item:
    """One source image as its annotation describes it, then as it goes into the WIDER set.

    ``boxes`` are x1 y1 x2 y2, in 0-based pixels or, when ``normalised``, in fractions of the image (YOLO), whose
    size is then read from the image; ``size`` is (w, h) when the annotation gives it. ``origin`` names the
    annotation for messages.
    """
    image: str
    origin: str
    boxes: list
    size: tuple = None
    normalised: bool = False
    rel: str = ''  # the image's path relative to --images: its folder is its event
    wider: str = ''  # its path in the WIDER set, relative to WIDER_*/images
    long_side: int = 0


@dataclasses.dataclass
class Tally:
    """What the conversion met, for the summary: boxes that are not faces (``notes``), warnings, classes seen."""
    notes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    warnings: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    classes: set = dataclasses.field(default_factory=set)

    def keep(self, label, category):
        """Whether a box of class ``label`` is a face: any box, or one of ``category`` when it is given."""
        self.classes.add(label)
        if category is not None and label != category:
            self.notes[OTHER_CATEGORIES] += 1
            return False
        return True


def relative(path, root):
    """``path`` relative to ``root``; its file name when it is outside (a COCO file_name may be absolute)."""
    rel = os.path.relpath(path, root)
    return os.path.basename(path) if rel.split(os.sep)[0] == os.pardir else rel


def choose_category(wanted, available, what, where):
    """Check that ``available`` lists ``wanted`` (the --category); else the one-line error listing what there is."""
    if wanted is not None and wanted not in available:
        raise ConfigError('--category {!r}: no {} of that name in {}; it has: {}'.format(
            wanted, what, where, ', '.join(sorted(map(str, available))) or '(none)'))


def find_files(folder, suffixes, option, what, required=True):
    """Files under ``folder`` (recursively) with one of ``suffixes``, any case; an error naming the option when the
    folder is missing, or holds none and ``required``."""
    if not os.path.isdir(folder):
        raise ConfigError('{} {}: no such folder; pass the folder of the {} files'.format(option, folder, what))
    found = [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names if n.lower().endswith(suffixes)]
    if required and not found:
        raise ConfigError('{} {}: no {} file in it (searched recursively)'.format(option, folder, what))
    return sorted(found)


# ---- COCO ------------------------------------------------------------------------------------------------------

def load_json(path):
    """The parsed file, or a one-line error saying it is not JSON (and where) and what to pass instead."""
    if not os.path.isfile(path):
        raise ConfigError('--annotations {}: no such file; pass the COCO JSON file (e.g. '
                          'annotations/instances_train.json)'.format(path))
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError('--annotations {}: not JSON ({} at line {}); pass the COCO JSON file (e.g. '
                          'annotations/instances_train.json)'.format(path, e.msg, e.lineno)) from None
    except UnicodeDecodeError:
        raise ConfigError('--annotations {}: not a text file; pass the COCO JSON file (e.g. '
                          'annotations/instances_train.json)'.format(path)) from None


def coco_list(data, key, path, fields):
    """``data[key]``, checked to be a list of objects carrying ``fields``, or the error naming the first gap."""
    entries = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError('--annotations {}: no "{}" list, so not a COCO annotation file (one holds "images", '
                          '"annotations" and "categories")'.format(path, key))
    for i, entry in enumerate(entries):
        missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise ConfigError('--annotations {}: {}[{}] has no "{}"; a COCO file gives each of its {} {}'.format(
                path, key, i, missing[0], key, ', '.join('"{}"'.format(f) for f in fields)))
    return entries


def coco_box(ann, path):
    """An annotation's ``bbox`` (x y w h) as x1 y1 x2 y2, or the error naming the annotation and its value."""
    bbox = ann['bbox']
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise ConfigError('--annotations {}: annotation {} has bbox {!r}; COCO boxes are [x, y, width, height] in '
                          'pixels'.format(path, ann.get('id', '?'), bbox))
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def coco_item(image, images_dir, path):
    """The Item of a COCO ``images`` entry, with its width and height when they are given."""
    size = (image.get('width'), image.get('height'))
    return Item(os.path.join(images_dir, str(image['file_name'])),
                '{} image {} ({})'.format(path, image['id'], image['file_name']), [],
                size if all(isinstance(v, int) and v > 0 for v in size) else None)


def read_coco(path, images_dir, category, tally):
    """Items of a COCO instances file: all its images (those without a box too), with their boxes of
    ``category``."""
    data = load_json(path)
    images = coco_list(data, 'images', path, ('id', 'file_name'))
    annotations = coco_list(data, 'annotations', path, ('image_id', 'bbox'))
    names = {}
    if category is not None or (isinstance(data, dict) and 'categories' in data):
        names = {c['id']: c['name'] for c in coco_list(data, 'categories', path, ('id', 'name'))}
    choose_category(category, set(names.values()), 'category', path)
    items = {image['id']: coco_item(image, images_dir, path) for image in images}
    for ann in annotations:
        if ann['image_id'] not in items:
            raise ConfigError('--annotations {}: annotation {} refers to image_id {!r}, which "images" does not '
                              'list'.format(path, ann.get('id', '?'), ann['image_id']))
        if not tally.keep(names.get(ann.get('category_id'), ann.get('category_id')), category):
            continue
        if ann.get('iscrowd'):
            tally.notes[CROWDS] += 1
        else:
            items[ann['image_id']].boxes.append(coco_box(ann, path))
    return list(items.values())


# ---- Pascal VOC -------------------------------------------------------------------------------------------------

def xml_number(node, tag, xml_path, required=True):
    """A number child of ``node`` (``<xmin>`` ...), or the error naming the file and the tag."""
    text = node.findtext(tag) if node is not None else None
    if text is None and not required:
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ConfigError('{}: <{}> is {!r}, not a number; fix or remove the file'.format(
            xml_path, tag, text)) from None


def voc_box(obj, xml_path):
    """An ``<object>``'s box: classic VOC pixels are 1-based and inclusive, so xmin 1 is x 0 and the width is
    xmax - xmin + 1."""
    bndbox = obj.find('bndbox')
    if bndbox is None:
        raise ConfigError('{}: an <object> ({}) has no <bndbox>; fix or remove the file'.format(
            xml_path, obj.findtext('name')))
    xmin, ymin, xmax, ymax = (xml_number(bndbox, t, xml_path) for t in ('xmin', 'ymin', 'xmax', 'ymax'))
    return [xmin - 1, ymin - 1, xmax, ymax]


def voc_image(root, xml_path, folder, images_dir):
    """The image of an annotation: ``<filename>`` in the folder mirroring the XML's under --images, else at its
    top (``<path>`` is a path on the annotator's machine, not looked at)."""
    filename = root.findtext('filename')
    if not filename:
        raise ConfigError('{}: no <filename>; a VOC annotation names its image there'.format(xml_path))
    rel_dir = os.path.relpath(os.path.dirname(xml_path), folder)
    candidates = [os.path.join(images_dir, rel_dir, filename), os.path.join(images_dir, filename)]
    return next((c for c in candidates if os.path.isfile(c)), candidates[-1])


def read_voc_file(xml_path, folder, images_dir, category, tally):
    """One VOC XML file (labelImg's included) as an Item."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise ConfigError('{}: not well-formed XML ({}); fix or remove the file'.format(xml_path, e)) from None
    if root.tag != 'annotation':
        raise ConfigError('{}: the root element is <{}>, not <annotation>: not a Pascal VOC file'.format(
            xml_path, root.tag))
    size = root.find('size')
    width, height = (xml_number(size, t, xml_path, required=False) for t in ('width', 'height'))
    item = Item(voc_image(root, xml_path, folder, images_dir), xml_path, [],
                (int(width), int(height)) if width and height else None)
    for obj in root.iter('object'):
        if tally.keep(obj.findtext('name'), category):
            item.boxes.append(voc_box(obj, xml_path))
    return item


def read_voc(folder, images_dir, category, tally):
    """Items of a folder of VOC XML files (one per image, searched recursively)."""
    xml_files = find_files(folder, ('.xml',), '--annotations', 'Pascal VOC .xml')
    items = [read_voc_file(path, folder, images_dir, category, tally) for path in xml_files]
    choose_category(category, tally.classes, 'object name', folder)
    return items


# ---- YOLO -------------------------------------------------------------------------------------------------------

def yolo_names(folder):
    """Class names from a ``classes.txt`` (labelImg) or a ``data.yaml`` ``names`` (Ultralytics) in the labels
    folder, its parent or grandparent (labels/train sits two below data.yaml); (names, file) or (None, None)."""
    here = os.path.abspath(folder)
    for directory in (here, os.path.dirname(here), os.path.dirname(os.path.dirname(here))):
        classes, data_yaml = os.path.join(directory, 'classes.txt'), os.path.join(directory, 'data.yaml')
        if os.path.isfile(classes):
            with open(classes, encoding='utf-8') as f:
                return [line.strip() for line in f if line.strip()], classes
        if os.path.isfile(data_yaml):
            return yaml_names(data_yaml), data_yaml
    return None, None


def yaml_names(path):
    """``names`` of an Ultralytics data.yaml (a list, or an {index: name} mapping) as a list indexed by class."""
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError('{}: not valid YAML ({})'.format(path, str(e).splitlines()[0])) from None
    names = data.get('names') if isinstance(data, dict) else None
    if isinstance(names, dict) and names and all(isinstance(k, int) for k in names):
        return [str(names.get(i, '')) for i in range(max(names) + 1)]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise ConfigError('{}: "names" is {!r}; an Ultralytics data.yaml gives a list of class names or an '
                      '{{index: name}} mapping'.format(path, names))


def yolo_class(category, folder):
    """The class index --category keeps (None: all): a number as it is, a name looked up in the names list."""
    if category is None:
        return None
    names, names_file = yolo_names(folder)
    if re.fullmatch(r'\d+', category):
        if names is not None and int(category) >= len(names):
            raise ConfigError('--category {}: {} lists {} classes (0 to {})'.format(
                category, names_file, len(names), len(names) - 1))
        return int(category)
    if names is None:
        raise ConfigError('--category {!r}: no classes.txt or data.yaml in {} or the two folders above to look the '
                          'name up in; give the class index instead (e.g. --category 0)'.format(category, folder))
    choose_category(category, names, 'class', names_file)
    return names.index(category)


def read_yolo_file(path, keep, tally):
    """x1 y1 x2 y2 boxes (fractions of the image) of a YOLO label file: ``class cx cy w h`` per line."""
    boxes = []
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                if len(fields) != 5:
                    raise ValueError
                cls, (cx, cy, w, h) = int(fields[0]), (float(v) for v in fields[1:])
            except ValueError:
                raise ConfigError('{}:{}: {!r} is not "class cx cy w h" (an integer class, then 4 numbers in 0..1); '
                                  'fix the line'.format(path, number, line.strip()[:60])) from None
            if tally.keep(cls, keep):
                boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return boxes


def read_yolo(folder, images_dir, category, tally):
    """Items of YOLO labels and the images they mirror (Ultralytics: labels/train/x.txt is images/train/x.jpg). As
    in Ultralytics, an image without a label file is an image without faces."""
    keep = yolo_class(category, folder)
    labels = {os.path.splitext(relative(p, folder))[0]: p
              for p in find_files(folder, ('.txt',), '--annotations', 'YOLO .txt')
              if os.path.basename(p) != 'classes.txt'}
    images = {}
    for path in find_files(images_dir, IMAGE_SUFFIXES, '--images', 'image', required=False):
        images.setdefault(os.path.splitext(relative(path, images_dir))[0], path)
    if labels and images and not labels.keys() & images.keys():
        raise ConfigError('--images {}: no image there matches a label file of {} (e.g. {}); pass the images folder '
                          'that mirrors it (Ultralytics: images/train for labels/train)'.format(
                              images_dir, folder, relative(next(iter(labels.values())), folder)))
    items = []
    for key in sorted(labels.keys() | images.keys()):
        if key not in labels:
            tally.notes[UNLABELLED] += 1
        image = images.get(key, os.path.join(images_dir, key + '.jpg'))
        boxes = read_yolo_file(labels[key], keep, tally) if key in labels else []
        items.append(Item(image, labels.get(key, image), boxes, normalised=True))
    return items


READERS = {'coco': read_coco, 'voc': read_voc, 'yolo': read_yolo}


# ---- images and boxes -------------------------------------------------------------------------------------------

def image_size(item, warnings):
    """(w, h) of the item's image: the annotation's when it gives it (boxes in pixels, an image kept as it is),
    else read with cv2; None, with a counted warning, when the image is missing or cannot be decoded."""
    if not os.path.isfile(item.image):
        logger.warning('%s: image %s not found; skipped', item.origin, item.image)
        warnings['missing images'] += 1
        return None
    if item.size and not item.normalised and item.image.lower().endswith(tuple(KEPT_SUFFIXES)):
        return item.size
    img = cv2.imread(item.image, cv2.IMREAD_UNCHANGED)
    if img is None:
        logger.warning('%s: cv2 cannot decode image %s; skipped', item.origin, item.image)
        warnings['unreadable images'] += 1
        return None
    return img.shape[1], img.shape[0]


def whole(value):
    """Round half up to a whole pixel (Python's round() rounds halves to even)."""
    return int(math.floor(value + 0.5))


def wider_faces(item, size, warnings):
    """The item's boxes as WIDER face lines (x y w h in whole pixels clipped to the image, six zero attributes); a
    box empty once clipped is dropped with a warning rather than written for the reader to drop."""
    scale = size if item.normalised else (1, 1)
    faces = []
    for box in item.boxes:
        x1, y1, x2, y2 = (whole(min(max(v * scale[i % 2], 0), size[i % 2])) for i, v in enumerate(box))
        if x2 <= x1 or y2 <= y1:
            logger.warning('%s: box %s is empty once clipped to the %dx%d image; dropped', item.origin,
                           ' '.join('{:g}'.format(v) for v in box), *size)
            warnings['degenerate boxes dropped'] += 1
        else:
            faces.append([x1, y1, x2 - x1, y2 - y1, 0, 0, 0, 0, 0, 0])
    return faces


def safe(text):
    """A name for a WIDER path: annotation lines are split on spaces, so only [A-Za-z0-9._-] is kept."""
    return re.sub(r'[^A-Za-z0-9._-]+', '_', text).strip('_') or 'image'


def name_items(items, images_dir):
    """Set each item's WIDER path ``<n>--<folder>/<n>_<name><suffix>``: one event per source folder, names unique
    over the set (PaddleDetection's evaluation finds an image's ground truth by its name alone)."""
    top = safe(os.path.basename(os.path.abspath(images_dir)))
    folders = sorted({os.path.dirname(item.rel) for item in items})
    number = {folder: i for i, folder in enumerate(folders)}
    used = set()
    for item in items:
        folder = os.path.dirname(item.rel)
        event = '{}--{}'.format(number[folder], safe(folder.replace(os.sep, '_')) if folder else top)
        stem, suffix = os.path.splitext(os.path.basename(item.rel))
        base = '{}_{}'.format(number[folder], safe(stem))
        name = next(n for n in itertools.chain([base], ('{}_{}'.format(base, k) for k in itertools.count(1)))
                    if n.lower() not in used)
        used.add(name.lower())
        item.wider = '{}/{}{}'.format(event, name, KEPT_SUFFIXES.get(suffix.lower(), '.png'))


def split_items(items, fraction, seed):
    """{'train': [...], 'val': [...]}: ``fraction`` of the images (at least one, and one left for train) to val,
    drawn with ``seed`` from the images sorted by WIDER path, so the same input and seed give the same split."""
    items = sorted(items, key=lambda item: item.wider)
    count = min(len(items) - 1, max(1, whole(len(items) * fraction)))
    val = set(random.Random(seed).sample(range(len(items)), count))
    return {'train': [it for i, it in enumerate(items) if i not in val],
            'val': [it for i, it in enumerate(items) if i in val]}


def place_image(source, target, how):
    """Hard-link the image (copy it where a link cannot be made); re-encode as PNG a format the readers do not
    take. Counts which in ``how``."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if not source.lower().endswith(tuple(KEPT_SUFFIXES)):
        cv2.imwrite(target, cv2.imread(source, cv2.IMREAD_COLOR))
        how['written as PNG'] += 1
        return
    try:
        os.link(source, target)
        how['hard-linked'] += 1
    except OSError:
        shutil.copyfile(source, target)
        how['copied'] += 1


# ---- the command ------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--from', dest='source', required=True, choices=sorted(READERS),
                        help='annotation format: coco (a JSON file), voc (a folder of XML), yolo (a folder of txt)')
    parser.add_argument('--annotations', required=True, metavar='PATH',
                        help='the COCO JSON file, or the folder of VOC XML or YOLO txt files')
    parser.add_argument('--images', required=True, metavar='DIR', help='the folder the images are in')
    parser.add_argument('--out', required=True, metavar='DIR', help='dataset_dir to write (WIDER FACE layout)')
    parser.add_argument('--category', metavar='NAME',
                        help='the one class that is a face (default: every box); YOLO: a name or an index')
    parser.add_argument('--val-fraction', type=float, default=0.2, metavar='F',
                        help='share of the images for val (default %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the train/val split (default %(default)s)')
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        parser.error('--val-fraction must be between 0 and 1, got {:g}'.format(args.val_fraction))
    return args


def check_out(out):
    """Refuse an --out that holds a converted set already: mixing two would leave stale images and ground truth."""
    for name in ('WIDER_train', 'WIDER_val', 'wider_face_split'):
        if os.path.exists(os.path.join(out, name)):
            raise ConfigError('--out {}: {} exists already; choose an empty folder or delete the old set'.format(
                out, os.path.join(out, name)))


def usable_items(args, tally):
    """The annotated images that exist and decode, with their faces and long side, named."""
    if not os.path.isdir(args.images):
        raise ConfigError('--images {}: no such folder; pass the folder the images are in'.format(args.images))
    items = READERS[args.source](args.annotations, args.images, args.category, tally)
    usable = []
    for item in items:
        size = image_size(item, tally.warnings)
        if size is not None:
            item.boxes, item.long_side = wider_faces(item, size, tally.warnings), max(size)
            item.rel = relative(item.image, args.images)
            usable.append(item)
    if len(usable) < 2:
        raise ConfigError('--images {}: {} of the {} annotated images found there; a train and a val split need at '
                          'least 2 (the warnings above name the missing ones)'.format(
                              args.images, len(usable), len(items)))
    if not any(item.boxes for item in usable):
        raise ConfigError('--annotations {}: no face box left{}; check --category and the warnings above'.format(
            args.annotations, ' of category {!r}'.format(args.category) if args.category else ''))
    name_items(usable, args.images)
    return usable


def write_set(out, splits):
    """Images, annotation files and the val ground truth; returns how the images were placed."""
    how = collections.Counter()
    os.makedirs(os.path.join(out, 'wider_face_split'), exist_ok=True)
    for split, items in splits.items():
        for item in items:
            place_image(item.image, os.path.join(out, 'WIDER_' + split, 'images', item.wider), how)
        entries = [(item.wider, item.boxes) for item in items]
        with open(os.path.join(out, 'wider_face_split', 'wider_face_{}_bbx_gt.txt'.format(split)), 'w') as f:
            f.write(annotation_text(entries))
        if split == 'val':
            write_ground_truth(out, entries, {item.wider: item.long_side for item in items})
    return how


def counted(counter):
    """``3 missing images, 1 ...`` or ``none``."""
    return ', '.join('{} {}'.format(n, what) for what, n in counter.items() if n) or 'none'


def report(args, splits, how, tally):
    """The counts, and the command that searches on the new set."""
    for split, items in splits.items():
        faces = sum(len(item.boxes) for item in items)
        print('{}: {} images, {} faces -> {}'.format(split, len(items), faces,
                                                     os.path.join(args.out, 'WIDER_' + split, 'images')))
        if split == 'val' and not faces:
            logger.warning('the val split has no face, so its APs mean nothing; try another --seed or --val-fraction')
    print('evaluation ground truth -> {}'.format(os.path.join(args.out, 'WIDER_val', 'ground_truth')))
    print('images: {}'.format(counted(how)))
    print('left out: {}'.format(counted(tally.notes)))
    print('warnings: {}'.format(counted(tally.warnings)))
    print('dataset_dir: {}'.format(args.out))
    print('next: {}'.format(next_command(args.out)))


def main(argv=None):
    setup_logging()
    args = parse_args(argv)
    check_out(args.out)
    tally = Tally()
    items = usable_items(args, tally)
    if args.category is None and len(tally.classes) > 1:
        logger.warning('boxes of %d classes (%s) all taken as faces; --category NAME keeps one', len(tally.classes),
                       ', '.join(sorted(map(str, tally.classes))))
    splits = split_items(items, args.val_fraction, args.seed)
    try:
        how = write_set(args.out, splits)
    except OSError as e:
        raise ConfigError('--out {}: cannot write the set ({}); pass a writable folder'.format(args.out, e)) from None
    report(args, splits, how, tally)


if __name__ == '__main__':
    run_cli(main)
