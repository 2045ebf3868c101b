"""A process whose metrics are its own only says so (PROMETHEUS_MULTIPROC_DIR unset)."""

import logging

from webhooks_project import metrics

WARNING = "PROMETHEUS_MULTIPROC_DIR is not set"


def test_metrics_warn_when_the_process_counts_alone(monkeypatch, caplog):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with caplog.at_level(logging.WARNING, logger="webhooks_project.metrics"):
        assert metrics.warn_if_alone("web process") is True
    assert WARNING in caplog.text
    assert "web process" in caplog.text


def test_metrics_quiet_when_processes_share_a_directory(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="webhooks_project.metrics"):
        assert metrics.warn_if_alone("web process") is False
    assert WARNING not in caplog.text
