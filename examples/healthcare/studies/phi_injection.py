"""Realistic PHI injected into the free text of simulated radiology notes, to measure a scrubber.

`inject` takes a parsed note and a random stream and returns the note with
identifiers of every kind written into its findings and impression, as whole
sentences placed before, between or after the report's own sentences:
the patient's declared name, record number, birth date, phone and address
(the phone and address are added to the note's patient element) rendered in
forms other than the declared one, and undeclared ones (clinicians,
relatives, other dates, accession, insurance and social security numbers,
phones, emails, addresses) in the contexts clinicians write them in.

The name, street and city sources below are this module's own: several
cultures, apostrophes, hyphens, particles and accents, and some names that
are also English words ("Young", "Stone", "Grace"), deliberately not the
detector's vocabulary or the simulator's population, so a recall measured
with them is not a recall on names the detector was written for.
Each :class:`Injected` says which strings must be gone from the scrubbed
text for it to count as removed (its probes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from domain.healthcare.note_context import split_sentences
from domain.healthcare.notes import Note

# fmt: off
SURNAMES = (
    "O'Connor", "Nguyen-Tran", "García", "Ó Súilleabháin", "Abdullah", "Kowalczyk", "Castillo", "Okonkwo",
    "Fitzpatrick", "Van der Merwe", "de la Fuente", "Al-Rashid", "Bergström", "Papadopoulos", "Yılmaz",
    "Mbeki", "Haddad", "Sørensen", "Dłużewski", "McAllister", "D'Angelo", "Ramírez-Ortega", "Tanaka",
    "Chukwuemeka", "Lindqvist", "Novák", "Øvergaard", "Ben-David", "Kuznetsova", "Achterberg", "Mahlangu",
    "Iyer", "Oyelaran", "Szabó", "Delacroix", "Quispe", "Hakimi", "Wójcik", "Ferreira", "Jovanović",
    "MacLeod", "Brennan", "Villanueva", "Schweitzer", "Rahman", "Gallagher", "Nakashima", "Adeyemi",
    "Fonseca", "Eriksson", "Thorsen", "Mwangi", "Karimi", "Zhou", "Holloway", "Dimitrov", "Petrakis",
    "Young", "Stone", "Bell", "Sharp", "Long", "Hope", "Baker", "Rose",
)
GIVEN = (
    "Siobhan", "Thi", "Aoife", "Mohammed", "Zofia", "Ifeoma", "Jürgen", "Anaïs", "Björn", "Chidi", "Dagný",
    "Eleni", "Farouk", "Giulia", "Hamid", "Inés", "Jarrah", "Kwame", "Leilani", "Mateus", "Nadia", "Oksana",
    "Priyanka", "Quentin", "Rafael", "Saoirse", "Tariq", "Ulrike", "Valentina", "Wanjiru", "Xochitl",
    "Yusuf", "Zainab", "Declan", "Mei-Ling", "Jean-Luc", "Ngozi", "Soren", "Amara", "Bogdan",
    "Grace", "Will", "Faith",
)
STREETS = (
    "Willowbrook Road", "Harbour View Drive", "Calle Mayor", "Ashgrove Lane", "Kensington Court",
    "Bellamy Street", "Old Mill Road", "Sycamore Boulevard", "Quarry Hill Avenue", "Lakeshore Drive",
    "Rue Saint-Denis", "Birchwood Terrace", "Copperfield Way", "Magnolia Place", "Foxhollow Trail",
)
STREET_TYPES = {"Road": "Rd", "Drive": "Dr", "Lane": "Ln", "Court": "Ct", "Street": "St", "Boulevard": "Blvd",
                "Avenue": "Ave", "Terrace": "Ter", "Way": "Way", "Place": "Pl", "Trail": "Trl"}
CITIES = (("Rochester", "NY", "14620"), ("Evanston", "IL", "60201"), ("Bozeman", "MT", "59715"),
          ("Tacoma", "WA", "98402"), ("Duluth", "MN", "55802"), ("Asheville", "NC", "28801"),
          ("Pueblo", "CO", "81003"), ("Macon", "GA", "31201"))
DOMAINS = ("example.org", "mail.example.com", "clinic.example.net", "stcatherine.example")
# fmt: on


@dataclass(frozen=True)
class Injected:
    """One identifier written into the text: its kind, as written, and what must vanish."""

    kind: str
    text: str
    probes: tuple[str, ...]
    declared: bool


@dataclass(frozen=True)
class InjectedNote:
    note: Note
    items: tuple[Injected, ...]


def _pick(rng: np.random.Generator, options: tuple | list):
    return options[int(rng.integers(len(options)))]


def _date_text(rng: np.random.Generator, day: date) -> str:
    month = day.strftime("%B")
    forms = (
        f"{day.month:02d}/{day.day:02d}/{day.year}",
        f"{day.month}/{day.day}/{day.year % 100:02d}",
        f"{day.day:02d}.{day.month:02d}.{day.year}",
        day.isoformat(),
        f"{month} {day.day}, {day.year}",
        f"{day.day} {month} {day.year}",
        f"{day.day:02d}-{month[:3].upper()}-{day.year}",
        f"{month[:3]}. {day.day}, {day.year}",
        f"{month} {day.day}{_ordinal(day.day)}",
        f"the {day.day}{_ordinal(day.day)} of {month} {day.year}",
        day.strftime("%Y%m%d"),
    )
    return _pick(rng, forms)


def _ordinal(n: int) -> str:
    return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _name_parts(name: str) -> tuple[str, ...]:
    """The words of a name that must vanish (particles and initials are not identifying alone)."""
    return tuple(
        w
        for w in name.replace("^", " ").replace(",", " ").split()
        if len(w.strip(".")) >= 2
        and w.lower() not in {"de", "la", "van", "der", "dr.", "dr", "mr.", "ms.", "mrs.", "md"}
    )


def _person(rng: np.random.Generator) -> tuple[str, str]:
    return _pick(rng, GIVEN), _pick(rng, SURNAMES)


def _name_text(rng: np.random.Generator, given: str, family: str) -> str:
    forms = (
        f"{given} {family}",
        f"{family}, {given}",
        f"{family.upper()}^{given.upper()}",
        f"{given[0]}. {family}",
        family,
        f"{family.upper()}^{given.upper()}^^DR",
    )
    return _pick(rng, forms)


def _phone(rng: np.random.Generator) -> tuple[str, str]:
    a, b, c = int(rng.integers(201, 989)), int(rng.integers(200, 999)), int(rng.integers(0, 10000))
    declared = f"({a}) {b}-{c:04d}"
    written = _pick(
        rng,
        (
            declared,
            f"{a}-{b}-{c:04d}",
            f"{a}.{b}.{c:04d}",
            f"+1 {a} {b} {c:04d}",
            f"{a} {b} {c:04d}",
            f"{b}-{c:04d}",
            f"({a}) {b}-{c:04d} ext. {int(rng.integers(10, 999))}",
        ),
    )
    return declared, written


def _address(rng: np.random.Generator) -> tuple[str, str, tuple[str, ...]]:
    number, street = int(rng.integers(1, 9999)), _pick(rng, STREETS)
    city, state, zip_code = _pick(rng, CITIES)
    head, _, kind = street.rpartition(" ")
    short = f"{head} {STREET_TYPES.get(kind, kind)}" if kind in STREET_TYPES else street
    declared = f"{number} {street}, {city}, {state} {zip_code}"
    written = _pick(
        rng,
        (
            declared,
            f"{number} {short}, {city}, {state} {zip_code}",
            f"{number} {street}",
            f"{number} {short}, Apt {int(rng.integers(1, 40))}{_pick(rng, 'ABC')}",
            f"{city}, {state} {zip_code}",
        ),
    )
    probes = tuple(p for p in (f"{number} {head}", head, city, zip_code) if p in written)
    return declared, written, probes


def _mrn_text(rng: np.random.Generator, patient_id: str) -> str:
    digits = "".join(ch for ch in patient_id if ch.isdigit())
    return _pick(rng, (patient_id, digits, f"MRN {digits}", f"MRN: {patient_id}", f"#{digits}"))


def inject(note: Note, rng: np.random.Generator, count: int = 6) -> InjectedNote:
    """`note` with `count` identifiers written into its findings and impression."""
    assert note.patient is not None
    phone_declared, phone_written = _phone(rng)
    address_declared, address_written, address_probes = _address(rng)
    patient = dataclasses.replace(note.patient, phone=phone_declared, address=address_declared)
    family, _, given = note.patient.name.partition("^")
    given = given.split("^")[0].title()
    family_prose = " ".join(w.title() for w in family.split())
    birth = date.fromisoformat(patient.birth_date) if patient.birth_date else date(1960, 1, 1)

    def declared_name() -> Injected:
        form = _pick(
            rng,
            (
                f"{given} {family_prose}",
                f"{family_prose}, {given}",
                note.patient.name,
                f"Mr. {family_prose}",
                f"Ms. {family_prose}",
                f"{given[0]}. {family_prose}",
                family_prose.upper(),
                f"{given[0]}{family_prose[0]}",
            ),
        )
        probes = _name_parts(form) if len(form) > 2 else (form,)
        return Injected("name", form, probes, True)

    def sentence(kind: str) -> tuple[str, Injected]:
        if kind == "declared name":
            item = declared_name()
            return _pick(
                rng,
                (
                    "Patient {} tolerated the examination well.",
                    "{} was positioned supine.",
                    "Results were explained to {} at the bedside.",
                    "Identity confirmed as {}.",
                    "Images of {} were reviewed.",
                ),
            ).format(item.text), item
        if kind == "declared id":
            text = _mrn_text(rng, patient.patient_id)
            item = Injected("id", text, (text, "".join(ch for ch in text if ch.isdigit())), True)
            return _pick(
                rng, ("Record {} was reviewed.", "Chart {} updated.", "Prior images filed under {}.")
            ).format(text), item
        if kind == "declared date":
            text = _date_text(rng, birth)
            return _pick(rng, ("Date of birth {}.", "DOB: {}.", "Born {}, identity verified.")).format(
                text
            ), Injected("date", text, (text,), True)
        if kind == "declared phone":
            return _pick(
                rng, ("Results may be called to {}.", "Patient can be reached at {}.", "Callback number {}.")
            ).format(phone_written), Injected("phone", phone_written, (phone_written,), True)
        if kind == "declared address":
            return _pick(rng, ("Patient lives at {}.", "Home address on file: {}.", "Resides at {}.")).format(
                address_written
            ), Injected("address", address_written, address_probes, True)
        if kind == "clinician":
            g, f = _person(rng)
            text = _pick(
                rng,
                (
                    f"Dr. {f}",
                    f"Dr {g} {f}",
                    f"Doctor {f}",
                    f"Prof. {g[0]}. {f}",
                    f"{g} {f}, MD",
                    _name_text(rng, g, f),
                ),
            )
            template = _pick(
                rng,
                (
                    "Findings discussed with {} at the time of reading.",
                    "Per {}, no change in plan.",
                    "Preliminary report reviewed by {}.",
                    "Results communicated to {} by telephone.",
                    "Case reviewed with {} and {}.",
                    "{} agreed with the recommendation.",
                    "Referring physician: {}.",
                    "cc: {}.",
                ),
            )
            if template.count("{}") == 2:
                g2, f2 = _person(rng)
                other = _name_text(rng, g2, f2)
                return template.format(text, other), Injected(
                    "name", f"{text}; {other}", _name_parts(text) + _name_parts(other), False
                )
            return template.format(text), Injected("name", text, _name_parts(text), False)
        if kind == "relative":
            g, f = _person(rng)
            text = _pick(rng, (f"{g} {f}", g, f"{g} {f}".upper(), f"Mrs. {f}", f"{f}, {g}"))
            template = _pick(
                rng,
                (
                    "Accompanied by his wife {}.",
                    "Daughter {} was present.",
                    "Emergency contact: {}.",
                    "Discussed with the patient and {}.",
                    "Son {} requested a copy of the report.",
                ),
            )
            return template.format(text), Injected("name", text, _name_parts(text), False)
        if kind == "date":
            day = date(2024, 1, 1) + timedelta(days=int(rng.integers(0, 900)))
            text = _date_text(rng, day)
            template = _pick(
                rng,
                (
                    "Compared with the study of {}.",
                    "Follow-up scheduled for {}.",
                    "Prior examination dated {} was reviewed.",
                    "Outside films from {} reviewed.",
                ),
            )
            return template.format(text), Injected("date", text, (text,), False)
        if kind == "id":
            n = int(rng.integers(10**6, 10**9))
            text = _pick(
                rng,
                (
                    f"Accession {n}",
                    f"ACC# A{n % 100:02d}-{n % 1000000:06d}",
                    f"SSN {n % 900 + 100}-{n % 90 + 10}-{n % 9000 + 1000}",
                    f"insurance ID BCX{n}",
                    f"encounter #{n}",
                    f"MR# {n % 10**7:07d}",
                    f"{n % 900 + 100}-{n % 90 + 10}-{n % 9000 + 1000}",
                ),
            )
            value = text.split(" ", 1)[-1].lstrip("#").split()[-1] if " " in text else text
            return _pick(rng, ("Reference {}.", "Billing note: {} on file.", "Linked order {}.")).format(
                text
            ), Injected("id", value, (value,), False)
        if kind == "phone":
            _, text = _phone(rng)
            return _pick(
                rng, ("Reading room extension {}.", "Please call {} with questions.", "Pager {} notified.")
            ).format(text), Injected("phone", text, (text,), False)
        if kind == "email":
            g, f = _person(rng)
            local = "".join(ch for ch in f"{g}.{f}".lower() if ch.isascii() and (ch.isalnum() or ch == "."))
            text = f"{local}@{_pick(rng, DOMAINS)}"
            return _pick(rng, ("Report sent to {}.", "Questions to {}.", "Copy emailed to {}.")).format(
                text
            ), Injected("email", text, (text,), False)
        _, text, probes = _address(rng)
        return _pick(
            rng, ("Outside images from the clinic at {}.", "Forwarding address {}.", "Transferred from {}.")
        ).format(text), Injected("address", text, probes, False)

    kinds = (
        "declared name",
        "declared id",
        "declared date",
        "declared phone",
        "declared address",
        "clinician",
        "relative",
        "date",
        "id",
        "phone",
        "email",
        "address",
    )
    texts = {"findings": split_sentences(note.findings), "impression": split_sentences(note.impression)}
    items = []
    for _ in range(count):
        where = _pick(rng, ("findings", "impression"))
        text, item = sentence(_pick(rng, kinds))
        sentences = texts[where]
        sentences.insert(int(rng.integers(0, len(sentences) + 1)), text)
        items.append(item)
    injected = dataclasses.replace(
        note, patient=patient, findings=" ".join(texts["findings"]), impression=" ".join(texts["impression"])
    )
    return InjectedNote(injected, tuple(items))
