"""The search's vocabulary (ppdet/slim/nas/vocabulary.py): each default lives there once, and is the one the docs
state; each status a search writes is one its readers accept."""
import os
import re

import pytest
import yaml

from ppdet.slim.nas.vocabulary import DEFAULTS, HISTORY_STATUSES, Status, setting

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _documented():
    with open(os.path.join(REPO, 'docs', 'configuration.md')) as f:
        text = f.read()
    return {m.group(1): m.group(2).strip() for m in re.finditer(r'^\| `(\w+)` \| ([^|]*) \|', text, re.M)}


@pytest.mark.parametrize('key', sorted(DEFAULTS))
def test_every_default_is_the_one_docs_configuration_states(key):
    documented = _documented()
    assert key in documented, 'docs/configuration.md has no row for {}'.format(key)
    assert yaml.safe_load(documented[key].replace('`', '')) == DEFAULTS[key]


def test_setting_reads_the_config_first_then_the_default():
    assert setting({'search_steps': 7}, 'search_steps') == 7
    assert setting({}, 'search_steps') == DEFAULTS['search_steps']
    with pytest.raises(KeyError):
        setting({}, 'not_a_key')


def test_every_status_a_history_holds_is_written_as_its_plain_word():
    """A status goes into CSV files, Optuna's JSON attributes and the log as the word itself."""
    import csv
    import io
    import json
    out = io.StringIO()
    csv.writer(out).writerow(HISTORY_STATUSES)
    assert out.getvalue().strip() == 'trained,failed,skipped,unpriced,pruned'
    assert json.dumps(Status.PRUNED) == '"pruned"' and '{}'.format(Status.SKIPPED) == 'skipped'
