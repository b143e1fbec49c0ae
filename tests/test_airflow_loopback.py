"""`onesource airflow standalone` serves Airflow's UI and API on loopback, like `onesource serve`: Airflow's
own default is 0.0.0.0, which opened the UI (admin password in a plain file) to the network. The user's
AIRFLOW__API__HOST still wins (newcomer walkthrough, issue 20)."""

from __future__ import annotations

from onesource.airflow_cli import airflow_env, distributed_env


def test_the_api_listens_on_loopback_by_default(settings, monkeypatch):
    monkeypatch.delenv("AIRFLOW__API__HOST", raising=False)
    assert airflow_env(settings)["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert distributed_env(settings, "postgresql+psycopg://u@h/db", 8080)["AIRFLOW__API__HOST"] == "127.0.0.1"


def test_the_users_own_host_wins(settings, monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__HOST", "0.0.0.0")
    assert airflow_env(settings)["AIRFLOW__API__HOST"] == "0.0.0.0"
