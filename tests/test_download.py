"""The WIDER FACE download tool against a real HTTP server on 127.0.0.1 serving tiny WIDER-layout zips: resume
with Range after a dropped connection, servers that ignore Range, md5 failures, --from, and reruns that do
nothing. No internet; each test takes well under a second."""
import hashlib
import http.server
import io
import logging
import os
import re
import shutil
import socket
import threading
import zipfile

import cv2
import numpy as np
import pytest

import tools.download_widerface as download_tool
from conftest import run_tool_main
from ppdet.data.source.widerface import WIDERFaceDataSet
from ppdet.data import download

TRAIN_ANNO = ('0--Parade/0_Parade_a.jpg\n2\n4 6 20 24 0 0 0 0 0 0\n30 8 16 18 1 0 0 0 0 0\n'
              '1--Handshaking/1_Handshaking_b.jpg\n1\n10 10 25 25 0 0 0 0 0 0\n')
VAL_ANNO = '0--Parade/0_Parade_c.jpg\n1\n5 5 30 30 0 0 0 0 0 0\n'
DROP_AT = 3000  # bytes sent before a "dropped" connection is closed


def _jpg(seed):
    """A noisy 64x64 jpg: incompressible, so the zips are large enough to be cut mid-file."""
    img = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return cv2.imencode('.jpg', img)[1].tobytes()


def _zip(members, compression=zipfile.ZIP_STORED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _members():
    return {
        'WIDER_train.zip': {'WIDER_train/images/0--Parade/0_Parade_a.jpg': _jpg(0),
                            'WIDER_train/images/1--Handshaking/1_Handshaking_b.jpg': _jpg(1)},
        'WIDER_val.zip': {'WIDER_val/images/0--Parade/0_Parade_c.jpg': _jpg(2)},
        'wider_face_split.zip': {'wider_face_split/wider_face_train_bbx_gt.txt': TRAIN_ANNO,
                                 'wider_face_split/wider_face_val_bbx_gt.txt': VAL_ANNO,
                                 'wider_face_split/readme.txt': 'tiny'},
    }


@pytest.fixture(autouse=True)
def _root_handlers():
    """The tool's setup_logging adds a handler on this test's captured stderr: gone with the test."""
    saved = logging.root.handlers[:]
    yield
    logging.root.handlers[:] = saved


def _md5(data):
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def zips(monkeypatch):
    """The three tiny zips by name; the module's expected md5 sums become theirs."""
    made = {name: _zip(members) for name, members in _members().items()}
    monkeypatch.setattr(download, 'ARCHIVES', tuple(a._replace(md5=_md5(made[a.name]), other_md5=())
                                                     for a in download.ARCHIVES))
    return made


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread

    def __init__(self, files):
        super().__init__(('127.0.0.1', 0), _Handler)
        self.files = files          # name -> bytes served at /wider_face/<name>
        self.drops = {}             # name -> list of byte counts: request i is cut after drops[name][i] bytes
        self.stalls = {}            # name -> bytes sent before the first response stops sending until released
        self.release = threading.Event()
        self.ignore_range = False
        self.requests = []          # (name, Range header or None)
        self.url = 'http://127.0.0.1:{}/wider_face/'.format(self.server_address[1])

    def seen(self, name):
        return [r for n, r in self.requests if n == name]


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET with ``Range: bytes=N-``, 206/416 as RFC 9110 says, and connections cut on demand."""

    def do_GET(self):
        server = self.server
        name = self.path.rsplit('/', 1)[-1]
        requested = self.headers.get('Range')
        server.requests.append((name, requested))
        data = server.files.get(name) if self.path.startswith('/wider_face/') else None
        if data is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r'bytes=(\d+)-', requested or '')
        if match and not server.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header('Content-Range', 'bytes */{}'.format(len(data)))
                self.send_header('Content-Length', '0')
                self.end_headers()
                return
            self.send_response(206)
            self.send_header('Content-Range', 'bytes {}-{}/{}'.format(start, len(data) - 1, len(data)))
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        plan = server.drops.get(name)
        if plan:
            body = body[:plan.pop(0)]  # then the connection closes: a drop mid-file
        stall = server.stalls.pop(name, None)
        if stall is not None:
            self.wfile.write(body[:stall])
            self.wfile.flush()
            server.release.wait(10)  # a silent connection: the client's read timeout has to end it
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(zips, monkeypatch):
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')  # a proxy from the environment must not see the test's requests
    httpd = _Server(dict(zips))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _run(argv, capsys):
    return run_tool_main(download_tool.main, argv, capsys)


def _error_line(err):
    """The tool's error output is one line; progress bars (tqdm, on stderr too) are not part of it."""
    assert 'Traceback' not in err
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(lines) == 1, err
    return lines[0]


def _assert_dataset(out):
    """The layout the reader expects, read by the project's reader itself."""
    for split, count in (('train', 2), ('val', 1)):
        assert os.path.isfile(os.path.join(out, 'wider_face_split', 'wider_face_{}_bbx_gt.txt'.format(split)))
        dataset = WIDERFaceDataSet(dataset_dir=str(out), image_dir='WIDER_{}/images'.format(split),
                                   anno_path='wider_face_split/wider_face_{}_bbx_gt.txt'.format(split))
        records = dataset.get_roidb()
        assert len(records) == count
        assert all(cv2.imread(r['im_file']) is not None for r in records)
    train = WIDERFaceDataSet(dataset_dir=str(out), image_dir='WIDER_train/images',
                             anno_path='wider_face_split/wider_face_train_bbx_gt.txt').get_roidb()
    np.testing.assert_allclose(train[0]['gt_bbox'], [[4, 6, 24, 30], [30, 8, 46, 26]])
    assert download.check_layout(str(out)) == ([], {'train': 2, 'val': 1})
    leftovers = [n for n in os.listdir(out) if n.endswith('.part') or n.endswith('.extracting')]
    assert leftovers == []


def test_download_extracts_the_readers_layout(server, zips, tmp_path, capsys):
    out = tmp_path / 'wider_face'
    code, stdout, err = _run(['--out', str(out), '--url-base', server.url], capsys)
    assert code == 0, err
    _assert_dataset(out)
    assert 'holds 2 train and 1 val images, WIDER FACE 12880 and 3226' in err  # not the real set: said so
    for name, data in zips.items():
        assert server.seen(name) == [None]
        assert download.md5_of(str(out / name)) == _md5(data)  # zips are kept: a rerun needs no download
    lines = stdout.splitlines()
    assert lines[-2] == 'dataset_dir: {}'.format(out)
    assert lines[-1] == ('next: python -u train_nas.py -c blazeface.yml -o TrainReader.dataset.dataset_dir={0} '
                         'EvalReader.dataset.dataset_dir={0}'.format(out))
    assert 'WIDER_train.zip' in err and 'B/' in err  # the byte progress bar


def test_default_out_gives_the_plain_search_command():
    assert download_tool.next_command('dataset/wider_face/') == 'python -u train_nas.py -c blazeface.yml'


def test_second_run_downloads_and_extracts_nothing(server, zips, tmp_path, capsys):
    out = tmp_path / 'wider_face'
    assert _run(['--out', str(out), '--url-base', server.url], capsys)[0] == 0
    marker = out / 'WIDER_train' / 'images' / 'marker'
    marker.write_text('extracting again would remove me')
    server.requests.clear()
    code, _, err = _run(['--out', str(out), '--url-base', server.url], capsys)
    assert code == 0, err
    assert server.requests == [] and marker.exists()
    # an extracted folder removed while its zip stays: extracted again from the zip, still no download
    shutil.rmtree(out / 'WIDER_val')
    code, _, err = _run(['--out', str(out), '--url-base', server.url], capsys)
    assert code == 0, err
    assert server.requests == [] and marker.exists()
    _assert_dataset(out)
    for name in zips:  # zips deleted to save space: the extracted folders are enough
        (out / name).unlink()
    code, _, err = _run(['--out', str(out), '--url-base', server.url], capsys)
    assert code == 0, err
    assert server.requests == [] and marker.exists()


def test_dropped_connection_is_resumed_with_range(server, zips, tmp_path):
    server.drops['WIDER_train.zip'] = [DROP_AT]
    out = tmp_path / 'wider_face'
    download.fetch_widerface(str(out), url_base=server.url, retries=2, retry_delay=0)
    assert server.seen('WIDER_train.zip') == [None, 'bytes={}-'.format(DROP_AT)]
    assert download.md5_of(str(out / 'WIDER_train.zip')) == _md5(zips['WIDER_train.zip'])
    _assert_dataset(out)


def test_lost_connection_keeps_the_partial_file_and_a_rerun_resumes(server, zips, tmp_path, capsys):
    server.drops['WIDER_train.zip'] = [DROP_AT, DROP_AT]
    out = tmp_path / 'wider_face'
    part = out / 'WIDER_train.zip.part'
    for run in (1, 2):
        code, _, err = _run(['--out', str(out), '--url-base', server.url, '--retries', '0'], capsys)
        assert code == 1
        line = _error_line(err)
        assert str(part) in line and 'kept' in line and 'rerun' in line
        assert part.stat().st_size == run * DROP_AT
        assert not (out / 'WIDER_train').exists()
    code, _, err = _run(['--out', str(out), '--url-base', server.url, '--retries', '0'], capsys)
    assert code == 0, err
    assert server.seen('WIDER_train.zip') == [None, 'bytes={}-'.format(DROP_AT), 'bytes={}-'.format(2 * DROP_AT)]
    assert download.md5_of(str(out / 'WIDER_train.zip')) == _md5(zips['WIDER_train.zip'])
    _assert_dataset(out)


def test_retries_give_up_after_the_last_attempt(server, tmp_path):
    server.drops['WIDER_val.zip'] = [DROP_AT, 1000, 0]
    out = tmp_path / 'wider_face'
    with pytest.raises(download.DownloadError, match=r'after 3 attempts .*\({} bytes\) is kept: rerun'.format(
            DROP_AT + 1000)):
        download.fetch_widerface(str(out), url_base=server.url, retries=2, retry_delay=0)
    assert server.seen('WIDER_val.zip') == [None, 'bytes={}-'.format(DROP_AT), 'bytes={}-'.format(DROP_AT + 1000)]


def test_stalled_connection_times_out_and_resumes(server, zips, tmp_path, monkeypatch):
    monkeypatch.setattr(download, 'TIMEOUT', (5, 0.3))
    server.stalls['WIDER_train.zip'] = DROP_AT
    out = tmp_path / 'wider_face'
    download.fetch_widerface(str(out), url_base=server.url, retries=1, retry_delay=0)
    assert server.seen('WIDER_train.zip') == [None, 'bytes={}-'.format(DROP_AT)]
    _assert_dataset(out)


def test_server_ignoring_range_starts_over(server, zips, tmp_path):
    server.ignore_range = True
    server.drops['WIDER_train.zip'] = [DROP_AT]
    out = tmp_path / 'wider_face'
    download.fetch_widerface(str(out), url_base=server.url, retries=1, retry_delay=0)
    assert server.seen('WIDER_train.zip') == [None, 'bytes={}-'.format(DROP_AT)]  # asked to resume, got it all
    assert (out / 'WIDER_train.zip').read_bytes() == zips['WIDER_train.zip']
    _assert_dataset(out)


def test_complete_partial_file_is_finished_without_a_body(server, zips, tmp_path):
    """A run killed after the last byte but before the md5 check: the server answers 416 to the resume."""
    out = tmp_path / 'wider_face'
    out.mkdir()
    (out / 'WIDER_val.zip.part').write_bytes(zips['WIDER_val.zip'])
    download.fetch_widerface(str(out), url_base=server.url, retries=0)
    assert server.seen('WIDER_val.zip') == ['bytes={}-'.format(len(zips['WIDER_val.zip']))]
    _assert_dataset(out)


def test_wrong_md5_removes_the_download_and_says_what_to_do(server, zips, tmp_path, capsys):
    damaged = bytearray(zips['WIDER_val.zip'])
    damaged[len(damaged) // 2] ^= 0xFF
    server.files['WIDER_val.zip'] = bytes(damaged)
    out = tmp_path / 'wider_face'
    code, _, err = _run(['--out', str(out), '--url-base', server.url], capsys)
    assert code == 1
    line = _error_line(err)
    assert 'WIDER_val.zip' in line and _md5(damaged) in line and _md5(zips['WIDER_val.zip']) in line
    assert 'removed' in line and 'Rerun' in line and '--url-base' in line
    assert not (out / 'WIDER_val.zip').exists() and not (out / 'WIDER_val.zip.part').exists()
    assert not (out / 'WIDER_val').exists()


def test_http_error_and_unreachable_server_are_one_line(server, tmp_path, capsys):
    out = tmp_path / 'wider_face'
    code, _, err = _run(['--out', str(out), '--url-base', server.url.replace('wider_face', 'nothing_here')], capsys)
    assert code == 1
    assert 'HTTP 404' in _error_line(err)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    code, _, err = _run(['--out', str(out), '--url-base', 'http://127.0.0.1:{}/'.format(port), '--retries', '0'],
                        capsys)
    assert code == 1
    line = _error_line(err)
    assert 'WIDER_train.zip' in line and 'check the network' in line
    assert not any(n.endswith('.part') for n in os.listdir(out))


def _write_zips(folder, zips):
    folder.mkdir(exist_ok=True)
    for name, data in zips.items():
        (folder / name).write_bytes(data)


def test_from_dir_uses_hand_downloaded_zips(server, zips, tmp_path, capsys):
    source = tmp_path / 'downloads'
    _write_zips(source, zips)
    # the annotations repackaged (compressed, an extra folder), as another site's copy may be: a warning only
    members = dict(_members()['wider_face_split.zip'], **{'__MACOSX/._readme.txt': 'x'})
    (source / 'wider_face_split.zip').write_bytes(_zip(members, zipfile.ZIP_DEFLATED))
    out = tmp_path / 'wider_face'
    code, stdout, err = _run(['--out', str(out), '--from', str(source), '--url-base', server.url], capsys)
    assert code == 0, err
    assert server.requests == []
    _assert_dataset(out)
    assert not (out / '__MACOSX').exists() and not (out / 'WIDER_train.zip').exists()  # used in place
    warnings = [line for line in err.splitlines() if 'WARNING' in line and 'differs' in line]
    assert len(warnings) == 1 and str(source / 'wider_face_split.zip') in warnings[0]
    assert stdout.splitlines()[-2] == 'dataset_dir: {}'.format(out)


def test_from_dir_problems_name_the_path_and_the_fix(zips, tmp_path, capsys):
    out = str(tmp_path / 'wider_face')
    missing = tmp_path / 'no_such_dir'
    code, _, err = _run(['--out', out, '--from', str(missing)], capsys)
    assert code == 2 and str(missing) in _error_line(err) and 'no such directory' in err

    source = tmp_path / 'downloads'
    _write_zips(source, {n: d for n, d in zips.items() if n != 'WIDER_val.zip'})
    code, _, err = _run(['--out', out, '--from', str(source)], capsys)
    line = _error_line(err)
    assert code == 2 and 'WIDER_val.zip is missing' in line and str(source) in line and 'drop --from' in line

    (source / 'WIDER_val.zip').write_bytes(b'<html>not a zip</html>')
    code, _, err = _run(['--out', out, '--from', str(source)], capsys)
    line = _error_line(err)
    assert code == 2 and str(source / 'WIDER_val.zip') in line and 'not a readable zip' in line

    (source / 'WIDER_val.zip').write_bytes(_zip({'images/0--Parade/0_Parade_c.jpg': _jpg(2)}))
    code, _, err = _run(['--out', out, '--from', str(source)], capsys)
    line = _error_line(err)
    assert code == 2 and 'no WIDER_val/ folder' in line and 'found: images' in line
    assert not os.path.exists(os.path.join(out, 'WIDER_train'))  # zips are checked before anything is extracted

    damaged = bytearray(zips['WIDER_val.zip'])
    damaged[damaged.index(b'\xff\xd8') + 100] ^= 0xFF  # inside the stored jpg: only its CRC can tell
    (source / 'WIDER_val.zip').write_bytes(bytes(damaged))
    code, _, err = _run(['--out', out, '--from', str(source)], capsys)
    line = _error_line(err)
    assert code == 2 and str(source / 'WIDER_val.zip') in line and 'is damaged' in line and 'CRC' in line
    assert not os.path.exists(os.path.join(out, 'WIDER_val'))
    assert [n for n in os.listdir(out) if n.endswith('.extracting')] == []


def test_unsafe_members_reject_the_archive(zips, tmp_path, capsys):
    for bad in ('../escaped.txt', '/tmp/absolute.txt', 'WIDER_val/../../escaped.txt'):
        source = tmp_path / 'downloads'
        _write_zips(source, zips)
        members = dict(_members()['WIDER_val.zip'], **{bad: 'evil'})
        (source / 'WIDER_val.zip').write_bytes(_zip(members))
        out = tmp_path / 'wider_face'
        code, _, err = _run(['--out', str(out), '--from', str(source)], capsys)
        line = _error_line(err)
        assert code == 2 and repr(bad) in line and 'refusing' in line
        assert not (tmp_path / 'escaped.txt').exists() and not os.path.exists('/tmp/absolute.txt')
        assert not (out / 'WIDER_val').exists()


def test_incomplete_layout_names_what_is_missing(zips, tmp_path, capsys):
    source = tmp_path / 'downloads'
    _write_zips(source, zips)
    members = _members()['WIDER_train.zip']
    members.pop('WIDER_train/images/1--Handshaking/1_Handshaking_b.jpg')
    (source / 'WIDER_train.zip').write_bytes(_zip(members))
    out = tmp_path / 'wider_face'
    code, _, err = _run(['--out', str(out), '--from', str(source)], capsys)
    line = _error_line(err)
    assert code == 2 and '1 of the 2 images' in line and '1_Handshaking_b.jpg' in line


def test_bad_out_and_stale_zip_are_config_errors(server, zips, tmp_path, capsys):
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    code, _, err = _run(['--out', str(blocker / 'wider_face'), '--url-base', server.url], capsys)
    line = _error_line(err)
    assert code == 2 and str(blocker / 'wider_face') in line and 'choose a directory you can write to' in line

    out = tmp_path / 'wider_face'
    out.mkdir()
    (out / 'WIDER_val.zip').write_bytes(b'something else')
    code, _, err = _run(['--out', str(out), '--url-base', server.url], capsys)
    line = _error_line(err)
    assert code == 2 and str(out / 'WIDER_val.zip') in line and 'delete it' in line
    assert (out / 'WIDER_val.zip').read_bytes() == b'something else'  # the user's file is never overwritten
    assert server.requests == []  # zips in place are checked before any download

    (out / 'WIDER_val.zip').unlink()
    (out / 'WIDER_val' / 'images').mkdir(parents=True)  # not this tool's: its folders appear complete or not at all
    code, _, err = _run(['--out', str(out), '--url-base', server.url], capsys)
    line = _error_line(err)
    assert code == 2 and 'WIDER_val exists but' in line and 'remove' in line
    assert server.requests == []
