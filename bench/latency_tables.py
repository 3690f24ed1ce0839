"""How well latency tables built on this machine rank whole networks, per timing setting.

    python bench/latency_tables.py [--sizes 160,96] [--seeds 0,1,2] [--settings native1,onednn1,native2,onednn2]
        [--samples 20] [--results bench/LATENCY_RESULTS.md]

For every size, setting and seed: a fresh table (tools/build_latency_table.py) and its validation against
--samples random candidates (tools/validate_latency_table.py --seed), both run as a user runs them. Settings:
native1 = Paddle's CPU kernels, 1 thread (the tools' default); onednn1 = --onednn; native2/onednn2 = the same
with --threads 2. Writes a markdown table of Spearman and median ratio per run. Nothing here runs in make test.
"""
import argparse
import datetime
import json
import os
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


def run(size, setting, seed, samples):
    size_opt = ['-o', 'TrainReader.inputs_def.image_shape=[3,{0},{0}]'.format(size)]
    table = os.path.join(WORK, 'latency', '{}_{}_{}.txt'.format(size, setting, seed))
    if os.path.exists(table):
        os.remove(table)
    _, build_s = tool('build_latency_table.py', ['-c', 'demo.yml', '--out', table] + SETTINGS[setting] + size_opt)
    last, validate_s = tool('validate_latency_table.py', ['-c', 'demo.yml', '--table', table, '--samples',
                                                          str(samples), '--seed', str(seed)] + size_opt)
    result = dict(json.loads(last), size=size, setting=setting, seed=seed, build_s=round(build_s, 1),
                  validate_s=round(validate_s, 1), load=round(os.getloadavg()[0], 2))
    print(json.dumps(result), flush=True)
    return result


def write_results(rows, path, command):
    lines = ['# Latency tables: how well they rank whole networks', '',
             'Written by `bench/latency_tables.py`. Each row: a fresh table built with the setting, then validated '
             'against random candidates (Spearman of table sum vs Paddle Inference latency; median table/measured).',
             '', '- Command: `{}`'.format(command),
             '- Date: {} UTC'.format(datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M')), '',
             '| size | setting | seed | samples | Spearman | median ratio | build s | validate s | load |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in rows:
        lines.append('| {size} | {setting} | {seed} | {samples} | {spearman:.3f} | {median_ratio:.2f} | {build_s} | '
                     '{validate_s} | {load} |'.format(**r))
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', default='160')
    parser.add_argument('--seeds', default='0,1,2')
    parser.add_argument('--settings', default='native1,onednn1,native2,onednn2')
    parser.add_argument('--samples', type=int, default=20)
    parser.add_argument('--results', default=os.path.join(HERE, 'LATENCY_RESULTS.md'))
    args = parser.parse_args()
    settings = args.settings.split(',')
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        parser.error('--settings: unknown {}; choose from {}'.format(','.join(unknown), ','.join(SETTINGS)))
    rows = [run(int(size), setting, int(seed), args.samples) for size in args.sizes.split(',')
            for seed in args.seeds.split(',') for setting in settings]
    write_results(rows, args.results, 'python bench/latency_tables.py ' + ' '.join(sys.argv[1:]))


if __name__ == '__main__':
    main()
