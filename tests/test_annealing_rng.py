"""The annealing draws from a generator of its own (issue 19, item 1): its proposals depend on the config's seed and
the rewards, never on data loading, training or anything else that uses numpy's or Python's global generators."""
import csv
import json
import logging
import os
import random
import shutil

import numpy as np
import pytest
from paddleslim.common import SAController
from scipy.stats import chisquare

from ppdet.slim.nas.config import load_search_config
from ppdet.slim.nas.candidate import CandidateTrainer
from ppdet.slim.nas.controller import AnnealingController, SearchController
from ppdet.slim.nas.search import build_search
from ppdet.slim.nas.vocabulary import CHECKPOINT_NAME
from search_fixtures import free_port, tiny_config, tiny_dataset
from search_space import BlazeFaceNasSpace

SPACE = BlazeFaceNasSpace()
RANGES = SPACE.range_table()
BASE = SPACE.init_tokens()


@pytest.fixture
def global_generators():
    """Tests here set numpy's global generator to show the controller ignores it; put it back afterwards."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    yield
    np.random.set_state(numpy_state)
    random.setstate(python_state)


def at_base(rng_state=None, seed=0):
    """A controller whose current tokens are BASE, already rewarded (so never proposed again), with its
    generator in ``rng_state`` (None: a new stream of ``seed``)."""
    return AnnealingController(([0] * len(RANGES), RANGES), 0.85, 10.24, init_tokens=list(BASE), reward=0.5,
                               max_reward=0.5, iters=1, searched={str(BASE): 0.5}, seed=seed, rng_state=rng_state)


def edited_position(tokens):
    changed = [i for i, (a, b) in enumerate(zip(tokens, BASE)) if a != b]
    assert len(changed) == 1, (tokens, BASE)
    return changed[0]


def test_acceptance_is_paddleslims_arithmetic_with_the_controllers_own_draw(global_generators):
    """PaddleSlim 2.6's own ``SAController.update``, drawing from numpy's global generator, and ours, drawing from
    the controller's generator, put in the same state (MT19937 here, whose doubles the two APIs draw alike): over
    60 rewards they accept and reject the same ones, worse rewards accepted and rejected both."""
    theirs = SAController(([0] * 4, [4] * 4), 0.85, 0.5, init_tokens=[0] * 4)
    ours = AnnealingController(([0] * 4, [4] * 4), 0.85, 0.5, init_tokens=[0] * 4)
    ours._rng = np.random.Generator(np.random.MT19937(5))
    np.random.set_state(np.random.RandomState(np.random.MT19937(5)).get_state())
    rewards = np.random.default_rng(1).uniform(0, 1, 60)
    outcomes = []
    for step, reward in enumerate(rewards):
        tokens = [int(d) for d in np.base_repr(step, 4).zfill(4)]
        current = ours._reward
        ours.update(tokens, float(reward), step + 1)
        theirs.update(tokens, float(reward), step + 1)
        assert (ours._tokens, ours._reward, ours._best_tokens) == (theirs._tokens, theirs._reward, theirs._best_tokens)
        if reward <= current:
            outcomes.append(ours._tokens == tokens)
    assert True in outcomes and False in outcomes, 'the draw decided both ways'


def test_every_position_is_edited_at_the_frequency_sanas_mutation_gives():
    """2000 proposals from one annealing state. The controller is rebuilt for every proposal from the same scene
    (current tokens BASE, already rewarded) with the generator state the previous one left: the same state each
    time, one stream going on, which is what "from one state" means once the data pipeline no longer puts numpy's
    global generator back into one state (then all 2000 were one proposal).

    SANAS's mutation draws the position uniformly (1/9) and a value in its range; a value equal to the current one
    gives BASE back, already sampled, and is drawn again. So position i is edited with probability proportional to
    1 - 1/range_i: 1/9 each for ranges alike, and the kernel token (range 2) half as often as a wide one. The
    chi-square test is against those frequencies; the values drawn at the widest position are checked the same way."""
    counts, values, state = np.zeros(len(RANGES)), {}, None
    for _ in range(2000):
        controller = at_base(state)
        tokens = controller.next_tokens()
        state = controller.rng_state
        position = edited_position(tokens)
        counts[position] += 1
        if position == 2:
            values[tokens[2]] = values.get(tokens[2], 0) + 1
    weights = np.array([1 - 1 / r for r in RANGES])
    assert chisquare(counts, 2000 * weights / weights.sum()).pvalue > 0.001, counts
    assert sorted(values) == sorted(set(range(RANGES[2])) - {BASE[2]})
    assert chisquare(list(values.values())).pvalue > 0.001, values


def replayed_edit(global_seed):
    """What the controller proposed from BASE before it had a generator of its own, with numpy's global generator
    left in ``global_seed``'s state: a position, then a value, drawn again while they give sampled tokens."""
    np.random.seed(global_seed)
    while True:
        tokens = list(BASE)
        index = int(np.random.randint(len(RANGES)))
        tokens[index] = int(np.random.randint(0, RANGES[index]))
        if tokens != BASE:
            return tokens


def test_the_replay_is_gone(global_generators):
    """The defect: every evaluation left numpy's global generator in one state (its last sample reseeded it; for the
    demo's 300 images SeedSequence([0, 0, 299])) and the controller drew from it, so one annealing state proposed
    one edit at every step. Here each proposal is made from the same annealing state after putting numpy's global
    generator back into that state, as identical evaluations did: consecutive proposals differ, they are not the
    replayed edit, and they are the same whatever state the global generator is in."""
    replay_seed = int(np.random.SeedSequence([0, 0, 299]).generate_state(2)[0])

    def proposals(global_seed):
        state, out = None, []
        for _ in range(6):
            controller = at_base(state, seed=0)
            np.random.seed(global_seed)
            out.append(controller.next_tokens())
            state = controller.rng_state
        return out

    ours = proposals(replay_seed)
    assert all(a != b for a, b in zip(ours, ours[1:])), ours
    assert sum(t == replayed_edit(replay_seed) for t in ours) <= 1  # not the one edit again and again
    assert proposals(12345) == ours


def _controller_in(save_dir, load=None, seed=0):
    return SearchController('BlazeFaceNasSpace', SPACE, '', free_port(), True, None, 0.85, 20, str(save_dir), load,
                            client_name='host', seed=seed)


def _steps(ask, reward, rewards):
    """Ask for tokens and reward them, for each reward; the tokens asked for. Rewards below the current one make
    the acceptance draw part of the stream."""
    out = []
    for value in rewards:
        tokens = ask()
        reward(tokens, value)
        out.append(tokens)
    return out


def test_resuming_continues_the_generator_stream(tmp_path):
    """A controller restored with -r from a checkpoint proposes what the uninterrupted one proposes next; the
    seed of the resumed run does not matter (the saved state wins)."""
    first = _controller_in(tmp_path / 'a', seed=7)
    rewards = [0.3, 0.2, 0.25, 0.1, 0.28, 0.05]
    _steps(first.next_tokens, lambda t, r: first.reward(t, r, 1), rewards[:3])
    first.close()
    shutil.copytree(str(tmp_path / 'a'), str(tmp_path / 'b'))
    second = _controller_in(tmp_path / 'b', load=str(tmp_path / 'b'), seed=99)
    try:
        resumed = _steps(second.next_tokens, lambda t, r: second.reward(t, r, 1), rewards[3:])
    finally:
        second.close()
    uninterrupted = _steps(lambda: first.controller.hand_out('host'), first.controller.record, rewards[3:])
    assert resumed == uninterrupted
    with open(str(tmp_path / 'b' / CHECKPOINT_NAME)) as f:
        assert json.load(f)['_rng'] == first.controller.rng_state


def test_a_checkpoint_without_generator_state_still_loads(tmp_path, caplog):
    """A checkpoint written before the controller had a generator of its own: the search resumes, its proposals
    going on with a new stream of the seed (said in the log)."""
    caplog.set_level(logging.INFO)
    first = _controller_in(tmp_path)
    tokens = first.next_tokens()
    first.reward(tokens, 0.4, 1)
    first.close()
    path = tmp_path / CHECKPOINT_NAME
    scene = json.loads(path.read_text())
    del scene['_rng'], scene['_longest_training']
    path.write_text(json.dumps(scene, indent=1))
    second = _controller_in(tmp_path, load=str(tmp_path), seed=3)
    try:
        assert second.rewarded_so_far() == 1
        assert 'has no _rng (written before the controller had a generator of its own): its proposals go on with ' \
               'a new stream of seed 3' in caplog.text
        following = second.next_tokens()
        assert len(following) == len(RANGES) and str(following) not in scene['_searched']
    finally:
        second.close()


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp('data'))


def test_data_loading_model_initialisation_and_training_leave_the_global_generators_alone(dataset, tmp_path):
    """A whole candidate (build, train, save, evaluate) in this process, data decoded here too: numpy's and
    Python's global generators are neither read nor reseeded."""
    setup = load_search_config(tiny_config(tmp_path, dataset), {'TrainReader.use_process': False})
    trainer = CandidateTrainer(setup.cfg)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    result = trainer.candidate(setup.pricer.blazenet_kwargs(list(BASE)), str(tmp_path / 'candidate'))
    assert result.status == 'trained'
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    assert random.getstate() == python_state


def faceless_annotation(dataset, count):
    """The first ``count`` validation images annotated without faces: every candidate's AP is 0, so the rewards
    (and the annealing's acceptances) cannot differ between the runs compared."""
    split = os.path.join(dataset, 'wider_face_split')
    with open(os.path.join(split, 'wider_face_val_bbx_gt.txt')) as f:
        images = [line.strip() for line in f if line.strip().endswith('.jpg')][:count]
    name = 'faceless_val_{}.txt'.format(count)
    with open(os.path.join(split, name), 'w') as f:
        f.write(''.join('{}\n0\n0 0 0 0 0 0 0 0 0 0\n'.format(image) for image in images))
    return 'wider_face_split/' + name


def proposed(dataset, tmp_path, eval_images, seed=0, **readers):
    """The tokens a 3-step search proposed (skips included), in order, from its search_history.csv."""
    config = tiny_config(tmp_path, dataset, search_steps=3, max_iters=1, seed=seed)
    overrides = dict({'EvalReader.dataset.anno_path': faceless_annotation(dataset, eval_images)}, **readers)
    build_search(load_search_config(config, overrides)).run()  # in-process: real readers, trainings, controller
    with open(str(tmp_path / 'out' / 'search_history.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    trained = [r for r in rows if r['status'] == 'trained']
    assert len(trained) == 3 and all(float(r['ap']) == 0 for r in trained), rows
    return [r['tokens'] for r in rows]


def test_the_proposals_do_not_depend_on_the_eval_set_size_or_the_workers(dataset, tmp_path_factory):
    """Real searches, rewards equal by construction: the eval set's size (4 or 2 images) and where the data is
    decoded (the train reader in its worker process or in the search's, the eval reader in the search's or in 2
    workers) change nothing in what is proposed; the seed does. Before, the eval set reseeded numpy's global
    generator, from which the controller drew."""
    def run(eval_images, seed=0, **readers):
        return proposed(dataset, tmp_path_factory.mktemp('search'), eval_images, seed, **readers)

    reference = run(4)
    assert len(set(reference)) == len(reference) >= 3
    # both changed in one search (one search fewer): either one drawing from a shared generator would show here
    assert run(2, **{'TrainReader.use_process': False, 'EvalReader.use_process': True,
                     'EvalReader.worker_num': 2}) == reference
    assert run(4, seed=1) != reference
