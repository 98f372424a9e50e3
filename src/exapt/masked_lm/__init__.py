"""Masked-language-model machinery, shared by `exapt pretrain`, a self-supervised source
(`fit --source-corpus`, mlm_source.py) and EWC's Fisher information on a corpus.

    corpus.py     FASTA / text streamed into token windows, with a held-out slice
    masking.py    BERT's 80/10/10 masking (and k-token spans for k-mers)
    objective.py  the masked-LM loss, batching, device and held-out evaluation
"""
