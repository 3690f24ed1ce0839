"""How well latency tables built on this machine rank whole networks, per timing setting.

    python bench/latency_tables.py [--sizes 160,96] [--seeds 0,1,2] [--settings native1,onednn1,native2,onednn2]
        [--samples 20] [--results bench/LATENCY_RESULTS.md]

For every size, setting and seed: a fresh whole-network table (tools/build_latency_table.py) and its validation
against --samples random candidates (tools/validate_latency_table.py --seed), both run as a user runs them.
Settings: native1 = Paddle's CPU kernels, 1 thread (the tools' default); onednn1 = --onednn; native2/onednn2 = the
same with --threads 2. --kernels 3,5 builds and validates over both kernel sizes. --repeat-check re-times the
same candidates once more after each validation (a second validation of the same table and seed): how far the
machine's own timing of one network moves between two moments, the floor under any table's accuracy. Writes a
markdown table of Spearman, median ratio, share within +-10% and worst ratio per run. Nothing here runs in make
test. Machine and runtime of the last run: see the results file.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import REPO, WORK  # noqa: E402

SETTINGS = {'native1': ['--threads', '1'], 'onednn1': ['--threads', '1', '--onednn'],
            'native2': ['--threads', '2'], 'onednn2': ['--threads', '2', '--onednn']}


def tool(name, args):
    """Run a tool as a user does; its last stdout line, and the wall time."""
    start = time.time()
    out = subprocess.run([sys.executable, os.path.join(REPO, 'tools', name)] + args, capture_output=True,
                         text=True, cwd=REPO)
    if out.returncode:
        raise RuntimeError('{} {} failed: {}'.format(name, ' '.join(args), out.stderr.strip()[-500:]))
    return out.stdout.strip().splitlines()[-1], time.time() - start


def run(size, setting, seed, samples, kernels, repeat_check):
    size_opt = ['-o', 'TrainReader.inputs_def.image_shape=[3,{0},{0}]'.format(size), '--kernels', kernels]
    table = os.path.join(WORK, 'latency', '{}_{}_{}_k{}.txt'.format(size, setting, seed, kernels.replace(',', '')))
    if os.path.exists(table):
        os.remove(table)
    _, build_s = tool('build_latency_table.py', ['-c', 'demo.yml', '--out', table] + SETTINGS[setting] + size_opt)
    check = ['-c', 'demo.yml', '--table', table, '--samples', str(samples), '--seed', str(seed)] + size_opt
    last, validate_s = tool('validate_latency_table.py', check)
    result = dict(json.loads(last), size=size, setting=setting, seed=seed, kernels=kernels, build_s=round(build_s, 1),
                  validate_s=round(validate_s, 1), load=round(os.getloadavg()[0], 2))
    if repeat_check:
        again, _ = tool('validate_latency_table.py', check + ['--report', table + '.again.txt'])
        again = json.loads(again)
        result['repeat_median_ratio'] = round(again['median_ratio'], 3)
        result['repeat_median_ratio_adjusted'] = round(again['median_ratio_adjusted'], 3)
    print(json.dumps(result), flush=True)
    return result


def machine():
    """CPU model and core count, for the results file."""
    with open('/proc/cpuinfo') as f:
        models = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    return '{} x {} ({}), Python {}'.format(len(models), models[0] if models else platform.machine(),
                                           platform.machine(), platform.python_version())


def write_results(rows, path, command, runtime):
    lines = ['# Latency tables: how well they predict whole networks', '',
             'Written by `bench/latency_tables.py`. Each row: a fresh whole-network table built with the setting, '
             'then validated against random candidates: Spearman of table sum vs Paddle Inference latency, median '
             'table/measured, share of candidates within +-10% of measured, the ratio farthest from 1.',
             '', '- Command: `{}`'.format(command), '- Machine: {}'.format(machine()),
             '- Date: {} UTC; runtime {:.0f} s'.format(datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M'), runtime),
             '',
             'Adjusted: measured times scaled to the machine speed of the build (speed factor: the table\'s calibration '
             'networks, priced / measured now; see tools/validate_latency_table.py). Repeat: the same validation run '
             'again right after, the machine\'s own variation.', '',
             '| size | setting | kernels | seed | samples | Spearman | median ratio | within +-10% | worst ratio | '
             'speed factor | median adjusted | within +-10% adjusted | repeat median (adjusted) | build s | '
             'validate s | load |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in rows:
        repeat = '{} ({})'.format(r['repeat_median_ratio'], r['repeat_median_ratio_adjusted']) \
            if 'repeat_median_ratio' in r else '-'
        lines.append('| {size} | {setting} | {kernels} | {seed} | {samples} | {spearman:.3f} | {median_ratio:.3f} | '
                     '{within_10pct:.0%} | {worst_ratio:.3f} | {speed_factor:.3f} | {median_ratio_adjusted:.3f} | '
                     '{within_10pct_adjusted:.0%} | {repeat} | {build_s} | {validate_s} | {load} |'.format(
                         repeat=repeat, **r))
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', default='160')
    parser.add_argument('--seeds', default='0,1,2')
    parser.add_argument('--settings', default='native1,onednn1,native2,onednn2')
    parser.add_argument('--samples', type=int, default=20)
    parser.add_argument('--kernels', default='3', help='3 or 3,5 (tables and candidates over both kernel sizes)')
    parser.add_argument('--repeat-check', action='store_true', help='validate each table twice')
    parser.add_argument('--results', default=os.path.join(HERE, 'LATENCY_RESULTS.md'))
    args = parser.parse_args()
    settings = args.settings.split(',')
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        parser.error('--settings: unknown {}; choose from {}'.format(','.join(unknown), ','.join(SETTINGS)))
    start = time.time()
    rows = [run(int(size), setting, int(seed), args.samples, args.kernels, args.repeat_check)
            for size in args.sizes.split(',') for seed in args.seeds.split(',') for setting in settings]
    runtime = time.time() - start
    print('runtime {:.0f} s'.format(runtime), flush=True)
    write_results(rows, args.results, 'python bench/latency_tables.py ' + ' '.join(sys.argv[1:]), runtime)


if __name__ == '__main__':
    main()
