"""The six benchmarks. Each runs in its own process (bench/run.py starts them) and returns one result dict:
``name``, ``value``, ``baseline``, ``ratio``, ``unit``, ``target``, ``met`` and ``detail``. Value and baseline are
measured in the same process, interleaved where they are timed, so load from other jobs hits both alike.
"""
import csv
import glob
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import (ANCHOR_IMAGES_PER_S, BATCH, PUBLISHED_TOKENS, REPO, SIZE, WORK, BareLoop, blazeface_cfg,
                    build_model, dataset, load_batches, loadavg, op_profile, published_kwargs, random_batches, rate,
                    timed_trainer_run, vm_hwm_mb, wider640)

SHARED_TABLE = os.path.join(REPO, 'latency_855.txt')  # the original's table, shipped at the top level


def _result(name, value, baseline, unit, target, met, **detail):
    ratio = value / baseline if baseline else float('nan')
    return {'name': name, 'value': value, 'baseline': baseline, 'ratio': ratio, 'unit': unit, 'target': target,
            'met': bool(met), 'detail': detail}


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------- 1. pricing
def pricing(quick):
    """Candidates/s of CandidatePricer.price (what tools/price_arch.py and the search call) vs a static Program
    build + paddleslim.analysis.flops per candidate (the original's way), on the same tokens at 640x640."""
    from ppdet.slim.nas.constraint import CandidatePricer, LatencyTable
    from search_space import BlazeFaceNasSpace, BlazeFaceNasSpace3x3
    cfg = blazeface_cfg(os.path.join(WORK, 'unused'))
    space = BlazeFaceNasSpace()
    rng = np.random.default_rng(0)
    count = 500 if quick else 3000
    tokens = [PUBLISHED_TOKENS] + [[int(rng.integers(0, r)) for r in space.range_table()] for _ in range(count - 1)]
    pricer = CandidatePricer(cfg, space)
    pricer.price(tokens[0])
    start = time.perf_counter()
    prices = [pricer.price(t) for t in tokens]
    fast = count / (time.perf_counter() - start)

    static_count = 6 if quick else 40
    env = dict(os.environ, FLAGS_enable_pir_api='0')
    out = subprocess.run([sys.executable, os.path.join(REPO, 'bench', 'static_flops_timer.py'), str(SIZE), str(SIZE),
                          json.dumps(tokens[:static_count])], env=env, capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise RuntimeError('static flops baseline failed: ' + out.stderr[-2000:])
    static = json.loads(out.stdout.strip().splitlines()[-1])
    slow = static_count / static['seconds']
    mismatches = [t for t, p, f in zip(tokens, prices, static['flops']) if p.flops != f]

    detail = {'candidates_priced': count, 'static_candidates': static_count,
              'flops_equal': not mismatches, 'flops_compared': static_count,
              'published_flops': prices[0].flops, 'published_params': prices[0].params,
              'ms_per_candidate': 1000.0 / fast, 'static_ms_per_candidate': 1000.0 / slow}
    if mismatches:
        detail['mismatched_tokens'] = mismatches[:3]
    if os.path.isfile(SHARED_TABLE):  # latency pricing (3x3 space) with the original table
        space3 = BlazeFaceNasSpace3x3()
        priced3 = CandidatePricer(cfg, space3, table=LatencyTable.load(SHARED_TABLE))
        tokens3 = [[int(rng.integers(0, r)) for r in space3.range_table()] for _ in range(count)]
        start = time.perf_counter()
        for t in tokens3:
            priced3.price(t)
        detail['with_latency_table_per_s'] = count / (time.perf_counter() - start)
    return _result('pricing', fast, slow, 'candidates/s', '>= 100x baseline, same FLOPs',
                   fast / slow >= 100 and not mismatches, **detail)


# ------------------------------------------------------------------------------------------------------ 2. data
def _reader_rate(cfg, workers, batches):
    from ppdet.data.reader import create_reader
    reader = create_reader(cfg['TrainReader'], 'train', max_iters=batches, seed=0, worker_num=workers)
    start = time.perf_counter()
    stamps = []
    for _ in reader:
        stamps.append(time.perf_counter())
    images = (len(stamps) - 1) * BATCH
    return images / (stamps[-1] - stamps[0]), stamps[0] - start


def data(quick):
    """Decode+augment images/s of blazeface.yml's TrainReader at 640 (1 and 2 workers) vs the images/s a training
    of the published structure (depthwise 5x5, 640, batch 8, bare loop) consumes, in the same process."""
    cfg = blazeface_cfg(wider640())
    batches = 10 if quick else 25                       # 25 batches = one epoch of the 200-image set
    detail = {'load_before': loadavg()}
    rates = {}
    for workers in ((1, 2) if quick else (0, 1, 2)):
        rates[workers], startup = _reader_rate(cfg, workers, batches)
        detail['reader_{}_workers_images_per_s'.format(workers)] = rates[workers]
        detail['reader_{}_workers_startup_s'.format(workers)] = startup
    loop = BareLoop(cfg, build_model(cfg, depthwise=True))
    samples = load_batches(cfg, 3)
    times, _ = loop.run(samples, 3 if quick else 5)
    consumption = rate(times)
    detail.update(consumption_iters=len(times) - 1, reader_batches=batches, load_after=loadavg())
    ratio = rates[2] / consumption
    return _result('data', rates[2], consumption, 'images/s', 'reader (2 workers) >= 2x training consumption',
                   ratio >= 2, **detail)


# ------------------------------------------------------------------------------------------------ 3. train_step
def train_step(quick):
    """Steady-state images/s of CandidateTrainer.train (its reader, LR, stats, logging) vs a bare loop on the
    same model object, loss and optimizer; the published structure with depthwise 5x5, 640, batch 8. Variants run
    interleaved in rounds (ABBA order) so a load change from other jobs hits all of them."""
    import paddle
    from paddle.base import core
    from ppdet.slim.nas.candidate import CandidateTrainer
    iters = 4 if quick else 5
    rounds = 1 if quick else 3
    cfg = blazeface_cfg(wider640(), max_iters=iters + 1)  # +1: the trainer's intervals are between step starts
    samples = load_batches(cfg, 4)
    trainer = CandidateTrainer(cfg, seed=0)
    trainer_model = trainer.build(published_kwargs(depthwise=True))
    # the bare loop trains the very same model object: two instances of one structure can differ by 10% or more in
    # speed on a shared VM (memory placement), which would show up as a trainer-vs-bare difference that isn't one
    bare = BareLoop(cfg, trainer_model)
    variants = {'trainer': lambda: timed_trainer_run(trainer, trainer_model), 'bare': lambda: bare.run(samples, iters)}
    detail = {'load_before': loadavg()}
    if not quick:
        dense = BareLoop(cfg, build_model(cfg, depthwise=False))
        variants['bare_dense_double_5x5'] = lambda: dense.run(samples, iters)

        def two_threads():
            core.set_num_threads(2)
            try:
                return bare.run(samples, iters)
            finally:
                core.set_num_threads(1)   # Paddle's default (FLAGS_paddle_num_threads=1)
        variants['bare_2_threads'] = two_threads
        try:
            static_model = paddle.jit.to_static(build_model(cfg, depthwise=True), full_graph=True)
            check = build_model(cfg, depthwise=True)
            static = BareLoop(cfg, static_model)
            first = {k: paddle.to_tensor(samples[0][k]) for k in ('image', 'gt_bbox', 'gt_class', 'gt_num')}
            detail['to_static_loss_diff'] = abs(float(static_model.loss(**first)) - float(check.loss(**first)))
            static.step(samples[0])   # compile outside the timing
            variants['bare_to_static'] = lambda: static.run(samples, iters)
        except Exception as e:  # noqa: BLE001 - reported, not fatal: to_static is an alternative, not the product
            detail['to_static_error'] = '{}: {}'.format(type(e).__name__, str(e).splitlines()[0][:300])
    bare.run(samples, 2)   # warm the process (allocator, page faults of the activations) for whichever runs first
    names = list(variants)
    intervals = {n: [] for n in names}
    parts = {}
    per_round = []
    for r in range(rounds):
        this_round = {}
        for name in (names if r % 2 == 0 else names[::-1]):
            times, step_parts = variants[name]()
            intervals[name].extend(times[1:])   # the first iteration of each run is warm-up
            parts.setdefault(name, []).extend(step_parts[1:])
            this_round[name] = rate(times)
        per_round.append(this_round['trainer'] / this_round['bare'])
    rates = {n: rate(v, skip=0) for n, v in intervals.items()}
    detail.update({'{}_images_per_s'.format(n): v for n, v in rates.items()})
    # process CPU seconds per step: hardly moved by other jobs' load (unlike wall time), so it tells whether a
    # variant does less work; the trainer's excludes its reader workers (other processes)
    cpu = {n: float(np.mean([p['cpu'] for p in v])) for n, v in parts.items()}
    detail['cpu_s_per_step'] = cpu
    detail['steady_iterations_per_variant'] = {n: len(v) for n, v in intervals.items()}
    detail['trainer_vs_bare_per_round'] = per_round
    if parts.get('bare'):
        keys = [k for k in parts['bare'][0] if k != 'cpu']
        detail['bare_step_ms'] = {k: 1000 * float(np.mean([p[k] for p in parts['bare']])) for k in keys}
    if 'bare_to_static' in rates:
        detail['to_static_vs_dygraph'] = rates['bare_to_static'] / rates['bare']
        detail['to_static_vs_dygraph_cpu'] = cpu['bare'] / cpu['bare_to_static']
    if 'bare_2_threads' in rates:
        detail['2_threads_vs_1'] = rates['bare_2_threads'] / rates['bare']
    if 'bare_dense_double_5x5' in rates:
        detail['dense_quirk_vs_depthwise'] = rates['bare_dense_double_5x5'] / rates['bare']
    if not quick:
        detail['op_time_share_percent'] = op_profile(bare, samples)
    value, baseline = rates['trainer'], rates['bare']
    detail.update(anchor_images_per_s=ANCHOR_IMAGES_PER_S, anchor_goal_images_per_s=2 * ANCHOR_IMAGES_PER_S,
                  vs_anchor=value / ANCHOR_IMAGES_PER_S, anchor_goal_met=value >= 2 * ANCHOR_IMAGES_PER_S,
                  load_after=loadavg())
    return _result('train_step', value, baseline, 'images/s',
                   '>= 0.95x bare loop (goal: >= 2x PaddleDetection anchor {} images/s)'.format(ANCHOR_IMAGES_PER_S),
                   value / baseline >= 0.95, **detail)


# ------------------------------------------------------------------------------------------- 4. search_overhead
def _wrap(obj, name, record):
    inner = getattr(obj, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            record.append(time.perf_counter() - start)
    setattr(obj, name, timed)


def _pieces(setup, trainer, work, count):
    """Each piece of a search step outside training and evaluation, called directly (mean seconds)."""
    import paddle
    from ppdet.slim.nas.controller import SearchController
    from ppdet.slim.nas.files import History
    controller = SearchController(setup.space_name, setup.space, '', _free_port(), True, 10.24, 0.85, 10 ** 6,
                                  os.path.join(work, 'pieces'), None)
    times = {k: [] for k in ('controller_round_trip', 'pricing', 'model_build', 'weights_save',
                             'history_append_at_300_rows')}
    history = History(os.path.join(work, 'pieces', 'search_history.csv'))
    history.rows = [{'step': str(i), 'tokens': '2 1 3 8 2 1 2 1 1', 'status': 'trained', 'flops': '1', 'params': '1',
                     'latency_us': '', 'ap': '0.5', 'train_seconds': '1', 'client': ''} for i in range(300)]
    try:
        for i in range(count):
            t0 = time.perf_counter()
            tokens = controller.next_tokens()
            controller.reward(tokens, 0.1 * (i % 7), i + 1)   # the server checkpoints on every reward
            t1 = time.perf_counter()
            setup.pricer.price(tokens)
            t2 = time.perf_counter()
            model = trainer.build(setup.pricer.blazenet_kwargs(tokens))
            t3 = time.perf_counter()
            paddle.save(model.state_dict(), os.path.join(work, 'pieces', 'model_final.pdparams'))
            t4 = time.perf_counter()
            history.append({'step': 301 + i, 'tokens': tokens, 'status': 'trained', 'flops': 1, 'params': 1, 'ap': 0.5})
            t5 = time.perf_counter()
            for key, a, b in zip(times, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
                times[key].append(b - a)
    finally:
        controller.close()
    return {k: float(np.mean(v[1:] or v)) for k, v in times.items()}


def search_overhead(quick):
    """Wall time per search step outside training and evaluation, from a real search on the demo config
    (demo.yml: 128x128, batch 16, 120 iterations per candidate, FLOPs constraint), vs a demo step's duration."""
    from ppdet.slim.nas.config import load_search_config
    from ppdet.slim.nas.search import build_search
    data_dir = dataset('demo', 400, 60, 160)
    work = tempfile.mkdtemp(prefix='overhead_', dir=WORK)
    steps, iters, demo_iters = (2, 20, 120) if quick else (3, 120, 120)
    overrides = {'save_dir': os.path.join(work, 'out'), 'server_port': _free_port(), 'search_steps': steps,
                 'max_iters': iters, 'log_iter': 10 ** 9, 'TrainReader.dataset.dataset_dir': data_dir,
                 'EvalReader.dataset.dataset_dir': data_dir}
    setup = load_search_config(os.path.join(REPO, 'demo.yml'), overrides)
    search = build_search(setup)
    train_s, eval_s, finish_s, stamps, starts = [], [], [], [], []
    train = search.trainer.train

    def marked(*args, **kwargs):
        starts.append(len(stamps))   # where this candidate's iteration stamps begin
        return train(*args, **kwargs)
    search.trainer.train = marked
    _wrap(search.trainer, 'train', train_s)
    _wrap(search.trainer, 'evaluate', eval_s)
    _wrap(search, 'write_report', finish_s)
    step = search.trainer._step

    def stamped(*args, **kwargs):
        stamps.append(time.perf_counter())
        return step(*args, **kwargs)
    search.trainer._step = stamped
    start = time.perf_counter()
    search.run()
    total = time.perf_counter() - start
    del search.trainer._step
    loop = total - sum(finish_s)
    overhead = (loop - sum(train_s) - sum(eval_s)) / steps
    # steady iteration time: within each candidate, after its first 3 iterations (reader start, warm-up)
    bounds = starts + [len(stamps)]
    steady = [b - a for lo, hi in zip(bounds, bounds[1:]) for a, b in zip(stamps[lo + 3:hi], stamps[lo + 4:hi])]
    per_iter = float(np.median(steady)) if steady else float('nan')
    demo_step = (loop + steps * (demo_iters - iters) * per_iter) / steps
    rows = search.strategy.rows()
    detail = {'search_steps': steps, 'max_iters': iters, 'demo_max_iters': demo_iters,
              'demo_step_estimated': iters != demo_iters, 'train_s_per_step': sum(train_s) / steps,
              'eval_s_per_step': sum(eval_s) / steps, 'finish_s_once': sum(finish_s),
              'candidates_sampled': len(rows), 'candidates_skipped': sum(r['status'] == 'skipped' for r in rows),
              'train_iter_s': per_iter,
              'pieces_s': _pieces(setup, search.trainer, work, 5 if quick else 15)}
    return _result('search_overhead', overhead, demo_step, 's/step', '< 1 s and < 2% of a demo step',
                   overhead < 1 and overhead / demo_step < 0.02, **detail)


# ------------------------------------------------------------------------------------------------------ 5. memory
def memory_child(kind, quick):
    """Runs inside the measured process: a 640 batch-8 CPU candidate training (the trainer with its reader), or
    the bare loop on in-memory batches; returns this process's peak RSS."""
    iters = 2 if quick else 8
    cfg = blazeface_cfg(wider640(), max_iters=iters)
    if kind == 'trainer':
        from ppdet.slim.nas.candidate import CandidateTrainer
        trainer = CandidateTrainer(cfg, seed=0)
        # the structure a search with blazeface.yml trains first: published tokens, BlazeNet defaults
        from search_space import BlazeFaceNasSpace
        model = trainer.build(BlazeFaceNasSpace().blazenet_args(PUBLISHED_TOKENS))
        if not trainer.train(model):
            raise RuntimeError('training diverged')
    else:
        loop = BareLoop(cfg, build_model(cfg, depthwise=False))
        loop.run(random_batches(2), iters)
    return {'vm_hwm_mb': vm_hwm_mb(), 'iters': iters}


def _tree_rss_mb(root):
    """Summed RSS of ``root`` and its descendants (shared pages count once per process: an upper bound)."""
    parents = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/{}/stat'.format(entry)) as f:
                    parents[int(entry)] = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0
    for pid in tree:
        try:
            with open('/proc/{}/statm'.format(pid)) as f:
                total += int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
        except (OSError, IndexError, ValueError):
            pass
    return total / 2 ** 20


def memory(quick, runner):
    """Peak RSS of a candidate training at 640 batch 8 (trainer + reader) vs the bare loop, each in a fresh
    child process; the process-tree sum (reader workers included) is sampled alongside."""
    procs = {kind: runner(kind) for kind in ('trainer', 'bare')}
    peaks = {kind: 0.0 for kind in procs}
    while any(p.poll() is None for p in procs.values()):
        for kind, p in procs.items():
            if p.poll() is None:
                peaks[kind] = max(peaks[kind], _tree_rss_mb(p.pid))
        time.sleep(0.1)
    results = {}
    for kind, p in procs.items():
        out, err = p.communicate()
        if p.returncode:
            raise RuntimeError('memory child {} failed: {}'.format(kind, err[-2000:]))
        results[kind] = json.loads(out.strip().splitlines()[-1])
    value, baseline = results['trainer']['vm_hwm_mb'], results['bare']['vm_hwm_mb']
    return _result('memory', value, baseline, 'MB', '<= 4096 MB (4 GB)', value <= 4096,
                   trainer_tree_peak_mb_sampled=peaks['trainer'], bare_tree_peak_mb_sampled=peaks['bare'],
                   iters=results['trainer']['iters'], structure='published tokens, BlazeNet defaults (the search)')


# ----------------------------------------------------------------------------------------------------- 6. workers
WORKERS_CONSTRAINT = 'Constraint:\n  ctype: flops\n  min_constraint: 1000000\n  max_constraint: 30000000\n'


def _workers_config(work, data_dir):
    """demo.yml on the bench's demo set, with a FLOPs limit (the demo's latency table is built by make demo)."""
    with open(os.path.join(REPO, 'demo.yml')) as f:
        text = re.sub(r'dataset_dir: \S+', 'dataset_dir: ' + data_dir, f.read())
    start, end = text.index('Constraint:'), text.index('\nBlazeFace:')
    path = os.path.join(work, 'demo_flops.yml')
    with open(path, 'w') as f:
        f.write(text[:start] + WORKERS_CONSTRAINT + text[end:])
    return path


def _timed_search(config, work, workers, steps, iters):
    """Wall seconds of a whole ``train_nas.py --workers N`` run (start-up and report included) and its history."""
    save_dir = os.path.join(work, 'workers_{}'.format(workers))
    cmd = [sys.executable, '-u', os.path.join(REPO, 'train_nas.py'), '-c', config, '--workers', str(workers), '-o',
           'save_dir=' + save_dir, 'server_port={}'.format(_free_port()), 'search_steps={}'.format(steps),
           'max_iters={}'.format(iters), 'log_iter=1000000', 'seed=0']
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError('--workers {} search failed: {}'.format(workers, out.stderr[-2000:]))
    rows = []
    for path in glob.glob(os.path.join(save_dir, 'search_history*.csv')):
        with open(path, newline='') as f:
            rows += [r for r in csv.DictReader(f) if r['status'] in ('trained', 'failed')]
    return seconds, rows


def workers(quick):
    """Search throughput (rewarded candidates per hour) of ``train_nas.py --workers 2`` vs ``--workers 1``: the
    same demo config (96 px, FLOPs limit), seed and budget, whole runs timed end to end, one after the other."""
    data_dir = dataset('demo', 400, 60, 160)
    work = tempfile.mkdtemp(prefix='workers_', dir=WORK)
    config = _workers_config(work, data_dir)
    steps, iters = (4, 100) if quick else (6, 300)
    load_before = loadavg()
    runs = {n: _timed_search(config, work, n, steps, iters) for n in (1, 2)}
    per_hour = {n: 3600.0 * len(rows) / seconds for n, (seconds, rows) in runs.items()}
    ratio = per_hour[2] / per_hour[1]
    detail = {'load_before': load_before, 'load_after': loadavg(), 'search_steps': steps, 'max_iters': iters,
              'workers_1_seconds': runs[1][0], 'workers_2_seconds': runs[2][0],
              'rewarded': {n: len(rows) for n, (_, rows) in runs.items()},
              'train_s_per_candidate_1': float(np.mean([float(r['train_seconds']) for r in runs[1][1]])),
              'train_s_per_candidate_2': float(np.mean([float(r['train_seconds']) for r in runs[2][1]]))}
    return _result('workers', per_hour[2], per_hour[1], 'candidates/h', '>= 1.7x on 2 cores', ratio >= 1.7, **detail)


BENCHMARKS = ('pricing', 'data', 'train_step', 'search_overhead', 'memory', 'workers')
