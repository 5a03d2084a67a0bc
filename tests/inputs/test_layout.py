from __future__ import annotations

import torch

from skn.inputs.data import Example
from skn.inputs.layout import Template, encode, make_batch, resolve_template

from helpers import char_tokenizer


def test_layout_instruction_slots_completion_eos() -> None:
    tok = char_tokenizer()
    rows = [encode(tok, Example("ab", "xy", {}, "t:0"), Template.PLAIN), encode(tok, Example("abcd", "z", {}, "t:1"), Template.PLAIN)]
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id  # type: ignore[attr-defined]
    assert rows[0].instruction[0] == bos and len(rows[0].instruction) == 3
    assert rows[0].completion[-1] == eos and len(rows[0].completion) == 3
    batch = make_batch(rows, prompt_len=2, pad=pad)
    assert batch.prompt_start.tolist() == [3, 5]
    assert batch.input_ids.shape == (2, 5 + 2 + 2)
    assert batch.attention_mask.tolist() == [[1] * 8 + [0], [1] * 9]
    # targets: the completion token at s is predicted from s - 1 (the last prompt slot predicts the first)
    t0 = batch.targets[0].tolist()
    assert t0[4] == rows[0].completion[0] and t0[6] == eos and t0[7] == -100 and t0[3] == -100
    assert int((batch.targets[1] != -100).sum()) == 2
    short = make_batch(rows, prompt_len=2, pad=pad, with_completion=False)
    assert short.input_ids.shape == (2, 7) and bool((short.targets == -100).all())
    assert torch.equal(short.input_ids[:, :3], batch.input_ids[:, :3])


def test_template_auto_is_plain_without_chat_template() -> None:
    assert resolve_template(Template.AUTO, char_tokenizer()) is Template.PLAIN


def test_slot_token_fills_only_the_prompt_slots() -> None:
    tok = char_tokenizer()
    rows = [encode(tok, Example("ab", "xy", {}, "t:0"), Template.PLAIN), encode(tok, Example("abcd", "z", {}, "t:1"), Template.PLAIN)]
    pad, soft = tok.pad_token_id, tok.convert_tokens_to_ids("<soft>")  # type: ignore[attr-defined]
    plain = make_batch(rows, prompt_len=2, pad=pad)
    filled = make_batch(rows, prompt_len=2, pad=pad, slot_token=soft)
    slots = torch.zeros_like(plain.input_ids, dtype=torch.bool)
    slots[0, 3:5] = True
    slots[1, 5:7] = True
    assert bool((filled.input_ids[slots] == soft).all()) and bool((plain.input_ids[slots] == pad).all())
    assert torch.equal(filled.input_ids[~slots], plain.input_ids[~slots])
    assert torch.equal(filled.targets, plain.targets) and torch.equal(filled.attention_mask, plain.attention_mask)
