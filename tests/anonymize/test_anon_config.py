"""Config validation (no Spark): every mistake is caught before data is read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from privstage.anonymize import AnonymizeConfig, CategoricalHierarchy, load_csv_hierarchy

QI_ZIP = {"column": "zip", "action": "quasi_identifier", "hierarchy": {"type": "prefix", "keep": [3, 1]}}


def config(**overrides):
    data = {"k": 5, "columns": [QI_ZIP, {"column": "dx", "action": "sensitive"}]} | overrides
    return AnonymizeConfig.model_validate(data)


def test_a_minimal_config_is_frozen_and_closed():
    cfg = config()
    assert cfg.quasi_identifiers[0].level_range == (0, 3)
    assert cfg.sensitive == "dx"
    with pytest.raises(ValidationError):
        cfg.k = 2  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        config(kk=5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"l": 2, "columns": [QI_ZIP]}, "l-diversity needs a column with action: sensitive"),
        ({"columns": [{"column": "dx", "action": "keep"}]}, "at least one quasi_identifier"),
        ({"columns": [QI_ZIP, QI_ZIP]}, "more than one rule"),
        ({"k": 0}, "greater than or equal to 1"),
        ({"max_suppression": 1.0}, "less than 1"),
        ({"max_lattice_nodes": 3}, "above max_lattice_nodes=3"),
        (
            {"columns": [QI_ZIP, {"column": "p", "action": "pseudonymize", "key_id": "k", "key": "c2VjcmV0"}]},
            "inline key material",
        ),
        (
            {"columns": [{**QI_ZIP, "min_level": 3, "max_level": 2}]},
            "min_level <= max_level",
        ),
        (
            {"columns": [{**QI_ZIP, "hierarchy": {"type": "interval", "lower": 0, "upper": 100, "widths": [5, 7]}}]},
            "not a multiple",
        ),
        (
            {"columns": [{**QI_ZIP, "hierarchy": {"type": "age", "widths": [5]}}]},
            "exactly one of reference_date and reference_column",
        ),
        (
            {"columns": [{**QI_ZIP, "hierarchy": {"type": "date", "units": ["year", "month"]}}]},
            "increasing subset",
        ),
        (
            {"columns": [QI_ZIP, {"column": "d", "action": "date_shift", "subject_column": "p", "key_id": "k.v2"}]},
            "version suffix",
        ),
    ],
)
def test_bad_configs_are_refused_with_a_pointed_message(overrides, message):
    with pytest.raises(ValidationError, match=message):
        config(**overrides)


def test_categorical_levels_must_nest():
    with pytest.raises(ValidationError, match="two parents"):
        CategoricalHierarchy(type="categorical", values={"a": ("x", "1"), "b": ("x", "2")})


def test_arx_csv_hierarchy(tmp_path):
    path = tmp_path / "country.csv"
    path.write_text("France;Europe;*\nGermany;Europe;*\nJapan;Asia;*\n", encoding="utf-8")
    chains = load_csv_hierarchy(path)
    assert chains == {"France": ("Europe", "*"), "Germany": ("Europe", "*"), "Japan": ("Asia", "*")}
    h = CategoricalHierarchy(type="categorical", csv=str(path))
    assert h.levels == 3  # value, continent, *
    path.write_text("France;Europe\nJapan\n", encoding="utf-8")
    with pytest.raises(ValueError, match="same number of ancestor levels"):
        load_csv_hierarchy(path)
