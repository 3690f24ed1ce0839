"""What a search leaves for people: the best structure as pasteable YAML and an AP-vs-cost Pareto plot.

Two structure files: ``best_structure.yml``, the original's ``BlazeNet:`` block (for PaddleDetection 0.x and for
this tool), and ``best_paddledet.yml``, an override of today's PaddleDetection (2.x / develop) BlazeFace config.
"""
import os

from ppdet.modeling.backbones.blazenet import blazenet_plan
from ppdet.slim.nas.files import atomic_write
from search_space.blazefacespace_nas import structure_block

__all__ = ['write_best_structure', 'paddledet_override', 'write_paddledet_override', 'pareto_front',
           'plot_pareto', 'PADDLEDET_BASE']

# The PaddleDetection 2.x / develop config the override extends (configs/face_detection/).
PADDLEDET_BASE = 'blazeface_1000e.yml'


def write_best_structure(path, tokens, blazenet_args, ap, ranked=None):
    """``best_structure.yml``: the ``BlazeNet:`` block users paste into a training config. ``ranked`` (a
    ``rerank.Ranked``): the winner was re-ranked, and ``ap`` is its mean; the file records mean and spread."""
    lines = structure_block(blazenet_args).splitlines()[1:-1]
    header = '# best tokens {} (AP {:.4f}); paste the BlazeNet block into a training config\n'.format(tokens, ap)
    if ranked is not None:
        header += '# re-ranked: {}\n'.format(ranked.describe())
    atomic_write(path, header + '\n'.join(lines) + '\n')


def paddledet_feature_channels(plan):
    """The channels PaddleDetection 2.x's BlazeNet hands its neck: it returns ``[outs[-4], outs[-1]]``."""
    return [plan.blocks[-4].out_channels, plan.blocks[-1].out_channels]


def paddledet_override(tokens, blazenet_args, ap, input_size):
    """The text of ``best_paddledet.yml``, or None when 2.x cannot build the structure (it has no lite edition).

    2.x's ``BlazeNeck`` has no ``from_config``, so its ``in_channel`` (and ``FaceHead.in_channels`` after it) must
    be written out; the comment block says where 2.x's network differs from the searched one.
    """
    if blazenet_args.get('lite_edition'):
        return None
    plan = blazenet_plan(**blazenet_args)
    channels = paddledet_feature_channels(plan)
    use_5x5 = bool(blazenet_args.get('use_5x5kernel', True))
    name = 'blazeface_nas_best'  # the file name below: 2.x saves checkpoints in output/<file name>/
    notes = [
        '# BlazeFace-NAS best structure (tokens {}, AP {:.4f}, searched at {}x{}) for PaddleDetection 2.x /'.format(
            list(tokens), ap, *input_size),
        '# develop. Save it in PaddleDetection as configs/face_detection/{}.yml and train it:'.format(name),
        '#   python tools/train.py -c configs/face_detection/{}.yml'.format(name),
        '# (best_structure.yml beside this file is the same structure for PaddleDetection 0.x: slim/nas, v0.5.)',
        '# How PaddleDetection 2.x builds it, compared with the network this search trained:',
        '# - it takes the stride-8 feature map after double_blaze_filters[0]; the search took it after',
        '#   double_blaze_filters[1] (same channels and stride, one block less before the stride-8 head);',
    ]
    if use_5x5 and blazenet_args.get('dense_double_5x5', True):
        notes.append('# - its second 5x5 conv of a double block is depthwise; the search (like the original) used a '
                     'dense one,')
        notes.append('#   so the 2.x model is smaller and faster than the searched FLOPs and latency say;')
    notes += [
        '# - it trains at 640x640 with its own reader and schedule ({}).'.format(PADDLEDET_BASE),
        '# act: relu keeps the ReLU after the first 1x1 conv of double blocks, as the original had it.',
        '# weights: what tools/eval.py, infer.py and export_model.py load (the base names its own checkpoint).',
        '# FaceHead.in_channels is for reading: 2.x builds the head from BlazeNeck.in_channel (its out_shape).',
    ]
    body = [
        "_BASE_: ['{}']".format(PADDLEDET_BASE),
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
    return '\n'.join(notes + body) + '\n'


def write_paddledet_override(path, tokens, blazenet_args, ap, input_size):
    """Write ``best_paddledet.yml``; returns False (and writes nothing) when 2.x cannot build the structure."""
    text = paddledet_override(tokens, blazenet_args, ap, input_size)
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


def plot_pareto(path, rows, metric, unit):
    """Scatter of rewarded candidates, AP against the constraint metric, front and best marked."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get(metric) not in (None, '') and r.get('ap') not in (None, '')]
    scale, unit = (1e6, 'millions') if metric == 'flops' else (1.0, unit)
    points = [(float(r[metric]) / scale, float(r['ap'])) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if points:
        xs, ys = zip(*points)
        ax.scatter(xs, ys, s=22, color='#8aa4c8', label='candidates ({})'.format(len(points)))
        front = pareto_front(points)
        ax.plot([xs[i] for i in front], [ys[i] for i in front], '-o', color='#d9822b', ms=5,
                label='Pareto front')
        best = max(range(len(points)), key=lambda i: ys[i])
        ax.scatter([xs[best]], [ys[best]], marker='*', s=220, color='#c23b22', zorder=5,
                   label='best: AP {:.3f}\n{}'.format(ys[best], rows[best]['tokens']))
    ax.set_xlabel('{} ({})'.format({'flops': 'FLOPs', 'latency_us': 'latency'}.get(metric, metric), unit))
    ax.set_ylabel('AP@0.5 (reward)')
    ax.set_title('BlazeFace-NAS search: reward against cost')
    ax.grid(alpha=0.3)
    ax.legend(loc='best', fontsize=8, framealpha=0.6)
    fig.tight_layout()
    tmp = path + '.tmp.png'
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
