"""Zero-cost proxies: a score of a candidate's UNTRAINED network from one minibatch, as a cheap stand-in for its
trained AP (Abdelfattah et al., ICLR 2021, "Zero-Cost Proxies for Lightweight NAS"; bench/zero_cost.py measures
how well they rank this search space's candidates).

The network is the one a search step trains: ``CandidateTrainer.build`` on the pricer's ``blazenet_kwargs(tokens)``
(the config's BlazeNet/BlazeFace sections overlaid by the tokens), initialised with ``paddle.seed(seed)`` as the
search seeds it. The minibatch is the config's TrainReader's first batch for that seed, decoded in this process.

Each proxy gets a freshly built network (synflow takes absolute values of the weights, a training-mode forward
moves the batch norm statistics: no proxy sees another's leftovers). Only convolution weights are scored (not BN
scales or biases), as the reference implementation (github.com/SamsungLabs/zero-cost-nas) scores only the weights
of Conv2d and Linear layers.

Global state: ``CandidateTrainer.build`` calls ``paddle.seed``; ``scores`` saves Paddle's generator state before and
restores it after, so a caller's random stream is the same with or without it. Nothing else global is touched (no
``paddle.set_device``: the network lives on the device the trainer set, as in the search; no default dtype).
The same seed, tokens and config give the same scores.
"""
import math

import numpy as np
import paddle
import paddle.nn as nn

from ppdet.data.reader import create_reader

__all__ = ['PROXIES', 'minibatch', 'scores', 'synflow', 'grad_norm', 'naswot', 'jacov']

PROXIES = ('synflow', 'grad_norm', 'naswot', 'jacov')


def minibatch(cfg, seed=0):
    """The first batch the config's TrainReader yields with ``seed`` (its shuffle and augmentation): decoded in this
    process (``worker_num=0``: one batch is not worth starting workers, and the result does not depend on them)."""
    return list(create_reader(cfg['TrainReader'], 'train', max_iters=1, seed=seed, worker_num=0))[0]


def _conv_weights(model):
    return [layer.weight for layer in model.sublayers() if isinstance(layer, nn.Conv2D)]


def _head_sum(model, image):
    """R: the sum of the network's raw outputs (box offsets and class logits; the priors are constants)."""
    locs, confs, _ = model(image)
    return locs.sum() + confs.sum()


def synflow(model, batch):
    """Tanaka et al. 2020's synaptic flow: every parameter (and BN buffer) replaced by its absolute value, an input of
    ones, R = sum of the outputs; score = sum over conv weights of |w * dR/dw|. A measure of how much signal flows
    through the network with no data at all (``batch`` gives only the input shape).

    BN: in eval mode on its freshly initialised statistics (mean 0, variance 1, scale 1, shift 0), i.e. the identity
    up to 1/sqrt(1 + eps): what the reference's ``synflow`` (``bn=False``, the network without BN) computes. In
    float64, as the reference, since the products of absolute weights grow geometrically with depth. The network is
    left in float64 with absolute weights: pass a throwaway one (``scores`` does)."""
    model.to(dtype='float64')
    model.eval()
    with paddle.no_grad():
        for p in model.state_dict().values():
            p.set_value(p.abs())
    image = paddle.ones([1] + list(batch['image'].shape[1:]), dtype='float64')
    _head_sum(model, image).backward()
    return float(sum((w * w.grad).abs().sum() for w in _conv_weights(model) if w.grad is not None))


def _loss(model, batch):
    tensors = {k: paddle.to_tensor(batch[k]) for k in ('image', 'gt_bbox', 'gt_class', 'gt_num')}
    return model.loss(**tensors)


def grad_norm(model, batch):
    """Sum over conv weights of the L2 norm of the training loss's gradient on the minibatch (train mode, as a
    training step computes it): how hard the first step would push the network."""
    model.train()
    _loss(model, batch).backward()
    return float(sum(paddle.linalg.norm(w.grad) for w in _conv_weights(model) if w.grad is not None))


def naswot(model, batch):
    """Mellor et al. 2021 (ICML, "NAS without training"): each image's binary code is which ReLU outputs are positive
    (over every ReLU of the network); K[i, j] = the number of units where images i and j agree; score = log|det K|.
    Networks that already separate the minibatch's images into different linear regions score high.

    The ReLUs: each conv's ``nn.ReLU`` and each block's output (``Block.forward`` ends in ``F.relu(x + y)``, which
    a hook on the block sees; a functional ReLU has no layer of its own to hook)."""
    from ppdet.modeling.backbones.blazenet import Block
    codes = []

    def hook(layer, inputs, output):
        codes.append((output.reshape([output.shape[0], -1]) > 0).numpy().astype(np.float64))

    handles = [layer.register_forward_post_hook(hook) for layer in model.sublayers()
               if isinstance(layer, (nn.ReLU, Block))]
    model.train()
    try:
        with paddle.no_grad():
            model(paddle.to_tensor(batch['image']))
    finally:
        for h in handles:
            h.remove()
    c = np.concatenate(codes, axis=1)
    k = c @ c.T + (1 - c) @ (1 - c).T
    return float(np.linalg.slogdet(k)[1])


def jacov(model, batch):
    """Mellor et al. 2020 (arXiv 2006.04647v1): J = the gradient of each image's summed outputs w.r.t. that image;
    score = -sum(log(v + k) + 1 / (v + k)) over the eigenvalues v of the correlation matrix of the images' J
    (k = 1e-5). Higher when the network's local linear maps differ between images (correlations near 0).
    Eigenvalues with ``eigvalsh`` (the matrix is symmetric) where the reference uses ``eig``."""
    model.train()
    image = paddle.to_tensor(batch['image'])
    image.stop_gradient = False
    (jacobian,) = paddle.grad(_head_sum(model, image), image)
    j = jacobian.numpy().reshape(len(batch['image']), -1).astype(np.float64)
    v = np.linalg.eigvalsh(np.corrcoef(j))
    k = 1e-5
    return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


_SCORES = {'synflow': synflow, 'grad_norm': grad_norm, 'naswot': naswot, 'jacov': jacov}


def scores(trainer, pricer, tokens, batch, seed=0, proxies=PROXIES):
    """{proxy: score} of the candidate ``tokens`` (built by ``trainer``, a CandidateTrainer, from ``pricer``'s
    ``blazenet_kwargs``; initial weights from ``paddle.seed(seed)``) on ``batch`` (see ``minibatch``), plus ``params``
    and ``flops`` from the pricer. A score that is not finite (a degenerate kernel) is NaN, not an error. Paddle's
    generator state is restored on return."""
    kwargs = pricer.blazenet_kwargs(list(tokens))
    price = pricer.price(list(tokens))
    out = {'params': price.params, 'flops': price.flops}
    state = paddle.get_rng_state()
    try:
        for name in proxies:
            value = _SCORES[name](trainer.build(kwargs, seed), batch)
            out[name] = value if math.isfinite(value) else float('nan')
    finally:
        paddle.set_rng_state(state)
    return out
