"""Text attacks: DeepWordBug's character edits by hand, embedding neighbours by hand, and
both attacks end to end (the tiny BERT for charswap; the real MiniLM for wordswap, whose
constraints are re-checked here independently)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import exapt
from exapt.cli import main
from exapt.trust.attack_text import Neighbours, char_edits, split_word

from conftest import quiet


def _one_edit(a: str, b: str) -> bool:
    """b is a with two neighbours swapped, one letter deleted, inserted or substituted."""
    if len(b) == len(a) - 1:
        return any(a[:i] + a[i + 1:] == b for i in range(len(a)))
    if len(b) == len(a) + 1:
        return any(b[:i] + b[i + 1:] == a for i in range(len(b)))
    diff = [i for i in range(len(a)) if a[i] != b[i]] if len(a) == len(b) else [0, 0, 0]
    swapped = len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    return len(diff) == 1 or swapped


def _predict(run, texts, folder):
    pd.DataFrame({"text": list(texts)}).to_csv(folder / "adv.csv", index=False)
    return run.predict(folder / "adv.csv")["prediction"].astype(str).values


def test_char_edits_are_deepwordbugs_four_edits():
    assert split_word("(great!") == ("(", "great", "!") and split_word("...") == ("...", "", "")
    rng = np.random.default_rng(0)
    for word in ("terrible,", "#love", "flight", "ok"):
        pre, core, post = split_word(word)
        options = char_edits(word, rng)
        assert options and len(options) == len(set(options)) <= 4
        for o in options:
            assert o.startswith(pre) and o.endswith(post) and _one_edit(core, o[len(pre):len(o) - len(post)])
    assert char_edits("a", rng) == [] and char_edits("!!", rng) == []


def test_neighbours_are_the_nearest_whole_words_by_cosine(tiny_bert):
    from exapt.backbones import load_backbone

    bb = load_backbone(str(tiny_bert), max_length=32)
    nb = Neighbours(bb, n=5)
    table = bb.model.get_input_embeddings().weight.detach()
    tok = bb.tokenizer
    i = tok.convert_tokens_to_ids("flight")
    cos = torch.nn.functional.cosine_similarity(table, table[i][None], dim=1)
    vocab = tok.convert_ids_to_tokens(list(range(len(table))))
    ok = [j for j, t in enumerate(vocab) if t.isalpha() and t.isascii() and len(t) > 1 and j != i]
    expected = [vocab[j] for j in sorted(ok, key=lambda j: -float(cos[j]))[:5]]
    assert nb.of("Flight") == expected
    assert nb.of("qwxzv") == []  # split into word pieces: no single embedding to search around


def test_charswap_end_to_end_on_a_tiny_run(probe_run, tweets_test_small, tmp_path):
    out = tmp_path / "cs"
    assert main(["attack", str(probe_run), str(tweets_test_small), "--attack", "charswap", "--budget", "2",
                 "--max-examples", "8", "--out", str(out)]) == 0
    rep = json.loads((out / "attack.json").read_text())
    df = pd.read_csv(out / "adversarial.csv", keep_default_na=False)
    assert len(df) == 8 == rep["n"] and rep["constraints"] == {"max_words_edited": 2}
    assert (df["words_changed"] <= 2).all() and (df.loc[df.skipped, "words_changed"] == 0).all()
    attacked = df[~df.skipped]
    assert (attacked["queries"] >= attacked["words"].clip(upper=2) + 1).all()  # scored, then one query per word
    run = exapt.load_run(probe_run)
    won = df[df.success]
    if len(won):  # the run itself, not the attack's bookkeeping, says the prediction flipped
        assert (_predict(run, won.adversarial, tmp_path) != won.label.values).all()
    assert rep["clean_accuracy"] == pytest.approx((~df.skipped).mean())
    assert rep["robust_accuracy"] == pytest.approx(((~df.skipped) & ~df.success).mean())


def test_wordswap_on_minilm_tweets_holds_every_constraint(tmp_path, tweets_small, tweets_test_small, minilm_dir):
    from transformers import AutoModel, AutoTokenizer

    run_dir = tmp_path / "lp"
    exapt.fit(str(tweets_small), "linear-probe", "minilm-l6", out=run_dir, max_length=64, progress=False, log=quiet)
    out = tmp_path / "ws"
    assert main(["attack", str(run_dir), str(tweets_test_small), "--attack", "wordswap", "--max-examples", "5",
                 "--out", str(out)]) == 0
    df = pd.read_csv(out / "adversarial.csv", keep_default_na=False)
    rep = json.loads((out / "attack.json").read_text())
    assert rep["constraints"]["min_similarity"] == 0.85 and rep["unk_rate"] == 0.0  # replacements are vocabulary words
    changed = df[df.words_changed > 0]
    assert (changed.words_changed <= np.floor(0.15 * changed.words + 1e-9)).all()
    if len(changed):  # similarity re-computed by hand: mean-pooled, normalised MiniLM embeddings
        tok, enc = AutoTokenizer.from_pretrained(minilm_dir), AutoModel.from_pretrained(minilm_dir).eval()

        def embed(texts):
            b = tok(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
            with torch.no_grad():
                h = enc(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        sims = (embed(changed.adversarial) * embed([" ".join(t.split()) for t in changed.original])).sum(1)
        assert (sims.numpy() >= 0.85 - 1e-4).all()
        np.testing.assert_allclose(sims.numpy(), changed.similarity.values, atol=1e-4)
    won = df[df.success]
    if len(won):
        assert (_predict(exapt.load_run(run_dir), won.adversarial, tmp_path) != won.label.values).all()
