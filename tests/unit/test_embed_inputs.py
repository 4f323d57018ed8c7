"""Input preparation: bad inputs fail alone, instructions are prefixed."""

from dataclasses import replace

from embedder.domain.inputs import EMPTY_INPUT, INPUT_TOO_LONG, batch_ranges, prepare
from kit.embedding_models import HASH_BOW


def test_good_inputs_pass_with_instruction_and_bad_ones_fail_alone() -> None:
    model = replace(HASH_BOW, max_input_chars=10)
    prepared = prepare(
        ["alpha", "", "   ", "x" * 11, "beta"], model, is_query=True, instruction="q: "
    )
    assert prepared.texts == ["q: alpha", "q: beta"]
    assert prepared.indexes == [0, 4]
    assert [(f.index, f.reason) for f in prepared.failures] == [
        (1, EMPTY_INPUT),
        (2, EMPTY_INPUT),
        (3, INPUT_TOO_LONG),
    ]
    assert "at most 10" in prepared.failures[2].message


def test_batch_ranges_cover_everything_in_order() -> None:
    assert batch_ranges(0, 4) == []
    assert batch_ranges(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
