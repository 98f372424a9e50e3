"""The cheaper dropout masks (train/dropout.py): the distribution dropout promises, the
same mask forward and backward, seeded, replayed under activation checkpointing, and
attention equal to its equations with that mask."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from exapt.train.dropout import CheapDropout, attention_with_cheap_dropout, cheap_dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_mask_keeps_one_minus_p_and_scale_keeps_the_expectation(p):
    torch.manual_seed(0)
    n = 400_000
    keep, scale = keep_mask((n,), p)
    dropped = round(p * 65536)
    assert scale == 65536 / (65536 - dropped)
    kept = keep.double().mean().item()
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(kept - (1 - dropped / 65536)) < 5 * sd
    # every one of the four 16-bit numbers an int64 draw gives is uniform (the full range
    # is drawn, so the top bits are random too)
    by_position = keep.view(-1, 4).double().mean(0)
    assert (by_position - (1 - p)).abs().max() < 5 * sd * 2
    # neighbours are independent
    a, b = keep[:-1].double(), keep[1:].double()
    assert abs(((a - a.mean()) * (b - b.mean())).mean().item()) / (p * (1 - p)) < 0.02
    assert abs((dropout(torch.ones(n), p).mean() - 1).item()) < 5 * sd / (1 - p)


def test_forward_and_backward_use_one_mask_and_seeds_repeat_it():
    torch.manual_seed(3)
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(4)
    y = dropout(x, 0.3)
    g = torch.randn_like(y)
    y.backward(g)
    keep = y != 0
    scale = 65536 / (65536 - round(0.3 * 65536))
    torch.testing.assert_close(y, torch.where(keep, x * scale, 0.0))
    torch.testing.assert_close(x.grad, torch.where(keep, g * scale, 0.0))
    torch.manual_seed(4)
    torch.testing.assert_close(dropout(x, 0.3), y)
    assert torch.equal(dropout(x, 0.3, training=False), x) and torch.equal(dropout(x, 0.0), x)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    assert torch.equal(dropout(x, 1 - 1e-7), torch.zeros_like(x))  # rounds to 1: no division by zero


def test_cheap_dropout_module_is_an_nn_dropout():
    m = CheapDropout(0.2)
    assert isinstance(m, torch.nn.Dropout) and m.p == 0.2
    m.eval()
    x = torch.randn(5, 7)
    assert torch.equal(m(x), x)


def _qkv(seed=0, b=3, h=2, t=7, d=4):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g, requires_grad=True) for _ in range(3)]


class _Attention(torch.nn.Module):
    """Stands for a Hugging Face attention module (the function reads none of its fields)."""


def test_attention_is_softmax_qk_with_the_cheap_mask_then_v():
    q, k, v = _qkv()
    allowed = torch.ones(3, 1, 7, 7, dtype=torch.bool)
    allowed[0, :, :, 5:] = False  # the first row's last two tokens are padding
    module = _Attention().train()
    torch.manual_seed(11)
    out, _ = attention_with_cheap_dropout(module, q, k, v, allowed, dropout=0.2, scaling=0.5)
    torch.manual_seed(11)
    keep, scale = keep_mask((3, 2, 7, 7), 0.2)
    scores = (q @ k.transpose(-2, -1)) * 0.5
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    expected = (torch.where(keep, probs * scale, 0.0) @ v).transpose(1, 2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # gradients flow as through the reference
    (out * expected.detach()).sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


def test_attention_without_dropout_is_sdpa():
    q, k, v = _qkv(1)
    allowed = torch.ones(3, 1, 7, 7, dtype=torch.bool)
    allowed[1, :, :, 4:] = False
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).transpose(1, 2)
    out, _ = attention_with_cheap_dropout(_Attention().train(), q, k, v, allowed, dropout=0.0, is_causal=False)
    torch.testing.assert_close(out, reference)


def _bert(path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(path), attn_implementation="sdpa")


def test_context_swaps_dropouts_and_attention_then_restores(tiny_bert_dropout):
    model = _bert(tiny_bert_dropout)
    before = {n: type(m) for n, m in model.named_modules()}
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    model.eval()
    reference = model(input_ids=ids, attention_mask=mask).last_hidden_state
    with cheap_dropout(model):
        dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        assert dropouts and all(type(m) is CheapDropout for m in dropouts)
        assert model.config._attn_implementation == "exapt_sdpa"
        # eval: identical to the model before
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).last_hidden_state, reference)
        model.train()
        a = model(input_ids=ids, attention_mask=mask).last_hidden_state
        assert not torch.allclose(a, reference)  # dropout is on
    assert {n: type(m) for n, m in model.named_modules()} == before
    assert model.config._attn_implementation == "sdpa"
    assert model.training  # the mode set inside the block survives


def test_activation_checkpointing_replays_the_same_masks(tiny_bert_dropout):
    """The recompute in the backward pass must draw the forward pass's masks again, or the
    gradients would belong to another network."""
    ids = torch.tensor([[2, 5, 6, 7, 3, 9, 4], [2, 8, 3, 5, 6, 0, 0]])
    mask = torch.tensor([[1] * 7, [1, 1, 1, 1, 1, 0, 0]])
    grads = []
    for checkpointing in (False, True):
        model = _bert(tiny_bert_dropout).train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        with cheap_dropout(model):
            torch.manual_seed(5)
            model(input_ids=ids, attention_mask=mask).last_hidden_state.pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])
