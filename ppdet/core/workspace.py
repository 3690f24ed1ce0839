"""Registered modules built from YAML: one YAML key per constructor argument.

A class decorated with ``@register`` can be written in YAML as ``!ClassName {args}`` or configured by a
top-level section named after it (``BlazeNet: {...}``) and built with ``create('BlazeNet')``. Arguments the
YAML omits take the constructor's defaults, exactly as PaddleDetection's workspace does; that is why the
original search ran with the decoder defaults.

Tagged values are kept as ``Tagged`` dicts until something builds them, so ``-o a.b.c=v`` overrides reach
into them like into any other section.
"""
import inspect
import os
import warnings

import yaml

__all__ = ['ConfigError', 'AttrDict', 'Tagged', 'register', 'create', 'build', 'load_config', 'merge_config',
           'check_top_level_keys', 'config_kwargs']


class ConfigError(Exception):
    """A user mistake in a config file or a command-line override; printed as one line, never a traceback."""


class AttrDict(dict):
    """The top-level config: keys are readable as attributes (``cfg.max_iters``)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value


class Tagged(dict):
    """The arguments of a ``!ClassName`` YAML node, built into an object by ``build``."""

    def __init__(self, cls, kwargs, source='<config>'):
        super().__init__(kwargs)
        self.cls = cls
        self.source = source

    def __repr__(self):
        return '!{} {}'.format(self.cls.__name__, dict.__repr__(self))


_REGISTRY = {}


def _parameters(cls):
    return {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != 'self' and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _type_ok(value, default):
    """A YAML value fits an argument when it has the kind of its default (None, tags and objects fit anything)."""
    if value is None or default is None or isinstance(value, Tagged):
        return True
    if not isinstance(value, (bool, int, float, str, list, tuple, dict)):
        return True  # an object passed in code (a built backbone), not a YAML value
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return True


def check_arguments(cls, kwargs, source):
    """Raise ConfigError for keys the class does not take, missing required ones, or values of the wrong kind."""
    params = _parameters(cls)
    for key, value in kwargs.items():
        if key not in params:
            raise ConfigError('{}: {} has no key {!r}; known keys: {}'.format(
                source, cls.__name__, key, ', '.join(params)))
        default = params[key].default
        if default is not inspect.Parameter.empty and not _type_ok(value, default):
            raise ConfigError('{}: {}.{} should be a {} like {!r}, got {!r}'.format(
                source, cls.__name__, key, type(default).__name__, default, value))


def _yaml_constructor(cls):
    def construct(loader, node):
        source = getattr(loader, 'name', '<config>')
        if isinstance(node, yaml.MappingNode):
            kwargs = loader.construct_mapping(node, deep=True)
        elif isinstance(node, yaml.ScalarNode) and not loader.construct_scalar(node):
            kwargs = {}
        else:
            raise ConfigError('{}, line {}: !{} takes a mapping of arguments'.format(
                source, node.start_mark.line + 1, cls.__name__))
        check_arguments(cls, kwargs, '{}, line {}'.format(source, node.start_mark.line + 1))
        return Tagged(cls, kwargs, source)
    return construct


class _Loader(yaml.SafeLoader):
    """SafeLoader plus the tags of registered classes."""


def register(cls):
    """Make ``cls`` creatable from a top-level section and usable as a ``!Tag`` in YAML."""
    _REGISTRY[cls.__name__] = cls
    _Loader.add_constructor('!' + cls.__name__, _yaml_constructor(cls))
    return cls


def registered(name):
    if name not in _REGISTRY:
        raise ConfigError('{!r} is not a registered module; known: {}'.format(name, ', '.join(sorted(_REGISTRY))))
    return _REGISTRY[name]


def build(value):
    """Build every ``Tagged`` inside ``value`` (lists and dicts are walked) into its object."""
    if isinstance(value, Tagged):
        kwargs = {k: build(v) for k, v in value.items()}
        check_arguments(value.cls, kwargs, value.source)
        return value.cls(**kwargs)
    if isinstance(value, list):
        return [build(v) for v in value]
    if isinstance(value, dict):
        return {k: build(v) for k, v in value.items()}
    return value


def config_kwargs(name, cfg, **overrides):
    """The arguments ``create`` would pass to ``name``: its section of ``cfg``, shared top-level keys, then
    overrides.

    Arguments the section omits are left out, so the constructor's defaults apply (as in PaddleDetection).
    """
    cls = registered(name)
    section = cfg.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError('{}: section {} should be a mapping, got {!r}'.format(
            cfg.get('filename', '<config>'), name, section))
    kwargs = dict(section)
    for key in getattr(cls, '__shared__', ()):
        if key in cfg and key not in kwargs:
            kwargs[key] = cfg[key]
    kwargs.update(overrides)
    check_arguments(cls, kwargs, '{} section {}'.format(cfg.get('filename', '<config>'), name))
    return kwargs


def create(name, cfg, **overrides):
    """Build the registered class ``name`` from its top-level section of ``cfg``.

    The config is always passed in (there is no process-wide one), so two configs loaded in one process never
    share state. Keys listed in the class's ``__shared__`` are taken from the top level of the config
    (``num_classes``); keys in ``__inject__`` hold the name of another registered class and are created the same
    way.
    """
    cls = registered(name)
    kwargs = config_kwargs(name, cfg, **overrides)
    params = _parameters(cls)
    for key in getattr(cls, '__inject__', ()):
        value = kwargs.get(key, params[key].default)
        if isinstance(value, str):
            kwargs[key] = create(value, cfg)
    return cls(**build(kwargs))


def load_config(path):
    """Read a YAML config into a new ``AttrDict`` (each call returns its own). A ``_BASE_: other.yml`` key
    (relative to the file, as in PaddleDetection 2.x) reads that config first and overlays this one on it:
    sections merge key by key, anything else (a list, a tagged scheduler) is replaced."""
    cfg = AttrDict(_read_config(path))
    cfg['filename'] = path
    return cfg


def _overlay(base, top):
    for key, value in top.items():
        if isinstance(value, dict) and not isinstance(value, Tagged) and isinstance(base.get(key), dict):
            _overlay(base[key], value)
        else:
            base[key] = value
    return base


def _read_config(path, including=()):
    if not os.path.isfile(path):
        raise ConfigError('config file {} not found'.format(path) if not including else
                          '{}: _BASE_ {} not found'.format(including[-1], path))
    try:
        with open(path) as f:
            data = yaml.load(f, Loader=_Loader)
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        raise ConfigError('{}, line {}: {}; known tags: {}'.format(
            path, mark.line + 1 if mark else '?', e.problem.replace('\n', ' '),
            ', '.join('!' + n for n in sorted(_REGISTRY)))) from None
    except yaml.YAMLError as e:
        raise ConfigError('{}: not valid YAML: {}'.format(path, str(e).replace('\n', ' '))) from None
    if not isinstance(data, dict):
        raise ConfigError('{}: the top level should be a mapping of keys'.format(path))
    base = data.pop('_BASE_', None)
    if base is None:
        return data
    base = os.path.join(os.path.dirname(path), str(base))
    if os.path.abspath(base) in map(os.path.abspath, including + (path,)):
        raise ConfigError('{}: _BASE_ {} includes itself'.format(path, base))
    return _overlay(_read_config(base, including + (path,)), data)


def merge_config(overrides, cfg):
    """Merge ``{'a.b.c': value}`` (from ``-o a.b.c=value``) into ``cfg`` and return it."""
    for dotted, value in (overrides or {}).items():
        keys = dotted.split('.')
        node = cfg
        for i, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ConfigError('-o {}: {} is not a section'.format(dotted, '.'.join(keys[:i + 1])))
            node = child
        if isinstance(node, Tagged):
            check_arguments(node.cls, {keys[-1]: value}, '-o ' + dotted)
        node[keys[-1]] = value
    return cfg


def check_top_level_keys(cfg, known, sections=()):
    """Warn about top-level keys that nothing reads: a typo such as ``max_iter``, or a section of a registered
    class the program never builds from the config (``SSDLoss:``); ``sections`` are the ones it builds."""
    unused = [k for k in cfg if k not in known and k not in sections and k != 'filename']
    for key in unused:
        if key in _REGISTRY:
            warnings.warn('{}: top-level section {!r} is not read (the sections read are {}); remove it, or put its '
                          'keys where they are read'.format(cfg.get('filename', '<config>'), key,
                                                            ', '.join(sections)), stacklevel=2)
        else:
            warnings.warn('{}: top-level key {!r} is not used by anything; check its spelling'.format(
                cfg.get('filename', '<config>'), key), stacklevel=2)
    return unused
