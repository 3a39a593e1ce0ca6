"""Vertebral levels C1..S5 and their SINS location (Fisher et al. 2010)."""

from __future__ import annotations

from enum import Enum, StrEnum


class SpinalRegion(StrEnum):
    """The region of the spine a level belongs to."""

    CERVICAL = "cervical"
    THORACIC = "thoracic"
    LUMBAR = "lumbar"
    SACRAL = "sacral"


class SinsLocation(StrEnum):
    """SINS location answers; the values are the `sins` CodeSystem codes."""

    JUNCTIONAL = "junctional"
    MOBILE = "mobile"
    SEMI_RIGID = "semi-rigid"
    RIGID = "rigid"


class VertebralLevel(Enum):
    """A vertebral level that SINS scores. The value is (name, SNOMED CT code, region, location).

    Coccyx and occiput are outside SINS and have no member here on purpose.
    """

    C1 = ("C1", "14806007", SpinalRegion.CERVICAL, SinsLocation.JUNCTIONAL)
    C2 = ("C2", "39976000", SpinalRegion.CERVICAL, SinsLocation.JUNCTIONAL)
    C3 = ("C3", "113205007", SpinalRegion.CERVICAL, SinsLocation.MOBILE)
    C4 = ("C4", "5329002", SpinalRegion.CERVICAL, SinsLocation.MOBILE)
    C5 = ("C5", "36978003", SpinalRegion.CERVICAL, SinsLocation.MOBILE)
    C6 = ("C6", "36054005", SpinalRegion.CERVICAL, SinsLocation.MOBILE)
    C7 = ("C7", "87391001", SpinalRegion.CERVICAL, SinsLocation.JUNCTIONAL)
    T1 = ("T1", "64864005", SpinalRegion.THORACIC, SinsLocation.JUNCTIONAL)
    T2 = ("T2", "53733008", SpinalRegion.THORACIC, SinsLocation.JUNCTIONAL)
    T3 = ("T3", "1626008", SpinalRegion.THORACIC, SinsLocation.SEMI_RIGID)
    T4 = ("T4", "73071006", SpinalRegion.THORACIC, SinsLocation.SEMI_RIGID)
    T5 = ("T5", "56401006", SpinalRegion.THORACIC, SinsLocation.SEMI_RIGID)
    T6 = ("T6", "45296009", SpinalRegion.THORACIC, SinsLocation.SEMI_RIGID)
    T7 = ("T7", "62487009", SpinalRegion.THORACIC, SinsLocation.SEMI_RIGID)
    T8 = ("T8", "11068009", SpinalRegion.THORACIC, SinsLocation.SEMI_RIGID)
    T9 = ("T9", "82687006", SpinalRegion.THORACIC, SinsLocation.SEMI_RIGID)
    T10 = ("T10", "7610001", SpinalRegion.THORACIC, SinsLocation.SEMI_RIGID)
    T11 = ("T11", "12989004", SpinalRegion.THORACIC, SinsLocation.JUNCTIONAL)
    T12 = ("T12", "23215003", SpinalRegion.THORACIC, SinsLocation.JUNCTIONAL)
    L1 = ("L1", "66794005", SpinalRegion.LUMBAR, SinsLocation.JUNCTIONAL)
    L2 = ("L2", "14293000", SpinalRegion.LUMBAR, SinsLocation.MOBILE)
    L3 = ("L3", "36470004", SpinalRegion.LUMBAR, SinsLocation.MOBILE)
    L4 = ("L4", "11994002", SpinalRegion.LUMBAR, SinsLocation.MOBILE)
    L5 = ("L5", "49668003", SpinalRegion.LUMBAR, SinsLocation.JUNCTIONAL)
    S1 = ("S1", "65985001", SpinalRegion.SACRAL, SinsLocation.JUNCTIONAL)
    S2 = ("S2", "11808007", SpinalRegion.SACRAL, SinsLocation.RIGID)
    S3 = ("S3", "49967005", SpinalRegion.SACRAL, SinsLocation.RIGID)
    S4 = ("S4", "69950008", SpinalRegion.SACRAL, SinsLocation.RIGID)
    S5 = ("S5", "21452006", SpinalRegion.SACRAL, SinsLocation.RIGID)

    @property
    def label(self) -> str:
        """The level as clinicians write it, e.g. `T12`."""
        return self.value[0]

    @property
    def snomed(self) -> str:
        """The SNOMED CT code of the level."""
        return self.value[1]

    @property
    def region(self) -> SpinalRegion:
        """Cervical, thoracic, lumbar or sacral."""
        return self.value[2]

    @property
    def location(self) -> SinsLocation:
        """The SINS location answer for a lesion at this level."""
        return self.value[3]

    @property
    def order(self) -> int:
        """Cranio-caudal position, C1 = 0."""
        return _ORDER[self]


_ORDER = {level: index for index, level in enumerate(VertebralLevel)}
LEVEL_BY_SNOMED: dict[str, VertebralLevel] = {level.snomed: level for level in VertebralLevel}
LEVEL_BY_LABEL: dict[str, VertebralLevel] = {level.label: level for level in VertebralLevel}

# Sites a feed may name that SINS does not score; the FHIR layer rejects them with this reason.
# SNOMED CT 31640002 is the occipital bone structure (CONTRACT 2a); 55797009, once used here, is
# "bone structure of forearm" and names no site of the spine.
OUTSIDE_SINS_SNOMED: dict[str, str] = {
    "64688005": "coccyx",
    "31640002": "occiput",
}
