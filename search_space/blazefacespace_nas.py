"""The BlazeFace-NAS search space: 9 tokens -> BlazeNet arguments, registered in PaddleSlim's SEARCHSPACE.

This is the one place that maps tokens to an architecture; the model builder and the pricing both start from
``BlazeFaceNasSpace.blazenet_args``.
"""
from paddleslim.nas.search_space.search_space_base import SearchSpaceBase
from paddleslim.nas.search_space.search_space_registry import SEARCHSPACE

__all__ = ['BlazeFaceNasSpace', 'BlazeFaceNasSpace3x3', 'search_space_name', 'structure_block', 'TOKEN_NAMES']

# What each token chooses (the order of ``range_table``): the parameter names a study and its dashboard show.
TOKEN_NAMES = ('blaze_filter_num1', 'blaze_filter_num2', 'double_filter_num1', 'double_filter_num2',
               'mid_filter_num1', 'mid_filter_num2', 'mid_filter_num3', 'mid_filter_num4', 'use_5x5kernel')

STRUCTURE_START = '------------->>> BlazeFace-NAS structure start: <<<----------------'
STRUCTURE_END = '-------------->>> BlazeFace-NAS structure end! <<<-----------------'


class TokenError(ValueError):
    """Tokens that do not fit the space (wrong length or a value out of range)."""


@SEARCHSPACE.register
class BlazeFaceNasSpace(SearchSpaceBase):
    """Channels of every block and the depthwise kernel size (README of the original, "定义搜索空间").

    tokens[0] stem/first blocks, tokens[1] single blocks, tokens[2:4] double blocks, tokens[4:8] their middle
    (projection) channels, tokens[8] 5x5 kernels.
    """
    blaze_filter_num1 = [4, 8, 12, 16, 20, 24, 32]
    blaze_filter_num2 = [8, 12, 16, 20, 24, 32, 40, 48, 64]
    mid_filter_num = [8, 12, 16, 20, 24, 32]
    double_filter_num = [8, 12, 16, 24, 32, 40, 48, 64, 72, 80, 88, 96]
    use_5x5kernel = [0, 1]
    initial_tokens = [2, 1, 3, 8, 2, 1, 2, 1, 1]

    def __init__(self, input_size=None, output_size=None, block_num=None, block_mask=None):
        super().__init__(input_size, output_size, block_num, block_mask)

    def init_tokens(self):
        return list(self.initial_tokens)

    def range_table(self):
        return [len(self.blaze_filter_num1), len(self.blaze_filter_num2),
                len(self.double_filter_num), len(self.double_filter_num),
                len(self.mid_filter_num), len(self.mid_filter_num),
                len(self.mid_filter_num), len(self.mid_filter_num),
                len(self.use_5x5kernel)]

    def check_tokens(self, tokens):
        ranges = self.range_table()
        if len(tokens) != len(ranges):
            raise TokenError('expected {} tokens, got {}: {}'.format(len(ranges), len(tokens), list(tokens)))
        for i, (t, r) in enumerate(zip(tokens, ranges)):
            if not 0 <= int(t) < r:
                raise TokenError('token {} is {}, outside 0..{} ({})'.format(i, t, r - 1, type(self).__name__))
        return [int(t) for t in tokens]

    def blazenet_args(self, tokens=None):
        """The ``BlazeNet:`` arguments of a token vector: the original's ``get_nas_cnf``."""
        t = self.check_tokens(self.init_tokens() if tokens is None else tokens)
        b1, b2 = self.blaze_filter_num1[t[0]], self.blaze_filter_num2[t[1]]
        d1, d2 = self.double_filter_num[t[2]], self.double_filter_num[t[3]]
        m = [self.mid_filter_num[i] for i in t[4:8]]
        return {
            'blaze_filters': [[b1, b1], [b1, b2, 2], [b2, b2]],
            'double_blaze_filters': [[b2, m[0], d1, 2], [d1, m[1], d1], [d1, m[2], d2, 2], [d2, m[3], d2]],
            'use_5x5kernel': bool(self.use_5x5kernel[t[8]]),
            'with_extra_blocks': True,
            'lite_edition': False,
        }

    def token2arch(self, tokens=None):
        """PaddleSlim's hook; here the architecture is its BlazeNet arguments (models are built by the search)."""
        return self.blazenet_args(tokens)


@SEARCHSPACE.register
class BlazeFaceNasSpace3x3(BlazeFaceNasSpace):
    """The space for latency searches: latency tables hold 3x3 depthwise convs only, so the kernel is fixed."""
    use_5x5kernel = [0]
    initial_tokens = [2, 1, 3, 8, 2, 1, 2, 1, 0]


def search_space_name(name, ctype, table_prices_5x5=False):
    """The registered space to search: a latency constraint whose table has no 5x5 convs (as the original's has
    none) selects the 3x3-only variant of BlazeFaceNasSpace."""
    if name == 'BlazeFaceNasSpace' and ctype == 'latency' and not table_prices_5x5:
        return 'BlazeFaceNasSpace3x3'
    return name


def structure_block(blazenet_args):
    """The printed block users paste into a training config, line for line as the original prints it.

    ``blazenet_args``: what the search built (the config's BlazeNet section overlaid by the tokens'). This port's
    keys that change the network follow, only when set away from the original's, so that the block rebuilds what was
    searched: ``topology: paddledet`` (PaddleDetection 2.x's network), or ``dense_double_5x5: false``.
    """
    lines = [STRUCTURE_START, 'BlazeNet:']
    for key in ('blaze_filters', 'double_blaze_filters', 'use_5x5kernel'):
        lines.append('  {}: {}'.format(key, blazenet_args[key]))
    lines += ['  with_extra_blocks: true', '  lite_edition: false']
    if blazenet_args.get('topology', 'original') != 'original':
        lines.append('  topology: {}'.format(blazenet_args['topology']))
    elif blazenet_args.get('dense_double_5x5') is False:
        lines.append('  dense_double_5x5: false')
    return '\n'.join(lines + [STRUCTURE_END])
