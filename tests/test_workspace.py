import warnings

import pytest

from ppdet.core.cli import ArgsParser, parse_overrides
from ppdet.core.workspace import ConfigError, Tagged, build, create, load_config, merge_config, register
from ppdet.slim.nas.config import load_search_config


@register
class _Toy:
    __shared__ = ['num_classes']

    def __init__(self, size=3, names=['a'], num_classes=2, flag=False):
        self.size, self.names, self.num_classes, self.flag = size, names, num_classes, flag


def _write(tmp_path, text):
    path = tmp_path / 'c.yml'
    path.write_text(text)
    return str(path)


def test_tags_defaults_shared_and_overrides(tmp_path):
    cfg = load_config(_write(tmp_path, 'num_classes: 5\n_Toy: {size: 4}\nthing: !_Toy {names: [x, y]}\n'))
    assert isinstance(cfg['thing'], Tagged)
    toy = create('_Toy', cfg)
    assert (toy.size, toy.names, toy.num_classes, toy.flag) == (4, ['a'], 5, False)
    assert merge_config({'thing.size': 9, '_Toy.flag': True}, cfg) is cfg
    built = build(cfg['thing'])
    assert (built.size, built.names) == (9, ['x', 'y'])
    assert create('_Toy', cfg).flag is True


def test_each_load_is_a_config_of_its_own(tmp_path):
    """No process-wide config: a second load, or overrides merged into one config, leave the other alone."""
    path = _write(tmp_path, '_Toy: {size: 4}\n')
    first = load_config(path)
    second = merge_config({'_Toy.size': 9}, load_config(path))
    assert first is not second
    assert (create('_Toy', first).size, create('_Toy', second).size) == (4, 9)
    assert load_config(path)['_Toy'] == {'size': 4}


@pytest.mark.parametrize('text, words', [
    ('thing: !_Toy {sise: 4}\n', ["'sise'", 'c.yml', 'line 1']),
    ('thing: !NoSuchTag {a: 1}\n', ['!NoSuchTag', 'c.yml', 'known tags']),
    ('thing: !_Toy {size: abc}\n', ['_Toy.size', 'int']),
    ('thing: [1, 2\n', ['not valid YAML']),
])
def test_config_mistakes_name_the_key_and_file(tmp_path, text, words):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text))
    for word in words:
        assert word in str(err.value)


def test_unknown_section_key_is_an_error(tmp_path):
    cfg = load_config(_write(tmp_path, '_Toy: {colour: red}\n'))
    with pytest.raises(ConfigError, match="colour"):
        create('_Toy', cfg)


def test_args_parser_reads_yaml_values():
    args = ArgsParser().parse_args(['-c', 'x.yml', '-o', 'max_iters=10', 'Constraint.ctype=flops', 'a.b=[1, 2]'])
    assert args.opt == {'max_iters': 10, 'Constraint.ctype': 'flops', 'a.b': [1, 2]}
    with pytest.raises(ConfigError, match='key=value'):
        ArgsParser().parse_args(['-c', 'x.yml', '-o', 'max_iters'])


def test_repeated_o_options_accumulate():
    args = ArgsParser().parse_args(['-c', 'x.yml', '-o', 'a=1', '-o', 'b=2', 'c.d=x', '--opt', 'a=3'])
    assert args.opt == {'a': 3, 'b': 2, 'c.d': 'x'}  # every -o counts; a key given twice keeps its last value
    assert ArgsParser().parse_args(['-c', 'x.yml']).opt == {}


def test_unused_top_level_key_warns(tmp_path):
    path = _write(tmp_path, 'max_iter: 10\nConstraint: {ctype: flops}\nTrainReader: {inputs_def: {image_shape: [3, 64, 64]}}\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        load_search_config(path)
    assert any("'max_iter'" in str(w.message) for w in caught)


def test_a_section_nothing_reads_warns_like_a_typo(tmp_path):
    path = _write(tmp_path, 'SSDLoss: {overlap_threshold: 0.5}\nBlazeNet: {use_5x5kernel: false}\n'
                            'Constraint: {ctype: flops}\nTrainReader: {inputs_def: {image_shape: [3, 64, 64]}}\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        load_search_config(path)
    said = [str(w.message) for w in caught if 'not read' in str(w.message) or 'not used' in str(w.message)]
    assert len(said) == 1 and "section 'SSDLoss' is not read" in said[0] and 'BlazeFace' in said[0], said


@pytest.mark.parametrize('constraint, words', [
    ('{ctype: speed}', ['ctype', 'speed']),
    ('{ctype: flops, min_constraint: 10, max_constraint: 5}', ['min_constraint', 'max_constraint']),
    ('{ctype: latency}', ['table_file']),
    ('{ctype: latency, table_file: /nonexistent/t.txt}', ['/nonexistent/t.txt', 'not found']),
])
def test_constraint_mistakes(tmp_path, constraint, words):
    path = _write(tmp_path, 'Constraint: {}\nTrainReader: {{inputs_def: {{image_shape: [3, 64, 64]}}}}\n'.format(
        constraint))
    with pytest.raises(ConfigError) as err:
        load_search_config(path)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize('key, value', [('architecture', 'YOLOv3'), ('metric', 'COCO')])
def test_unsupported_architecture_or_metric(tmp_path, key, value):
    path = _write(tmp_path, '{}: {}\nConstraint: {{ctype: flops}}\nTrainReader: {{inputs_def: {{image_shape: [3, 64, 64]}}}}\n'
                  .format(key, value))
    with pytest.raises(ConfigError, match=key):
        load_search_config(path)


def test_base_config_is_read_first_and_overlaid(tmp_path):
    (tmp_path / 'base.yml').write_text('num_classes: 5\nmax_iters: 10\n_Toy: {size: 4, names: [a, b]}\n'
                                       'thing: !_Toy {size: 1}\n')
    (tmp_path / 'sub').mkdir()
    top = tmp_path / 'sub' / 'top.yml'
    top.write_text('_BASE_: ../base.yml\nmax_iters: 20\n_Toy: {names: [c]}\nthing: !_Toy {flag: true}\n')
    cfg = load_config(str(top))
    assert (cfg['num_classes'], cfg['max_iters']) == (5, 20)
    assert cfg['_Toy'] == {'size': 4, 'names': ['c']}  # sections merge key by key, lists are replaced
    assert dict(cfg['thing']) == {'flag': True}  # a tagged node is replaced whole
    assert '_BASE_' not in cfg and cfg['filename'] == str(top)


def test_base_config_mistakes_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r'c.yml: _BASE_ .*nope.yml not found'):
        load_config(_write(tmp_path, '_BASE_: nope.yml\n'))
    with pytest.raises(ConfigError, match='includes itself'):
        load_config(_write(tmp_path, '_BASE_: c.yml\n'))


def test_the_improved_config_is_the_original_plus_the_improvements():
    original, improved = (load_search_config(name).cfg for name in ('blazeface.yml', 'blazeface_improved.yml'))
    assert improved['rerank_top_k'] == 5 and improved['rerank_seeds'] == 2
    assert [s.cls.__name__ for s in improved['LearningRate']['schedulers']] == ['CosineDecay']
    assert [s.cls.__name__ for s in original['LearningRate']['schedulers']] == ['PiecewiseDecay']
    assert 'rerank_top_k' not in original and original['save_dir'] != improved['save_dir']
    assert improved['strategy'] == 'tpe' and 'strategy' not in original  # the original's annealing, the default
    changed = {'LearningRate', 'rerank_top_k', 'rerank_seeds', 'strategy', 'save_dir', 'filename'}
    for key in set(original) | set(improved):
        if key not in changed:
            assert improved.get(key) == original.get(key), key


def test_overrides_errors_name_the_option_they_came_from():
    assert parse_overrides(['a.b=10', 'c=[1, 2]'], '--set') == {'a.b': 10, 'c': [1, 2]}
    with pytest.raises(ConfigError, match=r"^--set 'nonsense': options are written key=value, e.g. --set max_iters"):
        parse_overrides(['nonsense'], '--set')
    with pytest.raises(ConfigError, match=r"^-o a: '\[1' is not a valid YAML value"):
        parse_overrides(['a=[1'])
