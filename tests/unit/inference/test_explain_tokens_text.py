"""The tokens method's text handling, without a server: tokens and their character
spans from the MiniLM demo's tokenizer, and the perturbed texts cut from them."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from services.inference.explain.tokens import tokenize
from tests.integration.inference.embedding_models import minilm_dir


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(minilm_dir() / "1" / "tokenizer.json"))


def test_special_tokens_and_padding_are_left_out(tokenizer: Tokenizer) -> None:
    # The file pads to 128 and adds [CLS] ... [SEP]: none of that is a token of the text.
    tokens = tokenize(tokenizer, "The cat sat")
    assert tokens.strings == ["the", "cat", "sat"]
    assert tokens.spans == [(0, 3), (4, 7), (8, 11)]
    assert tokenize(tokenizer, "").strings == []


def test_a_token_is_cut_out_by_its_character_span(tokenizer: Tokenizer) -> None:
    # Word pieces and characters beyond ASCII: spans are in characters, not bytes.
    tokens = tokenize(tokenizer, "Grüße aus Köln, unbelievably")
    assert tokens.strings[:3] == ["gr", "##u", "##ße"]
    assert tokens.without(1) == "Grße aus Köln, unbelievably"
    assert tokens.without(tokens.strings.index("koln")) == "Grüße aus , unbelievably"
    assert [tokens.text[b:e] for b, e in tokens.spans][-5:] == ["un", "bel", "ie", "va", "bly"]


def test_keeping_a_mask_cuts_every_absent_token(tokenizer: Tokenizer) -> None:
    tokens = tokenize(tokenizer, "The cat sat on the mat")
    assert tokens.keeping([True] * 6) == "The cat sat on the mat"
    assert tokens.keeping([False, True, False, False, False, True]) == " cat    mat"
    assert tokens.keeping([False] * 6).strip() == ""
    assert tokens.keeping([True, False, True, True, True, True]) == tokens.without(1)
