"""``--workers``: the placement plan (a pure function), the mistakes it turns into one-line errors, and the
supervisor on real (tiny) processes."""
import signal
import sys
import time

import pytest

from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.workers import (Child, Supervisor, parse_gpu_ids, parse_worker_count, plan_workers,
                                    reader_overrides, resolve_plan, worker_command)


def test_cpu_plan_divides_the_cores():
    plan = plan_workers(None, use_gpu=False, visible_gpus=0, cores=2)
    assert plan.count == 2, 'auto on the CPU: one worker per core (measured best on 2 cores)'
    assert [s.device for s in plan.slots] == [None, None], 'the CPU: the config decides (select_device)'
    assert all(s.math_threads == 1 and s.data_workers == 1 for s in plan.slots)
    assert plan.slots[1].env() == {'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    wide = plan_workers(2, use_gpu=False, visible_gpus=0, cores=8)
    assert [s.math_threads for s in wide.slots] == [4, 4] and wide.slots[0].data_workers == 4
    crowded = plan_workers(3, use_gpu=False, visible_gpus=0, cores=2)
    assert [s.math_threads for s in crowded.slots] == [1, 1, 1], 'never fewer than one thread'


def test_gpu_plan_is_one_candidate_per_gpu():
    plan = plan_workers(None, use_gpu=True, visible_gpus=4, cores=8)
    assert [s.device for s in plan.slots] == ['gpu:0', 'gpu:1', 'gpu:2', 'gpu:3']
    assert plan.slots[3].env()['CUDA_VISIBLE_DEVICES'] == '3' and plan.slots[0].math_threads == 2
    chosen = plan_workers(None, use_gpu=True, visible_gpus=4, cores=8, chosen_gpus=[0, 2])
    assert [s.gpu for s in chosen.slots] == [0, 2]
    fewer = plan_workers(1, use_gpu=True, visible_gpus=4, cores=8, chosen_gpus=[2, 3])
    assert [s.device for s in fewer.slots] == ['gpu:2']
    single = plan_workers(1, use_gpu=True, visible_gpus=4, cores=8)
    assert single.slots[0].device is None, 'one worker, no --gpus: select_device (and the launcher) decide'
    # the driver already runs under CUDA_VISIBLE_DEVICES=4,6: Paddle's gpu:1 is physical GPU 6
    mapped = plan_workers(2, use_gpu=True, visible_gpus=2, cores=8, cuda_visible='4,6')
    assert [s.env()['CUDA_VISIBLE_DEVICES'] for s in mapped.slots] == ['4', '6']
    on_cpu = plan_workers(None, use_gpu=True, visible_gpus=0, cores=2)
    assert [s.gpu for s in on_cpu.slots] == [None, None], 'use_gpu without a GPU: the CPU, as select_device'
    ignored = plan_workers(None, use_gpu=False, visible_gpus=4, cores=2)
    assert ignored.slots[0].gpu is None, 'GPUs are used only with use_gpu'


@pytest.mark.parametrize('value', ['0', '-1', '2.5', 'two', '', 0, -3, 1.5, True])
def test_bad_worker_counts_are_one_line(value):
    with pytest.raises(ConfigError) as e:
        parse_worker_count(value, '--workers')
    assert '--workers' in str(e.value) and 'auto' in str(e.value) and '\n' not in str(e.value)


def test_worker_counts():
    assert parse_worker_count('3', '--workers') == 3 and parse_worker_count(2, 'workers (config key)') == 2
    assert parse_worker_count('auto', '--workers') is None and parse_worker_count('AUTO', '--workers') is None


@pytest.mark.parametrize('kwargs, expected', [
    (dict(requested=3, use_gpu=True, visible_gpus=2), '--workers 3: one candidate per GPU, and 2 GPU(s)'),
    (dict(requested=None, use_gpu=True, visible_gpus=2, chosen_gpus=[0, 5]), 'GPU 5 does not exist'),
    (dict(requested=None, use_gpu=True, visible_gpus=0, chosen_gpus=[0]), 'Paddle sees 0 GPU(s) here'),
    (dict(requested=None, use_gpu=False, visible_gpus=2, chosen_gpus=[0]), 'use_gpu is false'),
])
def test_gpu_mistakes_are_one_line(kwargs, expected):
    with pytest.raises(ConfigError) as e:
        plan_workers(cores=4, **kwargs)
    assert expected in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize('text', ['', 'a,b', '0,0', '-1'])
def test_bad_gpu_lists(text):
    with pytest.raises(ConfigError, match='--gpus'):
        parse_gpu_ids(text)


def test_workers_with_a_joining_client_or_the_launcher_is_an_error(monkeypatch):
    with pytest.raises(ConfigError, match=r'--workers 2: this config joins another host.s search \(is_server: false'):
        resolve_plan({'is_server': False}, '2', None)
    with pytest.raises(ConfigError, match=r'workers \(config key\) 3: .*is_server: false'):
        resolve_plan({'is_server': False, 'workers': 3}, None, None)
    assert resolve_plan({'is_server': False}, None, None).count == 1, 'a client without --workers is fine'
    monkeypatch.setenv('PADDLE_TRAINERS_NUM', '2')
    with pytest.raises(ConfigError, match='paddle.distributed.launch'):
        resolve_plan({}, '2', None)


def test_readers_are_capped_and_the_child_is_a_resuming_client_on_loopback():
    cfg = {'TrainReader': {'use_process': True, 'worker_num': 2}, 'EvalReader': {'worker_num': 4}}
    assert reader_overrides(cfg, 1) == {'TrainReader.worker_num': 1}, 'in-process readers are left alone'
    assert reader_overrides(cfg, 2) == {}
    slot = plan_workers(2, use_gpu=False, visible_gpus=0, cores=2).slots[1]
    joins = {'is_server': False, 'server_ip': '127.0.0.1', 'server_port': 8123}  # SanasStrategy.worker_overrides
    argv = worker_command('demo.yml', {'max_iters': 10, 'TrainReader.worker_num': 1}, '/tmp/out', joins, 4242,
                          slot, False, 8.0)
    joined = ' '.join(argv)
    assert '-r /tmp/out' in joined and '--worker-of 4242 --worker-id 1' in joined
    for opt in ('is_server=false', 'server_ip="127.0.0.1"', 'server_port=8123', 'save_dir="/tmp/out"',
                'max_iters=10', 'TrainReader.worker_num=1'):
        assert opt in argv


def _child(worker_id, code):
    return Child(worker_id, [sys.executable, '-c', 'import sys; sys.exit({})'.format(code)], {})


def test_supervisor_restarts_a_dying_worker_a_few_times_then_goes_on(caplog):
    deaths = []
    supervisor = Supervisor([_child(1, 5), _child(2, 0)], deaths.append, max_restarts=2, poll=0.05)
    supervisor.start()
    deadline = time.time() + 30
    while not all(c.done for c in supervisor.children) and time.time() < deadline:
        time.sleep(0.05)
    supervisor.stop()
    assert deaths == [1, 1, 1], 'each death is handled (its candidate released), a worker told done is not'
    assert caplog.text.count('worker 1 exited with code 5; restarting it') == 2
    assert 'worker 1 exited with code 5; not restarted (it was 2 times already)' in caplog.text


def test_supervisor_stop_ends_a_worker_that_ignores_sigterm():
    stubborn = Child(1, [sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
                                               'print(1, flush=True); time.sleep(60)'], {})
    supervisor = Supervisor([stubborn], lambda worker_id: None, poll=0.05)
    supervisor.start()
    time.sleep(1.0)
    supervisor.stop(grace=0.5)
    assert stubborn.proc.returncode == -signal.SIGKILL  # killed, not waited for (it sleeps a minute)
