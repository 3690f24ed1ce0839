"""Fetch WIDER FACE into the layout the reader expects, resumably, checked, and without trusting archive paths.

``fetch_widerface(out)`` gets ``WIDER_train.zip``, ``WIDER_val.zip`` and ``wider_face_split.zip`` from
PaddlePaddle's dataset mirror (the files and md5 sums PaddleDetection's ``dataset/wider_face`` script and its
``ppdet/utils/download.py`` use) and extracts them into ``out``.

Choices, and why:

- Downloads go to ``<name>.part`` and continue with an HTTP ``Range`` request, in the same run after a dropped
  connection and in a later run after a kill: the train zip is 1.4 GB. A server that answers a Range request with
  the whole file (200) is followed: the ``.part`` is started over.
- After a dropped connection the ``.part`` is kept (it is good data, and rerunning resumes it). After a wrong md5
  the file is removed (its bytes cannot be trusted, and resuming it would only keep the damage).
- Zips the user fetched by hand (``source_dir``, e.g. from the WIDER FACE site) are used in place, not copied.
  A different md5 is a warning, not an error: copies are packaged independently (the site's
  ``wider_face_split.zip`` already differs from the mirror's), so the md5 cannot tell a good copy from a bad one,
  and refusing would leave the user stuck with a usable download. What decides is what the reader needs: a
  readable zip with the expected top-level folder, whose members pass their CRC check, extracting to a layout in
  which every annotated image exists.
- Each archive is extracted into a scratch folder inside ``out`` and its top-level folder moved into place in one
  rename, so a present ``WIDER_train/`` is a complete one: a rerun skips it, and the zip with it.
- Members with an absolute path or a ``..`` component reject the whole archive before anything is written.
"""
import hashlib
import logging
import os
import re
import shutil
import time
import zipfile
from collections import namedtuple
from pathlib import PurePosixPath, PureWindowsPath

import requests
import urllib3
from tqdm import tqdm

from ppdet.core.workspace import ConfigError
from ppdet.data.source.widerface import DatasetError, WIDERFaceDataSet

__all__ = ['Archive', 'ARCHIVES', 'DEFAULT_URL_BASE', 'OFFICIAL_SITE', 'DownloadError', 'fetch_widerface',
           'check_layout', 'md5_of']

logger = logging.getLogger(__name__)

DEFAULT_URL_BASE = 'https://dataset.bj.bcebos.com/wider_face/'
OFFICIAL_SITE = 'http://shuoyang1213.me/WIDERFACE/'

# md5: the PaddlePaddle mirror's copy; top: the archive's one top-level folder; other_md5: other known-good
# copies of a hand-downloaded zip (the WIDER FACE site's train and val zips are the mirror's, its annotation zip is
# not: its md5 as torchvision lists it)
Archive = namedtuple('Archive', ['name', 'md5', 'top', 'other_md5'])
ARCHIVES = (
    Archive('WIDER_train.zip', '3fedf70df600953d25982bcd13d91ba2', 'WIDER_train', ()),
    Archive('WIDER_val.zip', 'dfa7d7e790efa35df3788964cf0bbaea', 'WIDER_val', ()),
    Archive('wider_face_split.zip', 'a4a898d6193db4b9ef3260a68bad0dc7', 'wider_face_split',
            ('0e3767bcf0e326556d407bf5bff5d27c',)),
)
SPLITS = ('train', 'val')
WIDER_IMAGES = {'train': 12880, 'val': 3226}  # annotated images of the real set
CHUNK = 1 << 20
TIMEOUT = (15, 60)  # seconds to connect, and of silence while reading, before the attempt counts as dropped
RETRYABLE_STATUS = (429, 500, 502, 503, 504)


class DownloadError(Exception):
    """A download that failed after its retries (network, server, md5): one line, the tool exits 1."""


class _Dropped(Exception):
    """One attempt ended early; the next one resumes."""


def md5_of(path):
    digest = hashlib.md5()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(CHUNK), b''):
            digest.update(block)
    return digest.hexdigest()


def annotation_path(split):
    return os.path.join('wider_face_split', 'wider_face_{}_bbx_gt.txt'.format(split))


def image_dir(split):
    return os.path.join('WIDER_{}'.format(split), 'images')


def _has_images(images):
    """True when ``images`` holds at least one ``<event>/*.jpg``."""
    if not os.path.isdir(images):
        return False
    for event in os.scandir(images):
        if event.is_dir() and any(name.lower().endswith('.jpg') for name in os.listdir(event.path)):
            return True
    return False


def _missing_part(out, archive):
    """What of ``archive``'s part of the layout is missing from ``out`` (empty: it is extracted)."""
    if archive.top == 'wider_face_split':
        return [os.path.join(out, annotation_path(s)) for s in SPLITS
                if not os.path.isfile(os.path.join(out, annotation_path(s)))]
    images = os.path.join(out, archive.top, 'images')
    return [] if _has_images(images) else [os.path.join(images, '<event>', '*.jpg')]


def check_layout(out):
    """``(problems, counts)``: what keeps the reader from using ``out`` (nothing: usable) and each split's images.

    Every image an annotation file lists must exist: the reader would skip missing ones one warning at a time.
    """
    problems, counts = [], {}
    for archive in ARCHIVES:
        problems += ['{} is missing'.format(path) for path in _missing_part(out, archive)]
    if problems:
        return problems, counts
    for split in SPLITS:
        dataset = WIDERFaceDataSet(dataset_dir=out, image_dir=image_dir(split), anno_path=annotation_path(split))
        try:
            records = dataset.get_roidb()
        except DatasetError as e:
            problems.append(str(e))
            continue
        absent = [r['im_file'] for r in records if not os.path.isfile(r['im_file'])]
        if absent:
            problems.append('{} of the {} images listed in {} are missing, e.g. {}'.format(
                len(absent), len(records), dataset.get_anno(), absent[0]))
        counts[split] = len(records)
    return problems, counts


def _prepare_out(out):
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise ConfigError('--out {}: cannot create this directory ({}); choose a directory you can write to'
                          .format(out, e.strerror)) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError('--out {}: not writable; choose a directory you can write to or fix its permissions'
                          .format(out))


def _pending(out, archive):
    """True when ``archive`` still has to be extracted; a top folder that exists but is incomplete was not made
    by this tool (its folders appear complete or not at all), so it is left to the user rather than overwritten."""
    missing = _missing_part(out, archive)
    top = os.path.join(out, archive.top)
    if missing and os.path.exists(top):
        raise ConfigError('{} exists but {} is missing; remove {} and rerun to extract {} again'.format(
            top, missing[0], top, archive.name))
    return bool(missing)


def _short(error):
    """A one-line reason: the innermost cause (requests wraps urllib3's), without urllib3's connection preamble."""
    cause = error.args[0] if error.args and isinstance(error.args[0], (str, Exception)) else error
    cause = getattr(cause, 'reason', None) or cause
    text = re.sub(r'^\w+\(host=[^)]*\): ', '', ' '.join(str(cause).split()))
    return text if len(text) <= 160 else text[:157] + '...'


def _resume_start(response, have, part):
    """The byte the response body starts at: ``have`` for a partial answer to our Range, 0 for a whole file."""
    if response.status_code == 200:
        if have:
            logger.warning('%s: the server ignored the Range request; starting over', response.url)
        return 0
    match = re.match(r'bytes (\d+)-\d+/(\d+|\*)', response.headers.get('Content-Range', ''))
    if not match or int(match.group(1)) != have:
        if have:
            os.remove(part)  # a range we did not ask for cannot be appended: the next attempt starts over
        raise _Dropped('206 answer with Content-Range {!r} for bytes={}-'.format(
            response.headers.get('Content-Range'), have))
    return have


def _already_complete(response, have):
    """A 416 answer to ``bytes=<have>-`` whose Content-Range total is ``have``: the ``.part`` holds every byte."""
    match = re.match(r'bytes \*/(\d+)', response.headers.get('Content-Range', ''))
    return bool(match) and int(match.group(1)) == have


def _attempt(session, url, part, name):
    """One request that appends to ``part`` from where it ends; raises _Dropped when the body ends early."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {'Accept-Encoding': 'identity'}
    if have:
        headers['Range'] = 'bytes={}-'.format(have)
    try:
        with session.get(url, headers=headers, stream=True, timeout=TIMEOUT) as response:
            if have and response.status_code == 416:
                if _already_complete(response, have):
                    return
                logger.warning('%s: %s is not a prefix of the file (server answered 416); starting over', name, part)
                os.remove(part)
                raise _Dropped('416 Range Not Satisfiable for bytes={}-'.format(have))
            if response.status_code in RETRYABLE_STATUS:
                raise _Dropped('HTTP {} {}'.format(response.status_code, response.reason))
            if response.status_code not in (200, 206):
                raise DownloadError('{}: HTTP {} {}; check --url-base (default {})'.format(
                    url, response.status_code, response.reason, DEFAULT_URL_BASE))
            start = _resume_start(response, have, part)
            length = response.headers.get('Content-Length')
            total = start + int(length) if length is not None else None
            with open(part, 'ab' if start else 'wb') as f, \
                    tqdm(total=total, initial=start, unit='B', unit_scale=True, unit_divisor=1024, desc=name) as bar:
                # read1 hands over every byte received before a drop (iter_content would lose the last chunk)
                for block in iter(lambda: response.raw.read1(CHUNK, decode_content=False), b''):
                    f.write(block)
                    bar.update(len(block))
    except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
        raise _Dropped(_short(e)) from None
    size = os.path.getsize(part)
    if total is not None and size != total:
        raise _Dropped('the body ended at byte {} of {}'.format(size, total))


def _download(session, url, dest, archive, retries, retry_delay):
    """``url`` to ``dest`` through ``dest.part``, resumed up to ``retries`` times, md5-checked; returns ``dest``."""
    part = dest + '.part'
    for attempt in range(retries + 1):
        try:
            _attempt(session, url, part, archive.name)
            break
        except _Dropped as e:
            reason = str(e)
            if attempt < retries:
                delay = retry_delay * 2 ** attempt
                logger.warning('%s: %s; resuming in %.0f s (retry %d of %d)', archive.name, reason, delay,
                               attempt + 1, retries)
                time.sleep(delay)
    else:
        have = os.path.getsize(part) if os.path.exists(part) else 0
        kept = ('the partial file {} ({} bytes) is kept: rerun the same command to resume it'.format(part, have)
                if have else 'check the network and the address, then rerun')
        raise DownloadError('{}: download failed after {} attempt{} ({}); {}'.format(
            url, retries + 1, 's' if retries else '', reason, kept))
    actual = md5_of(part)
    if actual != archive.md5:
        os.remove(part)
        raise DownloadError('{}: md5 {} but expected {}; the bad file was removed. Rerun to download it again; if '
                            'it happens again the mirror is damaged: try another with --url-base, or fetch the zip '
                            'from {} and pass its folder with --from'.format(archive.name, actual, archive.md5,
                                                                             OFFICIAL_SITE))
    os.replace(part, dest)
    logger.info('%s: downloaded, md5 %s', archive.name, actual)
    return dest


def _present_zip(out, archive):
    """``out/<name>`` when it is already there with the right md5, None when it has to be downloaded."""
    dest = os.path.join(out, archive.name)
    if not os.path.isfile(dest):
        return None
    actual = md5_of(dest)
    if actual != archive.md5:
        raise ConfigError('{} exists with md5 {}, expected {}; delete it to download it again, or pass its folder '
                          'with --from to use it as it is'.format(dest, actual, archive.md5))
    logger.info('%s: already downloaded (md5 %s)', dest, actual)
    return dest


def _downloaded_zips(out, archives, url_base, retries, retry_delay):
    """The zips of ``archives`` in ``out``, downloading the missing ones once those present have been checked."""
    present = [_present_zip(out, a) for a in archives]
    with requests.Session() as session:
        return [path or _download(session, url_base.rstrip('/') + '/' + a.name, os.path.join(out, a.name), a,
                                  retries, retry_delay)
                for path, a in zip(present, archives)]


def _source_zip(source_dir, archive):
    """``source_dir/<name>``, md5 compared with the known copies (a difference is a warning: see the module)."""
    path = os.path.join(source_dir, archive.name)
    if not os.path.isfile(path):
        raise ConfigError('--from {}: {} is missing; put the zip there (from {}), or drop --from to download it '
                          'from the PaddlePaddle mirror'.format(source_dir, archive.name, OFFICIAL_SITE))
    actual = md5_of(path)
    if actual == archive.md5 or actual in archive.other_md5:
        logger.info('%s: md5 %s, a known copy', path, actual)
    else:
        logger.warning('%s: md5 %s differs from the PaddlePaddle mirror\'s %s; using it since copies are packaged '
                       'differently, and checking its contents instead', path, actual, archive.md5)
    return path


def _unsafe(name):
    posix = PurePosixPath(name.replace('\\', '/'))
    return posix.is_absolute() or '..' in posix.parts or bool(PureWindowsPath(name).drive)


def _members(zf, path, archive):
    """The members under ``archive.top``; any unsafe member rejects the whole archive."""
    infos = zf.infolist()
    bad = next((info.filename for info in infos if _unsafe(info.filename)), None)
    if bad is not None:
        raise ConfigError('{}: member {!r} has an absolute path or a ".." component; refusing to extract this '
                          'archive (it is not a WIDER FACE zip)'.format(path, bad))
    prefix = archive.top + '/'
    members = [info for info in infos if info.filename.startswith(prefix)]
    if not members:
        tops = sorted({info.filename.split('/')[0] for info in infos})
        raise ConfigError('{}: no {} folder at its top level (found: {}); it is not WIDER FACE\'s {}'.format(
            path, prefix, ', '.join(tops[:5]) or 'nothing', archive.name))
    if len(members) < len(infos):
        logger.info('%s: %d members outside %s ignored', path, len(infos) - len(members), prefix)
    return members


def _open_zip(path):
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ConfigError('{} is not a readable zip file ({}); download it again'.format(path, _short(e))) from None


def _validate(path, archive):
    with _open_zip(path) as zf:
        _members(zf, path, archive)


def _extract(path, out, archive):
    """Extract ``archive.top`` from ``path`` into ``out`` through a scratch folder and one rename."""
    scratch = os.path.join(out, '.{}.extracting'.format(archive.name))
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        with _open_zip(path) as zf:
            for info in tqdm(_members(zf, path, archive), unit='file', desc='extracting ' + archive.name):
                zf.extract(info, scratch)
        os.replace(os.path.join(scratch, archive.top), os.path.join(out, archive.top))
    except (zipfile.BadZipFile, EOFError) as e:
        raise ConfigError('{} is damaged ({}); download it again'.format(path, _short(e))) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info('%s: extracted to %s', archive.name, os.path.join(out, archive.top))


def fetch_widerface(out, source_dir=None, url_base=DEFAULT_URL_BASE, retries=3, retry_delay=2.):
    """Make ``out`` a WIDER FACE ``dataset_dir``; returns the image count of each split.

    ``source_dir``: take the zips from there instead of downloading. Raises ConfigError for what the user must
    fix (paths, unusable zips, an incomplete layout) and DownloadError when a download fails.
    """
    _prepare_out(out)
    if source_dir is not None and not os.path.isdir(source_dir):
        raise ConfigError('--from {}: no such directory; pass the folder that holds {}'.format(
            source_dir, ', '.join(a.name for a in ARCHIVES)))
    pending = [a for a in ARCHIVES if _pending(out, a)]
    for archive in ARCHIVES:
        if archive not in pending:
            logger.info('%s: already extracted in %s', archive.name, os.path.join(out, archive.top))
    if source_dir is not None:
        zips = [_source_zip(source_dir, a) for a in pending]
    else:
        zips = _downloaded_zips(out, pending, url_base, retries, retry_delay)
    for path, archive in zip(zips, pending):
        _validate(path, archive)  # every zip before any extraction: a bad one fails in seconds, not minutes
    for path, archive in zip(zips, pending):
        _extract(path, out, archive)
    problems, counts = check_layout(out)
    if problems:
        raise DatasetError('WIDER FACE in {} is incomplete: {}; remove the folders named, put complete zips in place '
                           'and rerun'.format(out, '; '.join(problems)))
    if any(counts[s] < 0.99 * WIDER_IMAGES[s] for s in SPLITS):
        # folders already in place are taken as they are: they may hold a subset, or the synthetic set
        logger.warning('%s holds %d train and %d val images, WIDER FACE %d and %d: if that is not what you want, '
                       'remove its WIDER_train, WIDER_val and wider_face_split folders and rerun', out,
                       counts['train'], counts['val'], WIDER_IMAGES['train'], WIDER_IMAGES['val'])
    return counts
