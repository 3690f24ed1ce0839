"""What a search leaves for people: the best structure as pasteable YAML, the accuracy-cost front to choose
from, and a plot of both.

Two structure files: ``best_structure.yml``, the original's ``BlazeNet:`` block (for PaddleDetection 0.x and for
this tool), and ``best_paddledet.yml``, an override of today's PaddleDetection (2.x / develop) BlazeFace config.
Both describe what the search built: the config's ``BlazeNet`` section (``topology``, ``dense_double_5x5``) overlaid
by the tokens. With ``BlazeNet: {topology: paddledet}`` the searched network is the one ``best_paddledet.yml`` trains.
The front (``pareto.csv``) lists the trained candidates no other beats on both AP and the constraint's metric,
each with both files under ``pareto/<tokens>/``.
"""
import logging
import os

from ppdet.core.workspace import config_kwargs
from ppdet.modeling.architectures.blazeface import DEFAULT_MIN_SIZES
from ppdet.modeling.backbones.blazenet import blazenet_plan
from ppdet.slim.nas.constraint import train_input_size
from ppdet.slim.nas.files import atomic_write, write_csv
from ppdet.slim.nas.tokens import Tokens
from ppdet.slim.nas.vocabulary import BEST_PADDLEDET_NAME, BEST_STRUCTURE_NAME, PARETO_NAME, REWARDED
from search_space.blazefacespace_nas import structure_block

__all__ = ['write_best_structure', 'paddledet_override', 'write_paddledet_override', 'pareto_front',
           'plot_pareto', 'write_front', 'write_report', 'PADDLEDET_BASE', 'PARETO_FIELDS']

logger = logging.getLogger(__name__)
PARETO_FIELDS = ['tokens', 'ap', 'latency_us', 'flops', 'params', 'folder']

# The PaddleDetection 2.x / develop config the override extends (configs/face_detection/).
PADDLEDET_BASE = 'blazeface_1000e.yml'
# What that base trains at (_base_/face_reader.yml's sizes, _base_/blazeface.yml's AnchorGeneratorSSD.min_sizes),
# and the name the override is saved under (its checkpoint folder follows it).
PADDLEDET_INPUT = 640
PADDLEDET_MIN_SIZES = [[16., 24.], [32., 48., 64., 80., 96., 128.]]
PADDLEDET_NAME = 'blazeface_nas_best'


def write_best_structure(path, tokens, blazenet_args, ap, ranked=None):
    """``best_structure.yml``: the ``BlazeNet:`` block users paste into a training config. ``ranked`` (a
    ``rerank.Ranked``): the winner was re-ranked, and ``ap`` is its mean; the file records mean and spread."""
    lines = structure_block(blazenet_args).splitlines()[1:-1]
    header = '# best tokens {} (AP {:.4f}); paste the BlazeNet block into a training config\n'.format(tokens, ap)
    if blazenet_args.get('topology', 'original') == 'paddledet':
        header += ('# topology: paddledet (this tool\'s key): the network PaddleDetection 2.x builds; to train it\n'
                   '# there use best_paddledet.yml (PaddleDetection 0.x cannot build it)\n')
    if ranked is not None:
        header += '# re-ranked: {}\n'.format(ranked.describe())
    atomic_write(path, header + '\n'.join(lines) + '\n')


def paddledet_feature_channels(plan):
    """The channels PaddleDetection 2.x's BlazeNet hands its neck: it returns ``[outs[-4], outs[-1]]``."""
    return [plan.blocks[-4].out_channels, plan.blocks[-1].out_channels]


def _block_label(blazenet_args, index):
    """``double_blaze_filters[k]`` (or ``blaze_filters[k]``) of the plan's block ``index``."""
    singles = len(blazenet_args['blaze_filters'])
    return 'double_blaze_filters[{}]'.format(index - singles) if index >= singles else 'blaze_filters[{}]'.format(index)


def _paddledet_readers(input_size):
    """Reader lines that make PaddleDetection train, evaluate and infer at ``input_size`` (H, W).

    PaddleDetection's merge replaces a list whole, so the train list is face_reader.yml's (the same in 2.6 and
    develop) with its two sizes changed; eval and test resize to the same size (the stock ones run at each image's
    own size, i.e. about 640 on WIDER FACE), and BBoxPostProcess maps the boxes back to the original image.
    """
    height, width = input_size
    resize = '  - Resize: {{target_size: [{}, {}], keep_ratio: false, interp: 1}}'.format(height, width)
    normalize = ('  - NormalizeImage: {mean: [123, 117, 104], std: [127.502231, 127.502231, 127.502231], '
                 'is_scale: false}')
    sampler = '[1, 50, {}, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]'
    lines = ['TrainReader:', '  sample_transforms:', '  - Decode: {}',
             '  - RandomDistort: {brightness: [0.5, 1.125, 0.875], random_apply: false}',
             '  - RandomExpand: {fill_value: [123.675, 116.28, 103.53]}', '  - RandomFlip: {}',
             '  - CropWithDataAchorSampling:',
             '      anchor_sampler: [[1, 10, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.2, 0.0]]',
             '      batch_sampler: [{}]'.format(', '.join([sampler.format('1.0')] + [sampler.format('0.3')] * 4)),
             '      target_size: {}'.format(max(height, width)),
             resize, '  - NormalizeBox: {}', '  - PadBox: {num_max_boxes: 90}']
    for reader in ('EvalReader', 'TestReader'):
        lines += [reader + ':', '  sample_transforms:', '  - Decode: {}', resize, normalize, '  - Permute: {}']
    return lines


def paddledet_override(tokens, blazenet_args, ap, input_size, min_sizes=PADDLEDET_MIN_SIZES):
    """The text of ``best_paddledet.yml``, or None when 2.x cannot build the structure (it has no lite edition).

    2.x's ``BlazeNeck`` has no ``from_config``, so its ``in_channel`` (and ``FaceHead.in_channels`` after it) must
    be written out. ``blazenet_args`` are what the search built: with ``topology: paddledet`` that is 2.x's network
    itself, and the comment block says so; with the original's, it says where 2.x's network differs.
    ``input_size`` (H, W) and ``min_sizes`` are the search's: when they are not the base's, the readers and priors
    follow them, so the network PaddleDetection trains is the one the search priced (one file: one name, one
    checkpoint folder, and nothing to forget). ``save_dir`` and ``weights`` name the same folder, where develop
    (2.7 on) saves; 2.6 saves in ``<save_dir>/<config name>/``, so there the train command takes
    ``-o save_dir=output``.
    """
    if blazenet_args.get('lite_edition'):
        return None
    plan = blazenet_plan(**blazenet_args)
    channels = paddledet_feature_channels(plan)
    use_5x5 = bool(blazenet_args.get('use_5x5kernel', True))
    same_network = plan.topology == 'paddledet'
    input_size = tuple(int(s) for s in input_size)
    min_sizes = [[float(s) for s in sizes] for sizes in min_sizes]
    resized = input_size != (PADDLEDET_INPUT, PADDLEDET_INPUT)
    name = PADDLEDET_NAME
    notes = [
        '# BlazeFace-NAS best structure (tokens {}, AP {:.4f}, searched at {}x{}) for PaddleDetection 2.x /'.format(
            list(tokens), ap, *input_size),
        '# develop. Save it in PaddleDetection as configs/face_detection/{}.yml; README.md, "Training the'.format(name),
        '# result", has the commands (train, eval, export). Checkpoints go to output/{}/ (see save_dir):'.format(name),
        '#   develop: python tools/train.py -c configs/face_detection/{}.yml'.format(name),
        '#   2.6:     python tools/train.py -c configs/face_detection/{}.yml -o save_dir=output'.format(name),
        '# (2.6 saves in <save_dir>/<config name>/, develop in <save_dir>/; add use_gpu=false without a GPU.)',
        '# (2.6.0 on Paddle 3 first needs git apply <this repo>/paddledet-2.6.0-paddle3.patch in its checkout.)',
    ]
    if same_network:
        notes += [
            '# The search ran with BlazeNet: {topology: paddledet}: the network it built, priced and trained is',
            '# the one PaddleDetection 2.x builds from this file (the same feature maps, depthwise 5x5 convs);',
            '# best_structure.yml beside it is the same block for this tool (PaddleDetection 0.x cannot build it).',
            '# How 2.x trains it, compared with the search:',
        ]
    else:
        notes += [
            '# (best_structure.yml beside this file is the same structure for PaddleDetection 0.x: slim/nas, v0.5.)',
            '# How PaddleDetection 2.x builds it, compared with the network this search trained (a search config',
            '# with BlazeNet: {topology: paddledet} searches the network 2.x builds, and this list shrinks):',
        ]
        ours, theirs = plan.feature_blocks[0], len(plan.blocks) - 4
        if ours != theirs and len(plan.feature_blocks) == 2:
            notes.append('# - it takes the stride-8 feature map after {}; the search took it after'.format(
                _block_label(blazenet_args, theirs)))
            blocks = abs(ours - theirs)
            notes.append('#   {} ({} channels, {} block{} {} before the stride-8 head);'.format(
                _block_label(blazenet_args, ours),
                'same' if plan.blocks[ours].out_channels == plan.blocks[theirs].out_channels else 'other',
                'one' if blocks == 1 else blocks, 's' if blocks > 1 else '', 'less' if theirs < ours else 'more'))
        if plan.dense_5x5:
            notes.append('# - its second 5x5 conv of a double block is depthwise; the search (like the original) used '
                         'a dense one,')
            notes.append('#   so the 2.x model is smaller and faster than the searched FLOPs and latency say;')
    if resized:
        notes.append('# - the readers below train, evaluate and infer at {}x{}, the size the search priced, with its '
                     'own augmentation ({});'.format(input_size[0], input_size[1], PADDLEDET_BASE))
    else:
        notes.append('# - it trains at 640x640 with its own reader and schedule ({}).'.format(PADDLEDET_BASE))
    notes += [
        '# act: relu keeps the ReLU after the first 1x1 conv of double blocks, as the original had it.',
        '# FaceHead.in_channels is for reading: 2.x builds the head from BlazeNeck.in_channel (its out_shape).',
    ]
    body = [
        "_BASE_: ['{}']".format(PADDLEDET_BASE),
        'save_dir: output/{}'.format(name),
        'weights: output/{}/model_final'.format(name),
        'BlazeNet:',
        '  blaze_filters: {}'.format(blazenet_args['blaze_filters']),
        '  double_blaze_filters: {}'.format(blazenet_args['double_blaze_filters']),
        '  use_5x5kernel: {}'.format(str(use_5x5).lower()),
        '  act: relu',
        'BlazeNeck:',
        '  neck_type: None',
        '  in_channel: {}'.format(channels),
        'FaceHead:',
        '  in_channels: {}'.format(channels),
    ]
    if min_sizes != PADDLEDET_MIN_SIZES:
        body += ['AnchorGeneratorSSD:', '  min_sizes: {}  # the search\'s BlazeFace.min_sizes'.format(min_sizes)]
    if resized:
        body += _paddledet_readers(input_size)
    return '\n'.join(notes + body) + '\n'


def write_paddledet_override(path, tokens, blazenet_args, ap, cfg):
    """Write ``best_paddledet.yml`` for a search run with ``cfg`` (its train input size and BlazeFace priors);
    returns False (and writes nothing) when 2.x cannot build the structure."""
    head = config_kwargs('BlazeFace', cfg) if 'BlazeFace' in cfg else {}
    text = paddledet_override(tokens, blazenet_args, ap, train_input_size(cfg),
                              head.get('min_sizes', DEFAULT_MIN_SIZES))
    if text is None:
        return False
    atomic_write(path, text)
    return True


def pareto_front(points):
    """Indices of points (cost, ap) that no other point beats on both: lower cost and higher AP."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_ap = [], float('-inf')
    for i in order:
        if points[i][1] > best_ap:
            front.append(i)
            best_ap = points[i][1]
    return front


def metric_text(metric, value):
    return '{:.1f} MFLOPs'.format(value / 1e6) if metric == 'flops' else '{:.0f} us'.format(value)


def rewarded(rows, metric, means=None):
    """Trained candidates with an AP and a price in ``metric``, one per token vector: its best AP, or its mean
    where it was re-ranked (``means``: tokens -> mean AP), the AP the pick is made on."""
    best = {}
    for r in rows:
        if r.get('status') in REWARDED and r.get(metric) not in (None, '') and r.get('ap') not in (None, ''):
            key = Tokens.parse(r['tokens'])
            if key not in best or float(r['ap']) > best[key][1]:
                best[key] = (float(r[metric]), float(r['ap']), r)
    means = means or {}
    return [(cost, means.get(tokens, ap), tokens, r) for tokens, (cost, ap, r) in best.items()]


def plot_pareto(path, points, front, metric, pick=None):
    """Scatter of rewarded candidates, AP against the constraint metric; the front marked and each of its points
    labelled with its cost, the pick (``pick``: its tokens; by default the best AP) starred. ``points``: (cost, ap,
    tokens) of ``rewarded``."""
    import matplotlib.pyplot as plt  # the Agg backend is the entry points' choice (MPLBACKEND)

    scale, unit = (1e6, 'MFLOPs') if metric == 'flops' else (1.0, 'us')
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if points:
        xs, ys = [p[0] / scale for p in points], [p[1] for p in points]
        ax.scatter(xs, ys, s=22, color='#8aa4c8', label='candidates ({})'.format(len(points)))
        ax.plot([xs[i] for i in front], [ys[i] for i in front], '-o', color='#d9822b', ms=5,
                label='Pareto front ({} points)'.format(len(front)))
        for i in front:
            ax.annotate('{:.0f}'.format(xs[i]) if metric != 'flops' else '{:.1f}'.format(xs[i]), (xs[i], ys[i]),
                        textcoords='offset points', xytext=(4, -10), fontsize=7, color='#8a4b10')
        picked = [i for i in range(len(points)) if pick is not None and list(points[i][2]) == list(pick)]
        best = picked[0] if picked else max(range(len(points)), key=lambda i: ys[i])
        ax.scatter([xs[best]], [ys[best]], marker='*', s=220, color='#c23b22', zorder=5,
                   label='pick: AP {:.3f}\n{}'.format(ys[best], list(points[best][2])))
    ax.set_xlabel('{} ({})'.format({'flops': 'FLOPs', 'latency_us': 'latency'}.get(metric, metric), unit))
    ax.set_ylabel('AP@0.5 (reward)')
    ax.set_title('BlazeFace-NAS search: reward against cost')
    ax.grid(alpha=0.3)
    ax.legend(loc='best', fontsize=8, framealpha=0.6)
    fig.tight_layout()
    tmp = '{}.tmp.{}.png'.format(path, os.getpid())  # per process, as files.atomic_write: clients share save_dir
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def searched_args(pricer, tokens):
    """The BlazeNet arguments the search built and priced for ``tokens`` (a ``CandidatePricer``'s: the config's
    BlazeNet section, e.g. its ``topology``, overlaid by the tokens')."""
    return pricer.blazenet_kwargs(list(tokens))


def write_front(save_dir, points, front, metric, pricer, cfg):
    """``pareto.csv`` (cheapest first) and, per point of the front, its structure in both forms under
    ``pareto/<tokens>/``: what a user picks from when a little more latency may buy AP. ``pricer``: the search's
    ``CandidatePricer`` (what it built for each token vector)."""
    rows = []
    for i in sorted(front, key=lambda i: points[i][0]):
        _, ap, tokens, row = points[i]
        folder = os.path.join(save_dir, 'pareto', tokens.folder)
        args = searched_args(pricer, tokens)
        write_best_structure(os.path.join(folder, BEST_STRUCTURE_NAME), list(tokens), args, ap)
        write_paddledet_override(os.path.join(folder, BEST_PADDLEDET_NAME), list(tokens), args, ap, cfg)
        rows.append(dict({k: row.get(k) for k in PARETO_FIELDS}, tokens=tokens, ap=ap,
                         folder=os.path.relpath(folder, save_dir)))
    write_csv(os.path.join(save_dir, PARETO_NAME), PARETO_FIELDS, rows)
    return rows


def write_report(save_dir, setup, strategy, ranked=()):
    """What the search leaves: history, best structure (of ``ranked[0]``, the re-ranked winner, if any) in both
    forms, the front, the plot; the structure block printed and the output paths. Returns (tokens, AP). The front,
    the plot and the pick show one AP per candidate: the mean of its trainings where it was re-ranked."""
    metric = strategy.metric
    tokens, reward = strategy.best()
    means = {Tokens(r.tokens): r.mean for r in ranked if r.score is None}  # a supernet's front stays its scores
    winner = ranked[0] if ranked else None
    if winner is not None:
        if list(winner.tokens) != list(tokens):
            logger.info('re-ranking changed the winner: %s (mean %.4f) rather than %s (best %s %.4f)',
                        winner.tokens, winner.mean, list(tokens),
                        'single AP' if winner.score is None else 'supernet AP', reward)
        tokens, reward = winner.tokens, winner.mean
    outputs = {'history': strategy.history_file(save_dir)}
    points = rewarded(strategy.rows(), metric, means)
    if tokens is not None:
        tokens = list(tokens)
        args = searched_args(setup.pricer, tokens)
        outputs['best structure'] = os.path.join(save_dir, BEST_STRUCTURE_NAME)
        write_best_structure(outputs['best structure'], tokens, args, reward, winner)
        paddledet = os.path.join(save_dir, BEST_PADDLEDET_NAME)
        if write_paddledet_override(paddledet, tokens, args, reward, setup.cfg):
            outputs['for PaddleDetection 2.x'] = paddledet
        front = pareto_front([p[:2] for p in points])
        outputs['pareto front'] = os.path.join(save_dir, PARETO_NAME)
        front_rows = write_front(save_dir, points, front, metric, setup.pricer, setup.cfg)
        outputs['pareto plot'] = os.path.join(save_dir, 'search_pareto.png')
        plot_pareto(outputs['pareto plot'], points, front, metric, tokens)
        outputs.update(strategy.outputs())
        logger.info('All steps end, the best BlazeFace-NAS structure is (tokens %s, AP %.4f):', tokens, reward)
        print(structure_block(args), flush=True)
        _log_front(front_rows, metric)
    for name, path in outputs.items():
        print('{}: {}'.format(name, path), flush=True)
    return tokens, reward


def _log_front(rows, metric):
    first, last = rows[0], rows[-1]
    logger.info('accuracy-%s front: %d point(s), from %s (AP %.4f) to %s (AP %.4f); each structure in pareto/',
                'latency' if metric == 'latency_us' else 'FLOPs', len(rows), metric_text(metric, float(first[metric])),
                first['ap'], metric_text(metric, float(last[metric])), last['ap'])
    for row in rows:
        logger.info('  front point: %s, AP %.4f, tokens %s', metric_text(metric, float(row[metric])), row['ap'],
                    list(row['tokens']))
