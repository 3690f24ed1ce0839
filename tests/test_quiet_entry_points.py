"""Process-wide settings belong to the entry points: importing the package changes none, and an entry point keeps
the libraries' noise (glog's static-graph warning, matplotlib's font cache notice) out of the terminal."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STATIC_ADD = ('import matplotlib.font_manager, paddle\n'
              'paddle.enable_static()\n'
              'x = paddle.static.data("x", [1], "float32")\n'
              'x + x\n')
NOISE = ('eager_utils.cc', 'generated new fontManager')


def _python(code, tmp_path):
    """Run ``code`` as a fresh process with none of this test process's settings (glog level, font cache)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('GLOG_')}
    env['MPLCONFIGDIR'] = str(tmp_path / 'matplotlib')  # no font cache yet: matplotlib builds one and says so
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=300)


def test_importing_the_package_changes_no_process_wide_setting(tmp_path):
    out = _python('import logging, os, warnings\n'
                  'before = (list(warnings.filters), logging.getLogger().level, logging.getLogger("matplotlib").level)\n'
                  'import ppdet, ppdet.utils.logs, ppdet.core.workspace\n'
                  'after = (list(warnings.filters), logging.getLogger().level, logging.getLogger("matplotlib").level)\n'
                  'assert before == after, (before, after)\n'
                  'assert "GLOG_minloglevel" not in os.environ\n', tmp_path)
    assert out.returncode == 0, out.stderr


def test_a_static_graph_tool_keeps_library_noise_out(tmp_path):
    plain = _python('import ppdet.slim.nas.latency\n' + STATIC_ADD, tmp_path / 'plain')  # the tool's imports
    assert plain.returncode == 0 and all(n in plain.stderr for n in NOISE), plain.stderr  # the noise is real
    tool = _python('import sys\nsys.argv = ["build_latency_table.py"]\nimport tools.build_latency_table\n' + STATIC_ADD,
                   tmp_path / 'tool')
    assert tool.returncode == 0 and not any(n in tool.stderr for n in NOISE), tool.stderr


def test_a_search_in_process_changes_no_process_wide_setting(tmp_path, monkeypatch):
    """The search loop, its SANAS controller server and a study strategy set no device, fork hook or signal
    handler: those belong to the entry point (train_nas.py sets the device; workers.py, which swaps SIGTERM/SIGINT
    for a --workers host, puts them back)."""
    import signal
    import paddle
    from search_fixtures import fixed_reward_search, tiny_config, tiny_dataset
    from ppdet.slim.nas.config import load_search_config
    calls = []
    for owner, name in ((paddle, 'set_device'), (os, 'register_at_fork'), (signal, 'signal')):
        real = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    dataset = tiny_dataset(tmp_path)
    before = paddle.get_device()
    for strategy in ('sanas', 'tpe'):
        os.makedirs(str(tmp_path / strategy))
        setup = load_search_config(tiny_config(tmp_path / strategy, dataset, strategy=strategy, search_steps=2))
        fixed_reward_search(setup).run()
    assert calls == [] and paddle.get_device() == before
