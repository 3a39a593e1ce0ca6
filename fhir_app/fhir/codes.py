"""Every system URL and code of the wire contract (CONTRACT.md section 2), in one place."""

from __future__ import annotations

from typing import Final

BASE: Final = "https://fhir-app.org/fhir"
FHIR_VERSION: Final = "4.0.1"

SNOMED: Final = "http://snomed.info/sct"
DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
RADLEX: Final = "http://www.radlex.org"
UCUM: Final = "http://unitsofmeasure.org"
LOINC: Final = "http://loinc.org"
DICOM_UID: Final = "urn:dicom:uid"

CS_SINS: Final = f"{BASE}/CodeSystem/sins"
CS_SPINE_FINDING: Final = f"{BASE}/CodeSystem/spine-finding"
CS_PRIMARY_TUMOR: Final = f"{BASE}/CodeSystem/primary-tumor"
CS_DIFFERENTIAL: Final = f"{BASE}/CodeSystem/differential"
CS_ESCC: Final = f"{BASE}/CodeSystem/escc"
CS_NOMS: Final = f"{BASE}/CodeSystem/noms"

EXT_VERTEBRAL_LEVEL: Final = f"{BASE}/StructureDefinition/vertebral-level"
EXT_SINS_DISCORDANCE: Final = f"{BASE}/StructureDefinition/sins-discordance"
EXT_ORDINAL_VALUE: Final = "http://hl7.org/fhir/StructureDefinition/ordinalValue"

CS_RISK_PROBABILITY: Final = "http://terminology.hl7.org/CodeSystem/risk-probability"
CS_DATA_ABSENT_REASON: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
CS_OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
CS_DIAGNOSTIC_SERVICE: Final = "http://terminology.hl7.org/CodeSystem/v2-0074"
CS_PROVENANCE_AGENT_TYPE: Final = (
    "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
)
CS_V3_DATA_OPERATION: Final = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"

# Laterality (SNOMED CT).
SNOMED_LEFT: Final = "7771000"
SNOMED_RIGHT: Final = "24028007"
SNOMED_BILATERAL: Final = "51440002"

# DICOM region-of-interest modifiers (CID 7464) in Observation.method of a CT attenuation.
SNOMED_MEAN: Final = "373098007"
SNOMED_MAXIMUM: Final = "56851009"

# DICOM imaging measurement codes.
DCM_ATTENUATION: Final = "112031"
DCM_T1: Final = "110804"
DCM_T2: Final = "110805"
MODALITIES: Final = frozenset({"CT", "MR", "CR", "DX", "PT", "NM"})

# RadLex signal codes.
RADLEX_HYPER: Final = "RID35805"
RADLEX_ISO: Final = "RID6053"
RADLEX_HYPO: Final = "RID35804"

# UCUM units.
UNIT_PERCENT: Final = "%"
UNIT_HU: Final = "[hnsf'U]"

# spine-finding codes (table 2c).
VERTEBRAL_LESION: Final = "vertebral-lesion"
LESION_APPEARANCE: Final = "lesion-appearance"
PAIN_CHARACTER: Final = "pain-character"
SPINAL_ALIGNMENT: Final = "spinal-alignment"
HEIGHT_LOSS: Final = "vertebral-body-height-loss"
BODY_INVOLVEMENT: Final = "vertebral-body-involvement"
POSTERIOR_ELEMENT: Final = "posterior-element-involvement"
CONTRAST_ENHANCEMENT: Final = "contrast-enhancement"
TREATED_LESION: Final = "treated-lesion"
PRIMARY_TUMOR: Final = "primary-tumor"
LESION_CLASSIFICATION: Final = "lesion-classification"
LIKELY_PRIMARY: Final = "likely-primary"
DIFFERENTIAL: Final = "differential"
ASSESSMENT_REPORT: Final = "vertebral-metastasis-assessment"
ESCC_GRADE: Final = "escc-grade"
MYELOPATHY: Final = "myelopathy"
NOMS_INPUTS: Final = "noms-inputs"

# noms codes (the parts of the noms-inputs Observation, CONTRACT 4f).
NOMS_NEUROLOGIC: Final = "neurologic"
NOMS_ONCOLOGIC: Final = "oncologic"
NOMS_MECHANICAL: Final = "mechanical"
NOMS_SYSTEMIC: Final = "systemic"
NOMS_NO_KNOWN_PRIMARY: Final = "no-known-primary"
LOINC_REPORT: Final = "18748-4"

# sins codes beyond the component answers.
SINS_METHOD: Final = "sins"
SINS_TOTAL: Final = "sins-total"
SPINAL_INSTABILITY: Final = "spinal-instability"

# Profiles in profiles/ (canonical URLs).
PROFILE_INPUT_OBSERVATION: Final = f"{BASE}/StructureDefinition/spine-finding-observation"
PROFILE_LESION_PANEL: Final = f"{BASE}/StructureDefinition/vertebral-lesion-panel"
PROFILE_IMAGING_STUDY: Final = f"{BASE}/StructureDefinition/spine-imaging-study"
PROFILE_SINS: Final = f"{BASE}/StructureDefinition/sins-score"
PROFILE_CLASSIFICATION: Final = f"{BASE}/StructureDefinition/lesion-classification"
PROFILE_RISK: Final = f"{BASE}/StructureDefinition/sins-risk-assessment"
PROFILE_REPORT: Final = f"{BASE}/StructureDefinition/vertebral-metastasis-report"
PROFILE_PROVENANCE: Final = f"{BASE}/StructureDefinition/fhir-app-provenance"
PROFILE_NOMS: Final = f"{BASE}/StructureDefinition/noms-inputs"

# Statuses (CONTRACT section 3).
COUNTING_STATUSES: Final = frozenset({"final", "amended", "corrected", "preliminary"})
WITHDRAWN_STATUSES: Final = frozenset({"entered-in-error", "cancelled"})
