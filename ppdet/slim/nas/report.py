"""What a search leaves for people: the best structure as pasteable YAML and an AP-vs-cost Pareto plot."""
import os

from ppdet.slim.nas.files import atomic_write
from search_space.blazefacespace_nas import structure_block

__all__ = ['write_best_structure', 'pareto_front', 'plot_pareto']


def write_best_structure(path, tokens, blazenet_args, ap):
    """``best_structure.yml``: the ``BlazeNet:`` block users paste into a training config."""
    lines = structure_block(blazenet_args).splitlines()[1:-1]
    header = '# best tokens {} (AP {:.4f}); paste the BlazeNet block into a training config\n'.format(tokens, ap)
    atomic_write(path, header + '\n'.join(lines) + '\n')


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
