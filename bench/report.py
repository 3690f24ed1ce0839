"""bench/RESULTS.md from the results of bench/run.py."""


def render(results, command, started, seconds, facts, loads, fmt):
    lines = ['# Benchmarks', '', '`{}`'.format(command), '']
    for r in results:
        lines.append('- {}: {}'.format(r['name'], fmt(r)))
    return '\n'.join(lines) + '\n'
