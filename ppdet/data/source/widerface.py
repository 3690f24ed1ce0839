"""WIDER FACE annotations read into records, with the original's rules and clear handling of bad input.

The annotation file (``wider_face_split/wider_face_{train,val}_bbx_gt.txt``) repeats: an image path relative to
``image_dir``, a face count, then one line per face ``x y w h blur expression illumination invalid occlusion pose``;
an image with no faces still has one all-zero line. As in the original, faces with w < 0 or h < 0 are skipped with a
warning and x, y are clipped at 0 (the box keeps its width, so x2 = max(x, 0) + w). Unlike the original, faces of
zero area are dropped here rather than reaching the loss, and the all-zero line of a face-less image is not a face.
"""
import logging
import os

import numpy as np

from ppdet.core.workspace import ConfigError, register

__all__ = ['WIDERFaceDataSet', 'DatasetError', 'widerface_label']

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
LAYOUT = ('expected layout: <dataset_dir>/wider_face_split/wider_face_{train,val}_bbx_gt.txt and '
          '<dataset_dir>/WIDER_{train,val}/images/<event>/*.jpg; '
          'make a small one with: python tools/make_synthetic_widerface.py --out <dataset_dir>')


class DatasetError(ConfigError):
    """The dataset cannot be used at all (missing directory, empty annotation file); printed as one line.

    ``key`` names the dataset argument at fault (dataset_dir, anno_path, image_dir) and ``path`` the path that is
    missing, for messages that name the key.
    """

    def __init__(self, message, key=None, path=None):
        super().__init__(message)
        self.key, self.path = key, path


def widerface_label(with_background=True):
    """Class ids: the face is 1 when class 0 is the background, else 0."""
    return {'face': 1 if with_background else 0}


def _is_image_path(line):
    return line.lower().endswith(IMAGE_EXTENSIONS)


class _Record:
    """One parsed image entry: its path, the line it starts on, and the faces that survived."""

    def __init__(self, path, line_no):
        self.path = path
        self.line_no = line_no
        self.boxes = []


class _Parser:
    """Walks the annotation lines; bad records are skipped with a warning naming image and line, and counted."""

    def __init__(self, anno_path, lines):
        self.anno_path = anno_path
        # (line number, text) of the non-blank lines, so that looking ahead is cheap
        self.lines = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
        self.pos = 0
        self.skipped = {}
        self.zero_area = 0

    def warn(self, line_no, message, kind=None):
        logger.warning('%s:%d: %s', self.anno_path, line_no, message)
        if kind:
            self.skipped[kind] = self.skipped.get(kind, 0) + 1

    def next_line(self):
        """(text, line number) of the next line; (None, 0) at the end."""
        if self.pos >= len(self.lines):
            return None, 0
        line_no, text = self.lines[self.pos]
        self.pos += 1
        return text, line_no

    def peek_is_path(self):
        return self.pos >= len(self.lines) or _is_image_path(self.lines[self.pos][1])

    def records(self):
        while True:
            line, line_no = self.next_line()
            if line is None:
                return
            if not _is_image_path(line):
                self.warn(line_no, 'expected an image path, got {!r}; skipping to the next image'.format(line[:60]),
                          'malformed annotation')
                self.skip_to_next_path()
                continue
            record = self.read_record(line, line_no)
            if record is not None:
                yield record

    def skip_to_next_path(self):
        while not self.peek_is_path():
            self.next_line()

    def read_record(self, path, line_no):
        if self.peek_is_path():
            self.warn(line_no, '{}: the record ends before its face count; skipped'.format(path),
                      'truncated annotation')
            return None
        text, count_no = self.next_line()
        count = int(text) if text.isdigit() else -1
        if count < 0:
            self.warn(count_no, '{}: face count {!r} is not a whole number; skipped'.format(path, text[:30]),
                      'malformed annotation')
            self.skip_to_next_path()
            return None
        return self.read_faces(_Record(path, line_no), count)

    def read_faces(self, record, count):
        if count == 0:
            if not self.peek_is_path():
                self.next_line()  # the all-zero line of a face-less image
            return record
        for i in range(count):
            if self.peek_is_path():
                self.warn(record.line_no, '{}: the record ends after {} of its {} face lines; skipped'.format(
                    record.path, i, count), 'truncated annotation')
                return None
            text, line_no = self.next_line()
            if not self.add_face(record, text, line_no):
                self.skip_to_next_path()
                return None
        return record

    def add_face(self, record, text, line_no):
        """Parse one face line into the record; False when the line is not numbers (the record is dropped)."""
        try:
            x, y, w, h = (float(v) for v in text.split()[:4])
        except ValueError:
            self.warn(line_no, '{}: face line {!r} is not 4+ numbers; record skipped'.format(record.path, text[:40]),
                      'malformed annotation')
            return False
        if w < 0 or h < 0:
            self.warn(line_no, '{}: face with negative size w={:g} h={:g} skipped'.format(record.path, w, h))
        elif w == 0 or h == 0:
            self.zero_area += 1
        else:
            x, y = max(0., x), max(0., y)
            record.boxes.append([x, y, x + w, y + h])
        return True


@register
class WIDERFaceDataSet:
    """WIDER FACE records: ``{'im_file', 'im_id', 'gt_bbox' float32 [G, 4] pixel x1 y1 x2 y2, 'gt_class' int32
    [G, 1]}``. ``sample_num`` > 0 keeps only the first that many images. Loaded on first ``get_roidb()``."""

    def __init__(self, dataset_dir=None, image_dir=None, anno_path=None, sample_num=-1, with_background=True):
        self.dataset_dir = dataset_dir or ''
        self.image_dir = image_dir or ''
        self.anno_path = anno_path
        self.sample_num = sample_num
        self.with_background = with_background
        self.roidbs = None
        self.skipped = {}
        self.cname2cid = widerface_label(with_background)

    def _annotation_file(self):
        if not self.anno_path:
            raise DatasetError('WIDERFaceDataSet.anno_path is not set; ' + LAYOUT, 'anno_path')
        if self.dataset_dir and not os.path.isdir(self.dataset_dir):
            raise DatasetError('dataset directory {} not found; {}'.format(self.dataset_dir, LAYOUT), 'dataset_dir',
                               self.dataset_dir)
        anno = os.path.join(self.dataset_dir, self.anno_path)
        if not os.path.isfile(anno):
            raise DatasetError('annotation file {} not found; {}'.format(anno, LAYOUT), 'anno_path', anno)
        return anno

    def check_layout(self):
        """What a search verifies before it starts anything: the annotation file and the image directory exist
        (neither is read); the first missing one raises DatasetError naming its key."""
        self._annotation_file()
        image_dir = os.path.join(self.dataset_dir, self.image_dir)
        if not os.path.isdir(image_dir):
            raise DatasetError('image directory {} not found; {}'.format(image_dir, LAYOUT), 'image_dir', image_dir)

    def _read_lines(self, anno):
        with open(anno, encoding='utf-8', errors='replace') as f:
            lines = f.read().splitlines()
        if not any(line.strip() for line in lines):
            raise DatasetError('annotation file {} is empty; it should list image paths, face counts and face '
                               'lines (WIDER FACE format)'.format(anno))
        return lines

    def _to_record(self, parsed, image_dir, im_id):
        boxes = np.array(parsed.boxes, np.float32).reshape(-1, 4)
        label = self.cname2cid['face']
        return {'im_file': os.path.join(image_dir, parsed.path), 'im_id': np.array([im_id]),
                'gt_bbox': boxes, 'gt_class': np.full((len(boxes), 1), label, np.int32)}

    def load_roidb_and_cname2cid(self):
        anno, image_dir = self._annotation_file(), os.path.join(self.dataset_dir, self.image_dir)
        parser = _Parser(anno, self._read_lines(anno))
        records = []
        for parsed in parser.records():
            records.append(self._to_record(parsed, image_dir, len(records)))
            if 0 < self.sample_num <= len(records):
                break
        if not records:
            raise DatasetError('annotation file {} has no usable image records'.format(anno))
        if parser.zero_area:
            logger.info('%s: %d faces of zero width or height dropped', anno, parser.zero_area)
        logger.info('%d images in %s', len(records), anno)
        self.roidbs, self.skipped = records, parser.skipped

    def get_roidb(self):
        if self.roidbs is None:
            self.load_roidb_and_cname2cid()
        return self.roidbs

    def get_cname2cid(self):
        return self.cname2cid

    def get_anno(self):
        return os.path.join(self.dataset_dir, self.anno_path) if self.anno_path else None
