"""The standard tools, run the way ../shared/peers/RESULTS.md describes them.

- scikit-learn probe: the model's own sentence-transformers pipeline (mean pooling + L2
  normalisation) -> LogisticRegression(lbfgs, max_iter=5000, C=1).
- Hugging Face Trainer full fine-tuning: AutoModelForSequenceClassification, lr 5e-5,
  linear decay, 10% warm-up, weight decay 0.01, batch 16, 10 epochs (n <= 64) or 4,
  grad-clip 1.0, dynamic padding, max 64 tokens.

Benchmarks only: exapt itself never imports this file.
"""
from __future__ import annotations

import tempfile
import time

import numpy as np
import torch


def sklearn_probe(model_dir, train_texts, train_labels, test_texts, C=1.0) -> tuple[np.ndarray, float]:
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    st = SentenceTransformer(str(model_dir), device="cpu")
    st.max_seq_length = 64
    start = time.perf_counter()
    x_train = st.encode(list(train_texts), batch_size=64, convert_to_numpy=True)
    x_test = st.encode(list(test_texts), batch_size=64, convert_to_numpy=True)
    clf = LogisticRegression(C=C, max_iter=5000).fit(x_train, train_labels)
    return clf.predict(x_test), time.perf_counter() - start


class _Encoded(torch.utils.data.Dataset):
    def __init__(self, enc, labels=None):
        self.enc, self.labels = enc, labels

    def __len__(self):
        return len(self.enc["input_ids"])

    def __getitem__(self, i):
        item = {k: v[i] for k, v in self.enc.items()}
        if self.labels is not None:
            item["labels"] = int(self.labels[i])
        return item


def trainer_finetune(model_dir, train_texts, train_labels, test_texts, classes, seed=0, epochs=None,
                     batch_size=16, max_length=64, lr=5e-5, train_only=False) -> dict:
    """Returns predictions on test_texts and the Trainer's own timing of train()."""
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    tok = AutoTokenizer.from_pretrained(model_dir)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in train_labels])
    if epochs is None:
        epochs = 10 if len(train_texts) <= 64 * len(classes) else 4
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(classes))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, learning_rate=lr, lr_scheduler_type="linear", warmup_steps=0.1,
                                 weight_decay=0.01, per_device_train_batch_size=batch_size, num_train_epochs=epochs,
                                 max_grad_norm=1.0, seed=seed, report_to=[], save_strategy="no", logging_strategy="no",
                                 disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)
        train_ds = _Encoded(tok(list(train_texts), truncation=True, max_length=max_length), y)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=DataCollatorWithPadding(tok))
        out_metrics = trainer.train().metrics
        result = {"train_runtime": out_metrics["train_runtime"],
                  "train_samples_per_second": out_metrics["train_samples_per_second"]}
        if not train_only:
            test_ds = _Encoded(tok(list(test_texts), truncation=True, max_length=max_length))
            logits = trainer.predict(test_ds).predictions
            result["predictions"] = [classes[i] for i in logits.argmax(-1)]
    return result


def setfit_classify(model_dir, train_texts, train_labels, test_texts, max_length=64) -> tuple[list, float]:
    """SetFit as ../shared/peers/RESULTS.md ran it: SetFitModel.from_pretrained on the same
    MiniLM folder, batch 16, 1 epoch, num_iterations 20, the library's defaults otherwise
    (contrastive pairs, CosineSimilarityLoss, a LogisticRegression head); 64 tokens."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(str(model_dir), device="cpu")
    model.model_body.max_seq_length = max_length
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:  # its checkpoints would land in ./checkpoints otherwise
        args = TrainingArguments(output_dir=out, batch_size=16, num_epochs=1, num_iterations=20, report_to="none",
                                 show_progress_bar=False)
        trainer = Trainer(model=model, args=args,
                          train_dataset=Dataset.from_dict({"text": list(train_texts), "label": list(train_labels)}))
        trainer.train()
    seconds = time.perf_counter() - start
    return list(model.predict(list(test_texts), as_numpy=True)), seconds
