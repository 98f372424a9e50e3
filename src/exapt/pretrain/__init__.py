"""Masked-language-model pre-training of sequence encoders (DNA, protein, domain text)."""
from .trainer import PretrainConfig, PretrainResult, pretrain

__all__ = ["pretrain", "PretrainConfig", "PretrainResult"]
