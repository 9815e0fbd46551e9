"""Protected health information in clinical free text: find it, scrub it, verify the scrub.

Three detectors, whose spans are merged and replaced by a placeholder of
their kind (``[NAME]``, ``[DATE]``, ``[ID]``, ``[PHONE]``, ``[EMAIL]``,
``[ADDRESS]``):

(a) **Declared identifiers** (:func:`declared_identifiers`): what the note's
    own structured elements say (patient name, id, birth date, phone,
    address; author), expanded into the forms prose writes them in: a DICOM
    person name ``FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX`` becomes "Given
    Family", "Family, Given", "G. Family", each part alone and the initials
    ("GF"); an id also as its digits; a date in its numeric and month-name
    renderings; a phone number in every punctuation; an address also as its
    street, city and ZIP code.
(b) **Patterns**: dates (numeric, ISO, compact, month names with or
    without the year), record and account numbers (labelled or
    identifier-shaped: letters with four or more digits, five or more
    digits, SSN shape, UID/IP dotted numbers), phone numbers, emails, URLs,
    street addresses (with unit, city, state, ZIP), PO boxes.
(c) **Name context**: a title ("Dr.", "Mrs", "Prof") or a post-nominal
    (", MD") next to capitalised words; a name trigger ("discussed with",
    "per", "seen by", "wife", "cc") followed by a name and its list ("O'Connor
    and Castillo", "Castillo, Elena"); and any capitalised word that is
    neither in the clinical and English vocabulary (:func:`vocabulary`) nor an
    abbreviation: an unknown capitalised word in a radiology report is taken
    for a name (fail closed), with the capitalised words and initials next
    to it.

Eponyms ("Hodgkin lymphoma", "Wilms tumor", "Graves disease", "circle of
Willis", "Fleischner criteria") are clinical meaning, not people: a word of
:data:`EPONYMS` is kept when it is part of its clinical term (followed by a
word of :data:`EPONYM_HEADS`, or after "<anatomy> of"). Anywhere else it is a
name like any other, and a declared identifier always wins: in the note of a
patient called Graves, "Graves disease" becomes "[NAME] disease".

Verification (:func:`residual_identifiers`) scans the scrubbed text again,
with the same detectors plus stricter shape checks that ignore word
boundaries (five digits in a row, an ``@``, a ``^`` between letters), so a
value glued to other text ("MRN0012345x") that scrubbing missed is still
caught; the caller refuses such a note rather than store it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache

NAME, DATE, ID, PHONE, EMAIL, ADDRESS = "name", "date", "id", "phone", "email", "address"
_PRIORITY = {EMAIL: 0, ADDRESS: 1, PHONE: 2, DATE: 3, ID: 4, NAME: 5}
_PLACEHOLDER = re.compile(r"\[(?:NAME|DATE|ID|PHONE|EMAIL|ADDRESS)\]")

# ---------------------------------------------------------------------------
# Vocabulary: words that are not names when capitalised

#: Radiology report and general clinical words (lower case), beyond spaCy's English stop words
#: and negspacy's termset. A capitalised word outside the vocabulary is taken for a name.
CLINICAL_WORDS = frozenset(
    """
    abdomen abdominal abnormal abnormality abnormalities absent acute addendum additional adenopathy adjacent
    adrenal adult advised age agreed air airspace airway airways amount anterior aorta aortic apex apical
    appearance appears approximately area areas arterial artery assessment associated asymmetric atelectasis
    attending atrophy attenuation available axial axis basal base bases benign bilateral bilaterally biopsy
    bladder blood bone bones bony borderline bowel brain breast breath bronchial bronchiectasis calcification
    calcified calcium call called cardiac cardiomegaly cardiopulmonary care caudal cavitary cavity center
    central centimeter cerebellar cerebellum cerebral change changes characterization chest chronic circle
    clear clinical clinically collection colon communicated comparison compared compatible concern concerning
    conclusion consider consistent consolidation contact contour contours contrast correlation cortex cortical
    cough critical ct cyst cystic date day days dedicated degenerative density description descriptor
    diagnosis diagnostic diameter diffuse dilated dilation dimension disc discussed discussion disease
    distal distribution dizziness dose dorsal dr duct edema effect effusion effusions electronically
    emphysema encounter end enhanced enhancement enlarged enlargement evaluation exam examination excluded
    extra extra-axial facility family fat female fibrosis field fields finding findings fissure fluid focal
    focus follow follow-up followup foramen fracture frontal fu general gland glass granuloma ground growth
    guidelines headache heart hemorrhage hepatic hilar hilum history hospital hyperintensities
    hyperintensity hypodense identified image images imaging impression incidental increased indeterminate
    indicated infarct infection inferior infiltrate inflammatory information injury internal interstitial
    intracranial intravenous kidney known large larger lateral left lesion lesions level likely limited
    liver lobar lobe lobes lobulated local localized location lower lumbar lung lungs lymph lymphadenopathy
    magnetic male malignant margin margins mass measure measured measurement measures measuring mediastinal
    mediastinum medical microvascular midline mild minimal mm cm moderate month months mri multiple muscle
    neck necrosis neoplastic nervous neuro new node nodes nodular nonspecific noncalcified none normal note
    noted notified number observation occupies occupying opacification oncology organ osseous other
    paranasal parenchyma parenchymal partial patchy pathology patient pelvis perihilar peripheral pleural
    pneumonia pneumothorax portion positive posterior postoperative preliminary previous previously primary
    prior probable process progression prominent pulmonary punctate radiograph radiologist radiology
    reading recommend recommendation recommendations recommended region regional related remainder
    remarkable renal report reported residual resonance result results review reviewed right routine
    scan scattered screening segment segmental seizure sequence sequences series severe shift shortness
    side signal signed significant similar sinus sinuses size skull slight small smoking soft solid solitary
    space spiculated spine spleen spinal stable status study subcentimeter subsegmental sulci superior
    surrounding suspicion symmetric system technique temporal thickening thoracic thorax thyroid tissue
    total trachea tract transverse trauma tube unchanged unremarkable unspecified upper urgent vascular
    ventricle ventricles ventricular verbal vertebral vessel vessels view views visualized volume weeks
    white matter within year years zone zones society
    anatomy axial coronal sagittal weighted hounsfield units unit findings technologist resident physician
    exam exams dated performed obtained provided confirmed verbally received results preliminary final
    follow-up neoplasm tumor tumour carcinoma cancer metastasis metastases malignancy opacity opacities
    nodule nodules masses chest-wall lymphoma sarcoma syndrome plain film
    lives living lived home address phone telephone email mail contacted reached preferred emergency
    relative relatives daughter son wife husband mother father sister brother partner spouse friend
    insurance member policy account record records accession social security number ssn mrn dob birth
    born visit visits appointment scheduled rescheduled date dated today yesterday tomorrow morning evening
    afternoon night results report reports message messages left voicemail agreed agrees aware requested
    request plan plans discussed discussion spoke conversation questions answered consent obtained copy
    sent faxed forwarded attention attn cc pt per see seen examined dictated transcribed read interpreted
    verified approved ordered referred referring accompanied clinic office outpatient inpatient
    """.split()
)
#: Eponyms kept when they are part of their clinical term (see the module docstring).
EPONYMS = frozenset(
    """
    hodgkin wilms graves paget crohn alzheimer parkinson hashimoto bell kerley virchow robin schmorl baker
    morgagni bochdalek pancoast ewing kaposi barrett meckel hirschsprung klatskin krukenberg warthin brodie
    colles chiari dandy walker sylvian monro willis luschka magendie fleischner hounsfield glasgow gleason
    wegener hurthle mallory weiss boerhaave zenker cushing addison conn reidel riedel hampton westermark
    kartagener macleod hamman rich
    """.split()
)
EPONYM_HEADS = frozenset(
    """
    disease diseases lymphoma tumor tumour tumors sarcoma sign signs syndrome lines line node nodes cyst
    cysts hernia fracture criteria guidelines guideline classification score scale spaces space
    malformation fissure palsy esophagus diverticulum thyroiditis hump ulcer tear abscess nodes society
    """.split()
)
_ANATOMY_OF = frozenset({"circle", "foramen", "foramina", "canal", "ligament", "pouch", "space", "spaces"})
#: Capitalised abbreviations that are not names.
ABBREVIATIONS = frozenset(
    "CT MR MRI CR PET SPECT US XR FLAIR STIR DWI ADC SWI GRE HU ICD ICD-10 IV CTA MRA LLL LUL RLL RML RUL "
    "AP PA CSF CNS ENT ED ER ICU BI-RADS LI-RADS LUNG-RADS TI-RADS PI-RADS CXR".split()
)
TITLES = frozenset(
    {"dr", "doctor", "mr", "mrs", "ms", "mx", "miss", "prof", "professor", "sr", "sister", "nurse"}
)
POSTNOMINALS = frozenset({"MD", "DO", "RN", "NP", "PA", "PA-C", "PhD", "MBBS", "FRCR", "FRCP", "DNP", "RT"})
_PARTICLES = frozenset(
    (
        "van von der den de del della di da dos das du la le bin ibn al el ter ten y st mac mc ó ní nic ua ap"
    ).split()
)
#: Words after which a name follows ("discussed with O'Connor and Castillo").
NAME_TRIGGERS = (
    "discussed with",
    "discussed by",
    "d/w",
    "spoke with",
    "spoke to",
    "talked with",
    "talked to",
    "per",
    "called",
    "paged",
    "notified",
    "informed",
    "communicated to",
    "communicated with",
    "conveyed to",
    "relayed to",
    "reviewed with",
    "reviewed by",
    "seen by",
    "examined by",
    "dictated by",
    "transcribed by",
    "signed by",
    "read by",
    "interpreted by",
    "reported by",
    "verified by",
    "approved by",
    "referred by",
    "ordered by",
    "requested by",
    "accompanied by",
    "attending",
    "resident",
    "fellow",
    "radiologist",
    "technologist",
    "physician",
    "surgeon",
    "oncologist",
    "referring",
    "cc",
    "attn",
    "patient",
    "pt",
    "name",
    "contact",
    "wife",
    "husband",
    "daughter",
    "son",
    "mother",
    "father",
    "sister",
    "brother",
    "partner",
    "spouse",
    "caregiver",
    "guardian",
    "friend",
    "nephew",
    "niece",
)
#: Capitalised words a trigger may be followed by that are not people.
_NOT_PEOPLE = frozenset(
    "the a an his her their our radiology oncology surgery pulmonology neurology cardiology team service "
    "clinic department ward family patient primary care emergency".split()
)

# ---------------------------------------------------------------------------
# Patterns

_MONTH_WORD = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_MONTH = rf"{_MONTH_WORD}\.?"
_DAY = r"(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?"
_YEAR = r"(?:1[89]\d\d|2[01]\d\d)"
_CAP_MONTH = (
    r"(?:(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?"
    r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)|(?:JAN|FEB|MAR|APR|MAY|JUNE?|JULY?|AUG|SEPT?|OCT|NOV|DEC))\.?"
)
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Way|Place|Pl|Terrace|Ter"
    r"|Circle|Cir|Highway|Hwy|Parkway|Pkwy|Square|Sq|Trail|Trl|Crescent|Close|Row|Walk|Alley|Plaza|Route|Rte)"
)
_CAP_WORD = r"[A-ZÀ-ÖØ-Þ][\w'’-]*"
_STATES = (
    r"(?:AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY"
    r"|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY)"
)
_ID_LABEL = (
    r"(?:MRN|MR\s?#|MR\s?no\.?|medical\s+record(?:\s+(?:number|no\.?|#))?|record\s*(?:number|no\.?|#)"
    r"|acc(?:ession)?(?:\s*(?:number|no\.?|#))?|SSN|social\s+security(?:\s+(?:number|no\.?|#))?"
    r"|(?:patient|member|insurance|subscriber|policy|account|acct|encounter|visit|chart|case|order|claim)"
    r"\s*(?:id|number|no\.?|#)|ID|NHS(?:\s+(?:number|no\.?))?)"
)

PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (EMAIL, re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    (ID, re.compile(r"\b(?:https?://|www\.)\S+?(?=[.,;:!?)]*(?:\s|$))", re.I)),
    (
        ADDRESS,
        re.compile(
            rf"\b\d{{1,6}}(?:-\d+)?[A-Z]?\s+(?:(?:\d+(?:st|nd|rd|th)|{_CAP_WORD})\s+){{0,4}}{_STREET_SUFFIX}\b\.?"
            rf"(?:,?\s+(?:Apt|Apartment|Unit|Suite|Ste|Flat|#)\.?\s*#?\w+)?"
            rf"(?:,\s+{_CAP_WORD}(?:\s+{_CAP_WORD}){{0,2}}(?:,?\s+{_STATES}\b)?(?:\s+\d{{5}}(?:-\d{{4}})?)?)?"
        ),
    ),
    (ADDRESS, re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d+", re.I)),
    (ADDRESS, re.compile(rf"\b{_CAP_WORD}(?:\s+{_CAP_WORD}){{0,2}},?\s+{_STATES}\s+\d{{5}}(?:-\d{{4}})?\b")),
    (PHONE, re.compile(r"\+\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,5}\d")),
    (
        PHONE,
        re.compile(
            r"(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b(?:\s*(?:ext\.?|x)\s*\d{1,5})?",
            re.I,
        ),
    ),
    (PHONE, re.compile(r"\b\d{3}[.-]\d{4}\b")),
    (
        PHONE,
        re.compile(
            r"\b(?:tel|phone|ph|cell|mobile|pager|beeper|fax|ext)\.?\s*[:#]?\s*[\d][\d\s.-]{2,}\d", re.I
        ),
    ),
    (ID, re.compile(r"\b\d{3}[-\s]\d{2}[-\s]\d{4}\b")),
    (DATE, re.compile(r"\b\d{4}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])\b")),
    (DATE, re.compile(r"\b\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})\b")),
    (DATE, re.compile(rf"\b{_DAY}(?:\s+of)?[\s-]+{_MONTH}[\s,-]+'?(?:{_YEAR}|\d\d)\b", re.I)),
    (DATE, re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b", re.I)),
    (DATE, re.compile(rf"\b{_MONTH},?\s+{_YEAR}\b", re.I)),
    (DATE, re.compile(rf"\b{_CAP_MONTH}\s+{_DAY}\b")),
    (DATE, re.compile(rf"\b{_DAY}(?:\s+of)?\s+{_CAP_MONTH}(?![\w'])")),
    (DATE, re.compile(r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b")),
    (ID, re.compile(rf"\b{_ID_LABEL}\s*(?:is|:|#|=|-)?\s*#?\s*[A-Z0-9][A-Z0-9/-]*\d[A-Z0-9/-]*", re.I)),
    (ID, re.compile(r"\b\d+(?:\.\d+){3,}\b")),
)
#: An identifier-shaped token: letters and digits (four digits or more), or five digits or more.
_ID_TOKEN = re.compile(r"\b[A-Za-z0-9]+(?:[-/#][A-Za-z0-9]+)*\b")
#: Shapes the verifier looks for regardless of word boundaries.
_STRICT_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (ID, re.compile(r"\d{5,}")),
    (EMAIL, re.compile(r"\w@\w")),
    (NAME, re.compile(r"[^\W\d_]\^|\^[^\W\d_]")),
)


def _id_shaped(token: str) -> bool:
    digits = sum(ch.isdigit() for ch in token)
    letters = sum(ch.isalpha() for ch in token)
    return digits >= 5 or (digits >= 4 and letters >= 1)


# ---------------------------------------------------------------------------
# Declared identifiers


@dataclass(frozen=True)
class Identifiers:
    """A note's declared identifiers in their free-text forms.

    ``exact`` values are matched case-insensitively as whole words (and are what a
    store is searched for afterwards); ``cased`` ones (name parts of two letters,
    initials) only as written, so "Le" or "JS" does not match "le" or "js".
    """

    exact: Mapping[str, str]
    cased: Mapping[str, str]


_MONTHS = "January February March April May June July August September October November December".split()


def date_variants(value: str) -> list[str]:
    """Renderings of an ISO (or DICOM DA) date that free text may use."""
    digits = re.sub(r"\D", "", value)
    if len(digits) != 8:
        return []
    try:
        day = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return []
    month, d, m, y = _MONTHS[day.month - 1], day.day, day.month, day.year
    numeric = [
        f"{y}-{m:02d}-{d:02d}",
        f"{y}{m:02d}{d:02d}",
        f"{y}/{m:02d}/{d:02d}",
        f"{y}.{m:02d}.{d:02d}",
    ]
    for a, b in ((m, d), (d, m)):
        for sep in "/-.":
            numeric += [f"{a:02d}{sep}{b:02d}{sep}{y}", f"{a}{sep}{b}{sep}{y}"]
        for sep in "/-":  # not "2.4.91": that is inside a transfer syntax UID, not only a date
            numeric += [f"{a:02d}{sep}{b:02d}{sep}{y % 100:02d}", f"{a}{sep}{b}{sep}{y % 100:02d}"]
    words = []
    for name in (month, month[:3], month[:3] + "."):
        words += [
            f"{name} {d}, {y}",
            f"{name} {d} {y}",
            f"{d} {name} {y}",
            f"{d}-{name}-{y}",
            f"{d:02d}-{name}-{y}",
        ]
    return list(dict.fromkeys(numeric + words))


def person_name_parts(value: str) -> tuple[list[str], list[str]]:
    """(given names, family names) of a name in DICOM ``^`` form, "Family, Given" or "Given Family".

    Titles and post-nominals ("Dr.", "MD") are dropped.
    """
    value = value.strip()
    if "^" in value:
        components = (value.split("^") + [""] * 5)[:5]
        family, given, middle = components[0], components[1], components[2]
        return _words(f"{given} {middle}"), _words(family)
    if "," in value:
        family, _, given = value.partition(",")
        given_words = _words(given)
        if given_words:
            return given_words, _words(family)
    words = _words(value)
    return words[:-1], words[-1:]


_POSTNOMINALS_UPPER = frozenset(p.upper() for p in POSTNOMINALS)


def _words(text: str) -> list[str]:
    words = [w.strip(".") for w in re.split(r"[\s,]+", text)]
    return [w for w in words if w and w.lower() not in TITLES and w.upper() not in _POSTNOMINALS_UPPER]


def _prose(word: str) -> str:
    """An upper-case name part as prose writes it: "O'CONNOR" -> "O'Connor"."""
    return word.title() if word.isupper() else word


def _name_variants(value: str, exact: dict[str, str], cased: dict[str, str]) -> None:
    given, family = person_name_parts(value)
    if not given and not family:
        return
    exact[value] = NAME
    given_p, family_p = [_prose(w) for w in given], [_prose(w) for w in family]
    full_family = " ".join(family_p)
    first = given_p[0] if given_p else ""
    for form in (
        " ".join(given_p + family_p),
        f"{first} {full_family}",
        f"{full_family}, {' '.join(given_p)}",
        f"{full_family} {' '.join(given_p)}",
        f"{first[:1]}. {full_family}" if first else "",
        "^".join(w.upper() for w in (full_family, *given_p)),
    ):
        if form.strip(" ,."):
            exact[form.strip(" ,")] = NAME
    for part in given_p + family_p + [p for w in family_p for p in re.split(r"[-\s]", w)]:
        part = part.strip(".'’")
        if part.lower() in _PARTICLES:  # "van", "de": not identifying alone, and ordinary words
            continue
        if len(part) >= 3:
            exact[part] = NAME
        elif len(part) == 2 and part[0].isupper():
            cased[part] = NAME
            cased[part.upper()] = NAME
    family_words = full_family.split()
    candidates = ["".join(w[0] for w in given_p + family_words)]
    if first and family_words:  # "JS" as well as "JAS", "JB" as well as "JVDB"
        candidates += [first[0] + family_words[0][0], first[0] + family_words[-1][0]]
    for initials in candidates:
        # initials that spell "CT" or "MR" are left to the report: alone they hardly identify anyone
        if len(initials) >= 2 and initials.isalpha() and initials.upper() not in ABBREVIATIONS:
            cased[initials.upper()] = NAME
            cased[".".join(initials.upper()) + "."] = NAME


def _phone_variants(value: str) -> list[str]:
    digits = re.sub(r"\D", "", value)
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) != 10:
        return [value] + ([digits] if len(digits) >= 5 else [])
    a, b, c = digits[:3], digits[3:6], digits[6:]
    forms = [f"({a}) {b}-{c}", f"({a}){b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"{a} {b} {c}", digits]
    forms += [f"+1 {a} {b} {c}", f"+1-{a}-{b}-{c}", f"1-{a}-{b}-{c}", f"{b}-{c}", f"{b}.{c}"]
    return [value, *forms]


_STREET_ABBREVIATIONS = {
    "street": "St",
    "avenue": "Ave",
    "road": "Rd",
    "lane": "Ln",
    "drive": "Dr",
    "boulevard": "Blvd",
    "court": "Ct",
    "place": "Pl",
    "parkway": "Pkwy",
    "highway": "Hwy",
}


def _address_variants(value: str) -> list[str]:
    forms = [value]
    parts = [p.strip() for p in value.split(",") if p.strip()]
    forms += parts
    for part in parts:
        words = part.split()
        if words and words[0][:1].isdigit() and len(words) >= 2:
            street = " ".join(words[1:])
            forms.append(street)
            abbreviation = _STREET_ABBREVIATIONS.get(words[-1].lower())
            if abbreviation:
                forms += [" ".join([*words[:-1], abbreviation]), " ".join([*words[:-1], abbreviation + "."])]
        forms += re.findall(r"\b\d{5}(?:-\d{4})?\b", part)
    return forms


def _id_variants(value: str) -> list[str]:
    forms = [value]
    digits = re.sub(r"\D", "", value)
    if len(digits) >= 4:
        forms += [digits, digits.lstrip("0") or digits]
    letters = re.sub(r"[^A-Za-z]", "", value)
    if letters and digits:
        forms += [f"{letters}{digits}", f"{letters}-{digits}", f"{letters} {digits}"]
    return forms


def declared_identifiers(
    *,
    names: Iterable[str] = (),
    ids: Iterable[str] = (),
    dates: Iterable[str] = (),
    phones: Iterable[str] = (),
    addresses: Iterable[str] = (),
) -> Identifiers:
    """Every free-text form of the identifiers a note declares in its structured elements."""
    exact: dict[str, str] = {}
    cased: dict[str, str] = {}
    for name in names:
        if name.strip():
            _name_variants(name, exact, cased)
    for kind, values, variants in (
        (ID, ids, _id_variants),
        (DATE, dates, lambda v: [v, *date_variants(v)]),
        (PHONE, phones, _phone_variants),
        (ADDRESS, addresses, _address_variants),
    ):
        for value in values:
            if value.strip():
                for form in variants(value.strip()):
                    if len(form.strip()) >= 3:
                        exact.setdefault(form.strip(), kind)
    # an ordinary clinical word that is also a name part ("White") is still scrubbed: fail closed
    return Identifiers(exact=exact, cased={k: v for k, v in cased.items() if k not in exact})


def _alternation(values: Iterable[str]) -> str:
    return "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))


# ---------------------------------------------------------------------------
# Name context


@cache
def function_words() -> frozenset[str]:
    """Words that never continue a name: English stop words, NegEx triggers, lesion terms.

    They carry the clinical meaning ("No", "Negative", "mass"), so a name list
    ("... and J. No evidence of ...") must stop before them.
    """
    from spacy.lang.en.stop_words import STOP_WORDS

    from domain.healthcare.note_context import LESION_TERMS, termsets

    words = set(STOP_WORDS)
    for termset in termsets():
        for phrases in termset.values():
            for phrase in phrases:
                words.update(phrase.split())
    for term in LESION_TERMS:
        words.update(re.split(r"[\s-]", term))
    return frozenset(words)


@cache
def vocabulary() -> frozenset[str]:
    """Lower-case words that are not names: :func:`function_words` and :data:`CLINICAL_WORDS`."""
    return function_words() | CLINICAL_WORDS


_TOKEN = re.compile(r"\[[A-Z]+\]|[^\W\d_]+(?:['’-][^\W\d_]+)*\.?|\d+|[^\s]")


@dataclass(frozen=True)
class _Token:
    text: str
    start: int
    end: int

    @property
    def bare(self) -> str:
        word = self.text.rstrip(".")
        return re.sub(r"['’]s$", "", word) if len(word) > 2 else word

    @property
    def lower(self) -> str:
        return self.bare.lower()

    @property
    def is_word(self) -> bool:
        return self.bare[:1].isalpha() and not _PLACEHOLDER.fullmatch(self.text)

    @property
    def capitalised(self) -> bool:
        return self.is_word and self.bare[0].isupper()

    @property
    def initial(self) -> bool:
        return self.is_word and len(self.bare) == 1 and self.bare.isupper()


def _in_vocabulary(token: _Token) -> bool:
    words = vocabulary()
    lower = token.lower
    if lower in words or lower.rstrip("s") in words or lower.removesuffix("es") in words:
        return True
    return "-" in lower and all(part in words for part in lower.split("-") if part)


def _abbreviation(token: _Token) -> bool:
    """An acronym ("CT", "CABG", "FLAIR"): upper case, four letters at most, or a listed one.

    Short upper-case surnames ("LEE", "KING") are therefore names only in a name
    context (a title, a trigger, next to another name word) or when declared.
    """
    bare = token.bare
    return bare.upper() in ABBREVIATIONS or (bare.isupper() and len(bare) <= 4 and not token.initial)


def _eponym_in_term(tokens: list[_Token], i: int) -> bool:
    parts = [p for p in tokens[i].lower.removeprefix("non-").split("-") if p]
    if not parts or not all(p.rstrip("'’s") in EPONYMS or p in EPONYMS for p in parts):
        return False
    j = i + 1
    while j < len(tokens) and (tokens[j].lower.rstrip("'’s") in EPONYMS or tokens[j].initial):
        j += 1
    if j < len(tokens) and tokens[j].lower in EPONYM_HEADS:
        return True
    return i >= 2 and tokens[i - 1].lower == "of" and tokens[i - 2].lower in _ANATOMY_OF


def _name_token(tokens: list[_Token], i: int) -> bool:
    """A token that may continue a name: a capitalised word, an initial, or a particle before one."""
    token = tokens[i]
    if token.initial and token.text.endswith("."):
        return True  # "A. B. Castillo": an initial, not the article
    if token.lower in function_words():
        return False
    if token.capitalised and token.bare.upper() not in ABBREVIATIONS and token.lower not in _NOT_PEOPLE:
        return True
    if token.is_word and token.lower in _PARTICLES and i + 1 < len(tokens):
        return tokens[i + 1].capitalised
    return False


def _sentence_end(token: _Token) -> bool:
    """A word that closes its sentence ("Castillo."), not an initial ("J.") or a title ("Dr.")."""
    return token.text.endswith(".") and not token.initial and token.lower not in TITLES


def _run(tokens: list[_Token], i: int) -> int:
    """The end (exclusive) of the name that starts at token `i` (``i`` if none does)."""
    j = i
    while j < len(tokens) and _name_token(tokens, j) and not (j > i and _sentence_end(tokens[j - 1])):
        j += 1
    return j


def _trigger_at(keys: list[str], i: int) -> int:
    """The number of tokens of a name trigger that starts at token `i` (0 for none).

    `keys` are the tokens' texts lower-cased without a trailing "." or ":".
    """
    for trigger in _TRIGGERS_BY_FIRST_WORD.get(keys[i], ()):
        if tuple(keys[i : i + len(trigger)]) == trigger:
            return len(trigger)
    return 0


def _triggers_by_first_word() -> dict[str, list[tuple[str, ...]]]:
    """`NAME_TRIGGERS` as token tuples grouped by their first token, longest first."""
    grouped: dict[str, list[tuple[str, ...]]] = {}
    for trigger in sorted((tuple(_TOKEN.findall(t)) for t in NAME_TRIGGERS), key=len, reverse=True):
        grouped.setdefault(trigger[0], []).append(trigger)
    return grouped


_TRIGGERS_BY_FIRST_WORD = _triggers_by_first_word()


def _name_list(tokens: list[_Token], i: int) -> list[tuple[int, int]]:
    """Names listed from token `i`: "Dr. O'Connor and Castillo", "Castillo, Elena", "Lee/Park".

    Without a title, a one-word name that is an ordinary word ("discussed with
    Radiology") or an eponym in its term ("per Fleischner criteria") is not taken.
    """
    found: list[tuple[int, int]] = []
    if i > 0 and _sentence_end(tokens[i - 1]):
        return found
    while i < len(tokens) and tokens[i].text in (":", "-", "–", "—"):  # "cc: Castillo"
        i += 1
    while i < len(tokens):
        start = i
        while i < len(tokens) and tokens[i].lower in TITLES:
            i += 1
        titled = i > start
        end = _run(tokens, i)
        if end == i:
            break
        known_word = _in_vocabulary(tokens[i]) and end - i == 1
        if not titled and (known_word or _eponym_in_term(tokens, i)):
            break
        found.append((start, end))
        i = end
        if i < len(tokens) and tokens[i].text in (",", "&", "/", "and", "or", ";"):
            i += 1
            if i < len(tokens) and tokens[i].text == "and":
                i += 1
            continue
        break
    return found


def _name_spans(text: str) -> list[tuple[int, int]]:
    tokens = [_Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    keys = [t.text.lower().rstrip(".:") for t in tokens]
    hits: list[tuple[int, int]] = []  # token index ranges
    for i, token in enumerate(tokens):
        if token.lower in TITLES and i + 1 < len(tokens):
            hits += _name_list(tokens, i)
        n = _trigger_at(keys, i)
        if n:
            hits += _name_list(tokens, i + n)
        if token.bare in POSTNOMINALS and i >= 1:
            j = i - 1 if tokens[i - 1].text != "," else i - 2
            k = j
            while k >= 0 and (_name_token(tokens, k) or tokens[k].lower in TITLES):
                k -= 1
            if k < j:
                hits.append((k + 1, i + 1))
        if (
            token.capitalised
            and not token.initial
            and not _abbreviation(token)
            and not _in_vocabulary(token)
            and not _eponym_in_term(tokens, i)
            and not _MONTH_OR_DAY.fullmatch(token.bare)
        ):
            start = i
            while start > 0 and _name_before(tokens, start - 1):
                start -= 1
            hits.append((start, max(_run(tokens, i), i + 1)))
    return [(tokens[a].start, _word_end(tokens[b - 1])) for a, b in hits if b > a]


def _name_before(tokens: list[_Token], k: int) -> bool:
    """Whether the token before a name belongs to it: a title, initial, particle or unknown word."""
    token = tokens[k]
    if _sentence_end(token) or not _name_token(tokens, k) and token.lower not in TITLES:
        return False
    return token.lower in TITLES or token.initial or token.lower in _PARTICLES or not _in_vocabulary(token)


def _word_end(token: _Token) -> int:
    """Where a name's last word ends: an initial keeps its period, a sentence keeps its full stop."""
    return token.end if token.initial else token.start + len(token.text.rstrip("."))


#: A person name in DICOM form, FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX ("VAN DER BERG^JAN^^DR").
_DICOM_NAME = re.compile(r"(?:[A-ZÀ-Þ'’-]+ )*[\w'’-]+(?:\^[\w'’-]*)+")
_MONTH_OR_DAY = re.compile(rf"{_MONTH_WORD}|(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day", re.I)


# ---------------------------------------------------------------------------
# Find, scrub, verify


@dataclass(frozen=True)
class Span:
    """An identifier's place in a text (``text[start:end]``) and its kind."""

    start: int
    end: int
    kind: str


def find_identifiers(text: str, identifiers: Identifiers | None = None) -> list[Span]:
    """Every identifier in `text`, as non-overlapping spans (overlaps merged, the stronger kind kept)."""
    spans: list[Span] = []
    if identifiers is not None:
        for values, flags in ((identifiers.exact, re.I), (identifiers.cased, 0)):
            if values:
                pattern = re.compile(rf"(?<!\w)(?:{_alternation(values)})(?!\w)", flags)
                lookup = {k.lower() if flags else k: v for k, v in values.items()}
                for m in pattern.finditer(text):
                    spans.append(
                        Span(m.start(), m.end(), lookup.get(m.group().lower() if flags else m.group(), NAME))
                    )
    for kind, pattern in PATTERNS:
        spans += [Span(m.start(), m.end(), kind) for m in pattern.finditer(text)]
    spans += [Span(m.start(), m.end(), ID) for m in _ID_TOKEN.finditer(text) if _id_shaped(m.group())]
    spans += [Span(m.start(), m.end(), NAME) for m in _DICOM_NAME.finditer(text)]
    spans += [Span(a, b, NAME) for a, b in _name_spans(text)]
    return _merge([s for s in spans if s.end > s.start and not _PLACEHOLDER.fullmatch(text[s.start : s.end])])


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            kind = min((last.kind, span.kind), key=_PRIORITY.__getitem__)
            merged[-1] = Span(last.start, max(last.end, span.end), kind)
        else:
            merged.append(span)
    return merged


def scrub(text: str, identifiers: Identifiers | None = None) -> str:
    """`text` with every identifier replaced by the placeholder of its kind ("[NAME]", "[DATE]", ...).

    A span's closing sentence punctuation is kept: the sentences negation is
    scoped by must split the same way before and after scrubbing.
    """
    for span in reversed(find_identifiers(text, identifiers)):
        end = span.end
        while end > span.start + 1 and text[end - 1] in ".;!?":
            end -= 1
        text = f"{text[: span.start]}[{span.kind.upper()}]{text[end:]}"
    return text


def residual_identifiers(text: str, identifiers: Identifiers | None = None) -> list[str]:
    """The kinds of identifier still in scrubbed `text` (empty when the scrub is verified)."""
    kinds = {span.kind for span in find_identifiers(text, identifiers)}
    masked = _PLACEHOLDER.sub(" ", text)
    kinds |= {kind for kind, pattern in _STRICT_SHAPES if pattern.search(masked)}
    return sorted(kinds, key=_PRIORITY.__getitem__)
