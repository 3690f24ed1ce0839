"""The supernet (one-shot search): its sub-networks are slices of its weights, extraction and recalibration, the
``tools/supernet.py`` commands as the README gives them, a killed training going on, its settings (real Paddle, tiny
data). The searches on its scores: test_supernet_search.py."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from search_fixtures import REPO, supernet_tool as tool, tiny_config, tiny_dataset
from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.candidate import CandidateTrainer
from ppdet.slim.nas.config import load_search_config
from ppdet.slim.nas.inherit import plan_names
from ppdet.slim.nas.supernet import Supernet, SupernetScorer, load_supernet

TOOL = os.path.join(REPO, 'tools', 'supernet.py')
CANDIDATES = ([2, 1, 3, 8, 2, 1, 2, 1, 1], [2, 1, 3, 8, 2, 1, 2, 1, 0], [0] * 9, [6, 8, 11, 11, 5, 5, 5, 5, 0],
              [3, 5, 0, 7, 3, 3, 5, 4, 1])


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp('data'))


@pytest.fixture(scope='module')
def config(tmp_path_factory, dataset):
    """The tiny search config (a FLOPs limit: the kernel token is free, so the supernet holds both paths)."""
    return tiny_config(tmp_path_factory.mktemp('config'), dataset, supernet_iters=6, supernet_snapshot_iters=2,
                       supernet_calib_batches=2)


@pytest.fixture(scope='module')
def setup(config):
    return load_search_config(config)


@pytest.fixture(scope='module')
def trained(tmp_path_factory, config):
    """A supernet trained with the README's command."""
    out = str(tmp_path_factory.mktemp('supernet') / 'weights')
    done = tool('train', '-c', config, '--out', out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _full(supernet):
    return {k: v.numpy() for k, v in supernet.state_dict().items()}


def test_a_sub_network_holds_exactly_the_supernets_leading_slices(setup):
    supernet = Supernet(setup.cfg, setup.pricer, seed=0)
    full = _full(supernet)
    trainer = CandidateTrainer(setup.cfg)
    for tokens in CANDIDATES:
        model = supernet.extract(tokens)
        standalone = trainer.build(setup.pricer.blazenet_kwargs(tokens))
        assert {k: v.shape for k, v in model.state_dict().items()} == \
            {k: v.shape for k, v in standalone.state_dict().items()}  # the candidate's own network
        names = plan_names(model)
        for key, value in model.state_dict().items():
            region = full['layers.' + names[key]][tuple(slice(0, n) for n in value.shape)]
            np.testing.assert_array_equal(value.numpy(), region, err_msg=key)
    # the kernel token picks a path: one 5x5 conv or two 3x3 ones, both in the supernet
    five, three = (set(plan_names(supernet.extract(t)).values()) for t in CANDIDATES[:2])
    assert any(n.startswith('double_blaze_01_dw.') for n in five) and not any('_dw_1' in n for n in five)
    assert any(n.startswith('double_blaze_01_dw_1.') for n in three)


def _batches(setup, count=2):
    scorer = SupernetScorer(CandidateTrainer(setup.cfg), [], count)
    return scorer.batches


def test_the_extracted_network_computes_what_the_supernet_computes_with_it_active(setup):
    supernet = Supernet(setup.cfg, setup.pricer, seed=3)
    batches = _batches(setup)
    image = paddle.to_tensor(batches[0]['image'])
    for tokens in CANDIDATES:
        model = supernet.recalibrate(tokens, batches)
        subnet = supernet.subnet(tokens)
        subnet.eval()
        with paddle.no_grad():
            for ours, theirs in zip(model(image)[:2], subnet(image)[:2]):
                np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)


def test_recalibration_sets_each_batch_norm_to_the_mean_of_the_batches_statistics(setup):
    supernet = Supernet(setup.cfg, setup.pricer, seed=0)
    batches = _batches(setup, 3)
    tokens = CANDIDATES[0]
    before = supernet.extract(tokens).backbone.stem[1]._mean.numpy()
    model = supernet.recalibrate(tokens, batches)
    conv, norm = model.backbone.stem[0], model.backbone.stem[1]
    with paddle.no_grad():
        outputs = [conv(paddle.to_tensor(b['image'])).numpy() for b in batches]
    expected = np.mean([o.mean(axis=(0, 2, 3)) for o in outputs], axis=0)
    np.testing.assert_allclose(norm._mean.numpy(), expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(before, expected)
    # the supernet's slice took the same statistics
    stem = supernet.state_dict()['layers.conv1.1._mean'].numpy()
    np.testing.assert_allclose(stem[:len(expected)], norm._mean.numpy())


@pytest.fixture(scope='module')
def trained_again(tmp_path_factory, config):
    """A second supernet (seed 1), for averaging."""
    out = str(tmp_path_factory.mktemp('supernet') / 'seed1')
    done = tool('train', '-c', config, '--out', out, '-o', 'seed=1')
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_score_prints_one_json_line_per_candidate_and_the_same_ap_twice(trained, trained_again, config, setup):
    tokens = '2,1,3,8,2,1,2,1,1'
    run = tool('score', '-c', config, '--weights', trained, '--weights', trained_again, '--tokens', tokens,
               '--tokens', '0,0,0,0,0,0,0,0,0', '--tokens', tokens)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(rows) == 3 and set(rows[0]) == {'tokens', 'ap', 'aps', 'flops', 'params', 'latency_us', 'seconds'}
    assert rows[0]['tokens'] == rows[2]['tokens'] == [2, 1, 3, 8, 2, 1, 2, 1, 1]
    assert rows[0]['ap'] == rows[2]['ap']  # after another candidate's recalibration in between
    price = setup.pricer.price([2, 1, 3, 8, 2, 1, 2, 1, 1])
    assert (rows[0]['flops'], rows[0]['params']) == (price.flops, price.params)
    # two --weights: the mean of each supernet's own score
    trainer = CandidateTrainer(setup.cfg)
    alone = [SupernetScorer(trainer, [load_supernet(setup.cfg, setup.pricer, d)], 2).score(rows[0]['tokens']).ap
             for d in (trained, trained_again)]
    assert rows[0]['aps'] == pytest.approx(alone) and rows[0]['ap'] == pytest.approx(np.mean(alone))
    assert alone[0] != alone[1]


def _weights(folder):
    return paddle.load(os.path.join(folder, 'supernet.pdparams'))


def test_a_training_killed_with_kill_9_goes_on_from_its_checkpoint_to_the_same_weights(tmp_path, config):
    opts = ['-o', 'supernet_iters=16', 'supernet_snapshot_iters=2']
    whole = str(tmp_path / 'whole')
    done = tool('train', '-c', config, '--out', whole, *opts)
    assert done.returncode == 0, done.stderr[-3000:]
    broken = str(tmp_path / 'broken')
    proc = subprocess.Popen([sys.executable, TOOL, 'train', '-c', config, '--out', broken, *opts], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = os.path.join(broken, 'checkpoint.json')
    deadline = time.time() + 120
    while not os.path.isfile(checkpoint) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(checkpoint) as f:
        killed_at = json.load(f)['iteration']
    assert 2 <= killed_at < 16 and not os.path.isfile(os.path.join(broken, 'supernet.pdparams'))
    again = tool('train', '-c', config, '--out', broken, *opts)
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'going on from the checkpoint of iteration' in again.stderr
    ours, theirs = _weights(broken), _weights(whole)
    assert set(ours) == set(theirs)
    for key in ours:
        np.testing.assert_allclose(ours[key].numpy(), theirs[key].numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
    assert not [n for n in os.listdir(broken) if n.startswith('checkpoint')]  # the finished weights supersede it
    # a finished supernet is loaded, not trained again
    third = tool('train', '-c', config, '--out', broken, *opts)
    assert third.returncode == 0 and 'iter:' not in third.stderr


@pytest.mark.parametrize('values, says', [
    ({'evaluator': 'oneshot'}, 'evaluator is'),
    ({'supernet_weights': '/nowhere'}, 'supernet_weights is set but evaluator is train'),
    ({'evaluator': 'supernet', 'pruner': 'median', 'strategy': 'tpe'}, 'pruner trains candidates'),
    ({'evaluator': 'supernet', 'supernet_iters': 0}, 'supernet_iters is 0'),
    ({'evaluator': 'supernet', 'supernet_distill': -1}, 'supernet_distill is -1'),
    ({'evaluator': 'supernet', 'supernet_weights': '/nowhere'}, 'supernet_weights /nowhere: no trained supernet'),
    ({'evaluator': 'supernet', 'supernet_weights': '[]'}, 'supernet_weights is []'),
    ({'evaluator': 'supernet', 'supernet_sample': 'near'}, 'supernet_sample is'),
])
def test_a_supernet_setting_that_cannot_work_is_one_line(tmp_path, dataset, values, says):
    """Checked with the config, before a controller, a study or a network exists."""
    config = tiny_config(tmp_path, dataset, **values)
    with pytest.raises(ConfigError) as error:
        load_search_config(config)
    assert says in str(error.value) and '\n' not in str(error.value)


def test_weights_of_another_space_are_refused_before_the_search_starts(tmp_path, dataset, trained):
    """The trained supernet has both kernel paths; a latency search's 3x3-only space has other layers: one line,
    raised while the search is set up, before its strategy (a controller, a study) exists."""
    from ppdet.slim.nas.search import build_search
    config = tiny_config(tmp_path, dataset, evaluator='supernet', supernet_weights=trained,
                         search_space='BlazeFaceNasSpace3x3')
    with pytest.raises(ConfigError) as error:
        build_search(load_search_config(config))
    assert 'it was trained for BlazeFaceNasSpace, this config searches BlazeFaceNasSpace3x3' in str(error.value)
    assert not [n for n in os.listdir(str(tmp_path / 'out')) if n.startswith(('sanas', 'study'))]


def test_in_place_distillation_is_an_option_that_changes_the_training(tmp_path, setup):
    """supernet_distill > 0 adds the largest's outputs as targets of the others; 0 (the default) trains without."""
    from ppdet.slim.nas.supernet import SupernetSettings, _distillation, train_supernet
    locs, confs = paddle.rand([2, 5, 4]), paddle.rand([2, 5, 2])
    assert float(_distillation(locs, confs, locs, confs)) == pytest.approx(0.0, abs=1e-6)
    assert float(_distillation(locs, confs, locs + 1, confs * 3)) > 0
    trainer = CandidateTrainer(setup.cfg)
    weights = {}
    for distill in (0.0, 1.0):
        settings = SupernetSettings(iters=2, random_subnets=1, distill=distill, calib_batches=1, snapshot_iters=100)
        supernet = train_supernet(trainer, setup.pricer, str(tmp_path / str(distill)), settings)
        weights[distill] = _full(supernet)
        assert all(np.isfinite(v).all() for v in weights[distill].values())
    assert any(not np.array_equal(weights[0.0][k], weights[1.0][k]) for k in weights[0.0])


def test_admitted_sampling_trains_only_sub_networks_the_limit_admits_besides_the_sandwichs_ends(config):
    from ppdet.slim.nas.supernet import SupernetSettings, _admits
    setup = load_search_config(config, {'Constraint.max_constraint': 3000000})  # about half the space at 64 px
    supernet = Supernet(setup.cfg, setup.pricer, seed=0)
    admits = _admits(setup.pricer, setup.constraint, SupernetSettings(1, 3, 0.0, 1, 1, 'admitted'))
    assert _admits(setup.pricer, setup.constraint, SupernetSettings(1, 3, 0.0, 1, 1)) is None
    ranges = setup.space.range_table()
    for sample, rng in (('admitted', np.random.default_rng(0)), ('uniform', np.random.default_rng(0))):
        steps = [supernet.sandwich(rng, 3, admits if sample == 'admitted' else None) for _ in range(30)]
        assert all(s[0] == [r - 1 for r in ranges] and s[1] == [0] * len(ranges) for s in steps)
        drawn = [t for s in steps for t in s[2:]]
        assert all(admits(t) for t in drawn) == (sample == 'admitted'), sample
