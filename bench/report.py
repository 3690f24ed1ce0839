"""bench/RESULTS.md from the results of bench/run.py: table, command, machine, details, notes, README text."""

LABELS = {
    'pricing': 'Pricing a candidate (FLOPs/params at 640) vs static Program + PaddleSlim `flops`',
    'data': 'Reader decode+augment at 640, 2 workers vs training consumption (published NAS, depthwise 5x5, b8)',
    'train_step': "Project's trainer vs bare Paddle loop (published NAS, depthwise 5x5, 640, batch 8, CPU)",
    'search_overhead': 'Search overhead per step (outside train/eval) vs one demo step',
    'memory': 'Peak RSS, 640 batch-8 candidate training (trainer + reader) vs bare loop',
    'workers': 'Search throughput, `--workers 2` vs `--workers 1` (demo config, FLOPs limit, same seed and budget)',
}


def _num(v, digits=4):
    if v is None:
        return '-'
    if isinstance(v, bool):
        return 'yes' if v else 'no'
    if isinstance(v, float):
        return '{:.{}g}'.format(v, digits)
    return str(v)


def _get(results, name):
    return next((r for r in results if r.get('name') == name), None)


def _loaded(loads, facts):
    cores = facts.get('nproc') or 1
    return max(v[0] for v in loads.values()) > 0.75 * cores


def _details(r):
    rows = []
    for key, value in r.get('detail', {}).items():
        if isinstance(value, dict):
            value = ', '.join('{} {}'.format(k, _num(v)) for k, v in value.items())
        elif isinstance(value, list):
            value = ', '.join(_num(v) for v in value)
        else:
            value = _num(value)
        rows.append('| {} | {} |'.format(key, value))
    return ['| detail | value |', '| --- | --- |'] + rows


def _train_notes(t):
    d = t.get('detail', {})
    out = []
    parts = d.get('bare_step_ms')
    if parts:
        total = sum(parts.values())
        out.append('Where a CPU training step goes (bare loop, published NAS depthwise 5x5, 640, batch 8, '
                   'ms per step): '
                   + ', '.join('{} {:.0f} ({:.0f}%)'.format(k, v, 100 * v / total) for k, v in parts.items())
                   + '. The loss includes the numpy prior matching and hard-negative mining.')
    shares = d.get('op_time_share_percent')
    if shares:
        out.append('Operator time by kind (Paddle profiler, forward + backward): '
                   + ', '.join('{} {}%'.format(k, v) for k, v in shares.items()) + '.')
    if 'to_static_vs_dygraph' in d:
        s, c = d['to_static_vs_dygraph'], d.get('to_static_vs_dygraph_cpu', float('nan'))
        faster = s >= 1.05 and c >= 1.0
        out.append('`paddle.jit.to_static` (forward traced, loss in dygraph) works for this network (loss difference '
                   'on the first batch {}): {:.2f} images/s vs dygraph {:.2f}, x{:.2f} in wall time and x{:.2f} in '
                   'CPU time per step. Default: {}.'.format(
                       _num(d.get('to_static_loss_diff')), d['bare_to_static_images_per_s'],
                       d['bare_images_per_s'], s, c,
                       'to_static would be worth making the default' if faster else
                       'dygraph (the trainer\'s), since to_static is not faster'))
    elif 'to_static_error' in d:
        out.append('`paddle.jit.to_static` failed for this network: {}.'.format(d['to_static_error']))
    if '2_threads_vs_1' in d:
        cpu = d.get('cpu_s_per_step', {})
        out.append('2 CPU threads (`paddle.base.core.set_num_threads(2)`; Paddle runs on 1 thread unless '
                   'OMP_NUM_THREADS says otherwise) vs 1: x{:.2f} in wall time for {} CPU s per step instead of {}. '
                   'The gain '
                   'needs a free second core: it shrinks when other jobs or the reader workers hold it.'.format(
                       d['2_threads_vs_1'], _num(cpu.get('bare_2_threads'), 3), _num(cpu.get('bare'), 3)))
    if 'dense_quirk_vs_depthwise' in d:
        out.append("The original's dense second 5x5 conv (BlazeNet default, dense_double_5x5=True) trains at "
                   "{:.2f} images/s, x{:.2f} the depthwise form.".format(d['bare_dense_double_5x5_images_per_s'],
                                                                      d['dense_quirk_vs_depthwise']))
    if 'vs_anchor' in d:
        out.append('Against the absolute anchor (PaddleDetection\'s own BlazeFace trainer, about {} images/s for this '
                   'structure and batch on this kind of machine): x{:.2f}; the goal of x2 ({} images/s) is {}.'.format(
                       d['anchor_images_per_s'], d['vs_anchor'], d['anchor_goal_images_per_s'],
                       'met' if d['anchor_goal_met'] else 'NOT met'))
    return out


def render(results, command, started, seconds, facts, loads, fmt):
    quick = '--quick' in command
    lines = ['# Benchmarks: what a BlazeFace-NAS search costs', '',
             'Written by `bench/run.py`{}. Every figure is a ratio against a baseline measured in the same process '
             '(timed ones interleaved, in rounds), with both absolute values.'.format(
                 ' in --quick mode (fewer iterations, no extra variants)' if quick else ''), '',
             '- Command: `{}` (from the repository root)'.format(command),
             '- Date: {}; wall time {:.0f} s'.format(started.strftime('%Y-%m-%d %H:%M %Z'), seconds),
             '- Load average (1/5/15 min) at start {} and end {}'.format(loads.get('start'), loads.get('end')), '']
    if _loaded(loads, facts):
        lines += ['> The machine was shared with other jobs during this run (load average {} at the start on {} '
                  'cores; the run itself adds about 1 while it runs). Absolute speeds are lower and noisier than on '
                  'an idle machine (repeated runs moved them by 10-20%); ratios are less affected, since value and '
                  'baseline ran interleaved in the same process.'.format(loads.get('start', ['?'])[0],
                                                                          facts.get('nproc')), '']
    lines += ['## Machine', '', '| fact | value |', '| --- | --- |']
    lines += ['| {} | {} |'.format(k, v) for k, v in facts.items()]
    lines += ['', '## Results', '', '| benchmark | what | value | baseline | ratio | unit | target | met |',
              '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in results:
        if r.get('error'):
            lines.append('| {} | {} | error: {} | | | | | no |'.format(r['name'], LABELS.get(r['name'], ''),
                                                                         r['error'][:200]))
            continue
        met = 'yes' if r['met'] else 'NO'
        if 'anchor_goal_met' in r.get('detail', {}):
            met += '; anchor x2 goal: {} (x{:.2f} the anchor)'.format(
                'yes' if r['detail']['anchor_goal_met'] else 'NO', r['detail']['vs_anchor'])
        lines.append('| {} | {} | {} | {} | {} | {} | {} | {} |'.format(
            r['name'], LABELS.get(r['name'], ''), _num(r['value']), _num(r['baseline']), _num(r['ratio']),
            r['unit'], r['target'], met))
    lines.append('')
    for r in results:
        lines += ['### {}'.format(r['name']), ''] + _details(r) + ['']
        if r['name'] == 'train_step' and not r.get('error'):
            lines += ['- ' + n for n in _train_notes(r)] + ['']
    lines += [FINDINGS, NOTES, README_HEAD]
    lines += readme_lines(results)
    return '\n'.join(lines) + '\n'


FINDINGS = """## Findings

- A CPU search's cost is training, and training is the convolution kernels: the depthwise convs alone take about
  two thirds of operator time (see train_step above). Paddle 3.3.1 runs `depthwise_conv2d` on the CPU as im2col +
  GEMM per channel group; its oneDNN kernels are not used in dygraph (`FLAGS_use_mkldnn=1` / `FLAGS_use_onednn=1`
  changed nothing measurable) and `to_static` with `FLAGS_use_mkldnn=1` crashes (segfault): both checked by hand,
  not re-run here. The loss (numpy prior matching and hard-negative mining included) is about 1% of a step and
  the optimizer under 0.5%, so nothing in the trainer, the loss or the optimizer can double the speed: the project's
  trainer runs at the speed of a bare Paddle loop, i.e. at the PaddleDetection anchor's speed, not twice it.
- `paddle.jit.to_static` traces this network and gives the same loss, but brings no consistent gain on the CPU:
  across three full runs and a longer A/B made for this report it measured x0.81, x0.84, x0.92 and x1.10 in wall
  time and never used less CPU per step (x0.72 to x0.99 the dygraph CPU throughput), so the trainer stays in dygraph.
- A second CPU thread helps only when the second core is free. Paddle runs its kernels on one thread: it sets
  `OMP_NUM_THREADS=1` when the variable is unset, and this oneDNN build ignores `FLAGS_paddle_num_threads`. To use
  two, export `OMP_NUM_THREADS=2` before starting the search (Paddle prints a warning about it) or call
  `paddle.base.core.set_num_threads(2)`. The trainer does not set it: with two search clients or two ranks on a
  2-core machine it would oversubscribe the cores.
- The reader is an order of magnitude ahead of training at 640 on the CPU; one worker would do.
- Search overhead and memory are far inside their targets.
"""


NOTES = """## How each figure is measured

- **pricing**: `CandidatePricer.price` (what `tools/price_arch.py` and the search call) on random token vectors of
  BlazeFaceNasSpace at 640x640, vs the original's way in a separate process with `FLAGS_enable_pir_api=0`: build
  BlazeFace as a legacy static Program and run `paddleslim.analysis.flops`; only build + flops is timed (imports and
  one warm-up build excluded). FLOPs are compared candidate by candidate. The original built the whole training
  program (reader, loss, optimizer) before counting, so its real cost was higher still.
- **data**: `create_reader(blazeface.yml TrainReader)` on a synthetic 640 px WIDER-format set (200 images), images/s
  between the first and last batch (worker start-up reported apart), vs the images/s a bare training loop of the
  published structure (depthwise 5x5, 640, batch 8) consumes in the same process. WIDER FACE's own JPEGs are about
  1024 px wide, so decoding them costs more per image (`bench/data_throughput.py --size 1024` measures that case).
- **train_step**: `CandidateTrainer.train` (its reader with blazeface.yml's workers, LR schedule, stats, logging),
  timed between consecutive iteration starts, vs a bare loop (`to_tensor`, `model.loss`, `backward`, RMSProp
  `step`, `clear_grad`) on in-memory batches from the same reader, training the same model object (two instances of
  one structure differed by 10% and more in speed on this shared VM, whichever loop ran them), same loss and optimizer.
  The first iteration of every run is warm-up and not counted. The full run adds bare-loop variants interleaved with
  the same rounds: `paddle.jit.to_static`, 2 CPU threads, the original's dense 5x5 quirk, and an operator profile.
- **search_overhead**: a real search (`NasSearch.run`) on demo.yml (128x128, batch 16, 120 iterations per candidate,
  FLOPs constraint) with training and evaluation timed and subtracted; what remains per rewarded step is the
  controller round trip (the server writes its checkpoint on every reward), pricing, skipped candidates, model build,
  `model_final` save and the history write. The one-time report at the end (`finish`) is shown apart. `pieces_s` times
  the same pieces called directly (history append measured with 300 rows already written, the size of a full search).
  In --quick mode the candidates train 10 iterations and the demo step is extrapolated to 120 from the measured
  iteration time.
- **memory**: peak RSS (VmHWM) of a fresh process training a candidate at 640 batch 8 with `CandidateTrainer` and its
  reader (2 workers), vs a fresh process running the bare loop on in-memory batches. The `tree` figures sum the RSS of
  the process and its reader workers, sampled every 0.1 s; shared pages count once per process, so they are an upper
  bound.
- **workers**: two whole runs of `train_nas.py -c demo.yml --workers N` (N = 1, then 2) on the bench's demo set
  (96 px, FLOPs limit 1M..30M instead of the demo's machine-built latency table), same seed and `search_steps`;
  each is timed end to end, Paddle's start-up and the report included, and its rewarded candidates counted from the
  histories. In --quick mode 4 candidates of 100 iterations, else 6 of 300 (the demo's). Not interleaved: the two
  runs follow each other, so a change of load between them moves the ratio.

## GPU

Not measured: no GPU is reachable from this machine, and Paddle's GPU wheels are far larger than what can be sent
to a GPU test machine, so there is no figure rather than a guess. The GPU paths are kept correct by reading and by
unit tests that run on the CPU: `select_device` falls back to the CPU with a warning when `use_gpu` is set without a
usable GPU, `--fp16` is ignored (with a warning) on the CPU, and the AMP path (`paddle.amp.auto_cast` +
`GradScaler.scale(loss).backward()` + `scaler.minimize`) is exercised on the CPU by `tests/test_candidate.py`.
"""

README_HEAD = """## README section (for the lead to paste)

```markdown
## Benchmarks

`python bench/run.py` measures what a search costs on your machine and writes `bench/RESULTS.md`;
`python bench/run.py --quick` gives rougher numbers in under 3 minutes on 2 cores and only prints them (as does
`--only`; `--results FILE` writes them to FILE), so the recorded results stay. Each line of output is one JSON
object (`name`, `value`, `baseline`, `ratio`, `unit`, `target`); every figure is measured against a baseline in the
same process, so load from other jobs affects both alike. Benchmarks never run in `make test`."""


def readme_lines(results):
    out = ['', 'Measured on 2 CPU cores (see bench/RESULTS.md for the machine and the exact command):', '']
    p, d, t, s, m = (_get(results, n) for n in ('pricing', 'data', 'train_step', 'search_overhead', 'memory'))
    if p and not p.get('error'):
        out.append('- Pricing a candidate (FLOPs and params at 640) takes {:.2g} ms, x{:.0f} faster than building '
                   'the static program and running PaddleSlim `flops` ({:.0f} ms), with the same FLOPs.'.format(
                       p['detail']['ms_per_candidate'], p['ratio'], p['detail']['static_ms_per_candidate']))
    if t and not t.get('error'):
        per_hour = 3600.0 * t['value'] / 8
        out.append('- Training at 640, batch 8, on the CPU: {:.2f} images/s for the published BlazeFace-NAS structure '
                   '(x{:.2f} a bare Paddle loop), i.e. about {:.0f} iterations per hour: blazeface.yml\'s 5000 '
                   'iterations per candidate take about {:.1f} h, so a CPU search is for small settings '
                   '(fewer iterations, smaller images, demo.yml) or a GPU.'.format(
                       t['value'], t['ratio'], per_hour, 5000 / per_hour))
    if d and not d.get('error'):
        out.append('- The reader decodes and augments {:.0f} images/s at 640 with 2 workers (x{:.0f} what training '
                   'consumes): data loading is not what limits a CPU search.'.format(d['value'], d['ratio']))
    if s and not s.get('error'):
        out.append('- Search overhead (controller, pricing, build, checkpoint and history writes) is {:.2f} s per '
                   'candidate, {:.2f}% of a demo.yml step ({:.0f} s: 120 iterations at 128x128 and the '
                   'evaluation).'.format(s['value'], 100 * s['ratio'], s['baseline']))
    if m and not m.get('error'):
        out.append('- Peak memory of a 640 batch-8 candidate training: {:.2f} GB (the trainer process; its reader '
                   'workers add up to {:.2f} GB more, counted generously).'.format(
                       m['value'] / 1024, max(0.0, m['detail']['trainer_tree_peak_mb_sampled'] - m['value']) / 1024))
    out += ['- GPU: not measured here; see bench/RESULTS.md.', '```']
    return out
