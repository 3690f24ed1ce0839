"""The constraint's bounds: inclusive at both ends, and plain numbers or a one-line error at config load."""
import os

import pytest

import train_nas
from conftest import run_tool_main
from ppdet.core.workspace import ConfigError
from ppdet.slim.nas.config import load_search_config
from ppdet.slim.nas.constraint import Constraint, Price

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flops(value):
    return Price(flops=value, params=0)


def test_both_bounds_are_inclusive():
    """A candidate exactly at a bound is admitted (the original's ``>``/``<``): the published limits are reachable."""
    constraint = Constraint('flops', max_constraint=200, min_constraint=100)
    assert [constraint.admits(_flops(v)) for v in (99, 100, 150, 200, 201)] == [False, True, True, True, False]


def test_one_bound_alone():
    assert Constraint('flops', max_constraint=200).admits(_flops(0)) is True
    assert Constraint('flops', min_constraint=100).admits(_flops(10 ** 12)) is True
    assert Constraint('flops', min_constraint=100).admits(_flops(99)) is False


def test_near_limit_admits_only_the_fraction_below_the_limit_and_keeps_a_higher_min():
    constraint = Constraint('flops', max_constraint=200, near_limit=0.1)
    assert [constraint.admits(_flops(v)) for v in (179, 180, 200, 201)] == [False, True, True, False]
    assert Constraint('flops', max_constraint=200, min_constraint=190, near_limit=0.1).lower_bound == 190


def test_near_limit_follows_a_quantile_limit():
    setup = load_search_config(os.path.join(REPO, 'blazeface.yml'), {
        'Constraint.ctype': 'flops', 'Constraint.max_constraint': None, 'Constraint.max_quantile': 0.45,
        'Constraint.near_limit': 0.05})
    limit = setup.constraint.max_constraint
    assert setup.constraint.lower_bound == pytest.approx(0.95 * limit)
    assert setup.constraint.admits_value(0.96 * limit) and not setup.constraint.admits_value(0.94 * limit)


@pytest.mark.parametrize('values', [{'Constraint.near_limit': 1.5}, {'Constraint.near_limit': 'near'},
                                    {'Constraint.near_limit': 0.05, 'Constraint.max_constraint': None}])
def test_a_near_limit_that_cannot_work_is_one_line(values):
    with pytest.raises(ConfigError) as err:
        load_search_config(os.path.join(REPO, 'blazeface.yml'), values)
    assert 'Constraint.near_limit is' in str(err.value) and '\n' not in str(err.value)


@pytest.mark.parametrize('value', ['20ms', '20000', True, [1, 2]])  # as -o or YAML would give them
@pytest.mark.parametrize('key', ['max_constraint', 'min_constraint'])
def test_a_bound_that_is_not_a_number_fails_at_load(key, value):
    with pytest.raises(ConfigError) as err:
        load_search_config(os.path.join(REPO, 'blazeface.yml'), {'Constraint.' + key: value})
    message = str(err.value)
    assert 'Constraint.{}'.format(key) in message and 'plain number' in message and '\n' not in message


def test_a_string_bound_stops_the_search_with_one_line_before_it_starts(tmp_path, capsys):
    """The reported case: ``-o Constraint.max_constraint=20ms`` was a TypeError traceback after the controller
    started; now exit code 2 and one line, with nothing written to save_dir."""
    out = tmp_path / 'out'
    code, _, err = run_tool_main(train_nas.main, ['-c', os.path.join(REPO, 'blazeface.yml'), '-o',
                                                  'Constraint.max_constraint=20ms', '-o', 'save_dir={}'.format(out)],
                                 capsys)
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and "Constraint.max_constraint is '20ms'" in errors[0], err
    assert 'Traceback' not in err and not out.exists()
