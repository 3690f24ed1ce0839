import yaml

from ppdet.slim.nas.report import pareto_front, plot_pareto, rewarded, write_best_structure
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


def test_the_plotted_candidates_are_the_trained_ones_once_each(tmp_path):
    rows = [{'tokens': '1 {}'.format(i), 'status': 'trained', 'latency_us': str(v), 'ap': str(a)}
            for i, (v, a) in enumerate([(10, 0.1), (12, 0.3), (11, 0.05)])]
    rows += [{'tokens': '1 0', 'status': 'trained', 'latency_us': '10', 'ap': '0.2'},  # trained again: its best AP
             {'tokens': '3 4', 'status': 'skipped', 'latency_us': '99', 'ap': ''}]
    points = rewarded(rows, 'latency_us')
    assert sorted((cost, ap) for cost, ap, _, _ in points) == [(10.0, 0.2), (11.0, 0.05), (12.0, 0.3)]
    path = str(tmp_path / 'p.png')
    plot_pareto(path, points, pareto_front([p[:2] for p in points]), 'latency_us')
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
