import math

import pytest
import torch

from generation.processors import AllowOnly, BanAtStart


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


def test_ban_at_start_masks_the_first_reply_token_only():
    scores = torch.tensor([[0.5, 2.0, -1.0, 3.0]])
    ban = BanAtStart([3, 1], start=2)
    first = ban(torch.tensor([[7, 8]]), scores)
    assert torch.isneginf(first[0, [1, 3]]).all() and first[0, 0] == 0.5 and first[0, 2] == -1.0
    assert scores[0, 3] == 3.0  # a new tensor; the input is unchanged
    later = ban(torch.tensor([[7, 8, 0]]), scores)
    assert torch.equal(later, scores)


@pytest.mark.parametrize("bad", [dict(token_ids=[-1], start=0), dict(token_ids=["1"], start=0),
                                 dict(token_ids=[1], start=-1)])
def test_ban_at_start_checks_its_arguments(bad):
    with pytest.raises(ValueError):
        BanAtStart(**bad)


from generation.processors import DRY, SentenceRepetitionGuard  # noqa: E402

DOT = 9  # the sentence-ending token in the hand-built sequences below


def moved(before, after):
    """{token: change} for the scores that moved."""
    return {i: round(float(after[0, i] - before[0, i]), 4) for i in range(before.shape[1]) if after[0, i] != before[0, i]}


def test_guard_lowers_the_token_that_would_continue_an_earlier_sentence():
    scores = torch.zeros(1, 12)
    ids = torch.tensor([[1, 2, 3, DOT, 5, DOT, 1, 2]])  # "1 2 3." then "5." then "1 2" again
    out = SentenceRepetitionGuard([DOT], lam=0.5)(ids, scores)
    assert moved(scores, out) == {3: round(float(torch.log(torch.tensor(0.5))), 4)}
    assert torch.equal(scores, torch.zeros(1, 12))  # a new tensor


def test_guard_is_harder_on_a_sentence_seen_more_often():
    scores = torch.zeros(1, 12)
    ids = torch.tensor([[1, 2, 3, DOT, 1, 2, 3, DOT, 1, 2, 4, DOT, 1, 2]])
    out = SentenceRepetitionGuard([DOT], lam=0.5)(ids, scores)
    log_half = float(torch.log(torch.tensor(0.5)))
    assert moved(scores, out) == {3: round(2 * log_half, 4), 4: round(log_half, 4)}  # 0.25 and 0.5


def test_guard_leaves_short_prefixes_first_sentences_and_lambda_one_alone():
    scores = torch.randn(1, 12)
    guard = SentenceRepetitionGuard([DOT], lam=0.5, min_match=2)
    assert torch.equal(guard(torch.tensor([[1, 2, 3, DOT, 1]]), scores), scores)  # only 1 token matched
    assert torch.equal(guard(torch.tensor([[1, 2, 1, 2]]), scores), scores)  # no earlier sentence
    assert torch.equal(SentenceRepetitionGuard([DOT], lam=1.0)(torch.tensor([[1, 2, 3, DOT, 1, 2]]), scores), scores)


def test_guard_works_row_by_row():
    scores = torch.zeros(2, 12)
    ids = torch.tensor([[1, 2, 3, DOT, 1, 2], [4, 5, 6, DOT, 7, 8]])
    out = SentenceRepetitionGuard([DOT], lam=0.5)(ids, scores)
    assert out[0, 3] < 0 and torch.equal(out[1], scores[1])


@pytest.mark.parametrize("kwargs", [{"lam": 0.0}, {"lam": 1.5}, {"lam": -0.2}, {"min_match": 0}])
def test_guard_checks_its_arguments(kwargs):
    with pytest.raises(ValueError):
        SentenceRepetitionGuard([DOT], **kwargs)
    with pytest.raises(ValueError):
        SentenceRepetitionGuard([], lam=0.5)


def test_dry_penalises_extending_a_repeated_sequence_by_its_length():
    scores = torch.zeros(1, 12)
    ids = torch.tensor([[1, 2, 3, 4, 7, 1, 2, 3]])  # "1 2 3" again: 4 would repeat "1 2 3 4"
    out = DRY(multiplier=0.8, base=1.75, allowed_length=2)(ids, scores)
    assert moved(scores, out) == {4: round(-0.8 * 1.75 ** (3 - 2), 4)}


def test_dry_allows_short_repeats_and_stops_at_breakers():
    scores = torch.zeros(1, 12)
    assert torch.equal(DRY(allowed_length=2)(torch.tensor([[5, 3, 4, 7, 3]]), scores), scores)  # a 1-token match
    ids = torch.tensor([[1, 2, 3, 4, 7, 1, 2, 3]])
    out = DRY(allowed_length=2, breaker_ids=[2])(ids, scores)  # the match "3" stops at the breaker 2
    assert torch.equal(out, scores)
    assert torch.equal(DRY(multiplier=0)(ids, scores), scores)


@pytest.mark.parametrize("kwargs", [{"multiplier": -1}, {"base": 0.5}, {"allowed_length": 0}])
def test_dry_checks_its_arguments(kwargs):
    with pytest.raises(ValueError):
        DRY(**kwargs)


def test_sentence_end_ids_follow_the_tokens_text():
    from generation.processors import sentence_end_ids

    class Tokenizer:  # the two methods sentence_end_ids uses, over a tiny vocabulary
        vocab = {"Ġthe": 0, ".": 1, "Ġcat": 2, '."': 3, "?”": 4, "Ċ": 5, "Mr.": 6, "e.g": 7, "!)": 8, ",": 9,
                 ";Ġ": 10, "Ġ,Ġa": 11}
        text = {"Ġthe": " the", ".": ".", "Ġcat": " cat", '."': '."', "?”": "?”", "Ċ": "\n", "Mr.": "Mr.",
                "e.g": "e.g", "!)": "!)", ",": ",", ";Ġ": "; ", "Ġ,Ġa": " , a"}

        def get_vocab(self):
            return dict(self.vocab)

        def convert_tokens_to_string(self, tokens):
            return "".join(self.text[t] for t in tokens)

    assert sentence_end_ids(Tokenizer()) == [1, 3, 4, 5, 6, 8]  # "Mr." ends like a sentence: a known limit
    assert sentence_end_ids(Tokenizer(), clauses=True) == [1, 3, 4, 5, 6, 8, 9, 10]


def test_the_guard_watches_only_the_text_from_context_start():
    ids = torch.tensor([[1, 2, 3, DOT, 1, 2]])  # "1 2 3 ." is in the prompt; the reply is "1 2"
    scores = torch.zeros(1, 10)
    assert SentenceRepetitionGuard([DOT], lam=0.5)(ids, scores)[0, 3] < 0  # the whole context: 3 is held back
    assert torch.equal(SentenceRepetitionGuard([DOT], lam=0.5, context_start=4)(ids, scores), scores)


def test_decoding_settings_become_processors_in_order_on_hand_built_tensors():
    from generation.backend import Decoding
    from generation.processors import for_decoding

    ids = torch.tensor([[1, 2, 3, 1, 2]])
    scores = torch.tensor([[0.0, 2.0, -1.0, 4.0, 1.0, 1.0]])
    processors = for_decoding(Decoding(guard=False, repetition_penalty=2.0, no_repeat_ngram_size=3), [], [])
    out = scores
    for p in processors:
        out = p(ids, out)
    # the penalty divides the positive scores of tokens already written and multiplies the negative
    # ones; then "1 2 3" may not be written again, so after "1 2" token 3 is banned
    assert out.tolist() == [[0.0, 1.0, -2.0, float("-inf"), 1.0, 1.0]]
    kinds = lambda d, default=1.0: [type(p).__name__ for p in for_decoding(d, [9], [8], default)]  # noqa: E731
    assert kinds(Decoding(guard=False)) == []
    assert kinds(Decoding(guard=False), 1.1) == ["RepetitionPenaltyLogitsProcessor"]  # the call's own penalty
    assert kinds(Decoding(guard=False, repetition_penalty=1.0), 1.1) == []  # the story's 1.0 wins
    assert kinds(Decoding(dry_multiplier=0.8, no_repeat_ngram_size=2)) == [
        "NoRepeatNGramLogitsProcessor", "SentenceRepetitionGuard", "DRY"]


def test_the_guard_holds_back_a_loop_with_no_sentence_mark():
    ids = torch.tensor([[5, 1, 2, 3, 1, 2, 3, 1, 2, 3]])  # "1 2 3" three times, no sentence end anywhere
    scores = torch.zeros(1, 10)
    out = SentenceRepetitionGuard([DOT], lam=0.5)(ids, scores)
    expected = torch.zeros(1, 10)
    expected[0, 1] = 2 * math.log(0.5)  # repeated twice after the first: starting it again gets lam**2
    assert torch.allclose(out, expected)
    assert torch.equal(SentenceRepetitionGuard([DOT], lam=0.5, max_period=0)(ids, scores), scores)  # rule off
    short = torch.tensor([[5, 1, 2, 1, 2]])  # one repeat of a 2-token span: 4 tokens, under min_loop
    assert torch.equal(SentenceRepetitionGuard([DOT], lam=0.5)(short, scores), scores)
    with pytest.raises(ValueError, match="max_period"):
        SentenceRepetitionGuard([DOT], max_period=-1)
