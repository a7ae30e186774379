"""DITTO's parts without the model: corpus reading and its errors, pseudo-repetitive samples,
the loss on hand-built logits, the repetition metrics, and the decoding settings."""

import math

import pytest
import torch

from common.errors import InvalidInput
from generation.backend import Decoding, check_lambda
from generation.corpus import MIN_SENTENCES, Corpus, paragraphs_of, read_corpus, split_sentences, usable
from generation.ditto import TrainConfig, ditto_loss, kl_loss, mle_loss, repeat_sample
from generation.evaluation import reference_logprobs, summarize
from generation.metrics import rep_n, rep_r, rep_w, repeated_sentences, repeats_by_paragraph
from generation.processors import for_decoding

WIKI = """ = Robert Boulter = 

 Robert Boulter is an English film , television and theatre actor . He had a guest @-@ starring role on the television series The Bill in 2000 . This was followed by a starring role in the play Herons written by Simon Stephens .

 = = Career = = 

 In 2006 , Boulter starred alongside Whishaw in the play Citizenship written by Mark Ravenhill . He appeared on a 2006 episode of the television series , Doctors !
"""


def test_sentences_are_split_on_the_text_and_headings_dropped():
    paragraphs = paragraphs_of(WIKI)
    assert len(paragraphs) == 2 and not any("=" in p for p in paragraphs)
    sentences = split_sentences(paragraphs[0])
    assert len(sentences) == 3
    assert sentences[1] == "He had a guest-starring role on the television series The Bill in 2000."  # prose again
    assert split_sentences('She said "Go." Then he left! Why? ') == ['She said "Go."', "Then he left!", "Why?"]
    assert usable("This was followed by a starring role.") and not usable("Why?")
    assert not usable("1 , 2 , 3 , 4 , 5 , 6 .")  # numbers, not prose


def test_wikitext_becomes_prose_without_its_unknown_word_sentences():
    tokenized = (' It was the city \'s first 1 @,@ 000 @-@ seat hall ( built in 1902 ) . The <unk> sat there . '
                 'He called it " the barn " ; nobody don \'t agree , 2 @.@ 5 % more or less !')
    assert paragraphs_of(tokenized) == [
        "It was the city's first 1,000-seat hall (built in 1902). "
        'He called it "the barn"; nobody don\'t agree, 2.5% more or less!']
    prose = 'He said " wait " , like that . The <b> tag stays .'  # text not in WikiText's style is left alone
    assert paragraphs_of(prose) == [prose]


def test_gutenberg_header_and_licence_are_left_out():
    text = ("The Project Gutenberg eBook of X\n\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\n"
            "It was a\nbright day.\n\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\n\nLicence text.\n")
    assert paragraphs_of(text) == ["It was a bright day."]


def test_bad_corpora_get_clear_errors(tmp_path):
    with pytest.raises(InvalidInput, match="cannot read corpus"):
        read_corpus(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(InvalidInput, match="0 distinct usable sentences"):
        read_corpus(empty)
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("\n\n".join("1 2 3 . 4 5 6 ." for _ in range(100)))
    with pytest.raises(InvalidInput, match="distinct usable sentences"):
        read_corpus(numbers)
    one_line = tmp_path / "one.txt"
    one_line.write_text("\n".join(["The cat sat on the mat by the door. The cat sat on the mat by the door."] * 500))
    with pytest.raises(InvalidInput, match=r"has 1 distinct usable sentences .*need at least"):
        read_corpus(one_line)
    with pytest.raises(InvalidInput, match="holdout"):
        read_corpus(one_line, holdout=1.0)


def test_the_held_out_part_is_the_end_and_never_in_the_pairs(tmp_path):
    text = "\n\n".join(f"Paragraph {i} starts here today. It has sentence number {i} in it now." for i in range(40))
    path = tmp_path / "c.txt"
    path.write_text(text)
    corpus = read_corpus(path, holdout=0.25)
    assert len(corpus.train) == 30 and len(corpus.held_out) == 10
    assert corpus.held_out[0].startswith("Paragraph 30 ")
    assert not any(f"number {i} " in s for i in range(30, 40) for _, s in corpus.pairs)  # nothing held out
    assert len(corpus.pairs) == 30 and corpus.pairs[0] == ("Paragraph 0 starts here today.",
                                                          "It has sentence number 0 in it now.")
    assert len({s for _, s in corpus.pairs}) >= MIN_SENTENCES


def test_pseudo_repetitive_sample_repeats_the_sentence_after_its_prefix():
    sample = repeat_sample([1, 2, 3], [7, 8], 10)
    assert sample.ids == [1, 2, 3, 7, 8, 7, 8, 7, 8, 7] and sample.start == 3 and sample.period == 2
    assert repeat_sample([1, 2, 3], [7, 8, 9, 10], 10) is None  # two copies do not fit
    assert repeat_sample([1], [], 10) is None


def logits_for(probs_of_next: list[float], ids: list[int], vocab: int = 4) -> torch.Tensor:
    """Logits whose softmax at position t gives ids[t + 1] probability probs_of_next[t], the
    rest spread evenly over the other tokens."""
    rows = []
    for t, p in enumerate(probs_of_next):
        target = ids[t + 1]
        row = [math.log((1 - p) / (vocab - 1))] * vocab
        row[target] = math.log(p)
        rows.append(row)
    rows.append([0.0] * vocab)  # the last position predicts nothing
    return torch.tensor([rows], requires_grad=True)


def test_ditto_loss_is_zero_when_each_copy_is_lambda_times_as_likely():
    ids = [0, 1, 2, 1, 2, 1, 2]  # prefix [0], sentence [1, 2] three times
    probs = [0.8, 0.8, 0.4, 0.4, 0.2, 0.2]  # halves each repetition
    loss = ditto_loss(logits_for(probs, ids), torch.tensor([ids]), [1], [2], lam=0.5)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_ditto_loss_punishes_a_repetition_that_grows_more_likely():
    ids = [0, 1, 2, 1, 2]
    probs = [0.5, 0.5, 0.9, 0.9]  # the second copy is more likely than the first
    logits = logits_for(probs, ids)
    loss = ditto_loss(logits, torch.tensor([ids]), [1], [2], lam=0.5)
    assert loss.item() == pytest.approx(-math.log(1 - abs(0.9 - 0.25)), rel=1e-4)
    loss.backward()
    grad = logits.grad[0].abs().sum(dim=1)
    assert grad[0] == 0 and grad[1] == 0  # the prefix and the first copy get no gradient (sg)
    assert grad[2] > 0 and grad[3] > 0
    # lam = 1 asks each copy to be as likely as the one before: this sample is then a smaller loss
    assert ditto_loss(logits_for(probs, ids), torch.tensor([ids]), [1], [2], lam=1.0) < loss


def test_mle_loss_is_the_mean_negative_log_likelihood():
    ids = [0, 1, 2, 3]
    loss = mle_loss(logits_for([0.5, 0.25, 0.125], ids), torch.tensor([ids]))
    assert loss.item() == pytest.approx(-(math.log(0.5) + math.log(0.25) + math.log(0.125)) / 3, rel=1e-5)


def test_kl_anchor_is_zero_for_the_base_distribution_and_the_kl_divergence_otherwise():
    base = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    assert kl_loss(base, base).item() == pytest.approx(0.0, abs=1e-7)
    moved = torch.log(torch.tensor([[[0.25, 0.5, 0.25]]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(0.25 / 0.5)  # sum p_base log(p_base / p_model)
    assert kl_loss(moved, base).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(InvalidInput, match="--anchor kl needs --lora"):
        TrainConfig(lora=False, anchor="kl").check()
    TrainConfig(lora=False, anchor="mle").check()


def test_repetition_metrics_on_hand_examples():
    assert rep_n([1, 2, 3, 4], 2) == 0 and rep_n([1, 2, 1, 2, 1, 2], 2) == pytest.approx(1 - 2 / 5)
    assert rep_n([1, 2], 4) == 0
    assert rep_w([1, 2, 3, 1], w=16) == 0.25 and rep_w([1, 2, 3, 1], w=2) == 0
    assert rep_r([1, 2, 3, 4]) == 0 and rep_r([5, 1, 2, 6, 1, 2]) == pytest.approx(4 / 6)
    text = "The door opened. A man came in. The door opened. It was"
    assert repeated_sentences(text) == 1
    assert repeated_sentences("A man came in.", before="a man came IN!") == 1  # case and punctuation aside
    assert repeated_sentences("The door opened. The door opened") == 0  # the unfinished last one is not counted
    assert repeated_sentences("Yes. Yes. Yes.") == 0  # too short to count


def test_repeats_by_paragraph_counts_as_each_paragraph_after_all_before_it():
    paragraphs = ["The door opened. A man came in.", "The door opened. He sat down", "He sat down. It rained.",
                  "Yes. Yes.", "A man came in! The door opened. The door opened."]
    expected = [repeated_sentences(p, "\n".join(paragraphs[:i])) for i, p in enumerate(paragraphs)]
    assert repeats_by_paragraph(paragraphs) == expected == [0, 1, 1, 0, 3]


def test_summary_averages_per_source():
    rows = [{"source": "a", "rep_2": 0.2, "rep_3": 0.1, "rep_4": 0.0, "rep_w": 0.1, "rep_r": 0.1,
             "sentence_repetition": 1.0, "text": "x", "nll": 2 * math.log(4), "tokens": 2},
            {"source": "b", "rep_2": 0.4, "rep_3": 0.3, "rep_4": 0.2, "rep_w": 0.3, "rep_r": 0.3,
             "sentence_repetition": 0.0, "text": "y", "nll": 2 * math.log(16), "tokens": 2}]
    out = summarize(rows, 50.0)
    assert out["rep_4"] == 0.1 and out["sentence_repetition"] == 0.5
    assert out["perplexity"] == 8.0  # exp of the mean nll per token: (log 4 + log 16) / 2
    assert out["by_source"]["a"]["perplexity"] == 4.0 and out["by_source"]["b"]["rep_2"] == 0.4
    assert [e["source"] for e in out["examples"]] == ["a", "b"]


@pytest.mark.parametrize("lam", [0, -0.5, 1.01, float("nan"), True, "0.5"])
def test_lambda_outside_zero_one_is_refused(lam):
    with pytest.raises(InvalidInput, match=r"lambda must be in \(0, 1\]"):
        check_lambda(lam)


def test_decoding_settings_are_checked_and_read_back_safely():
    assert check_lambda(1) == 1.0
    with pytest.raises(InvalidInput, match="repetition penalty"):
        Decoding(repetition_penalty=0.5).check()
    with pytest.raises(InvalidInput, match="n-gram"):
        Decoding(no_repeat_ngram_size=-1).check()
    with pytest.raises(InvalidInput, match="DRY"):
        Decoding(dry_multiplier=9).check()
    assert Decoding.from_dict({"guard": False, "from_a_later_version": 1}) == Decoding(guard=False)
    assert Decoding.from_dict({"guard_lambda": 7}) == Decoding()  # unreadable settings fall back to defaults
    kinds = [type(p).__name__ for p in for_decoding(Decoding(dry_multiplier=0.8), [5], [6])]
    assert kinds == ["SentenceRepetitionGuard", "DRY"]
    assert for_decoding(Decoding(guard=False), [5], [6]) == []
    assert for_decoding(Decoding(guard_lambda=1.0), [5], [6]) == []  # lambda 1 changes nothing


def test_corpus_is_a_plain_value():
    corpus = Corpus("p", "h", ["A b c d e. F g h i j."], [])
    assert corpus.pairs == [("A b c d e.", "F g h i j.")]


def test_reference_perplexity_is_taken_under_the_decoding_distribution():
    ids = torch.tensor([[0, 1, 2, 1]])
    logits = torch.zeros(1, 4, 4)  # uniform over 4 tokens everywhere

    class BanTwo:
        def __call__(self, input_ids, scores):
            out = scores.clone()
            out[:, 2] = float("-inf")
            return out

    plain = reference_logprobs(logits, ids, 2, [])
    assert plain.shape == (1, 2) and torch.allclose(plain, torch.full((1, 2), math.log(0.25)))
    banned = reference_logprobs(logits, ids, 2, [BanTwo()])
    assert banned[0, 0] == float("-inf")  # the true token 2 was ruled out
    assert banned[0, 1].item() == pytest.approx(math.log(1 / 3))  # token 1 shares what 2 lost


def test_ditto_bench_judges_a_sample_without_any_repeats():
    from benchmarks.ditto_bench import against_base

    def way(rep_4, repeats, ppl):
        return {"rep_4": rep_4, "sentence_repetition": repeats, "perplexity": ppl,
                "by_source": {"gatsby": {"perplexity": ppl}}}

    # one sample (`--samples 1`): the base repeats no sentence; this divided by zero
    judged = against_base({"base": way(0.2, 0.0, 30.0), "DITTO": way(0.05, 0.0, 31.0), "guard": way(0.1, 1.0, 30.0),
                           "guard+DITTO": way(0.3, 0.0, 40.0)})
    assert judged["DITTO"]["ratios_to_base"] == {"rep_4": 0.25, "sentence_repetition": None, "perplexity": 1.033}
    assert all(judged["DITTO"]["met"].values())
    assert judged["guard"]["met"]["sentence repetition <= 1/3 base"] is False
    assert not any(judged["guard+DITTO"]["met"][k] for k in ("rep_4 <= 1/2 base", "perplexity <= 1.1 x base"))
