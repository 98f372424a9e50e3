"""exapt pretrain: masking, sequence input, tokenizers, corpora, the run, resume, bad input."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from exapt.backbones.sequence_input import SequenceInput
from exapt.cli import main
from exapt.errors import ExaptError
from exapt.masked_lm import corpus as corpus_mod
from exapt.masked_lm.masking import IGNORE, mask_tokens
from exapt.pretrain.setup import SPECIAL_TOKENS, build_tokenizer

# A 2-layer, 32-wide BERT: every code path of a real run in a second or two.
TINY_ARCH = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "tiny.json"
    path.write_text(json.dumps(TINY_ARCH))
    return path


@pytest.fixture(scope="module")
def dna_fasta(tmp_path_factory) -> Path:
    """Two gzipped FASTA records of random DNA with a planted repeat the model can learn."""
    rng = np.random.default_rng(0)
    motif = "ACGTTGCAAC"
    records = []
    for r in range(2):
        parts = []
        for _ in range(400):
            parts.append("".join(rng.choice(list("ACGT"), 10)))
            parts.append(motif)
        records.append(f">chr{r} test\n" + "\n".join("".join(parts)[i:i + 70] for i in range(0, 8000, 70)))
    path = tmp_path_factory.mktemp("corpus") / "genome.fa.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(records).lower() + "\n")  # soft-masked (lower case) like many genomes
    return path


# -- masking -------------------------------------------------------------------------------
def _batch(n=400, length=130, vocab=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, length), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    cut = length * 3 // 4
    ids[: n // 4, cut:] = 0       # some padding
    ids[: n // 4, cut - 1] = 3
    special = torch.isin(ids, torch.tensor([0, 1, 2, 3, 4]))
    return ids, special


def test_masking_follows_the_80_10_10_rule():
    ids, special = _batch()
    normal = torch.arange(5, 30)
    inputs, labels = mask_tokens(ids, special, mask_id=4, normal_ids=normal, probability=0.15,
                                 generator=torch.Generator().manual_seed(1))
    chosen = labels != IGNORE
    assert not chosen[special].any(), "special tokens and padding are never targets"
    assert torch.equal(labels[chosen], ids[chosen]), "labels hold the original tokens"
    share = chosen.sum().item() / (~special).sum().item()
    assert abs(share - 0.15) < 0.01
    as_mask = (inputs[chosen] == 4).float().mean().item()
    changed = (inputs[chosen] != ids[chosen]) & (inputs[chosen] != 4)
    unchanged = (inputs[chosen] == ids[chosen]).float().mean().item()
    assert abs(as_mask - 0.8) < 0.02
    # a random replacement can draw the original token (1 in 25 here), so "changed" is a bit under 10%
    assert abs(changed.float().mean().item() - 0.1 * 24 / 25) < 0.015
    assert abs(unchanged - (0.1 + 0.1 / 25)) < 0.015
    assert torch.isin(inputs[chosen][changed], normal).all(), "random tokens come from the ordinary vocabulary"
    assert torch.equal(inputs[~chosen], ids[~chosen]), "nothing else is touched"


def test_span_masking_masks_runs_of_k_at_about_the_same_rate():
    ids, special = _batch(n=600)
    inputs, labels = mask_tokens(ids, special, mask_id=4, normal_ids=torch.arange(5, 30), probability=0.15,
                                 span=3, generator=torch.Generator().manual_seed(2))
    chosen = (labels != IGNORE)
    share = chosen.sum().item() / (~special).sum().item()
    assert abs(share - (1 - (1 - 0.05) ** 3)) < 0.012
    # every chosen position inside the body sits in a run of at least 3 (runs are cut only by specials)
    for row in chosen[200:260, 1:-1].numpy():  # rows without padding; a run touching [SEP] may be cut short
        edges = np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0]))
        starts, ends = edges[::2], edges[1::2]
        runs = (ends - starts)[ends < len(row)]
        assert (runs >= 3).all()


def test_masking_matches_the_transformers_collator_rates():
    """Same target share and [MASK] share as DataCollatorForLanguageModeling on the same batch."""
    from transformers import DataCollatorForLanguageModeling

    tok = build_tokenizer(SequenceInput("dna"))
    torch.manual_seed(0)
    ids, special = _batch(vocab=len(tok))
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    theirs = collator.torch_call([{"input_ids": row.tolist()} for row in ids])
    ours_in, ours_lab = mask_tokens(ids, special, mask_id=tok.mask_token_id,
                                    normal_ids=torch.arange(len(SPECIAL_TOKENS), len(tok)))
    t_chosen, o_chosen = theirs["labels"] != IGNORE, ours_lab != IGNORE
    assert abs(t_chosen.float().mean() - o_chosen.float().mean()) < 0.01
    t_mask = (theirs["input_ids"][t_chosen] == tok.mask_token_id).float().mean()
    o_mask = (ours_in[o_chosen] == tok.mask_token_id).float().mean()
    assert abs(t_mask - o_mask) < 0.03


# -- sequences and tokenizers --------------------------------------------------------------
def test_sequence_input_cleans_and_writes_kmers():
    dna = SequenceInput("dna")
    assert dna.clean("acgtRYn\n ac") == "ACGTNNNAC"
    assert SequenceInput("dna", kmer=3).to_tokenizer_text("acgta") == "ACG CGT GTA"
    assert SequenceInput("protein", spaced=True).to_tokenizer_text("mkB*") == "M K X"
    with pytest.raises(ExaptError, match=r"row 4: '7' at position 3 is not a dna letter"):
        dna.clean("AC7G", "row 4")
    with pytest.raises(ExaptError, match="--kmer applies to --alphabet dna only"):
        SequenceInput("protein", kmer=3)


@pytest.mark.parametrize("kmer", [1, 3])
def test_dna_tokenizer_reloads_with_autotokenizer(tmp_path, kmer):
    from transformers import AutoTokenizer

    si = SequenceInput("dna", kmer=kmer)
    tok = build_tokenizer(si)
    assert len(tok) == len(SPECIAL_TOKENS) + 5 ** kmer
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = si.to_tokenizer_text("ACGTNAC")
    ids = again(text)["input_ids"]
    assert ids == tok(text)["input_ids"]
    assert ids[0] == again.cls_token_id and ids[-1] == again.sep_token_id
    assert len(ids) == 2 + 7 - kmer + 1
    assert again.unk_token_id not in ids


# -- corpora -------------------------------------------------------------------------------
def test_fasta_corpus_windows_and_disjoint_holdout(dna_fasta):
    si = SequenceInput("dna")
    tok = build_tokenizer(si)
    c = corpus_mod.build_corpus(str(dna_fasta), tok, si, max_length=66, holdout=0.1, progress=False)
    assert c.records == 2 and c.characters == 16000
    assert c.train.ids.shape[1] == 66 and c.heldout.ids.shape[1] == 66
    assert len(c.heldout) == pytest.approx(0.1 * (len(c.train) + len(c.heldout)), abs=2)
    body = lambda w: {tuple(r[1:n - 1]) for r, n in zip(w.ids.tolist(), w.lengths.tolist())}  # noqa: E731
    assert not body(c.train) & body(c.heldout), "no held-out window was trained on"
    assert (c.train.ids[:, 0] == tok.cls_token_id).all()
    assert c.train.tokens + c.heldout.tokens == 16000 + 2 * (len(c.train) + len(c.heldout))


@pytest.mark.parametrize("content, message", [
    (b"", "the corpus is empty"),
    (b">a\nACGT\n>b\nAC\xffGT\n", "line 4 is not UTF-8"),
    (b">a\nACGT5ACGT\n", r"'5' at position 5 is not a dna letter"),
])
def test_bad_corpus_files(tmp_path, content, message):
    path = tmp_path / "bad.fa"
    path.write_bytes(content)
    si = SequenceInput("dna")
    with pytest.raises(ExaptError, match=message):
        corpus_mod.build_corpus(str(path), build_tokenizer(si), si, max_length=32, progress=False)


def test_text_corpus_learns_a_wordpiece_vocabulary(tmp_path, arch_file):
    from exapt.pretrain import pretrain

    lines = [f"the flight to city {i % 17} was delayed by {i % 5} hours again" for i in range(600)]
    path = tmp_path / "notes.txt"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "text-model"
    res = pretrain(str(path), out=out, alphabet="text", arch=str(arch_file), steps=4, batch_size=16, max_length=24,
                   vocab_size=200, progress=False, log=lambda *_: None)
    tok = json.loads((out / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    assert len(vocab) <= 200 and {"flight", "delayed", "hours", "[MASK]"} <= set(vocab)
    assert json.loads((out / "exapt.json").read_text())["input"]["alphabet"] == "text"
    assert res.steps == 4


@pytest.fixture(scope="module")
def notes_txt(tmp_path_factory) -> Path:
    lines = [f"the flight to city {i % 17} was delayed by {i % 5} hours again, gate {i % 11}" for i in range(600)]
    path = tmp_path_factory.mktemp("notes") / "notes.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _vocab(folder: Path) -> dict:
    return json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]


def test_an_interrupted_text_run_resumes_on_the_vocabulary_it_started_with(notes_txt, arch_file, tmp_path,
                                                                             monkeypatch):
    # Hugging Face's WordPiece trainer breaks ties in hash-map order, so learning the vocabulary
    # again on --resume could give other token ids than the saved weights were trained on.
    from exapt.pretrain import pretrain, trainer
    from exapt.pretrain.setup import load_vocabulary, vocabulary_sha256

    kwargs = dict(alphabet="text", arch=str(arch_file), steps=8, batch_size=16, max_length=24, vocab_size=150,
                  eval_every=4, progress=False, log=lambda *_: None)
    real, calls = trainer.mlm_loss, {"n": 0}

    def interrupted(model, *a, **k):
        if model.training:
            calls["n"] += 1
            if calls["n"] == 6:
                raise KeyboardInterrupt
        return real(model, *a, **k)

    monkeypatch.setattr(trainer, "mlm_loss", interrupted)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        pretrain(str(notes_txt), out=out, **kwargs)
    started_with = _vocab(out / ".train" / "tokenizer")
    monkeypatch.setattr(trainer, "mlm_loss", real)

    def learnt_again(*_a, **_k):
        raise AssertionError("--resume learnt the vocabulary again")

    monkeypatch.setattr(trainer, "build_tokenizer", learnt_again)
    pretrain(str(notes_txt), out=out, resume=True, **kwargs)
    assert _vocab(out) == started_with
    saved = json.loads((out / "exapt.json").read_text())["pretrain"]
    assert saved["vocabulary_sha256"] == vocabulary_sha256(load_vocabulary(out))
    assert not (out / ".train").exists()


def test_a_text_run_without_its_vocabulary_is_not_resumed(notes_txt, arch_file, tmp_path, capsys):
    from dataclasses import asdict

    from exapt.pretrain import PretrainConfig

    out = tmp_path / "old"
    (out / ".train").mkdir(parents=True)  # as an older exapt left it: settings, no tokenizer
    saved = PretrainConfig(corpus=str(notes_txt), alphabet="text", arch=str(arch_file), steps=5)
    (out / ".train" / "config.json").write_text(json.dumps(asdict(saved)))
    code, _, err = cli(capsys, "pretrain", notes_txt, "--alphabet", "text", "--arch", arch_file, "--steps", "5",
                       "--out", out, "--resume")
    assert code == 2 and "kept no vocabulary" in err and "--overwrite" in err


def test_tokenizer_reuses_a_saved_vocabulary_so_a_text_run_repeats_exactly(notes_txt, arch_file, tmp_path):
    from safetensors.torch import load_file

    from exapt.pretrain import pretrain

    kwargs = dict(alphabet="text", arch=str(arch_file), steps=3, batch_size=16, max_length=24, progress=False,
                  log=lambda *_: None)
    pretrain(str(notes_txt), out=tmp_path / "first", vocab_size=150, **kwargs)
    for name in ("again", "and-again"):  # vocab_size is moot: the folder's vocabulary is used
        pretrain(str(notes_txt), out=tmp_path / name, tokenizer=str(tmp_path / "first"), vocab_size=999, **kwargs)
        assert _vocab(tmp_path / name) == _vocab(tmp_path / "first")
    a, b = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("again", "and-again"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sha = [json.loads((tmp_path / n / "exapt.json").read_text())["pretrain"]["vocabulary_sha256"]
           for n in ("first", "again")]
    assert sha[0] == sha[1]


def test_bad_tokenizer_options_get_one_line(notes_txt, dna_fasta, dna_model, arch_file, tmp_path, capsys):
    base = ["pretrain", notes_txt, "--alphabet", "text", "--arch", arch_file, "--steps", "1"]
    cases = [
        (["--tokenizer", tmp_path / "nowhere"], "no such folder"),
        (["--tokenizer", tmp_path], "no tokenizer to load"),
        (["--tokenizer", dna_model[0]], "a dna model; only text vocabularies are reused"),
        (["--tokenizer", tmp_path, "--init", "minilm-l6"], "--arch and --kmer do not apply with --init"),
    ]
    for extra, message in cases:
        out = tmp_path / "never"
        code, _, err = cli(capsys, *base, *extra, "--out", out)
        assert code == 2 and message in err, err
        assert not out.exists(), "nothing is written for bad options"
    code, _, err = cli(capsys, "pretrain", dna_fasta, "--alphabet", "dna", "--arch", arch_file, "--tokenizer",
                       tmp_path, "--out", tmp_path / "never")
    assert code == 2 and "--tokenizer applies to --alphabet text only" in err
    code, _, err = cli(capsys, "pretrain", notes_txt, "--init", "minilm-l6", "--tokenizer", tmp_path,
                       "--out", tmp_path / "never")
    assert code == 2 and "--tokenizer does not apply with --init" in err


# -- the run -------------------------------------------------------------------------------
def test_mlm_loss_on_masked_positions_equals_the_full_forward():
    from transformers import BertConfig, BertForMaskedLM

    from exapt.pretrain.trainer import mlm_loss

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=30, pad_token_id=0, **TINY_ARCH)).eval()
    ids, special = _batch(n=8, length=40)
    inputs, labels = mask_tokens(ids, special, mask_id=4, normal_ids=torch.arange(5, 30))
    mask = (ids != 0).long()
    with torch.no_grad():
        ours, _, n = mlm_loss(model, inputs, labels, mask)
        theirs = model(input_ids=inputs, attention_mask=mask, labels=labels).loss
    assert n == int((labels != IGNORE).sum())
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.fixture(scope="module")
def dna_model(tmp_path_factory, dna_fasta, arch_file):
    from exapt.pretrain import pretrain

    out = tmp_path_factory.mktemp("pt") / "dna-model"
    res = pretrain(str(dna_fasta), out=out, alphabet="dna", arch=str(arch_file), steps=60, batch_size=16,
                   max_length=34, lr=3e-3, eval_every=20, progress=False, log=lambda *_: None)
    return out, res


def test_pretraining_lowers_heldout_loss_and_writes_a_model_folder(dna_model):
    out, res = dna_model
    assert res.heldout_after["loss"] < res.heldout_before["loss"] - 0.1
    assert res.tokens_per_second > 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "exapt.json", "history.jsonl", "loss.png"} <= names
    assert ".train" not in names, "training state is removed once the model is written"
    assert not list(out.glob("*.bin")), "no pickle"
    info = json.loads((out / "exapt.json").read_text())
    assert info["input"] == {"alphabet": "dna", "kmer": 1, "spaced": False}
    assert info["pretrain"]["heldout_after"]["loss"] == pytest.approx(res.heldout_after["loss"])
    history = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [0, 20, 40, 60]


def test_pretrained_folder_is_a_fit_backbone_reading_plain_sequences(dna_model):
    from exapt.backbones import load_backbone

    out, _ = dna_model
    bb = load_backbone(str(out), max_length=40)
    assert bb.sequence_input.alphabet == "dna"
    assert bb.prepare_inputs(["acgtn"]) == bb.prepare_inputs(["ACGTN"])
    feats = bb(bb.collate(bb.prepare_inputs(["ACGTACGT", "TTTT"])))
    assert feats.shape == (2, 32)
    twin = load_backbone("scratch:" + str(out), max_length=40)
    assert not torch.allclose(twin.model.embeddings.word_embeddings.weight, bb.model.embeddings.word_embeddings.weight)


def test_fit_on_the_pretrained_dna_model(dna_model, tmp_path, capsys):
    out, _ = dna_model
    rows = ["sequence,label"] + [f"{'ACGT' * 5 if i % 2 else 'TTGCA' * 4},{'a' if i % 2 else 'b'}" for i in range(40)]
    data = tmp_path / "dna.csv"
    data.write_text("\n".join(rows) + "\n")
    code, _, err = cli(capsys, "fit", data, "--text", "sequence", "--model", out, "--strategy", "linear-probe",
                       "--out", tmp_path / "run", "--quiet")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == 1.0


def test_resume_continues_bit_for_bit(dna_fasta, arch_file, tmp_path, monkeypatch):
    from exapt.pretrain import pretrain, trainer

    kwargs = dict(alphabet="dna", arch=str(arch_file), steps=12, batch_size=8, max_length=34, eval_every=4,
                  progress=False, log=lambda *_: None)
    pretrain(str(dna_fasta), out=tmp_path / "straight", **kwargs)

    real, calls = trainer.mlm_loss, {"n": 0}

    def interrupted(model, *a, **k):
        if model.training:
            calls["n"] += 1
            if calls["n"] == 7:  # after the checkpoint at step 4, before the one at step 8
                raise KeyboardInterrupt
        return real(model, *a, **k)

    monkeypatch.setattr(trainer, "mlm_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pretrain(str(dna_fasta), out=tmp_path / "cut", **kwargs)
    assert not (tmp_path / "cut" / "exapt.json").exists(), "an interrupted run does not look finished"
    monkeypatch.setattr(trainer, "mlm_loss", real)
    pretrain(str(dna_fasta), out=tmp_path / "cut", resume=True, **kwargs)

    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    ha = (tmp_path / "straight" / "history.jsonl").read_text().splitlines()
    hb = (tmp_path / "cut" / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["heldout"] for x in ha] == [json.loads(x)["heldout"] for x in hb]


def test_the_time_budget_schedule_warms_up_then_decays_to_zero():
    from exapt.pretrain.trainer import _budget_shape

    assert _budget_shape(0.03, 0.06) == pytest.approx(0.5)       # half-way through the warm-up
    assert _budget_shape(0.06, 0.06) == pytest.approx(1.0)       # the peak
    assert _budget_shape(0.53, 0.06) == pytest.approx(0.5)       # half-way down the decay
    assert _budget_shape(1.0, 0.06) == 0.0 and _budget_shape(1.2, 0.06) == 0.0
    assert _budget_shape(0.0, 0.0) == 1.0                         # no warm-up


def test_a_time_budget_trains_until_it_is_spent_and_ends_at_lr_zero(dna_fasta, arch_file, tmp_path, monkeypatch):
    """--max-minutes: the schedule runs on seconds of training steps (a fake clock here,
    0.5 s per step, so the test does not depend on the machine's speed)."""
    from exapt.pretrain import pretrain, trainer

    ticks = {"t": 0.0, "calls": 0}

    def fake_clock():  # perf_counter is read twice per step: before and after it
        ticks["calls"] += 1
        if ticks["calls"] % 2 == 0:
            ticks["t"] += 0.5
        return ticks["t"]

    monkeypatch.setattr(trainer.time, "perf_counter", fake_clock)
    res = pretrain(str(dna_fasta), out=tmp_path / "budget", alphabet="dna", arch=str(arch_file), max_minutes=0.1,
                   batch_size=8, max_length=34, progress=False, log=lambda *_: None)
    assert res.steps == 12  # 6 s of budget at 0.5 s a step
    history = [json.loads(x) for x in (tmp_path / "budget" / "history.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == 12 and history[-1]["lr"] == 0.0
    assert len(history) >= 6  # before training, then at (about) every tenth of the budget
    settings = json.loads((tmp_path / "budget" / "exapt.json").read_text())["pretrain"]
    assert settings["steps"] == 12 and settings["config"]["max_minutes"] == 0.1


def test_continued_pretraining_from_an_exapt_model(dna_model, dna_fasta, tmp_path):
    from exapt.pretrain import pretrain

    out, first = dna_model
    res = pretrain(str(dna_fasta), out=tmp_path / "more", alphabet="dna", init=str(out), steps=3, batch_size=16,
                   max_length=34, progress=False, log=lambda *_: None)
    # starts where the first run ended (same held-out slice, same masking), not from scratch
    assert res.heldout_before["loss"] == pytest.approx(first.heldout_after["loss"], abs=1e-4)


def test_continued_pretraining_of_minilm_on_text(tmp_path):
    from exapt.pretrain import pretrain

    path = tmp_path / "notes.txt"
    path.write_text("\n".join(f"the plasmid {i} was sequenced on tuesday" for i in range(300)) + "\n")
    res = pretrain(str(path), out=tmp_path / "minilm-more", init="minilm-l6", steps=2, batch_size=8, max_length=16,
                   progress=False, log=lambda *_: None)
    assert (tmp_path / "minilm-more" / "modules.json").exists(), "the sentence encoder keeps its pooling"
    assert res.steps == 2


def test_long_text_records_are_not_padded_or_cut_by_a_saved_tokenizer_config():
    """all-MiniLM-L6-v2's tokenizer.json pads and truncates to 128; a corpus record must not be."""
    from exapt.masked_lm.corpus import _tokenize_record
    from exapt.pretrain.setup import init_model

    _, tok, _, _ = init_model("minilm-l6")
    ids = _tokenize_record("the plasmid was sequenced again " * 60, tok, SequenceInput("text"), "line 1")
    assert len(ids) > 128 and tok.pad_token_id not in ids
    short = _tokenize_record("the plasmid", tok, SequenceInput("text"), "line 2")
    assert short == tok("the plasmid", add_special_tokens=False)["input_ids"]


def test_antiberty_alias_reads_plain_protein_sequences():
    pytest.importorskip("antiberty")
    from exapt.backbones import load_backbone

    bb = load_backbone("antiberty", max_length=16)
    ids = bb.prepare_inputs(["evqlv"])[0]
    vocab = bb.tokenizer.get_vocab()
    assert ids == [vocab["[CLS]"], vocab["E"], vocab["V"], vocab["Q"], vocab["L"], vocab["V"], vocab["[SEP]"]]


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--kmer", "3", "--alphabet", "protein"], "--kmer applies to --alphabet dna only"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--holdout", "0.7"], r"--holdout must be in \(0, 0.5\)"),
    (["--arch", "huge"], "not one of tiny, small, base nor a CONFIG.json"),
    (["--init", "nowhere"], "not an alias"),
    (["--steps", "2", "--epochs", "1"], "not allowed with argument"),
    (["--steps", "2", "--max-minutes", "1"], "not allowed with argument"),
    (["--max-minutes", "0"], "--max-minutes must be positive"),
    (["--init", "minilm-l6", "--arch", "small"], "--arch and --kmer do not apply with --init"),
])
def test_bad_options_exit_2_and_leave_nothing(dna_fasta, tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    code, _, err = cli(capsys, "pretrain", dna_fasta, "--out", out, "--alphabet", "dna", *extra)
    assert code == 2
    assert message.split("(")[0].strip("\\") in err or __import__("re").search(message, err), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_missing_corpus_and_existing_output(dna_model, tmp_path, capsys):
    code, _, err = cli(capsys, "pretrain", tmp_path / "nope.fa", "--out", tmp_path / "x")
    assert code == 2 and "no such file or built-in corpus" in err
    out, _ = dna_model
    before = (out / "model.safetensors").read_bytes()
    code, _, err = cli(capsys, "pretrain", tmp_path / "nope.fa", "--out", out, "--overwrite")
    assert code == 2
    assert (out / "model.safetensors").read_bytes() == before, "a failed --overwrite keeps the saved model"
    code, _, err = cli(capsys, "pretrain", "ecoli", "--out", out)
    assert code == 2 and ("exists and is not empty" in err or "needs the Debian package" in err)


def test_resume_with_other_settings_is_refused(dna_fasta, arch_file, tmp_path, capsys):
    out = tmp_path / "half"
    (out / ".train").mkdir(parents=True)
    from dataclasses import asdict

    from exapt.pretrain import PretrainConfig

    saved = PretrainConfig(corpus=str(dna_fasta), alphabet="dna", arch=str(arch_file), steps=99)
    (out / ".train" / "config.json").write_text(json.dumps(asdict(saved)))
    code, _, err = cli(capsys, "pretrain", dna_fasta, "--alphabet", "dna", "--arch", arch_file, "--steps", "5",
                       "--out", out, "--resume")
    assert code == 2 and "was started with other settings" in err and "steps: 99 -> 5" in err
