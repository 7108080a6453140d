"""The one module that imports Airflow: every Task SDK name privstage_airflow uses comes from here.

Airflow 3 moved the authoring API to ``airflow.sdk`` and the task exceptions to
``airflow.sdk.exceptions`` (``airflow.exceptions.AirflowFailException`` still resolves but warns and
is slated for removal). When the Task SDK moves again, only this file changes.
"""

from __future__ import annotations

from airflow.sdk import BaseHook, BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException
from airflow.sdk.log import mask_secret

__all__ = ["AirflowFailException", "AirflowNotFoundException", "BaseHook", "BaseOperator", "Context", "mask_secret"]
