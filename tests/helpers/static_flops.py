"""Build BlazeFace as a legacy static Program and print PaddleSlim's FLOPs of it (run with FLAGS_enable_pir_api=0).

    python tests/helpers/static_flops.py H W '[[tokens...], ...]'
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import paddle  # noqa: E402

paddle.enable_static()

from paddleslim.analysis import flops  # noqa: E402

from ppdet.modeling.architectures.blazeface import BlazeFace  # noqa: E402
from ppdet.modeling.backbones.blazenet import BlazeNet  # noqa: E402
from search_space import BlazeFaceNasSpace  # noqa: E402


def program_flops(tokens, height, width):
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        image = paddle.static.data('image', [None, 3, height, width], 'float32')
        BlazeFace(BlazeNet(**BlazeFaceNasSpace().blazenet_args(tokens)))(image)
    return flops(main)


if __name__ == '__main__':
    height, width, token_lists = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    print(json.dumps([program_flops(t, height, width) for t in token_lists]))
