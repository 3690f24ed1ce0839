"""BlazeFace: BlazeNet features -> per-map prior boxes and 3x3 loc/conf convs -> SSD loss or decoded boxes."""
import paddle
import paddle.nn as nn

from ppdet.core.workspace import register
from ppdet.modeling.layers import ConvSpec, PlacedConv, PlacedOp, build_conv, conv_units, convs_of
from ppdet.modeling.losses import SSDLoss
from ppdet.modeling.ops import PRIOR_VARIANCES, SSDOutputDecoder, generate_priors, num_priors_per_location

__all__ = ['BlazeFace', 'head_specs', 'place_blazeface', 'place_blazeface_units']

DEFAULT_MIN_SIZES = [[16., 24.], [32., 48., 64., 80., 96., 128.]]
DEFAULT_DENSITIES = [[2, 2], [2, 1, 1, 1, 1, 1]]


def head_specs(feature_channels, num_classes=2, min_sizes=DEFAULT_MIN_SIZES, use_density_prior_box=False,
               densities=DEFAULT_DENSITIES):
    """The (loc, conf) conv pair predicting on each feature map: priors x 4 offsets, priors x classes scores."""
    pairs = []
    for i, channels in enumerate(feature_channels):
        priors = num_priors_per_location(min_sizes[i], densities[i] if use_density_prior_box else None,
                                         use_density_prior_box)
        pairs.append((ConvSpec('head{}_loc'.format(i), channels, priors * 4, 3, norm=False, relu=False),
                      ConvSpec('head{}_conf'.format(i), channels, priors * num_classes, 3, norm=False, relu=False)))
    return pairs


def place_blazeface_units(backbone_plan, head_kwargs, height, width):
    """Every runtime unit of the deployed network (``forward``, without the decoder) at this input size, in
    execution order: the backbone's, each map's loc and conf convs with their bias adds, then the head's tail."""
    units, feature_sizes = backbone_plan.place_units(height, width)
    outputs, last_dims = [], []
    num_classes = head_kwargs.get('num_classes', 2)
    for (loc, conf), (h, w) in zip(head_specs(backbone_plan.feature_channels, **head_kwargs), feature_sizes):
        for spec, last in ((loc, 4), (conf, num_classes)):
            units += conv_units(PlacedConv(spec, h, w))
            outputs.append((spec.out_channels, h, w))
            last_dims.append(last)
    units.append(PlacedOp('head_tail', tuple(outputs), last_dims=tuple(last_dims)))
    return units


def place_blazeface(backbone_plan, head_kwargs, height, width):
    """Every conv of the network at this input size, in execution order (what FLOPs and latency price)."""
    return convs_of(place_blazeface_units(backbone_plan, head_kwargs, height, width))


@register
class BlazeFace(nn.Layer):
    """BlazeFace (https://arxiv.org/abs/1907.05047) with the original's head, loss and decoder.

    Args:
        backbone: a BlazeNet (or the name of the config section to create it from).
        output_decoder: SSDOutputDecoder arguments (or a decoder); omitted keys take the decoder's defaults,
            which is what the original search ran with.
        min_sizes, max_sizes, steps: prior boxes per feature map (aspect ratio 1, no flip, no clip).
        num_classes: classes including background.
        use_density_prior_box, densities: density prior boxes instead.
    """
    __inject__ = ['backbone']
    __shared__ = ['num_classes']

    def __init__(self, backbone='BlazeNet', output_decoder={}, min_sizes=DEFAULT_MIN_SIZES, max_sizes=None,
                 steps=[8., 16.], num_classes=2, use_density_prior_box=False, densities=DEFAULT_DENSITIES):
        super().__init__()
        if max_sizes:
            raise ValueError('BlazeFace.max_sizes is not supported (the original never sets it)')
        self.backbone = backbone
        self.num_classes = num_classes
        self.min_sizes, self.steps = min_sizes, steps
        self.use_density_prior_box, self.densities = use_density_prior_box, densities
        self.decoder = output_decoder if callable(output_decoder) else SSDOutputDecoder(**output_decoder)
        self.ssd_loss = SSDLoss()
        pairs = head_specs(backbone.out_channels, num_classes, min_sizes, use_density_prior_box, densities)
        build = getattr(backbone, 'conv_builder', build_conv)  # a supernet's sub-network slices its head too
        self.loc_convs = nn.LayerList([build(loc) for loc, _ in pairs])
        self.conf_convs = nn.LayerList([build(conf) for _, conf in pairs])
        self._priors = {}

    def priors(self, image_shape, feature_shapes):
        """Prior boxes for this input size, computed once per size (they are constants of the shape)."""
        key = (tuple(image_shape), tuple(tuple(f) for f in feature_shapes))
        if key in self._priors:
            return self._priors[key]
        priors = paddle.to_tensor(generate_priors(key[1], key[0], self.min_sizes, self.steps,
                                                  self.use_density_prior_box, self.densities))
        if paddle.in_dynamic_mode():  # a constant traced into a static program must not leak into dygraph
            self._priors[key] = priors
        return priors

    def forward(self, image):
        """Raw predictions: locs [N, P, 4], conf logits [N, P, classes], priors [P, 4]."""
        features = self.backbone(image)
        locs, confs = [], []
        for feature, loc_conv, conf_conv in zip(features, self.loc_convs, self.conf_convs):
            locs.append(_flatten_nhwc(loc_conv(feature), 4))
            confs.append(_flatten_nhwc(conf_conv(feature), self.num_classes))
        priors = self.priors(image.shape[2:], [f.shape[2:] for f in features])
        return paddle.concat(locs, axis=1), paddle.concat(confs, axis=1), priors

    def loss(self, image, gt_bbox, gt_class, gt_num):
        locs, confs, priors = self(image)
        return self.ssd_loss(locs, confs, gt_bbox, gt_class, gt_num, priors, PRIOR_VARIANCES)

    def predict(self, image):
        """Decoded detections: rows [label, score, x1, y1, x2, y2] normalised, and the row count per image."""
        locs, confs, priors = self(image)
        return self.decoder(locs, confs, priors, PRIOR_VARIANCES)


def _flatten_nhwc(x, last_dim):
    """[N, priors*last_dim, H, W] -> [N, H*W*priors, last_dim], the order prior boxes are generated in."""
    return x.transpose([0, 2, 3, 1]).reshape([0, -1, last_dim])
