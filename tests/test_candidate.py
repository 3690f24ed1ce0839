"""The candidate trainer's device, AMP and failure paths, on real Paddle and the tiny synthetic set."""
import logging
import math

import pytest

from ppdet.slim.nas.candidate import CandidateTrainer, PruningCheck, select_device
from ppdet.slim.nas.config import load_search_config
from search_fixtures import tiny_config, tiny_dataset

PUBLISHED = [2, 1, 3, 8, 2, 1, 2, 1, 1]


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('candidate')
    return load_search_config(tiny_config(tmp, tiny_dataset(tmp)))


def test_gpu_request_falls_back_to_cpu_with_a_warning():
    import paddle
    if paddle.device.is_compiled_with_cuda():
        pytest.skip('this Paddle has CUDA')
    with pytest.warns(UserWarning, match='use_gpu'):
        assert select_device(True) == 'cpu'
    assert select_device(False) == 'cpu'


def test_fp16_is_ignored_on_cpu_and_its_amp_path_trains(setup, caplog):
    with caplog.at_level(logging.WARNING):
        trainer = CandidateTrainer(setup.cfg, fp16=True, loss_scale=128.0)
    assert trainer.fp16 is False and 'fp16 is ignored' in caplog.text
    trainer.fp16 = True  # the GPU path (auto_cast + GradScaler) is plain Paddle API: run it on the CPU too
    model = trainer.build(setup.pricer.blazenet_kwargs(PUBLISHED))
    before = [p.numpy().copy() for p in model.parameters()[:3]]
    assert trainer.train(model) is True
    assert any((p.numpy() != b).any() for p, b in zip(model.parameters()[:3], before))


def test_non_finite_loss_fails_the_candidate(setup):
    cfg = dict(setup.cfg, LearningRate={'base_lr': 1e30, 'schedulers': setup.cfg['LearningRate']['schedulers']})
    trainer = CandidateTrainer(type(setup.cfg)(cfg))
    trainer.max_iters = 6
    model = trainer.build(setup.pricer.blazenet_kwargs(PUBLISHED))
    result = trainer.run(model, '/nonexistent/never/written')
    assert result.status == 'failed' and result.ap == 0.0 and result.weights is None


def test_trained_candidate_is_evaluated(setup, tmp_path):
    trainer = CandidateTrainer(setup.cfg)
    model = trainer.build(setup.pricer.blazenet_kwargs(PUBLISHED))
    result = trainer.run(model, str(tmp_path / 'c'))
    assert result.status == 'trained' and 0.0 <= result.ap <= 1.0 and math.isfinite(result.train_seconds)
    assert (tmp_path / 'c' / 'model_final.pdparams').is_file()


def test_a_pruning_check_looks_at_the_ap_before_the_end_and_can_stop_the_training(setup, tmp_path):
    trainer = CandidateTrainer(setup.cfg)
    trainer.max_iters = 6
    looks = []

    def never(iteration, ap):
        looks.append((iteration, ap))
        return False

    kwargs = setup.pricer.blazenet_kwargs(PUBLISHED)
    result = trainer.candidate(kwargs, str(tmp_path / 'on'), check=PruningCheck(2, never))
    assert result.status == 'trained' and [i for i, _ in looks] == [2, 4]  # not at the end: the final AP is that
    assert all(0.0 <= ap <= 1.0 for _, ap in looks)
    looks.clear()
    stopped = PruningCheck(2, lambda iteration, ap: looks.append(iteration) or True)
    result = trainer.candidate(kwargs, str(tmp_path / 'off'), check=stopped)
    assert result.status == 'pruned' and looks == [2] and stopped.pruned == (2, result.ap)
    assert not (tmp_path / 'off').exists()  # a pruned candidate saves no weights
