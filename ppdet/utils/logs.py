"""Library noise kept out of the user's terminal, and the one log format of the driver and the tools.

On every run Paddle prints glog INFO lines from its C++ core (``I1201 ... pir_interpreter``), a ccache notice from
its extension builder, setuptools' "replacing distutils" notice and, in every training process, a batch-norm notice
about its running statistics; and every optimizer built over the head's biases (which carry their own regularizer
by design, as the original's did) logs an INFO notice; matplotlib logs "generated new fontManager" the first time
it runs on a machine. None of it is for users; Paddle's and glog's warnings and errors still get through.

These are process-wide settings, so the library never makes them: each entry point (``train_nas.py``, the tools,
the benchmarks, the tests' conftest) calls ``quiet_libraries`` first, before anything imports paddle (glog reads
its level then), and ``setup_logging`` in its main.
"""
import logging
import os
import warnings

__all__ = ['quiet_libraries', 'setup_logging', 'LOG_FORMAT']

LOG_FORMAT = '%(asctime)s-%(levelname)s: %(message)s'
NOISY_WARNINGS = ('No ccache found', 'Setuptools is replacing distutils',
                  'When training, we now always track global mean and variance',
                  'no variable in your model',  # saving a latency table's parameter-free op programs
                  "Tensor do not have 'place' interface for pir graph mode")  # Paddle's own code, in jit.save
NOISY_RECORDS = ('If regularizer of a Parameter has been set',)


def quiet_libraries(static_graphs=False):
    """glog at WARNING and above (a user's own GLOG_minloglevel wins), the import notices ignored, matplotlib's
    font-cache notice dropped.

    ``static_graphs``: for the tools that build static programs (latency tables, export). Paddle 3.3 warns
    "static graph(PIR) not support input out tensor" the first time a static program adds two tensors, for its
    own ``paddle.add`` (``out=None``); the line is a glog WARNING, so only glog at ERROR keeps it out. Errors still
    show.
    """
    os.environ.setdefault('GLOG_minloglevel', '2' if static_graphs else '1')
    for text in NOISY_WARNINGS:
        warnings.filterwarnings('ignore', message=text)
    logging.getLogger('matplotlib').setLevel(logging.WARNING)


class _DropLibraryNotices(logging.Filter):
    """Paddle's optimizer logs its regularizer notice on the root logger at INFO, once per candidate."""

    def filter(self, record):
        return not record.getMessage().startswith(NOISY_RECORDS)


def setup_logging(level=logging.INFO, prefix=''):
    """What an entry point calls first: one format, warnings logged, library notices dropped. ``prefix`` starts
    every message (``worker 1: ``), so the interleaved lines of a search's local workers say whose they are.

    ``force``: importing paddle already gave the root logger a handler of its own, which would keep ours out.
    """
    logging.basicConfig(level=level, format=LOG_FORMAT.replace('%(message)s', prefix + '%(message)s'), force=True)
    logging.captureWarnings(True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropLibraryNotices())
    # PaddleSlim's loggers have their own handlers and levels: its controller's INFO line per reward repeats the
    # search's own line per candidate, so only its warnings are kept
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith('paddleslim') and isinstance(logger, logging.Logger):
            logger.setLevel(logging.WARNING)
