"""Which Spark settings a session gets: the JIT setting is for local masters only, and the
caller's or operator's word wins."""

from __future__ import annotations

import pytest

from feature_platform.engines.spark_session import DEFAULT_CONF, LOCAL_CONF, session_settings

JIT = "spark.driver.defaultJavaOptions"


@pytest.mark.parametrize("master", ["local[2]", "local", "local[*]"])
def test_a_local_session_stops_the_jit_at_its_first_tier(master):
    chosen, settings = session_settings(master)
    assert chosen == master
    assert settings[JIT] == "-XX:TieredStopAtLevel=1"
    assert all(settings[key] == value for key, value in DEFAULT_CONF.items())


@pytest.mark.parametrize("master", ["spark://127.0.0.1:7077", "yarn", "k8s://https://k8s:443"])
def test_a_cluster_session_keeps_the_jvm_defaults(master):
    chosen, settings = session_settings(master)
    assert chosen == master and JIT not in settings


def test_the_master_from_the_environment_decides(monkeypatch):
    monkeypatch.setenv("FP_SPARK_MASTER", "spark://spark-master:7077")
    assert JIT not in session_settings()[1]
    monkeypatch.setenv("FP_SPARK_MASTER", "local[2]")
    assert session_settings()[1][JIT] == LOCAL_CONF[JIT]
    named = session_settings(None, {"spark.master": "spark://m:7077"})
    assert named == ("spark://m:7077", session_settings("spark://m:7077")[1])


def test_the_callers_jvm_options_win():
    _, settings = session_settings("local[2]", {JIT: "-Xss4m"})
    assert settings[JIT] == "-Xss4m"


def test_dagster_runs_get_the_same_split():
    from feature_platform.config import Settings
    from resources import spark_config

    assert spark_config(Settings.from_env({}))[JIT] == LOCAL_CONF[JIT]
    assert JIT not in spark_config(Settings.from_env({"FP_SPARK_MASTER": "spark://spark-master:7077"}))
    operator = Settings.from_env({"FP_SPARK_CONF": '{"spark.driver.defaultJavaOptions": "-Xss4m"}'})
    assert spark_config(operator)[JIT] == "-Xss4m"
