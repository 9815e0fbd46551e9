"""Lesion findings in clinical free text, negated, uncertain or asserted: negspacy on spaCy.

The pipeline is a blank English spaCy pipeline (tokenizer only, no
statistical model, nothing downloaded) with four components:

``entity_ruler``
    Lesion terms (:data:`LESION_TERMS` and their plurals) as phrase patterns
    matched on lower-cased tokens; label ``LESION``, the canonical term as
    the pattern id.
``sentencizer``
    negspacy scopes its triggers by sentence, so every doc needs sentence
    boundaries; the text is already split by :func:`split_sentences`.
``negex``
    negspacy's NegEx (Chapman et al. 2001) with its ``en_clinical`` termset
    plus the rules below: a preceding trigger negates every lesion after it,
    a following trigger every lesion before it, up to the sentence edge or a
    termination term; pseudo-triggers ("no change", ...) do not negate.
    Sets ``span._.negex``.
``uncertainty``
    A second negspacy component whose termset holds uncertainty triggers
    ("possible", "cannot be excluded", ...) in the same roles. Sets
    ``span._.uncertain``. Like ConText, negation and uncertainty are
    separate modifiers: a lesion in scope of both is both negated and
    uncertain, and :func:`~domain.healthcare.notes.text_label` counts it as
    uncertain (unclear), never as a clean negative.

The pipeline is built once, on first use (:func:`context_pipeline`), so
importing this module does not import spaCy.

Why negspacy and not medspaCy's ConText: medspacy 1.3.1 requires
``spacy<3.8`` on Python < 3.12, so pip resolves spacy 3.7.5 with thinc 8.2.4
and blis 0.7.11, built against NumPy 1.x; with the pinned ``numpy==2.4.6``
importing spaCy then fails with ``ValueError: numpy.dtype size changed, may
indicate binary incompatibility. Expected 96 from C header, got 88 from
PyObject`` (raised in ``thinc/backends/numpy_ops.pyx``). thinc 8.2.5, the
last 8.2 release, requires ``numpy<2.0.0``; NumPy 2 support starts with
thinc 8.3 / spaCy 3.8, which medspacy 1.3.1 refuses on Python 3.11.

A note on the rules added to negspacy's ``en_clinical`` termset, each to
keep a behaviour the previous hand-written matcher had (and its tests
expect):

* Pseudo-negations: "no decrease", "without change", "without interval
  change" (a comparison, not a negated lesion); "cannot exclude", "can not
  exclude", "cannot be excluded", "can not be excluded", "not excluded", "not
  be ruled out" (uncertainty phrases whose "not"/"cannot" would otherwise
  negate a lesion named after them).
* Preceding negation: "resolution of". Removed: "rule out", "r/o" and "ro",
  which the termset counts as negations; here, as in ConText, they are
  uncertainty triggers (a lesion to rule out is possible, not absent).
* Following negations: "ruled out" (covers "has been ruled out", "is ruled
  out"; the termset only has "was/were ruled out"), "not seen", "not
  identified", "not present", "resolved" ("has resolved"), "is/are/was/were
  absent", "is/was/were excluded".
* Terminations: "whereas", "with the exception of", "there is", "there are",
  "there was", "there were", "there has been" ("No effusion; there is a
  mass" must not negate the mass).
* Uncertainty (negspacy has no uncertainty termset): preceding "possible",
  "possibly", "probable", "questionable", "suspicious for", "suspected",
  "concerning for", "may represent", "could represent", "cannot exclude",
  "can not exclude", "rule out", "r/o"; following "cannot be excluded", "can
  not be excluded", "not excluded", "not ruled out", "not been ruled out",
  "not be ruled out", "is possible", "is suspected"; the same terminations as
  negation.
* A lesion term joined to a hyphen ("mass-like", "non-nodular") is not a
  mention: spaCy splits on the hyphen, the previous matcher did not.

The termset's other defaults ("declined", "doubt", "versus", "evaluate for",
"never", "cannot", "free", ...) apply as negspacy ships them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Span

    from domain.healthcare.notes import Note

LESION_LABEL = "LESION"
LESION_TERMS: tuple[str, ...] = (
    "ground-glass opacity",
    "ground glass opacity",
    "space-occupying lesion",
    "nodule",
    "nodular opacity",
    "mass",
    "lesion",
    "opacity",
    "tumor",
    "tumour",
    "neoplasm",
    "carcinoma",
    "malignancy",
    "cancer",
    "metastasis",
)
_PLURALS = {
    "mass": "masses",
    "opacity": "opacities",
    "metastasis": "metastases",
    "malignancy": "malignancies",
}

_TERMINATION_ADDED = (
    "whereas",
    "with the exception of",
    "there is",
    "there are",
    "there was",
    "there were",
    "there has been",
)
#: Rules added to negspacy's ``en_clinical`` termset (see the module docstring).
NEGATION_ADDED: dict[str, tuple[str, ...]] = {
    "pseudo_negations": (
        "no decrease",
        "without change",
        "without interval change",
        "cannot exclude",
        "can not exclude",
        "cannot be excluded",
        "can not be excluded",
        "not excluded",
        "not be ruled out",
    ),
    "preceding_negations": ("resolution of",),
    "following_negations": (
        "ruled out",
        "not seen",
        "not identified",
        "not present",
        "resolved",
        "is absent",
        "are absent",
        "was absent",
        "were absent",
        "is excluded",
        "was excluded",
        "were excluded",
    ),
    "termination": _TERMINATION_ADDED,
}
#: Defaults removed from the termset: uncertainty triggers here, not negations.
NEGATION_REMOVED: dict[str, tuple[str, ...]] = {"preceding_negations": ("rule out", "r/o", "ro")}
#: The uncertainty termset, for a second negspacy component (terminations: the negation ones).
UNCERTAINTY: dict[str, tuple[str, ...]] = {
    "pseudo_negations": (),
    "preceding_negations": (
        "possible",
        "possibly",
        "probable",
        "questionable",
        "suspicious for",
        "suspected",
        "concerning for",
        "may represent",
        "could represent",
        "cannot exclude",
        "can not exclude",
        "rule out",
        "r/o",
    ),
    "following_negations": (
        "cannot be excluded",
        "can not be excluded",
        "not excluded",
        "not ruled out",
        "not been ruled out",
        "not be ruled out",
        "is possible",
        "is suspected",
    ),
}


@dataclass(frozen=True)
class Finding:
    """A lesion mention. ``negated`` and ``uncertain`` are separate modifiers; both may hold."""

    term: str
    negated: bool
    sentence: str
    uncertain: bool = False

    @property
    def asserted(self) -> bool:
        return not self.negated and not self.uncertain


def _plural(term: str) -> str:
    head, _, last = term.rpartition(" ")
    last_plural = _PLURALS.get(last, last + "s")
    return f"{head} {last_plural}" if head else last_plural


def termsets() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(negation, uncertainty) termsets in negspacy's format, built from copies of its defaults."""
    from negspacy.termsets import termset

    # termset.add_patterns would change negspacy's module-level defaults in place: copy instead.
    defaults = {kind: list(phrases) for kind, phrases in termset("en_clinical").get_patterns().items()}
    negation = {}
    for kind, phrases in defaults.items():
        removed = set(NEGATION_REMOVED.get(kind, ()))
        kept = [p for p in phrases if p not in removed]
        negation[kind] = kept + [p for p in NEGATION_ADDED.get(kind, ()) if p not in kept]
    uncertainty = {kind: list(phrases) for kind, phrases in UNCERTAINTY.items()}
    uncertainty["termination"] = list(negation["termination"])
    return negation, uncertainty


@cache
def context_pipeline() -> Language:
    """The blank spaCy pipeline with lesion patterns and the two negspacy components (built once)."""
    import negspacy.negation  # noqa: F401  (registers the "negex" factory)
    import spacy

    negation, uncertainty = termsets()
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
    ruler.add_patterns(
        [
            {"label": LESION_LABEL, "pattern": form, "id": term}
            for term in LESION_TERMS
            for form in dict.fromkeys((term, _plural(term)))
        ]
    )
    nlp.add_pipe("sentencizer")
    component = {"ent_types": [LESION_LABEL]}
    nlp.add_pipe("negex", name="negex", config={**component, "neg_termset": negation})
    nlp.add_pipe(
        "negex",
        name="uncertainty",
        config={**component, "neg_termset": uncertainty, "extension_name": "uncertain"},
    )
    return nlp


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+|(?<=[.!?;])$")


def split_sentences(text: str) -> list[str]:
    """Split on sentence punctuation followed by space, semicolons and newlines (not on "7.5")."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _hyphenated(span: Span) -> bool:
    """Whether the span is glued to a hyphen ("mass-like", "non-nodular"): part of a compound."""
    doc = span.doc
    before = span.start > 0 and doc[span.start - 1].text == "-" and not doc[span.start - 1].whitespace_
    after = span.end < len(doc) and doc[span.end].text == "-" and not span[-1].whitespace_
    return before or after


def extract_findings(note: Note | str) -> list[Finding]:
    """Lesion mentions in the findings and impression, each negated, uncertain or asserted."""
    texts = [note] if isinstance(note, str) else [note.findings, note.impression]
    sentences = [s for text in texts for s in split_sentences(text)]
    return [
        Finding(ent.ent_id_, bool(ent._.negex), doc.text, bool(ent._.uncertain))
        for doc in context_pipeline().pipe(sentences)
        for ent in doc.ents
        if ent.label_ == LESION_LABEL and not _hyphenated(ent)
    ]
