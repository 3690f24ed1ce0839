"""One candidate trained by two CPU processes through paddle.distributed.launch (the PADDLE_TRAINER_ID path)."""
import glob
import os
import subprocess
import sys
import time

from search_fixtures import REPO, processes_with, tiny_config, tiny_dataset, wait_until_gone


def _launch_two_ranks(tmp_path, config):
    """The search run by paddle.distributed.launch on 2 CPU processes; each rank's log, after a successful exit."""
    logs = tmp_path / 'log'
    out = subprocess.run([sys.executable, '-m', 'paddle.distributed.launch', '--nproc_per_node', '2', '--log_dir',
                          str(logs), os.path.join(REPO, 'train_nas.py'), '-c', config],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    rank0, rank1 = [(logs / 'workerlog.{}'.format(i)).read_text() for i in range(2)]
    assert out.returncode == 0, rank0[-2000:] + rank1[-2000:]
    return rank0, rank1


def test_launch_two_ranks_only_rank0_talks_and_writes(tmp_path):
    """Two candidates, then the best re-trained with one more seed (rank 1 trains that too)."""
    config = tiny_config(tmp_path, tiny_dataset(tmp_path), search_steps=2, max_iters=3, rerank_top_k=1,
                         rerank_seeds=1)
    rank0, rank1 = _launch_two_ranks(tmp_path, config)
    assert rank1.count('TrainReader epoch') >= 3, 'rank 1 trains every candidate and the re-training too'
    assert 'iter: 0, lr:' in rank0 and 'iter: 0, lr:' not in rank1, 'only rank 0 logs the training'
    assert 'structure start' in rank0 and 'structure start' not in rank1
    histories = glob.glob(str(tmp_path / 'out' / 'search_history*.csv'))
    assert [os.path.basename(h) for h in histories] == ['search_history.csv']
    with open(histories[0]) as f:
        assert sum(1 for line in f if ',trained,' in line) == 2
    with open(tmp_path / 'out' / 'rerank.csv') as f:
        assert len(f.read().splitlines()) == 2  # header and the one re-training, written by rank 0 alone


def test_two_ranks_train_the_supernet_together_and_rank0_alone_scores(tmp_path):
    """evaluator: supernet: the supernet trains on both ranks (gradients all-reduced), a step's scoring is rank 0's,
    the re-ranking's training both ranks'."""
    config = tiny_config(tmp_path, tiny_dataset(tmp_path), search_steps=2, max_iters=2, rerank_top_k=1,
                         rerank_seeds=1, evaluator='supernet', supernet_iters=4, supernet_calib_batches=1)
    rank0, rank1 = _launch_two_ranks(tmp_path, config)
    assert '(scored)' in rank0 and 'EvalReader epoch' not in rank1, 'rank 1 evaluates nothing'
    assert rank1.count('TrainReader epoch') >= 2, 'rank 1 trains the supernet and the re-training'
    assert os.path.isfile(tmp_path / 'out' / 'supernet' / 'supernet.pdparams')
    with open(tmp_path / 'out' / 'rerank.csv') as f:
        assert len(f.read().splitlines()) == 2


def test_ranks_and_their_workers_end_with_a_killed_launcher(tmp_path):
    config = tiny_config(tmp_path, tiny_dataset(tmp_path), search_steps=2, max_iters=100000)
    logs = tmp_path / 'log'
    launcher = subprocess.Popen([sys.executable, '-m', 'paddle.distributed.launch', '--nproc_per_node', '2',
                                 '--log_dir', str(logs), os.path.join(REPO, 'train_nas.py'), '-c', config],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.time() + 300
    while time.time() < deadline and 'iter: 1,' not in _read(logs / 'workerlog.0'):
        time.sleep(0.5)
    assert len(processes_with(config)) >= 4, 'two ranks, each with its data worker, are training'
    launcher.kill()
    launcher.wait()
    assert wait_until_gone(config, timeout=5) == [], 'a rank or a data worker outlived the launcher'


def _read(path):
    return path.read_text(errors='replace') if path.exists() else ''
