"""A surrogate of the proxy task: a candidate's AP (its mean over training seeds, and the seed noise around it)
predicted from its tokens, fitted on the ground truth (bench/ground_truth.py's trainings).

    python bench/surrogate.py [--data bench/ground_truth.jsonl] [--out bench/surrogate.joblib]

refits it, prints how well each model kind ranks held-out candidates against how well one training seed ranks them
for another (the ceiling: a reward is one training), overall and within the band around the demo's latency limit,
and saves the kind that ranks best. The strategy benchmark (bench/strategy_quality.py) loads that file.

Model: one of scikit-learn's Gaussian process (Matern kernel with a white-noise term), random forest or gradient
boosting on the network's widths (log2 of the channels the tokens choose, and the kernel flag), whichever has the
best held-out Spearman against the two seeds' mean over all candidates (5 folds grouped by candidate; the file
records which). Seed noise: one standard deviation
pooled over the candidates trained with both seeds (``sd = sqrt(mean((ap0 - ap1)^2) / 2)``), in the band as
overall unless they differ (both are printed). A draw for (tokens, seed, stream) is the predicted mean plus that
noise times a normal number from a generator seeded by all three: the same candidate, seed and benchmark repeat
always get the same reward, as a retraining with the same seed would.
"""
import argparse
import json
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

DEFAULT_DATA = os.path.join(HERE, 'ground_truth.jsonl')
DEFAULT_MODEL = os.path.join(HERE, 'surrogate.joblib')
FIELDS = {'tokens': list, 'seed': int, 'ap': float, 'flops': (int, float), 'params': (int, float),
          'latency_us': (int, float), 'train_seconds': (int, float), 'band': bool}


class GroundTruthError(ValueError):
    """A data file that is not ground truth: one line naming the file, the line and the key."""


@dataclass(frozen=True)
class Training:
    """One line of the ground truth: one candidate trained with one seed on the proxy task."""
    tokens: Tuple[int, ...]
    seed: int
    ap: float
    flops: float
    params: float
    latency_us: float
    train_seconds: float
    band: bool  # latency within +-5% of the demo's limit


def load_ground_truth(path=DEFAULT_DATA):
    """The trainings of ``path`` (JSON lines). A missing file, a line that is not JSON, a missing key or a value of
    the wrong type is a GroundTruthError naming it; a failed training (status other than trained) is left out."""
    if not os.path.isfile(path):
        raise GroundTruthError('{}: no such file; make it with python bench/ground_truth.py --out {}'.format(
            path, path))
    trainings = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = '{} line {}'.format(path, number)
            try:
                row = json.loads(line)
            except ValueError:
                raise GroundTruthError('{}: not JSON; delete the line (the runner trains it again)'.format(
                    where)) from None
            for key, kind in FIELDS.items():
                if key not in row:
                    raise GroundTruthError('{}: no {!r}; delete the line (the runner trains it again)'.format(
                        where, key))
                if not isinstance(row[key], kind) or (kind is not bool and isinstance(row[key], bool)):
                    raise GroundTruthError('{}: {} is {!r}, not a {}'.format(
                        where, key, row[key], kind.__name__ if isinstance(kind, type) else 'number'))
            if row.get('status', 'trained') != 'trained':
                continue
            trainings.append(Training(tuple(int(t) for t in row['tokens']), row['seed'], row['ap'],
                                      row['flops'], row['params'], row['latency_us'], row['train_seconds'],
                                      row['band']))
    return trainings


def by_candidate(trainings):
    """{tokens: {seed: ap}}."""
    out = {}
    for t in trainings:
        out.setdefault(t.tokens, {})[t.seed] = t.ap
    return out


def seed_pairs(trainings, band_only=False):
    """(tokens, ap of seed 0, ap of seed 1) of every candidate trained with both."""
    band = {t.tokens for t in trainings if t.band}
    return [(tokens, aps[0], aps[1]) for tokens, aps in by_candidate(trainings).items()
            if 0 in aps and 1 in aps and (tokens in band or not band_only)]


def spearman(a, b):
    from scipy.stats import spearmanr
    return float(spearmanr(a, b).statistic) if len(a) > 2 else float('nan')


def seed_noise(pairs):
    """One training's standard deviation around the candidate's mean, pooled over seed pairs."""
    diffs = np.array([a - b for _, a, b in pairs])
    return float(np.sqrt(np.mean(diffs ** 2) / 2)) if len(diffs) else float('nan')


def features(tokens_list, space):
    """The network's widths: log2 of the channels each token chooses; constant columns (a fixed kernel) kept, as a
    Gaussian process ignores them."""
    rows = []
    for tokens in tokens_list:
        args = space.blazenet_args(list(tokens))
        (b1, _), (_, b2, _), _ = args['blaze_filters']
        doubles = args['double_blaze_filters']
        widths = [b1, b2, doubles[0][2], doubles[2][2]] + [d[1] for d in doubles]
        rows.append(np.log2(widths).tolist() + [float(args['use_5x5kernel'])])
    return np.array(rows)


KINDS = ('gp', 'forest', 'boosting')


def make_model(kind, seed=0):
    """The mean model of one kind (see KINDS)."""
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    if kind == 'forest':
        return RandomForestRegressor(n_estimators=300, min_samples_leaf=3, random_state=seed)
    if kind == 'boosting':
        return GradientBoostingRegressor(n_estimators=200, max_depth=2, learning_rate=0.05, subsample=0.8,
                                         random_state=seed)
    kernel = ConstantKernel(0.01) * Matern(length_scale=np.ones(9), nu=2.5) + WhiteKernel(1e-3)
    return make_pipeline(StandardScaler(), GaussianProcessRegressor(kernel, normalize_y=True, random_state=seed,
                                                                    n_restarts_optimizer=2))


def fit_model(kind, x, y, seed=0):
    """The fitted mean model. A length scale that runs to its bound means a width that does not matter: sklearn
    warns of it, and the fit is right."""
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', ConvergenceWarning)
        return make_model(kind, seed).fit(x, y)


class Surrogate:
    """AP of tokens: ``mean`` (the model's), ``draw`` (one simulated training: mean plus seed noise)."""

    def __init__(self, model, noise_sd, space_name, data_rows, kind):
        self.model, self.noise_sd, self.space_name, self.data_rows = model, float(noise_sd), space_name, data_rows
        self.kind = kind

    @classmethod
    def fit(cls, trainings, space, space_name, kind):
        tokens = [t.tokens for t in trainings]
        model = fit_model(kind, features(tokens, space), [t.ap for t in trainings])
        return cls(model, seed_noise(seed_pairs(trainings)), space_name, len(trainings), kind)

    def mean(self, tokens_list, space):
        return self.model.predict(features(tokens_list, space))

    def draw(self, tokens, seed, stream, space):
        """The AP of one training of ``tokens`` with ``seed`` in benchmark repeat ``stream``: always the same for
        the same three."""
        z = np.random.default_rng([int(stream), int(seed)] + [int(t) for t in tokens]).standard_normal()
        return float(self.mean([tokens], space)[0] + self.noise_sd * z)

    def save(self, path):
        import joblib
        joblib.dump({'model': self.model, 'noise_sd': self.noise_sd, 'space_name': self.space_name,
                     'data_rows': self.data_rows, 'kind': self.kind}, path)

    @classmethod
    def load(cls, path=DEFAULT_MODEL):
        import joblib
        if not os.path.isfile(path):
            raise GroundTruthError('{}: no surrogate; fit it with python bench/surrogate.py --out {}'.format(
                path, path))
        state = joblib.load(path)
        return cls(state['model'], state['noise_sd'], state['space_name'], state['data_rows'], state['kind'])


def cross_validated(trainings, space, kind, folds=5, seed=0):
    """Held-out predictions of each candidate's mean AP ({tokens: prediction}), from models fitted without any
    training of that candidate (grouped folds)."""
    from sklearn.model_selection import GroupKFold
    tokens = [t.tokens for t in trainings]
    groups = np.array([hash(t) for t in tokens])
    x, y = features(tokens, space), np.array([t.ap for t in trainings])
    predicted = {}
    for train, test in GroupKFold(folds, shuffle=True, random_state=seed).split(x, y, groups):
        model = fit_model(kind, x[train], y[train], seed)
        for i, p in zip(test, model.predict(x[test])):
            predicted[tokens[i]] = float(p)
    return predicted


def best_kind(report):
    """The kind whose held-out predictions rank the candidates' two-seed means best."""
    return max(KINDS, key=lambda kind: report['all'][kind]['vs_mean'])


def fit_report(trainings, space, kinds=KINDS):
    """The figures bench/SEARCH_QUALITY.md quotes: seed-to-seed Spearman (the ceiling), each model's held-out
    Spearman against one seed's AP (comparable with the ceiling) and against the two seeds' mean, overall and in
    the band; noise and spread."""
    report = {}
    for scope, band_only in (('all', False), ('band', True)):
        pairs = seed_pairs(trainings, band_only)
        means = [(a + b) / 2 for _, a, b in pairs]
        entry = {'candidates': len(pairs), 'seed_spearman': spearman([a for _, a, _ in pairs],
                                                                    [b for _, _, b in pairs]),
                 'noise_sd': seed_noise(pairs), 'best_minus_worst': float(max(means) - min(means)) if means else None}
        report[scope] = entry
    for kind in kinds:
        predicted = cross_validated(trainings, space, kind)
        for scope, band_only in (('all', False), ('band', True)):
            pairs = seed_pairs(trainings, band_only)
            p = [predicted[t] for t, _, _ in pairs]
            report[scope][kind] = {
                'vs_one_seed': (spearman(p, [a for _, a, _ in pairs]) + spearman(p, [b for _, _, b in pairs])) / 2,
                'vs_mean': spearman(p, [(a + b) / 2 for _, a, b in pairs])}
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', default=DEFAULT_DATA)
    parser.add_argument('--out', default=DEFAULT_MODEL)
    parser.add_argument('--kind', choices=KINDS, help='fit this kind (default: the one that ranks held-out '
                        'candidates best), e.g. a second surrogate for bench/strategy_quality.py --surrogate')
    args = parser.parse_args()
    try:
        trainings = load_ground_truth(args.data)
    except GroundTruthError as e:
        sys.exit('error: {}'.format(e))
    from bench.ground_truth import DEFAULT_TABLE, load_setup
    setup = load_setup(os.path.join(REPO, 'demo.yml'), DEFAULT_TABLE)  # the demo's space, priced as the data was
    kind = args.kind
    if kind is None:
        report = fit_report(trainings, setup.space)
        print(json.dumps(report, indent=1))
        kind = best_kind(report)
    Surrogate.fit(trainings, setup.space, setup.space_name, kind).save(args.out)
    print('fitted a {} on {} trainings: {}'.format(kind, len(trainings), args.out))


if __name__ == '__main__':
    main()
