"""PreparedWeights: a peer's converted weights are reused only while their source is unchanged."""

from __future__ import annotations

import torch

from conformance.peers import PreparedWeights


def _counting_cache():
    cache, built = PreparedWeights(), []

    def get(source, key="k"):
        return cache.get(source, key, lambda: built.append(source.sum().item()) or source * 2)

    return cache, built, get


def test_reused_while_the_source_is_the_same_unchanged_tensor():
    _, built, get = _counting_cache()
    w = torch.ones(3)
    first = get(w)
    assert get(w) is first and len(built) == 1


def test_rebuilt_after_an_in_place_write():
    _, built, get = _counting_cache()
    w = torch.ones(3)
    get(w)
    w[0] = 5.0
    assert torch.equal(get(w), torch.tensor([10.0, 2.0, 2.0])) and built == [3.0, 7.0]


def test_rebuilt_for_another_tensor_even_at_a_reused_address():
    _, built, get = _counting_cache()
    get(torch.ones(3))  # freed at once: its memory and id may be handed to the next tensor
    assert torch.equal(get(torch.full((3,), 4.0)), torch.full((3,), 8.0)) and len(built) == 2


def test_clear_and_keys_are_separate():
    cache, built, get = _counting_cache()
    w = torch.ones(3)
    get(w, "a")
    get(w, "b")
    cache.clear()
    get(w, "a")
    assert len(built) == 3
