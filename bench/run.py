"""What a BlazeFace-NAS search costs on this machine, each figure against a baseline measured in the same process.

    python bench/run.py [--quick] [--only pricing,data,...] [--results FILE]

Prints one JSON object per line (name, value, baseline, ratio, unit, target, met, detail) for pricing, data,
train_step, search_overhead, memory and workers; a full run (all benchmarks, not --quick) also writes
bench/RESULTS.md (table, command, machine), the recorded results. A --quick or --only run only prints, unless
--results names a file, so it never overwrites them. Each benchmark runs in a fresh child process. ``--quick``
(fewer iterations; no to_static / thread / op-profile variants) takes under 3 minutes on 2 cores; the full run
about 15. Synthetic data is made under $BENCH_WORK (default /tmp/blazeface_bench).
Nothing here runs in ``make test``.
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import REPO, WORK, dataset, loadavg, wider640  # noqa: E402

BENCHMARKS = ('pricing', 'data', 'train_step', 'search_overhead', 'memory', 'workers')


def _child_cmd(name, quick):
    return [sys.executable, os.path.join(HERE, 'run.py'), '--child', name] + (['--quick'] if quick else [])


def _popen(name, quick):
    return subprocess.Popen(_child_cmd(name, quick), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)


def run_child(name, quick):
    """Run one benchmark in a fresh process; its last stdout line is the result."""
    if name == 'memory':
        import benchmarks
        return benchmarks.memory(quick, lambda kind: _popen('memory_' + kind, quick))
    out = subprocess.run(_child_cmd(name, quick), capture_output=True, text=True, cwd=REPO)
    log = os.path.join(WORK, 'logs', name + '.log')
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, 'w') as f:
        f.write(out.stderr)
    if out.returncode:
        raise RuntimeError('{} failed (log: {}): {}'.format(name, log, out.stderr.strip().splitlines()[-1:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_main(name, quick):
    import logging
    import warnings
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings('ignore')
    import benchmarks
    if name.startswith('memory_'):
        result = benchmarks.memory_child(name[len('memory_'):], quick)
    else:
        result = getattr(benchmarks, name)(quick)
    print(json.dumps(result, default=_plain), flush=True)


def _plain(value):
    """numpy scalars and arrays as plain JSON values."""
    if hasattr(value, 'tolist'):
        return value.tolist()
    raise TypeError('{!r} is not JSON serializable'.format(value))


def machine_facts():
    facts = {'nproc': os.cpu_count(), 'python': platform.python_version(), 'platform': platform.platform()}
    try:
        lscpu = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(':')
            if key.strip() in ('Model name', 'CPU(s)', 'Thread(s) per core', 'Hypervisor vendor', 'L3 cache'):
                facts[key.strip()] = value.strip()
    except OSError:
        pass
    with open('/proc/meminfo') as f:
        facts['MemTotal'] = f.readline().split(':')[1].strip()
    from importlib.metadata import version
    for package in ('paddlepaddle', 'paddleslim', 'numpy', 'opencv-python'):
        try:
            facts[package] = version(package)
        except Exception:  # noqa: BLE001
            facts[package] = 'not installed'
    return facts


def _fmt(v):
    if isinstance(v, float):
        return '{:.4g}'.format(v)
    if isinstance(v, dict):
        return ', '.join('{} {}'.format(k, _fmt(x)) for k, x in v.items())
    return str(v)


def write_results(path, results, args, started, seconds, facts, loads):
    import report
    with open(path, 'w') as f:
        f.write(report.render(results, args, started, seconds, facts, loads, _fmt))


def results_path(given, quick, names):
    """Where the report goes: ``given`` if any, else bench/RESULTS.md for a full run only, so that a quick or
    partial run never replaces the recorded results with rougher or fewer figures."""
    if given is not None:
        return given
    return None if quick or set(names) != set(BENCHMARKS) else os.path.join(HERE, 'RESULTS.md')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='fewer iterations and no extra variants (< 3 min)')
    parser.add_argument('--only', default=','.join(BENCHMARKS), help='comma-separated subset of benchmarks')
    parser.add_argument('--results', default=None, help='where to write the report (default: bench/RESULTS.md for '
                        'a full run; a --quick or --only run only prints; "" to skip)')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, args.quick)
    names = [n.strip() for n in args.only.split(',') if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error('unknown benchmark(s) {}; known: {}'.format(', '.join(unknown), ', '.join(BENCHMARKS)))
    started = datetime.datetime.now().astimezone()
    start = time.time()
    wider640()                       # data sets are made before any timing
    dataset('demo', 400, 60, 160)
    loads = {'start': loadavg()}
    results = []
    for name in names:
        t0 = time.time()
        try:
            result = run_child(name, args.quick)
        except Exception as e:  # noqa: BLE001 - one failing benchmark must not hide the others
            result = {'name': name, 'value': None, 'baseline': None, 'ratio': None, 'unit': None, 'target': None,
                      'met': False, 'error': str(e)}
        result.setdefault('detail', {})['seconds'] = round(time.time() - t0, 1)
        results.append(result)
        print(json.dumps(result, default=_plain), flush=True)
    loads['end'] = loadavg()
    seconds = time.time() - start
    print(json.dumps({'total_seconds': round(seconds, 1), 'quick': args.quick, 'load': loads}), file=sys.stderr)
    path = results_path(args.results, args.quick, names)
    if path:
        write_results(path, results, ' '.join(['python', 'bench/run.py'] + [shlex.quote(a) for a in
                                                                                     (argv or sys.argv[1:])]),
                      started, seconds, machine_facts(), loads)
    return 0 if all('error' not in r for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())
