"""The hospital's imaging studies: patients, DICOM images and clinical notes.

A simulated regional health system (three hospitals) images its patients:
chest CT and chest radiographs (CR) for patients followed for the lungs,
brain MR for neurology patients. Every study is one image (one series, one
instance) and one radiology report. Some studies show a lesion (a lung nodule
or mass, a brain lesion); the radiologist's report says so, or, rarely, misses
a subtle one or overcalls a normal study; the records system's coding of the
report is the study's label, with rare coding errors of its own.

Everything is deterministic from the seed and the size (`CohortConfig`): the
patient population is fixed per configuration, and each *period* (a window of
`days` days; -1 is the reference window, 0 the inbox) draws `studies` studies
from it, so patients come back within and across windows with the same
identifiers. The data carries protected health information on purpose, in
DICOM tags (standard, optional, private, free text) and in the notes, so that
the pipeline's de-identification has real work to do.

The package also makes the malformed and hostile inputs that attack scenarios
and tests need (a DICOM/executable polyglot, a truncated file, a DICOM object
without an image, XML bombs, a backdoor trigger patch): pure functions, each
returning the bytes a source would send.

Each hospital's archive exports its images in a mix of transfer syntaxes
(uncompressed little or big endian, deflated, and the lossless JPEG, JPEG-LS,
JPEG 2000 and RLE; lossy files are in the varied corpus) and a few studies as
multi-frame slabs whose middle frame is the study's image.

The package is split by what each part makes: `model` (the records a study
is made of), `population` (the patients), `plan` (which studies happen and
what they show, report and label, and how the archive exports them), `images`
(the pixels), `dicom` (the Part-10 files), `reports` (the radiology notes and
the label file), `hostile` (the malformed and hostile inputs) and `corpus`
(a varied set of DICOM files with the outcome each must get, for tests).
"""
