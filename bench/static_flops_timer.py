"""The original's way of pricing a candidate, timed: build BlazeFace as a legacy static Program, run PaddleSlim's
``flops`` on it. Run in its own process with FLAGS_enable_pir_api=0 (bench/run.py does that):

    FLAGS_enable_pir_api=0 python bench/static_flops_timer.py H W '[[tokens...], ...]'

Prints one JSON object: ``flops`` per candidate and ``seconds`` spent in build + flops only (imports and the first,
untimed warm-up build are excluded, so the baseline is as fast as it can be).
"""
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ppdet.utils.logs import quiet_libraries  # noqa: E402
quiet_libraries(static_graphs=True)  # before paddle is imported (glog reads its level then)

import paddle  # noqa: E402

paddle.enable_static()

from paddleslim.analysis import flops  # noqa: E402

from ppdet.modeling.architectures.blazeface import BlazeFace  # noqa: E402
from ppdet.modeling.backbones.blazenet import BlazeNet  # noqa: E402
from search_space import BlazeFaceNasSpace  # noqa: E402


def program_flops(space, tokens, height, width):
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        image = paddle.static.data('image', [None, 3, height, width], 'float32')
        BlazeFace(BlazeNet(**space.blazenet_args(tokens)))(image)
    return flops(main)


def main():
    height, width, token_lists = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    space = BlazeFaceNasSpace()
    program_flops(space, token_lists[0], height, width)  # warm-up: first-use costs are not the method's
    start = time.perf_counter()
    values = [program_flops(space, t, height, width) for t in token_lists]
    seconds = time.perf_counter() - start
    print(json.dumps({'flops': values, 'seconds': seconds}))


if __name__ == '__main__':
    main()
