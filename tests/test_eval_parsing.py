"""The generation answer parser on tricky strings."""

from __future__ import annotations

import pytest

from reptune.evaluation.ab.parsing import CLAIM_ALIASES, find_answer, parse_answer

CASES = [
    # plain letters and their usual wrappings
    ("A", "A"),
    ("B", "B"),
    ("(A)", "A"),
    ("(B) False", "B"),
    ("Answer: B", "B"),
    ("Answer: (A) True", "A"),
    ("The answer is A.", "A"),
    ("**B**", "B"),
    ("B)", "B"),
    ("[A]", "A"),
    ("I choose A because it is right", "A"),
    ("My answer: (b)", "B"),
    # words
    ("True", "A"),
    ("false.", "B"),
    ("Yes!", "A"),
    ("No, that claim is wrong.", "B"),
    ("No it is not", "B"),
    ("TRUE", "A"),
    # a letter or word that is part of another word is not an answer
    ("The claim is untrue.", None),
    ("That is a falsehood.", None),
    ("Truthfully, I don't know.", None),
    ("Absolutely, Bob agrees.", None),
    ("A B-movie is fun.", None),
    ("Visit the U.S.A. today", None),
    # the article "A" and the determiner "no" are not answers
    ("A claim like this is false.", "B"),
    ("A dog barked.", None),
    ("I have no idea.", None),
    ("There is no doubt it is true", "A"),
    # negation: a match after "not" within six words (in its clause) is discarded
    ("Not true.", None),
    ("It is not true, it is false.", "B"),
    ("I would not say that the claim is true. It is false.", "B"),
    ("The claim isn't true; it is false.", "B"),
    ("not A but B", "B"),
    ("not (A) but (B)", "B"),
    ("I cannot say true. False.", "B"),
    ("It is not, as far as I can tell, false", "B"),
    # "not" further than six words back does not count
    ("Do not worry about this question at all: true", "A"),
    ("I do not think there is any real doubt here, true", "A"),
    # first match wins
    ("True. Well, actually false.", "A"),
    ("B, not A", "B"),
    # no answer at all
    ("", None),
    ("I am not sure.", None),
    ("Hmm, let me think about it.", None),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


def test_enough_tricky_strings():
    assert len(CASES) >= 30


def test_letters_and_aliases():
    # Four options: C and D are letters too.
    assert parse_answer("I pick (C).", letters=("A", "B", "C", "D")) == "C"
    assert parse_answer("C", letters=("A", "B")) is None
    # Without aliases only letters count.
    assert parse_answer("True, so A", aliases={}) == "A"
    assert parse_answer("yes", aliases={}) is None
    # Aliases of a CAA item whose (A) is "No".
    assert parse_answer("No.", aliases={"no": "A", "yes": "B"}) == "A"
    assert CLAIM_ALIASES["true"] == "A" and CLAIM_ALIASES["false"] == "B"


def test_curly_apostrophe_and_window():
    assert parse_answer("It isn\u2019t true. False.") == "B"
    # A zero-word window disables the negation rule.
    assert parse_answer("not true", negation_window=0) == "A"


def test_find_answer_span():
    text = "Answer: (B) False"
    letter, start, end = find_answer(text)
    assert letter == "B" and text[start:end] == "B"
    assert find_answer("nothing here") is None
