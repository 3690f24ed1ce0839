import yaml

from ppdet.slim.nas.report import pareto_front, plot_pareto, write_best_structure
from search_space import BlazeFaceNasSpace


def test_pareto_front_keeps_only_undominated_points():
    points = [(5.0, 0.3), (4.0, 0.1), (6.0, 0.5), (7.0, 0.4), (4.0, 0.2), (5.0, 0.3)]
    assert sorted(pareto_front(points)) == [0, 2, 4]


def test_best_structure_file_is_pasteable_yaml(tmp_path):
    tokens = [2, 1, 3, 8, 2, 1, 2, 1, 1]
    path = str(tmp_path / 'best.yml')
    write_best_structure(path, tokens, BlazeFaceNasSpace().blazenet_args(tokens), 0.5)
    with open(path) as f:
        block = yaml.safe_load(f)['BlazeNet']
    assert block['double_blaze_filters'] == [[12, 16, 24, 2], [24, 12, 24], [24, 16, 72, 2], [72, 12, 72]]
    assert block['use_5x5kernel'] is True and block['lite_edition'] is False


def test_plot_is_a_png(tmp_path):
    rows = [{'tokens': '1 2', 'latency_us': str(v), 'ap': str(a)} for v, a in [(10, 0.1), (12, 0.3), (11, 0.05)]]
    path = str(tmp_path / 'p.png')
    plot_pareto(path, rows + [{'tokens': '3 4', 'latency_us': '', 'ap': ''}], 'latency_us', 'us')
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
