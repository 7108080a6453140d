"""Provider metadata Airflow reads through the ``apache_airflow_provider`` entry point.

Airflow's ``ProvidersManager`` imports this module and calls :func:`get_provider_info` whenever it
lists providers (CLI, API server, workers). An import error here breaks every Airflow command on the
machine, so this module imports nothing but the package version.
"""

from __future__ import annotations

from typing import Any

from privstage.__about__ import __version__

__all__ = ["get_provider_info"]

#: The distribution name; ProvidersManager refuses provider info whose package-name differs from it.
PACKAGE_NAME = "privstage"
CONN_TYPE = "privstage"


def get_provider_info() -> dict[str, Any]:
    """Describe the privstage provider in the shape of Airflow's ``provider_info.schema.json``.

    Returns:
        A JSON-safe dict: package name, version, operators, hooks and the ``privstage`` connection type
        with its declarative form fields (Airflow 3.2+ reads ``conn-fields`` instead of importing the hook).
    """
    return {
        "package-name": PACKAGE_NAME,
        "name": "privstage",
        "description": "Guarded privacy stages (pseudonymization, differentially private releases and more) "
        "for Spark pipelines.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "privstage",
                "external-doc-url": "https://github.com/privstage/privstage",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "privstage",
                "python-modules": [
                    "privstage_airflow.operators.pipeline",
                    "privstage_airflow.operators.dp_aggregate",
                    "privstage_airflow.operators.he",
                    "privstage_airflow.operators.encryption",
                    "privstage_airflow.operators.anonymize",
                ],
            }
        ],
        "hooks": [{"integration-name": "privstage", "python-modules": ["privstage_airflow.hooks.privstage"]}],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "privstage_airflow.hooks.privstage.PrivstageHook",
                "hook-name": "privstage",
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "port", "login", "password", "schema"],
                    "relabeling": {},
                    "placeholders": {},
                },
                "conn-fields": {
                    "spark_remote": {
                        "label": "Spark Connect URL",
                        "description": "sc://host:port; empty runs Spark as the pipeline spec says.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "keys_directory": {
                        "label": "Key directory",
                        "description": "A mounted key directory (one base64 key per file) that replaces "
                        "the spec's key provider. Holds paths only, never keys.",
                        "schema": {"type": ["string", "null"]},
                    },
                },
            }
        ],
    }
