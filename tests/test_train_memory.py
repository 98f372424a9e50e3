"""Activation checkpointing only where memory needs it (exapt/train/memory.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import exapt
from exapt.backbones.hf import HFBackbone
from exapt.train import memory

from conftest import quiet

MINILM = SimpleNamespace(hidden_size=384, num_attention_heads=12, num_hidden_layers=6)


def test_activation_estimate_is_korthikanti_eq1_in_fp32():
    # per layer s*b*h*(68 + 10*a*s/h) bytes: 6 layers, s=64, b=32, h=384, a=12
    by_hand = 6 * 64 * 32 * 384 * (68 + 10 * 12 * 64 / 384)
    assert memory.activation_bytes(MINILM, 32, 64) == int(by_hand)
    # the attention term grows with s^2: 4x the length is more than 4x the bytes
    assert memory.activation_bytes(MINILM, 32, 256) > 4 * memory.activation_bytes(MINILM, 32, 64)


@pytest.mark.parametrize("free_gib, on", [(64, False), (1, True)])
def test_on_only_when_activations_pass_a_quarter_of_free_memory(monkeypatch, free_gib, on):
    # MiniLM, batch 32 x 256 tokens: ~2.7 GiB of activations
    monkeypatch.setattr(memory, "available_bytes", lambda: free_gib * 2**30)
    backbone = SimpleNamespace(model=SimpleNamespace(config=MINILM))
    decided, why = memory.checkpointing_needed(backbone, 32, 256)
    assert decided is on
    assert why.startswith(f"activation checkpointing {'on' if on else 'off'}") and "GiB" in why


def test_a_model_without_an_estimate_keeps_checkpointing():
    assert memory.checkpointing_needed(SimpleNamespace(), 32, 64)[0] is True


@pytest.mark.parametrize("free, calls", [(2**40, 0), (1, 1)])
def test_lora_fit_checkpoints_only_when_short_of_memory(monkeypatch, tiny_bert, tweets_small, tmp_path, free, calls):
    called, lines = [], []
    real = HFBackbone.enable_activation_checkpointing
    monkeypatch.setattr(HFBackbone, "enable_activation_checkpointing", lambda self: called.append(1) or real(self))
    monkeypatch.setattr(memory, "available_bytes", lambda: free)
    exapt.fit(str(tweets_small), "lora", str(tiny_bert), out=tmp_path / "run", epochs=1, max_length=32,
              progress=False, log=lines.append)
    assert len(called) == calls
    assert any("activation checkpointing on" in line for line in lines) is bool(calls)


def test_the_setting_decides_by_hand(monkeypatch, tiny_bert, tweets_small, tmp_path):
    called = []
    monkeypatch.setattr(HFBackbone, "enable_activation_checkpointing", lambda self: called.append(1))
    monkeypatch.setattr(memory, "available_bytes", lambda: 2**40)
    exapt.fit(str(tweets_small), "lora", str(tiny_bert), out=tmp_path / "run", epochs=1, max_length=32,
              progress=False, log=quiet, activation_checkpointing=True)
    assert called == [1]


def test_attention_dropout_is_set_on_every_self_attention_block(tiny_bert_dropout):
    from torch import nn

    from exapt.backbones import load_backbone
    from exapt.errors import ExaptError
    from exapt.train.attention import set_attention_dropout

    bb = load_backbone(str(tiny_bert_dropout))
    blocks = [m for n, m in bb.model.named_modules() if n.endswith("attention.self")]
    assert blocks and all(m.dropout.p > 0 for m in blocks)
    assert set_attention_dropout(bb, 0.0) == len(blocks)
    assert all(m.dropout.p == 0.0 for m in blocks)
    # the other dropouts (hidden, embeddings) keep the model's value
    assert any(isinstance(m, nn.Dropout) and m.p > 0 for m in bb.model.modules())
    with pytest.raises(ExaptError, match="no BERT-style self-attention"):
        set_attention_dropout(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)), 0.0)


def test_attention_dropout_from_the_command_line(tiny_bert_dropout, tweets_small, tmp_path, monkeypatch):
    from exapt.train import loop

    seen = []
    real = loop.set_attention_dropout
    monkeypatch.setattr(loop, "set_attention_dropout", lambda model, p: seen.append(p) or real(model, p))
    from exapt.cli import main

    assert main(["fit", str(tweets_small), "--strategy", "full", "--model", str(tiny_bert_dropout), "--epochs", "1",
                 "--max-length", "32", "--out", str(tmp_path / "run"),
                 "--set", "train.attention_dropout=0"]) in (0, None)
    assert seen == [0.0]
    assert "attention_dropout: 0.0" in (tmp_path / "run" / "config.yaml").read_text()
