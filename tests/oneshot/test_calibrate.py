"""Calibration passes: activations in one buffer, shared arguments, outputs written in place."""

import pytest
import torch

from conftest import tiny_llama
from prunekit.oneshot.calibrate import _same, capture_inputs, run_block


def _calib(n=4, seqlen=16):
    return torch.randint(0, 256, (n, seqlen), generator=torch.Generator().manual_seed(0))


def test_hidden_states_share_one_buffer_and_equal_arguments_are_stored_once():
    model = tiny_llama()
    inputs = capture_inputs(model, model.model.layers[0], _calib(), batch_size=1)
    assert len(inputs.hidden) == 4
    base = inputs.hidden[0].untyped_storage().data_ptr()
    assert all(h.untyped_storage().data_ptr() == base for h in inputs.hidden)  # views of one tensor
    rotary = [kw["position_embeddings"] for kw in inputs.kwargs]  # the same (cos, sin) for every batch
    assert all(r is rotary[0] for r in rotary)
    # The buffer holds exactly what the block receives: the embeddings of each window.
    torch.testing.assert_close(inputs.hidden[2], model.model.embed_tokens(_calib()[2:3]))


T = torch.arange(6.0).reshape(2, 3)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (T, T.clone(), True),
        (T, T + 1, False),  # values
        (T, T.double(), False),  # dtype
        (T, T.reshape(3, 2), False),  # shape
        ((T, None), (T.clone(), None), True),
        ((T, None), [T.clone(), None], False),  # container type
        ({"mask": T, "flag": True}, {"mask": T.clone(), "flag": True}, True),
        ({"mask": T, "flag": True}, {"mask": T.clone(), "flag": False}, False),
        ({"mask": T}, {"other": T}, False),
        (None, None, True),
    ],
)
def test_same_compares_nested_arguments_by_value(a, b, same):
    assert _same(a, b) is same


def test_inplace_outputs_overwrite_the_inputs_with_the_same_values():
    model = tiny_llama()
    block = model.model.layers[0]
    inputs = capture_inputs(model, block, _calib(), batch_size=2)
    copies = type(inputs)([h.clone() for h in inputs.hidden], inputs.args, inputs.kwargs)
    fresh = run_block(block, copies)
    before = [h.clone() for h in inputs.hidden]
    same = run_block(block, inputs, inplace=True)
    assert same.hidden[0] is inputs.hidden[0]  # written into the input buffer, no new activations
    assert all(torch.equal(a, b) for a, b in zip(same.hidden, fresh.hidden, strict=True))
    assert not torch.equal(before[0], inputs.hidden[0])
