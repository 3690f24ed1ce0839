"""A small synthetic face dataset in the WIDER FACE layout, to try the whole pipeline without WIDER FACE (the tool
``tools/make_synthetic_widerface.py`` writes one; tests and benchmarks make theirs with ``make_dataset``).

``make_dataset(out, ...)`` writes ``DIR/wider_face_split/wider_face_{train,val}_bbx_gt.txt``, ``DIR/WIDER_{train,val}/images/<event>/*.jpg`` and
the val ground truth of the official evaluation, ``DIR/WIDER_val/ground_truth/wider_{face,easy,medium,hard}_val.mat``
(what PaddleDetection's WIDERFaceValDataset and the eval_tools read; see ``write_ground_truth``).
Faces are drawn (skin-toned ovals with hair, eyes, brows, nose and mouth) with varied size, yaw, roll, lighting and
blur, on cluttered backgrounds; some are partly occluded or cut by the image border, some images have no face.
Each face line carries the ten WIDER fields ``x y w h blur expression illumination invalid occlusion pose``, the box
being the visible part of the face oval. The same arguments give byte-identical files, whatever ``--workers``.
"""
import io
import multiprocessing
import os

import cv2
import numpy as np
import scipy.io

EVENTS = ('0--Parade', '1--Handshaking', '2--Demonstration', '4--Dancing', '7--Cheering', '12--Group',
          '20--Family_Group', '51--Dresses')
SPLITS = ('train', 'val')
# Skin tones (BGR), from light to dark.
SKIN = np.array([(196, 224, 255), (125, 194, 241), (105, 172, 224), (66, 134, 198), (36, 85, 141), (23, 51, 92),
                 (148, 205, 255), (134, 192, 234)], np.float32)
SCENES = {  # name: (probability, face count range, face height as a fraction of the short side)
    'empty': (0.08, (0, 0), (0., 0.)),
    'portraits': (0.30, (1, 3), (0.12, 0.55)),
    'groups': (0.37, (3, 9), (0.05, 0.22)),
    'crowds': (0.25, (8, 22), (0.02, 0.08)),  # small faces
}
MIN_FACE = 5  # pixels
# The official Easy/Medium/Hard subsets come from how hard each face was for a reference detector, which cannot be
# recomputed; here a face's height decides, scaled from a 640 px image (WIDER FACE's training size): at least 50 px
# is easy, 30 px medium, 10 px hard (each subset holds the easier ones, as the official ones do). Invalid faces are
# in none.
SUBSET_MIN_HEIGHT = {'easy': 50, 'medium': 30, 'hard': 10}
GROUND_TRUTH_DIR = os.path.join('WIDER_val', 'ground_truth')
LABELS = ('blur', 'expression', 'illumination', 'invalid', 'occlusion', 'pose')  # the WIDER fields after x y w h
# How much there is besides the faces: background shapes per image, the share of faces occluded and the odds of
# blur levels 0/1/2. 'full' is WIDER-like; 'light' is the search-quality proxy task (bench/SEARCH_QUALITY.md):
# hard enough that candidates differ after a short training, easy enough that they learn something in it.
CLUTTER = {
    'full': {'shapes': (15, 45), 'occluded': 0.15, 'blur': (0.6, 0.25, 0.15)},
    'light': {'shapes': (2, 8), 'occluded': 0.05, 'blur': (0.8, 0.15, 0.05)},
    'none': {'shapes': (0, 1), 'occluded': 0.0, 'blur': (1.0, 0.0, 0.0)},
}


def _rng(seed, split, index):
    return np.random.default_rng([seed, SPLITS.index(split), index])


def _colour(rng, low=0, high=256):
    return tuple(int(c) for c in rng.integers(low, high, 3))


def _background(rng, height, width, shapes=(15, 45)):
    """A two-colour gradient covered with random shapes and lines: clutter for the detector to reject."""
    a, b = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.float32(np.cos(angle)) * np.linspace(0, 1, width, dtype=np.float32)[None, :]
            + np.float32(np.sin(angle)) * np.linspace(0, 1, height, dtype=np.float32)[:, None])
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    img = cv2.merge([(a[i] + (b[i] - a[i]) * ramp).astype(np.uint8) for i in range(3)])
    for _ in range(int(rng.integers(*shapes))):
        _shape(img, rng, height, width)
    return img


def _shape(img, rng, height, width):
    kind = rng.integers(0, 5)
    colour, size = _colour(rng), int(rng.uniform(0.02, 0.35) * max(height, width))
    x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
    thickness = -1 if rng.random() < 0.6 else int(rng.integers(1, 4))
    if kind == 0:
        cv2.rectangle(img, (x, y), (x + size, y + int(size * rng.uniform(0.2, 1.5))), colour, thickness)
    elif kind == 1:
        cv2.circle(img, (x, y), max(1, size // 2), colour, thickness)
    elif kind == 2:
        end = (x + int(rng.integers(-size, size + 1)), y + int(rng.integers(-size, size + 1)))
        cv2.line(img, (x, y), end, colour, int(rng.integers(1, 6)))
    elif kind == 3:
        pts = (np.array([x, y]) + rng.integers(-size, size + 1, (3, 2))).astype(np.int32)
        cv2.fillPoly(img, [pts], colour)
    else:  # elongated skin-coloured blobs (arms, hands): faces are more than colour
        skin = tuple(float(c) for c in SKIN[rng.integers(len(SKIN))])
        cv2.ellipse(img, (x, y), (max(1, size // 2), max(1, size // 8)), float(rng.uniform(0, 180)), 0, 360, skin,
                    -1)


def _face_patch(rng, s, yaw, open_mouth):
    """A face of height ``s`` on a square patch: colour (float BGR), alpha (face + hair) and the face-oval mask."""
    p = int(s * 1.7) + 4
    c = p / 2.
    colour = np.zeros((p, p, 3), np.float32)
    alpha = np.zeros((p, p), np.float32)
    face = np.zeros((p, p), np.float32)
    ax, ay = s * 0.39 * (1 - 0.25 * abs(yaw)), s / 2.
    centre = (int(round(c)), int(round(c)))
    if rng.random() < 0.75:  # hair
        hair = tuple(float(v) for v in rng.uniform(5, 90, 3))
        cv2.ellipse(colour, (centre[0], int(c - 0.1 * s)), (int(ax * 1.12), int(ay * 0.95)), 0, 0, 360, hair, -1)
        cv2.ellipse(alpha, (centre[0], int(c - 0.1 * s)), (int(ax * 1.12), int(ay * 0.95)), 0, 0, 360, 1., -1)
    skin = SKIN[rng.integers(len(SKIN))] * rng.uniform(0.8, 1.1)
    for layer, value in ((colour, tuple(float(v) for v in skin)), (alpha, 1.), (face, 1.)):
        cv2.ellipse(layer, centre, (max(1, int(ax)), max(1, int(ay))), 0, 0, 360, value, -1)
    _features(colour, rng, c, s, yaw, skin, open_mouth)
    shade = 1 + rng.uniform(-0.25, 0.25) * np.linspace(-1, 1, p, dtype=np.float32)
    colour *= shade[None, :, None]
    return colour, alpha, face


def _features(colour, rng, c, s, yaw, skin, open_mouth):
    """Eyes, brows, nose and mouth, shifted sideways by the yaw."""
    shift = yaw * 0.22 * s
    line = max(1, int(round(s / 30)))
    eye_y, iris = int(c - 0.08 * s), tuple(float(v) for v in rng.uniform(10, 90, 3))
    for side in (-1, 1):
        ex = int(c + shift + side * 0.17 * s * (1 - 0.3 * abs(yaw)))
        cv2.ellipse(colour, (ex, eye_y), (max(1, int(0.075 * s)), max(1, int(0.035 * s))), 0, 0, 360,
                    (235., 235., 235.), -1)
        cv2.circle(colour, (ex + int(shift * 0.15), eye_y), max(1, int(0.03 * s)), iris, -1)
        cv2.line(colour, (ex - int(0.08 * s), int(eye_y - 0.08 * s)), (ex + int(0.08 * s), int(eye_y - 0.1 * s)),
                 (30., 30., 40.), line)
    dark = tuple(float(v) for v in skin * 0.65)
    nose_x = int(c + shift * 1.2)
    cv2.line(colour, (nose_x, int(c)), (nose_x + int(yaw * 0.06 * s), int(c + 0.11 * s)), dark, line)
    mouth = (int(c + shift), int(c + 0.25 * s))
    lips = (60., 50., float(rng.uniform(120, 200)))
    if open_mouth:
        cv2.ellipse(colour, mouth, (max(1, int(0.11 * s)), max(1, int(0.06 * s))), 0, 0, 360, lips, -1)
    else:
        cv2.ellipse(colour, mouth, (max(1, int(0.12 * s)), max(1, int(0.04 * s))), 0, 10, 170, lips, line)


def _transform_patch(rng, patch, roll, blur_sigma):
    """Roll the face patch and blur it (colour and edges alike)."""
    colour, alpha, face = patch
    p = colour.shape[0]
    rot = cv2.getRotationMatrix2D((p / 2., p / 2.), roll, 1.)
    colour = cv2.warpAffine(colour, rot, (p, p), flags=cv2.INTER_LINEAR)
    masks = cv2.warpAffine(np.dstack([alpha, face]), rot, (p, p), flags=cv2.INTER_LINEAR)
    if blur_sigma > 0:
        colour = cv2.GaussianBlur(colour, (0, 0), blur_sigma)
        masks = cv2.GaussianBlur(masks, (0, 0), blur_sigma)
    return colour, masks[..., 0], masks[..., 1]


def _visible_box(face, x0, y0, height, width):
    """Pixel box (x, y, w, h) of the face mask's part inside the image, and the fraction of the mask visible."""
    ys, xs = np.nonzero(face > 0.5)
    if len(xs) == 0:
        return None, 0.
    xs, ys = xs + x0, ys + y0
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    if not inside.any():
        return None, 0.
    xs, ys = xs[inside], ys[inside]
    box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    return box, inside.mean()


def _paste(img, colour, alpha, x0, y0):
    """Alpha-blend a patch whose top-left corner is (x0, y0), clipped to the image."""
    h, w = img.shape[:2]
    p = colour.shape[0]
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + p, w), min(y0 + p, h)
    if ix1 <= ix0 or iy1 <= iy0:
        return
    a = alpha[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0, None]
    roi = img[iy0:iy1, ix0:ix1].astype(np.float32)
    roi += a * (colour[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] - roi)
    img[iy0:iy1, ix0:ix1] = np.clip(roi, 0, 255).astype(np.uint8)


def _overlaps(box, boxes):
    """True when ``box`` covers more than a quarter of an earlier face (or the other way round)."""
    x, y, w, h = box
    for bx, by, bw, bh in boxes:
        iw = min(x + w, bx + bw) - max(x, bx)
        ih = min(y + h, by + bh) - max(y, by)
        if iw > 0 and ih > 0 and iw * ih > 0.25 * min(w * h, bw * bh):
            return True
    return False


def _occlude(img, rng, box):
    """Cover part of a face with an object from one side; returns the WIDER occlusion level (1 partial, 2 heavy)."""
    x, y, w, h = box
    share = rng.uniform(0.2, 0.6)
    side = rng.integers(0, 4)
    if side == 0:
        rect = (x, y + int(h * (1 - share)), x + w, y + h)
    elif side == 1:
        rect = (x, y, x + int(w * share), y + h)
    elif side == 2:
        rect = (x + int(w * (1 - share)), y, x + w, y + h)
    else:
        rect = (x, y, x + w, y + int(h * share))
    cv2.rectangle(img, rect[:2], (rect[2] - 1, rect[3] - 1), _colour(rng), -1)
    return 1 if share < 0.4 else 2


def _centre(rng, s, height, width):
    """A face centre; one face in eight is placed so that the image border cuts it."""
    if rng.random() < 0.125:
        side = rng.integers(0, 4)
        edge = rng.uniform(-0.25, 0.2) * s
        along = rng.uniform(0, width if side < 2 else height)
        return ((edge, along) if side == 0 else (width - edge, along) if side == 1 else
                (along, edge) if side == 2 else (along, height - edge))
    return rng.uniform(0, width), rng.uniform(0, height)


def _face(img, rng, s, boxes, clutter=CLUTTER['full']):
    """Draw one face at a free spot; returns its ten annotation fields, or None when no spot was found."""
    height, width = img.shape[:2]
    yaw, roll = rng.uniform(-0.8, 0.8), rng.normal(0, 12) if rng.random() < 0.85 else rng.uniform(-45, 45)
    blur = int(rng.choice(3, p=list(clutter['blur'])))
    expression = int(rng.random() < 0.2)
    patch = _transform_patch(rng, _face_patch(rng, s, yaw, expression), roll, (0., 0.02 * s + 0.4, 0.06 * s + 1.)[blur])
    for _ in range(15):
        cx, cy = _centre(rng, s, height, width)
        x0, y0 = int(cx - patch[0].shape[1] / 2), int(cy - patch[0].shape[0] / 2)
        box, visible = _visible_box(patch[2], x0, y0, height, width)
        if box and visible >= 0.4 and min(box[2:]) >= 2 and not _overlaps(box, boxes):
            _paste(img, patch[0], patch[1], x0, y0)
            occlusion = _occlude(img, rng, box) if rng.random() < clutter['occluded'] else 0
            pose = int(abs(roll) > 25 or abs(yaw) > 0.55)
            return list(box) + [blur, expression, 0, 0, occlusion, pose]
    return None


def _light(img, rng, faces):
    """Uneven lighting and sensor noise over the whole image; faces lit very darkly or brightly get WIDER
    illumination 1."""
    height, width = img.shape[:2]
    gx, gy = rng.uniform(-0.45, 0.45, 2)
    field = (np.float32(rng.uniform(0.8, 1.1)) + np.float32(gx) * np.linspace(-1, 1, width, dtype=np.float32)[None, :]
             + np.float32(gy) * np.linspace(-1, 1, height, dtype=np.float32)[:, None])
    noise = np.empty(img.shape, np.float32)
    cv2.setRNGSeed(int(rng.integers(2 ** 31)))  # OpenCV's generator is much faster than numpy's for noise
    cv2.randn(noise, 0., float(rng.uniform(2, 7)))
    lit = img.astype(np.float32) * cv2.merge([field] * 3) + noise
    out = np.clip(lit, 0, 255, out=lit).astype(np.uint8)
    for f in faces:
        level = field[min(f[1] + f[3] // 2, height - 1), min(f[0] + f[2] // 2, width - 1)]
        f[6] = int(level < 0.65 or level > 1.3)
    return out


def render(seed, split, index, size, scenes=tuple(SCENES), clutter='full'):
    """One image (BGR uint8) and its face annotations (lists of the ten WIDER fields).

    ``scenes`` limits the kinds of image drawn (their probabilities renormalised), e.g. no crowds for a quick demo;
    ``clutter`` names a CLUTTER level.
    """
    level = CLUTTER[clutter]
    rng = _rng(seed, split, index)
    long_side, short_side = size, int(size * rng.uniform(0.62, 1.0))
    height, width = (short_side, long_side) if rng.random() < 0.8 else (long_side, short_side)
    img = _background(rng, height, width, level['shapes'])
    weights = np.array([SCENES[name][0] for name in scenes])
    _, (low, high), (small, big) = SCENES[scenes[rng.choice(len(scenes), p=weights / weights.sum())]]
    count = int(rng.integers(low, high + 1))
    sizes = sorted(np.exp(rng.uniform(np.log(small + 1e-6), np.log(big + 1e-6), count)) * min(height, width),
                   reverse=True)
    faces = []
    for s in sizes:
        face = _face(img, rng, max(float(s), MIN_FACE), [f[:4] for f in faces], level)
        if face:
            faces.append(face)
    return _light(img, rng, faces), faces


def image_name(split, index, count):
    event = EVENTS[index * len(EVENTS) // max(count, 1)]
    number, name = event.split('--', 1)
    return '{}/{}_{}_synthetic_{}_{}.jpg'.format(event, number, name, split, index)


def _make_one(job):
    out, split, index, count, size, seed, scenes, clutter = job
    img, faces = render(seed, split, index, size, scenes, clutter)
    rel = image_name(split, index, count)
    path = os.path.join(out, 'WIDER_{}'.format(split), 'images', rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ok, data = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    with open(path, 'wb') as f:
        f.write(data.tobytes())
    return rel, faces


def annotation_text(entries):
    """WIDER annotation text: path, face count, one line per face (one all-zero line when there is none)."""
    lines = []
    for rel, faces in entries:
        lines += [rel, str(len(faces))]
        lines += [' '.join(str(int(v)) for v in face) + ' ' for face in faces] or ['0 0 0 0 0 0 0 0 0 0 ']
    return '\n'.join(lines) + '\n'


def _cells(items):
    """A MATLAB cell column (what scipy.io.savemat writes for an (n, 1) object array)."""
    cells = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        cells[i, 0] = item
    return cells


def _savemat(path, data):
    """scipy's savemat with a fixed header text: it would stamp the time, and the same arguments give the same bytes."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, data)
    body = buffer.getvalue()
    with open(path, 'wb') as f:
        f.write(b'MATLAB 5.0 MAT-file, written by ppdet/utils/synthetic.py write_ground_truth'.ljust(116) + body[116:])


def subset_indices(faces, subset, size):
    """1-based indices (an (m, 1) integer column, as the official files hold them) of the faces ``subset`` evaluates.
    Integers: PaddleDetection develop's WIDERFaceValDataset indexes an array with them (``ignore[keep_index-1]``)."""
    min_height = SUBSET_MIN_HEIGHT[subset] * size / 640.
    keep = [i + 1 for i, face in enumerate(faces) if face[3] >= min_height and not face[7]]
    return np.array(keep, dtype=np.int32).reshape(-1, 1)


def write_ground_truth(out, entries, size):
    """The official val ground truth for ``entries`` (the val split's (path, faces)), in ``out/WIDER_val/ground_truth``.

    As the eval_tools' files: ``wider_face_val.mat`` holds ``event_list`` (a cell column of event names),
    ``file_list`` (per event, a cell column of image names without their extension), ``face_bbx_list`` (per image an
    (n, 4) ``x y w h`` array) and one ``<label>_label_list`` per WIDER field; ``wider_<subset>_val.mat`` holds
    ``event_list``, ``file_list`` and ``gt_list`` (per image, the 1-based indices of the faces that subset counts).
    ``size`` is the images' long side, which the subsets' face heights scale with: one number when all share it (the
    synthetic set), or a ``{path: long side}`` dict for images of varied sizes (tools/convert_to_wider.py).
    """
    sizes = size if isinstance(size, dict) else {rel: size for rel, _ in entries}
    by_event = {}
    for rel, faces in entries:
        event, name = rel.split('/')
        by_event.setdefault(event, []).append((os.path.splitext(name)[0], np.array(faces, np.float64).reshape(-1, 10),
                                               sizes[rel]))
    events = sorted(by_event, key=lambda e: int(e.split('--')[0]))
    event_list = _cells(events)
    file_list = _cells([_cells([name for name, _, _ in by_event[e]]) for e in events])

    def per_image(value):
        return _cells([_cells([value(faces, side) for _, faces, side in by_event[e]]) for e in events])

    folder = os.path.join(out, GROUND_TRUTH_DIR)
    os.makedirs(folder, exist_ok=True)
    face = {'event_list': event_list, 'file_list': file_list, 'face_bbx_list': per_image(lambda f, _: f[:, :4])}
    for column, label in enumerate(LABELS, start=4):
        face['{}_label_list'.format(label)] = per_image(lambda f, _, c=column: f[:, c:c + 1])
    _savemat(os.path.join(folder, 'wider_face_val.mat'), face)
    for subset in SUBSET_MIN_HEIGHT:
        _savemat(os.path.join(folder, 'wider_{}_val.mat'.format(subset)),
                 {'event_list': event_list, 'file_list': file_list,
                  'gt_list': per_image(lambda f, side, s=subset: subset_indices(f, s, side))})


def write_split(out, split, count, size, seed, pool=None, scenes=tuple(SCENES), clutter='full'):
    """Render and write one split (and the val split's evaluation ground truth); returns the faces written."""
    jobs = [(out, split, i, count, size, seed, tuple(scenes), clutter) for i in range(count)]
    entries = list(pool.imap(_make_one, jobs, chunksize=4) if pool else map(_make_one, jobs))
    split_dir = os.path.join(out, 'wider_face_split')
    os.makedirs(split_dir, exist_ok=True)
    with open(os.path.join(split_dir, 'wider_face_{}_bbx_gt.txt'.format(split)), 'w') as f:
        f.write(annotation_text(entries))
    if split == 'val':
        write_ground_truth(out, entries, size)
    return sum(len(faces) for _, faces in entries)


def make_dataset(out, train=100, val=25, size=512, seed=0, workers=None, scenes=tuple(SCENES), clutter='full'):
    """Write both splits under ``out``; returns {split: (images, faces)}."""
    workers = min(os.cpu_count() or 1, 4) if workers is None else workers
    counts = {'train': train, 'val': val}
    if workers > 1:
        with multiprocessing.get_context('fork').Pool(workers) as pool:
            return {s: (n, write_split(out, s, n, size, seed, pool, scenes, clutter)) for s, n in counts.items()}
    return {s: (n, write_split(out, s, n, size, seed, None, scenes, clutter)) for s, n in counts.items()}
