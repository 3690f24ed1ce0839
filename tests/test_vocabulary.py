"""The search's vocabulary (ppdet/slim/nas/vocabulary.py): each default lives there once, and is the one the docs
state; each status a search writes is one its readers accept."""
import dataclasses
import os
import re

import pytest
import yaml

from ppdet.slim.nas.vocabulary import HISTORY_STATUSES, Settings, Status

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings)}  # None: the default depends on another key


def _documented():
    with open(os.path.join(REPO, 'docs', 'configuration.md')) as f:
        text = f.read()
    return {m.group(1): m.group(2).strip() for m in re.finditer(r'^\| `(\w+)` \| ([^|]*) \|', text, re.M)}


@pytest.mark.parametrize('key', sorted(DEFAULTS))
def test_every_default_is_the_one_docs_configuration_states(key):
    """A default that depends on another key (None in Settings) is stated in words; the others as values."""
    documented = _documented()
    assert key in documented, 'docs/configuration.md has no row for {}'.format(key)
    if DEFAULTS[key] is not None:
        assert yaml.safe_load(documented[key].replace('`', '')) == DEFAULTS[key]


def test_settings_read_the_config_first_then_the_default():
    assert Settings.from_config({'search_steps': 7}).search_steps == 7
    assert Settings.from_config({}).search_steps == DEFAULTS['search_steps']
    assert Settings.from_config({'not_a_key': 1}) == Settings()  # (config.py refuses keys nothing reads)
    assert Settings(max_iters=30).pruning_interval == 10 and Settings(prune_interval=4).pruning_interval == 4


def test_every_status_a_history_holds_is_written_as_its_plain_word():
    """A status goes into CSV files, Optuna's JSON attributes and the log as the word itself."""
    import csv
    import io
    import json
    out = io.StringIO()
    csv.writer(out).writerow(HISTORY_STATUSES)
    assert out.getvalue().strip() == 'trained,failed,skipped,unpriced,pruned'
    assert json.dumps(Status.PRUNED) == '"pruned"' and '{}'.format(Status.SKIPPED) == 'skipped'


@pytest.mark.parametrize('key, value, says', [
    ('max_iters', 'many', "max_iters is 'many'; it must be a whole number"),
    ('max_iters', 2.5, 'max_iters is 2.5; it must be a whole number'),
    ('use_gpu', 'maybe', "use_gpu is 'maybe'; write true or false"),
    ('reduce_rate', True, 'reduce_rate is True; it must be a number'),
    ('save_dir', 3, 'save_dir is 3; it must be a string'),
    ('init_temperature', 'hot', "init_temperature is 'hot'; it must be a number"),
])
def test_a_setting_of_the_wrong_type_is_one_line_naming_the_file_and_key(tmp_path, key, value, says):
    """Every key of Settings is type-checked once, when the config is loaded, before anything runs."""
    from search_fixtures import tiny_config
    from ppdet.core.workspace import ConfigError
    from ppdet.slim.nas.config import load_search_config
    config = tiny_config(tmp_path, str(tmp_path / 'wider'), **{key: value})
    with pytest.raises(ConfigError) as e:
        load_search_config(config)
    assert str(e.value) == '{}: {}'.format(config, says)


def test_a_loaded_config_carries_its_typed_settings(tmp_path):
    from search_fixtures import tiny_config
    from ppdet.slim.nas.config import load_search_config
    setup = load_search_config(tiny_config(tmp_path, str(tmp_path / 'wider'), search_steps=4, init_temperature='null'),
                               {'reduce_rate': 1})
    assert setup.settings.search_steps == 4 and setup.settings.init_temperature is None
    assert setup.settings.reduce_rate == 1 and setup.settings.max_iters == setup.cfg['max_iters']
