import pytest
import torch

from generation.processors import AllowOnly


def test_allow_only_keeps_the_listed_scores_and_masks_the_rest():
    scores = torch.tensor([[0.5, 2.0, -1.0, 3.0, 0.1]])
    out = AllowOnly([2, 0])(torch.tensor([[7, 8]]), scores)
    assert out[0, 0] == 0.5 and out[0, 2] == -1.0
    assert torch.isinf(out[0, [1, 3, 4]]).all() and (out[0, [1, 3, 4]] < 0).all()
    assert out.argmax().item() == 0  # the best allowed, although token 3 scored higher
    assert scores[0, 3] == 3.0  # a new tensor; the input is unchanged


@pytest.mark.parametrize("bad", [[], [-1], ["1"]])
def test_allow_only_checks_its_arguments(bad):
    with pytest.raises(ValueError):
        AllowOnly(bad)
