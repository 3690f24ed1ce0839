import pytest

from paddleslim.nas.search_space.search_space_registry import SEARCHSPACE

from search_space import BlazeFaceNasSpace, BlazeFaceNasSpace3x3, search_space_name
from search_space.blazefacespace_nas import STRUCTURE_END, STRUCTURE_START, TokenError, structure_block


def test_registered_in_paddleslim():
    assert SEARCHSPACE.get('BlazeFaceNasSpace') is BlazeFaceNasSpace
    assert SEARCHSPACE.get('BlazeFaceNasSpace3x3') is BlazeFaceNasSpace3x3


def test_init_tokens_give_the_published_blazeface_nas():
    space = BlazeFaceNasSpace()
    assert space.init_tokens() == [2, 1, 3, 8, 2, 1, 2, 1, 1]
    assert space.range_table() == [7, 9, 12, 12, 6, 6, 6, 6, 2]
    args = space.blazenet_args()
    assert args['blaze_filters'] == [[12, 12], [12, 12, 2], [12, 12]]
    assert args['double_blaze_filters'] == [[12, 16, 24, 2], [24, 12, 24], [24, 16, 72, 2], [72, 12, 72]]
    assert args['use_5x5kernel'] is True


def test_token_meanings_follow_the_original_readme():
    args = BlazeFaceNasSpace().blazenet_args([6, 8, 11, 0, 5, 4, 3, 0, 0])
    assert args['blaze_filters'] == [[32, 32], [32, 64, 2], [64, 64]]
    assert args['double_blaze_filters'] == [[64, 32, 96, 2], [96, 24, 96], [96, 20, 8, 2], [8, 8, 8]]
    assert args['use_5x5kernel'] is False


def test_latency_space_fixes_the_kernel_to_3x3():
    assert search_space_name('BlazeFaceNasSpace', 'latency') == 'BlazeFaceNasSpace3x3'
    assert search_space_name('BlazeFaceNasSpace', 'flops') == 'BlazeFaceNasSpace'
    space = BlazeFaceNasSpace3x3()
    assert space.range_table()[8] == 1 and space.init_tokens()[8] == 0
    with pytest.raises(TokenError):
        space.blazenet_args([2, 1, 3, 8, 2, 1, 2, 1, 1])


@pytest.mark.parametrize('tokens', [[2, 1, 3], [2, 1, 3, 8, 2, 1, 2, 1, 1, 0], [7, 1, 3, 8, 2, 1, 2, 1, 1],
                                    [2, 1, 3, 8, 2, 1, 2, 1, -1]])
def test_bad_tokens_are_clear_errors(tokens):
    with pytest.raises(TokenError, match='token|expected 9'):
        BlazeFaceNasSpace().blazenet_args(tokens)


def test_structure_block_is_the_originals_and_parses_as_yaml():
    import yaml
    text = structure_block(BlazeFaceNasSpace().blazenet_args())
    lines = text.splitlines()
    assert lines[0] == STRUCTURE_START and lines[-1] == STRUCTURE_END
    assert lines[1:-1] == ['BlazeNet:',
                           '  blaze_filters: [[12, 12], [12, 12, 2], [12, 12]]',
                           '  double_blaze_filters: [[12, 16, 24, 2], [24, 12, 24], [24, 16, 72, 2], [72, 12, 72]]',
                           '  use_5x5kernel: True',
                           '  with_extra_blocks: true',
                           '  lite_edition: false']
    parsed = yaml.safe_load('\n'.join(lines[1:-1]))['BlazeNet']
    assert parsed['double_blaze_filters'][2] == [24, 16, 72, 2]
