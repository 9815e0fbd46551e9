"""The health system's patients: who may come for imaging in any period.

`build_patients` draws the population of a configuration once (and caches
it): names (some with accents), MRNs, birth dates, addresses, phone numbers
and insurance ids, the hospital each patient belongs to, whether they are
followed for the lungs or neurology, and for some a lesion whose place and
size their studies share; diseased patients are imaged more often.
"""

from __future__ import annotations

import math
from datetime import timedelta
from functools import lru_cache

import numpy as np

from examples.healthcare.studies.model import CohortConfig, Patient, random_stream

INSTITUTIONS = (
    ("Riverside General Hospital", "1200 River Road, Springfield, IL 62701"),
    ("St. Catherine Medical Center", "45 Cathedral Avenue, Springfield, IL 62704"),
    ("Lakeview Community Hospital", "880 Lakeshore Drive, Chatham, IL 62629"),
)
INSTITUTION_SHARE = (0.5, 0.3, 0.2)

# fmt: off
FAMILY_NAMES = (
    "SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCÍA", "MILLER", "DAVIS", "RODRIGUEZ", "MARTINEZ",
    "HERNANDEZ", "LOPEZ", "GONZALEZ", "WILSON", "ANDERSON", "THOMAS", "TAYLOR", "MOORE", "JACKSON",
    "MARTIN", "LEE", "PEREZ", "THOMPSON", "WHITE", "HARRIS", "SANCHEZ", "CLARK", "RAMIREZ", "LEWIS",
    "ROBINSON", "WALKER", "YOUNG", "ALLEN", "KING", "WRIGHT", "SCOTT", "TORRES", "NGUYEN", "HILL", "FLORES",
    "GREEN", "ADAMS", "NELSON", "BAKER", "HALL", "RIVERA", "CAMPBELL", "MITCHELL", "CARTER", "ROBERTS",
    "O'BRIEN", "MÜLLER", "NÚÑEZ", "KOWALSKI", "NOWAK", "SCHMIDT", "LEFÈVRE", "PATEL", "SHAH", "KIM", "PARK",
    "CHEN", "WANG", "OKAFOR", "MENSAH", "IVANOV", "ROSSI", "MURPHY", "KELLY", "SULLIVAN", "VAN DER BERG",
    "DE LA CRUZ", "FITZGERALD", "MCCARTHY", "BECKER", "HOFFMANN", "JANSEN", "SILVA", "COSTA",
)
GIVEN_NAMES = {
    "M": (
        "JAMES", "JOHN", "ROBERT", "MICHAEL", "WILLIAM", "DAVID", "RICHARD", "JOSEPH", "THOMAS", "CHARLES",
        "DANIEL", "MATTHEW", "ANTHONY", "MARK", "DONALD", "STEVEN", "PAUL", "ANDREW", "JOSÉ", "LUIS",
        "CARLOS", "WEI", "MINH", "RAJ", "OLUWASEUN", "PIOTR", "JÜRGEN", "FRANÇOIS", "GEORGE", "KENNETH",
        "EDWARD", "BRIAN", "RONALD", "KEVIN", "JASON", "GARY", "FRANK", "RAYMOND",
    ),
    "F": (
        "MARY", "PATRICIA", "JENNIFER", "LINDA", "ELIZABETH", "BARBARA", "SUSAN", "JESSICA", "SARAH",
        "KAREN", "NANCY", "LISA", "BETTY", "MARGARET", "SANDRA", "ASHLEY", "DOROTHY", "MARÍA", "LUCÍA",
        "MEI", "PRIYA", "NGOZI", "AGNIESZKA", "SOPHIE", "HÉLÈNE", "ANNA", "DONNA", "CAROL", "RUTH",
        "SHARON", "MICHELLE", "LAURA", "EMILY", "KIMBERLY", "DEBORAH", "HELEN",
    ),
}
STREETS = (
    "Oak Street", "Maple Avenue", "Washington Street", "Lincoln Avenue", "Elm Street", "Park Road",
    "Cedar Lane", "Jefferson Street", "Walnut Street", "Highland Avenue", "Sangamon Avenue",
    "Chestnut Street", "Prairie Drive", "Monroe Street", "Church Street", "Meadow Lane",
)
CITIES = (
    ("Springfield", "62701"), ("Springfield", "62702"), ("Springfield", "62704"), ("Chatham", "62629"),
    ("Rochester", "62563"), ("Sherman", "62684"), ("Petersburg", "62675"), ("Auburn", "62615"),
)
# fmt: on


@lru_cache(maxsize=8)
def build_patients(cfg: CohortConfig) -> tuple[Patient, ...]:
    """The population of `cfg`: who may come for imaging in any period."""
    rng = random_stream(cfg.seed, cfg.studies, "patients")
    n = cfg.n_patients
    mrns = rng.choice(9_000_000, size=n, replace=False) + 100_000
    ages = np.clip(rng.normal(59, 15, n), 19, 94)
    patients = []
    for i in range(n):
        sex = "M" if rng.random() < 0.49 else "F"
        age = float(ages[i])
        birth = (cfg.start - timedelta(days=age * 365.25)).date()
        street = f"{int(rng.integers(1, 2999))} {STREETS[rng.integers(len(STREETS))]}"
        city, zip_code = CITIES[rng.integers(len(CITIES))]
        address = f"{street}, {city}, IL {zip_code}" if rng.random() < 0.75 else None
        phone = f"(217) 555-{int(rng.integers(100, 200)):04d}" if rng.random() < 0.6 else None
        other_id = f"BCI{int(rng.integers(10**8, 10**9))}" if rng.random() < 0.3 else None
        indication = "chest" if rng.random() < 0.8 else "neuro"
        # Lesions are commoner with age; diseased patients are imaged more often (follow-up).
        diseased = rng.random() < 0.1 + 0.2 * (age - 19) / 75
        lobe = str(rng.choice(["upper", "middle", "lower"], p=[0.5, 0.15, 0.35]))
        side = "right" if rng.random() < 0.55 else "left"
        if side == "left" and lobe == "middle":
            lobe = "upper"  # the left lung has no middle lobe (the lingula belongs to the upper)
        chest = indication == "chest"
        patients.append(
            Patient(
                index=i,
                patient_id=f"MRN{int(mrns[i]):07d}",
                family=FAMILY_NAMES[rng.integers(len(FAMILY_NAMES))],
                given=GIVEN_NAMES[sex][rng.integers(len(GIVEN_NAMES[sex]))],
                middle=chr(65 + int(rng.integers(26))) if rng.random() < 0.35 else "",
                sex=sex,
                birth_date=birth,
                address=address,
                phone=phone,
                other_id=other_id,
                institution=int(rng.choice(3, p=INSTITUTION_SHARE)),
                indication=indication,
                diseased=bool(diseased),
                lesion_side=side,
                lesion_rho=float(rng.uniform(0.0, 0.6)),
                lesion_theta=float(rng.uniform(0, 2 * math.pi)),
                lesion_scale=float(rng.beta(1.3, 2.0)),
                lesion_lobe=lobe,
                half_width_mm=float(rng.normal(165, 14) if chest else rng.normal(72, 4)),
                half_depth_mm=float(rng.normal(112, 12) if chest else rng.normal(92, 5)),
                fat_mm=float(rng.uniform(6, 28)),
                visit_weight=float(rng.lognormal(0.0, 0.7) * (2.2 if diseased else 1.0)),
            )
        )
    return tuple(patients)
