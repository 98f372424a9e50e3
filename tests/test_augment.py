"""`exapt augment` (masked-LM infilling) and `fit --synthetic FILE --synthetic-weight ALPHA`
(issue 22, part 5; docs/augment.md)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import quiet

import exapt
from exapt.cli import main
from exapt.config import FitConfig
from exapt.data import fit_splits, load_data, load_table
from exapt.tasks import Task
from exapt.train.probe import fit_linear_head


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory, minilm_dir):
    """A tiny BERT masked LM (random weights, its head included) with MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    out = tmp_path_factory.mktemp("tiny-mlm")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    BertForMaskedLM(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory, tiny_mlm, tweets_small, tweets_test_small):
    out = tmp_path_factory.mktemp("augment") / "synthetic.csv"
    assert main(["augment", str(tweets_small), "--test", str(tweets_test_small), "--method", f"mlm:{tiny_mlm}",
                 "--per-example", "2", "--out", str(out), "--quiet"]) == 0
    return out


def _classes_task(n_classes=3):
    return Task.from_labels("classification", [str(i) for i in range(n_classes)], "t")


# -- loss weights -------------------------------------------------------------------------
def test_a_row_of_weight_alpha_contributes_alpha_times_its_loss():
    torch.manual_seed(0)
    task = _classes_task()
    logits, targets = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    per_row = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    weight = torch.tensor([1.0, 1.0, 0.3, 1.0, 1.0])
    expected = (per_row.sum() - per_row[2] + 0.3 * per_row[2]) / 5
    assert torch.allclose(task.loss(logits, targets, weight=weight), expected)
    assert torch.allclose(task.loss(logits, targets, weight=torch.ones(5)), task.loss(logits, targets))
    # with class weights the row weight multiplies the class-weighted loss
    task.set_loss("0=2", "cross-entropy", targets)
    cw = torch.tensor([2.0, 1.0, 1.0])[targets]
    assert torch.allclose(task.loss(logits, targets, weight=weight), (per_row * cw * weight).mean())
    # its gradient is ALPHA times the row's own
    x = logits.clone().requires_grad_(True)
    task.loss(x, targets, weight=weight).backward()
    y = logits.clone().requires_grad_(True)
    task.loss(y, targets).backward()
    assert torch.allclose(x.grad[2], 0.3 * y.grad[2])
    assert torch.allclose(x.grad[0], y.grad[0])


def test_probe_sample_weight_is_scikit_learns():
    """Weight 2 on a row = the row twice; weight 0 = the row left out (C * sum w_i loss_i)."""
    torch.manual_seed(1)
    task = _classes_task()
    x, y = torch.randn(30, 4), torch.arange(30) % 3
    head = lambda: torch.nn.Linear(4, 3)
    w = torch.ones(30)
    w[0], w[1] = 2.0, 0.0
    weighted = head()
    fit_linear_head(weighted, x, y, task, C=0.5, sample_weight=w)
    keep = torch.cat([torch.tensor([0, 0]), torch.arange(2, 30)])
    repeated = head()
    fit_linear_head(repeated, x[keep], y[keep], task, C=0.5)
    assert torch.allclose(weighted.weight, repeated.weight, atol=1e-4)
    assert torch.allclose(weighted.bias, repeated.bias, atol=1e-4)


# -- augment --------------------------------------------------------------------------------
def test_augment_rows_come_from_the_training_split_only_and_copy_no_row(synthetic_csv, tweets_small,
                                                                        tweets_test_small):
    out = pd.read_csv(synthetic_csv)
    assert list(out.columns) == ["text", "label", "source_row"]
    cfg = FitConfig.from_options(str(tweets_small), test=str(tweets_test_small))
    table = load_table(cfg.data)
    train, _, test = fit_splits(cfg.data, table, "classification", load_data)
    assert 0 < len(out) <= 2 * len(train)
    assert set(out["source_row"]) <= set(train.rows.tolist())   # never a validation or test row as a source
    label_of = dict(zip(train.rows.tolist(), train.labels))
    assert all(label_of[r] == lab for r, lab in zip(out["source_row"], out["label"]))
    every_input = {s.lower() for s in list(table.inputs) + list(test.inputs)}
    assert not any(t.lower() in every_input for t in out["text"])
    assert not out["text"].duplicated().any()


def test_augment_is_seeded(tmp_path, tiny_mlm, tweets_small):
    runs = []
    for name in ("a.csv", "b.csv"):
        assert main(["augment", str(tweets_small), "--method", f"mlm:{tiny_mlm}", "--per-example", "1",
                     "--seed", "3", "--out", str(tmp_path / name), "--quiet"]) == 0
        runs.append((tmp_path / name).read_text())
    assert runs[0] == runs[1]


def test_a_sentence_encoder_without_mlm_head_is_refused(tmp_path, tweets_small, capsys):
    """The real MiniLM: a sentence encoder, no `cls.*` weights; augment says how to get a masked LM."""
    assert main(["augment", str(tweets_small), "--method", "mlm:minilm-l6", "--out", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("exapt: error:") == 1 and "no masked-LM head" in err and "exapt pretrain" in err
    assert not (tmp_path / "s.csv").exists()


def test_antiberty_infills_proteins(tmp_path):
    """The real AntiBERTy masked LM: new sequences of the same length, valid residues, about
    the mask fraction changed, the label kept."""
    pytest.importorskip("antiberty")
    seqs = ["EVQLVESGGGLVQPGGSLRLSCAASGFTFSSYAMSWVRQAPGKGLEWVS", "QVQLQESGPGLVKPSETLSLTCTVSGGSISSYYWSWIRQPPGKGLEWIG",
            "DIQMTQSPSSLSASVGDRVTITCRASQSISSYLNWYQQKPGKAPKLLIY", "EIVLTQSPGTLSLSPGERATLSCRASQSVSSSYLAWYQQKPGQAPRLLIY"]
    data = tmp_path / "ab.csv"
    pd.DataFrame({"text": seqs * 2, "label": ["heavy", "heavy", "light", "light"] * 2}).to_csv(data, index=False)
    out = tmp_path / "s.csv"
    assert main(["augment", str(data), "--method", "mlm:antiberty", "--mask-fraction", "0.2", "--val-fraction", "0",
                 "--test-fraction", "0.25", "--out", str(out), "--quiet"]) == 0
    frame = pd.read_csv(out)
    assert len(frame)
    source = pd.read_csv(data)
    for _, row in frame.iterrows():
        real = source["text"][row["source_row"] - 1]
        assert len(row["text"]) == len(real) and set(row["text"]) <= set("ACDEFGHIKLMNPQRSTVWY")
        changed = sum(a != b for a, b in zip(row["text"], real))
        assert 1 <= changed <= round(0.2 * len(real))
        assert row["label"] == source["label"][row["source_row"] - 1]


# -- fit --synthetic ----------------------------------------------------------------------------
def test_fit_weights_synthetic_rows_and_records_n_eff(tmp_path, tiny_bert, tweets_small, tweets_test_small,
                                                      synthetic_csv):
    common = {"test": str(tweets_test_small), "progress": False, "log": quiet}
    real = exapt.fit(str(tweets_small), "linear-probe", str(tiny_bert), **{**common, "out": tmp_path / "real"})
    zero = exapt.fit(str(tweets_small), "linear-probe", str(tiny_bert), synthetic=str(synthetic_csv),
                     synthetic_weight="0", **{**common, "out": tmp_path / "zero"})
    # ALPHA 0 is the run on the real rows alone, exactly
    assert zero.metrics["test"] == real.metrics["test"]
    swept = exapt.fit(str(tweets_small), "linear-probe", str(tiny_bert), synthetic=str(synthetic_csv),
                      synthetic_weight="0,0.5,1", **{**common, "out": tmp_path / "swept"})
    s = swept.metrics["synthetic"]
    assert s["weights_tried"] == [0.0, 0.5, 1.0] and s["chosen_on"] == "validation"
    assert set(s["val"]) == {"0", "0.5", "1"} and s["weight"] in (0.0, 0.5, 1.0)
    n_synth = len(pd.read_csv(synthetic_csv))
    assert s["n_synth"] == n_synth and s["n_real"] == swept.metrics["n_train"]
    for c in s["per_class"].values():
        assert c["n_eff"] == pytest.approx(s["k0"] + c["n_real"] + s["weight"] * c["n_synth"])
    assert sum(c["n_synth"] for c in s["per_class"].values()) == n_synth
    assert json.loads((tmp_path / "swept" / "metrics.json").read_text())["synthetic"]["weight"] == s["weight"]


def test_gradient_training_takes_the_weights(tmp_path, tiny_bert, tweets_small, synthetic_csv):
    run = exapt.fit(str(tweets_small), "full", str(tiny_bert), synthetic=str(synthetic_csv), synthetic_weight="0.5",
                    epochs=1, out=tmp_path / "full", progress=False, log=quiet)
    s = run.metrics["synthetic"]
    assert s["weight"] == 0.5 and s["chosen_on"] == "given"


def test_rows_from_outside_the_training_split_are_left_out(tmp_path, tiny_bert, tweets_small, synthetic_csv):
    """The same file with another seed's split: rows made from what is now validation are dropped."""
    run = exapt.fit(str(tweets_small), "linear-probe", str(tiny_bert), synthetic=str(synthetic_csv), seed=1,
                    out=tmp_path / "other-seed", progress=False, log=quiet)
    s = run.metrics["synthetic"]
    dropped = s["n_synth_dropped"].get("made from a row outside this fit's training split", 0)
    assert dropped > 0 and s["n_synth"] + dropped == s["n_synth_read"]


@pytest.mark.parametrize("content, says", [
    ("text,label,score\nnice flight,positive,1\n", "column 'score'"),
    ("text,label\nnice flight,excellent\n", "label 'excellent'"),
    ("text,label,source_row\nnice flight,positive,0\n", "source_row"),
    ("text,label,source_row\nnice flight,positive,9999\n", "none of its 1 rows"),
])
def test_bad_synthetic_files(tmp_path, tweets_small, content, says, capsys):
    path = tmp_path / "s.csv"
    path.write_text(content)
    assert main(["fit", str(tweets_small), "--synthetic", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("exapt: error:") == 1 and says in err
    assert not (tmp_path / "run").exists()


def test_compare_reports_the_chosen_alpha(tmp_path, tiny_bert, tweets_small, tweets_test_small, synthetic_csv):
    cmp = exapt.compare(str(tweets_small), model=str(tiny_bert), strategies="linear-probe", n_per_class="all",
                        seeds=1, out=tmp_path / "cmp", test=str(tweets_test_small), synthetic=str(synthetic_csv),
                        synthetic_weight="0,1", tracking=False, progress=False, log=quiet)
    row = cmp.results.iloc[0]
    assert row["synthetic_weight"] in (0.0, 1.0) and row["n_synth"] == len(pd.read_csv(synthetic_csv))
    assert "synthetic_weight_chosen" in (tmp_path / "cmp" / "report.md").read_text()
    assert np.isfinite(row["n_eff"])


def test_dna_with_an_exapt_pretrained_model(tmp_path):
    """An `exapt pretrain` DNA model (single bases) infills the promoters: same lengths, bases only."""
    fasta = tmp_path / "genome.fa"
    rng = np.random.default_rng(0)
    fasta.write_text("".join(f">r{i}\n{''.join(rng.choice(list('ACGT'), 200))}\n" for i in range(40)))
    model = tmp_path / "dna"
    assert main(["pretrain", str(fasta), "--alphabet", "dna", "--arch", "tiny", "--steps", "2", "--max-length", "64",
                 "--out", str(model), "--quiet"]) == 0
    out = tmp_path / "s.csv"
    assert main(["augment", "promoters", "--method", f"mlm:{model}", "--per-example", "1", "--out", str(out),
                 "--quiet"]) == 0
    frame = pd.read_csv(out)
    real = load_data("promoters")
    by_row = dict(zip(real.rows.tolist(), real.inputs))
    assert len(frame) and all(set(s) <= set("ACGT") for s in frame["text"])
    assert all(len(s) == len(by_row[r]) and s != by_row[r] for s, r in zip(frame["text"], frame["source_row"]))
