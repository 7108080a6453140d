"""Anonymization at Spark scale: discovery, per-column transforms, k-anonymity / l-diversity enforcement.

The public API: :func:`scan` and :func:`suggest_config` (discovery), :class:`AnonymizeConfig` and its
rules and hierarchies (the future ``kind: anonymize`` stage spec), :func:`anonymize` (transforms, lattice
search, suppression, report measured on the release), :func:`measure_risk`, and the guards
:func:`expect_k_anonymity`, :func:`expect_l_diversity`, :func:`expect_no_plaintext_pii`.
"""

from __future__ import annotations

# The ``kind: anonymize`` stage spec (privstage.spec) embeds AnonymizeConfig and this package builds on
# privstage.spec's base models: importing privstage.spec first lets either side be imported first.
import privstage.spec  # noqa: F401
from privstage.anonymize.config import (
    TOP,
    AgeHierarchy,
    AnonymizeConfig,
    CategoricalHierarchy,
    DateHierarchy,
    DateShiftRule,
    DropRule,
    GeneralizeRule,
    IntervalHierarchy,
    KeepRule,
    MaskRule,
    PrefixHierarchy,
    PseudonymizeRule,
    QuasiIdentifierRule,
    SensitiveRule,
    SuppressRule,
    TopBottomCodeRule,
    load_csv_hierarchy,
)
from privstage.anonymize.core import (
    AnonymityNotAchievable,
    AnonymizationReport,
    AnonymizationResult,
    anonymize,
    check_schema,
)
from privstage.anonymize.discovery import ColumnClassification, ScanReport, scan, suggest_config
from privstage.anonymize.guards import (
    KAnonymityGuard,
    LDiversityGuard,
    NoPlaintextPIIGuard,
    expect_k_anonymity,
    expect_l_diversity,
    expect_no_plaintext_pii,
)
from privstage.anonymize.risk import RiskReport, measure_risk

__all__ = [
    "TOP",
    "AgeHierarchy",
    "AnonymityNotAchievable",
    "AnonymizationReport",
    "AnonymizationResult",
    "AnonymizeConfig",
    "CategoricalHierarchy",
    "ColumnClassification",
    "DateHierarchy",
    "DateShiftRule",
    "DropRule",
    "GeneralizeRule",
    "IntervalHierarchy",
    "KAnonymityGuard",
    "KeepRule",
    "LDiversityGuard",
    "MaskRule",
    "NoPlaintextPIIGuard",
    "PrefixHierarchy",
    "PseudonymizeRule",
    "QuasiIdentifierRule",
    "RiskReport",
    "ScanReport",
    "SensitiveRule",
    "SuppressRule",
    "TopBottomCodeRule",
    "anonymize",
    "check_schema",
    "expect_k_anonymity",
    "expect_l_diversity",
    "expect_no_plaintext_pii",
    "load_csv_hierarchy",
    "measure_risk",
    "scan",
    "suggest_config",
]
