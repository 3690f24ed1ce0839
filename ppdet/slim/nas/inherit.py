"""Weight inheritance: a candidate starts from a trained parent's weights instead of from scratch.

Tensors are matched by the name of their layer in the candidates' plans (``ConvSpec.name``, the original's fluid
parameter names, e.g. ``double_blaze_01_sep``), not by position in the built network: with the kernel token flipped
a block's two 3x3 depthwise convs (``..._dw_1``, ``..._dw_2``) become one 5x5 (``..._dw``) and every later layer
of the block moves up a place. For each tensor of the child:
- same shape in the parent's layer of the same name: copied;
- same rank, and for conv weights the same kernel: the overlapping corner is copied (the parent sliced where the
  child has fewer channels) and the rest keeps the child's own initialisation (padded where it has more), the way
  slimmable and once-for-all networks share channels;
- no layer of that name in the parent, or another kernel: the child's fresh initialisation.
BatchNorm statistics are tensors of the state dict too and follow the same rules. Not in the original search.
"""
import os
from dataclasses import dataclass, field
from typing import List

import numpy as np
import paddle

from ppdet.slim.nas.vocabulary import CANDIDATES_DIR, candidate_weights

__all__ = ['Inheritance', 'Parent', 'inherit_weights', 'inherit_state', 'parent_weights', 'plan_layers', 'plan_names']


@dataclass
class Parent:
    """A trained candidate to inherit from: its BlazeNet arguments (to rebuild its plan) and its saved weights."""
    blazenet_kwargs: dict
    weights: str


@dataclass
class Inheritance:
    """Which of the child's tensors came from the parent: whole, partly (channels differ), or not at all."""
    copied: List[str] = field(default_factory=list)
    sliced: List[str] = field(default_factory=list)
    fresh: List[str] = field(default_factory=list)

    def summary(self):
        return '{} copied, {} sliced or padded, {} fresh'.format(len(self.copied), len(self.sliced), len(self.fresh))


def _same_kernel(child, parent):
    """Conv weights (rank 4) inherit only with the same spatial kernel: a 3x3 filter is not part of a 5x5 one."""
    return child.ndim != 4 or child.shape[2:] == parent.shape[2:]


def inherit_state(child_state, parent_state):
    """New arrays for ``child_state`` (name -> numpy array) taken from ``parent_state`` by the rules above, and the
    Inheritance saying what happened to each tensor."""
    out, report = {}, Inheritance()
    for name, value in child_state.items():
        parent = parent_state.get(name)
        if parent is None or parent.ndim != value.ndim or not _same_kernel(value, parent):
            out[name] = value
            report.fresh.append(name)
        elif parent.shape == value.shape:
            out[name] = np.array(parent, dtype=value.dtype)
            report.copied.append(name)
        else:
            region = tuple(slice(0, min(a, b)) for a, b in zip(value.shape, parent.shape))
            mixed = np.array(value, copy=True)
            mixed[region] = parent[region]
            out[name] = mixed
            report.sliced.append(name)
    return out, report


def plan_layers(model):
    """Layer path in the built network -> the name of its conv in the plans (``ConvSpec.name``): the backbone's
    from its plan, the head's ``head{i}_loc``/``head{i}_conf`` as ``head_specs`` names them."""
    plan = model.backbone.plan
    layers = {'backbone.stem': plan.stem.name}
    for i, block in enumerate(plan.blocks):
        for j, spec in enumerate(block.branch):
            layers['backbone.blocks.{}.branch.{}'.format(i, j)] = spec.name
        if block.shortcut is not None:
            layers['backbone.blocks.{}.shortcut'.format(i)] = block.shortcut.name
    for i in range(len(model.loc_convs)):
        layers['loc_convs.{}'.format(i)] = 'head{}_loc'.format(i)
        layers['conf_convs.{}'.format(i)] = 'head{}_conf'.format(i)
    return layers


def plan_names(model):
    """State-dict name -> the name of the tensor's layer in the plans and the tensor's own suffix (e.g.
    ``backbone.blocks.3.branch.1.0.weight`` -> ``double_blaze_01_dw_2.0.weight``, ``loc_convs.0.bias`` ->
    ``head0_loc.bias``)."""
    layers = plan_layers(model)
    names = {}
    for name in model.state_dict():
        layer = next((p for p in (name.rsplit('.', 2)[0], name.rsplit('.', 1)[0]) if p in layers), None)
        names[name] = layers[layer] + name[len(layer):] if layer is not None else name
    return names


def _by_plan_name(model):
    names = plan_names(model)
    return {names[k]: v.numpy() for k, v in model.state_dict().items()}


def inherit_weights(model, parent):
    """Give ``model`` what it can take of the weights of ``parent`` (a trained BlazeFace of the same search)."""
    names = plan_names(model)
    values, report = inherit_state(_by_plan_name(model), _by_plan_name(parent))
    model.set_state_dict({name: paddle.to_tensor(values[names[name]]) for name in names})
    return report


def parent_weights(save_dir, tokens):
    """The saved weights of a trained candidate with these tokens under ``save_dir`` (any client's), or None."""
    pattern = '_' + '-'.join(str(int(t)) for t in tokens)
    folder = os.path.join(save_dir, CANDIDATES_DIR)
    names = sorted(n for n in os.listdir(folder) if n.endswith(pattern)) if os.path.isdir(folder) else []
    for name in reversed(names):
        path = candidate_weights(os.path.join(folder, name))
        if os.path.isfile(path):
            return path
    return None
