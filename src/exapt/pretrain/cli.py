"""`exapt pretrain CORPUS ...`: argument parsing and the call into exapt.pretrain."""
from __future__ import annotations

import argparse

from ..errors import ExaptError
from ..files import remove_stale_temporaries
from ..masked_lm.corpus import BUILTIN_CORPORA
from .setup import ARCHS
from .trainer import pretrain


def add_parser(sub) -> None:
    corpora = ", ".join(f"{k} ({v[0]})" for k, v in BUILTIN_CORPORA.items())
    p = sub.add_parser("pretrain", help="masked-LM pre-training of an encoder -> a model folder for --model",
                       description="Pre-train (or continue pre-training) a BERT-style encoder with masked-language "
                                   "modelling on an unlabelled corpus. The output folder is a Hugging Face model "
                                   "folder that `exapt fit --model FOLDER` uses as a backbone.")
    p.add_argument("corpus", help=f"FASTA or text file (gzipped or not), or a built-in corpus: {corpora}")
    p.add_argument("--objective", default="mlm", choices=["mlm"], help="masked-language modelling (the only one)")
    p.add_argument("--alphabet", choices=["dna", "protein", "text"],
                   help="what the corpus holds (default: the built-in corpus's, else text)")
    p.add_argument("--kmer", type=int, help="DNA: overlapping k-mers as tokens (default 1: single bases)")
    p.add_argument("--arch", help=f"{', '.join(f'{k} ({v[0]}-d, {v[1]} layers)' for k, v in ARCHS.items())}"
                                                 " or a CONFIG.json of BertConfig fields (default: tiny)")
    p.add_argument("--init", metavar="MODEL", help="continue pre-training this model (alias or folder) instead of "
                                                  "starting from random weights")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--max-length", type=int, default=128, help="tokens per window, [CLS] and [SEP] included")
    p.add_argument("--batch-size", type=int, default=64)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="optimiser steps (default: one pass over the corpus)")
    budget.add_argument("--epochs", type=float, help="passes over the corpus")
    budget.add_argument("--max-minutes", type=float,
                        help="a time budget instead: train for this many minutes of steps, the learning-rate "
                             "schedule spread over the budget (the step count then depends on the machine)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 5e-4 from scratch, 5e-5 with --init)")
    p.add_argument("--warmup", type=float, default=0.06, help="fraction of steps of linear warm-up")
    p.add_argument("--mask-probability", type=float, default=0.15)
    p.add_argument("--holdout", type=float, default=0.05, help="fraction held out for masked-LM evaluation")
    p.add_argument("--eval-every", type=int, help="steps between held-out evaluations and checkpoints "
                                                  "(default: a tenth of the run)")
    p.add_argument("--max-tokens", type=int, help="read only the first N tokens of the corpus")
    p.add_argument("--vocab-size", type=int, default=8000, help="text from scratch: WordPiece vocabulary size")
    p.add_argument("--tokenizer", metavar="FOLDER", help="text from scratch: reuse the vocabulary saved in FOLDER "
                   "(an earlier exapt pretrain model) instead of learning one; learning one is not repeatable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or interrupted run in --out")
    p.add_argument("--quiet", action="store_true")


def run(a: argparse.Namespace) -> None:
    if a.resume and a.overwrite:
        raise ExaptError("give --resume or --overwrite, not both")
    if a.kmer is not None and not 1 <= a.kmer <= 8:  # 0 would otherwise read as "not given"
        raise ExaptError(f"--kmer must be between 1 and 8 (got {a.kmer})")
    if a.init and (a.arch or a.kmer):
        raise ExaptError("--arch and --kmer do not apply with --init: the model keeps its architecture and tokenizer")
    pretrain(a.corpus, out=a.out, alphabet=a.alphabet, kmer=a.kmer or 1, arch=a.arch or "tiny", init=a.init, resume=a.resume,
             overwrite=a.overwrite, progress=not a.quiet, log=(lambda *_: None) if a.quiet else print,
             max_length=a.max_length, batch_size=a.batch_size, steps=a.steps, epochs=a.epochs, max_minutes=a.max_minutes, lr=a.lr,
             warmup=a.warmup, mask_probability=a.mask_probability, holdout=a.holdout, eval_every=a.eval_every,
             max_tokens=a.max_tokens, vocab_size=a.vocab_size, tokenizer=a.tokenizer, seed=a.seed)
    remove_stale_temporaries(a.out)  # what a write killed part-way in an earlier (resumed) process left
