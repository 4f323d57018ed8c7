"""The alerting rules and Prometheus config in deploy/prometheus: promtool
accepts them, and the rules' own unit tests (each alert fires on what it names
and stays quiet on a near miss) pass. promtool comes with Debian's prometheus
package, which ``make test`` installs when it is missing."""

from __future__ import annotations

import shutil
import subprocess

from observability import DEPLOY, metric_names, rule_files, rule_test_files


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed: `make test` installs it (apt prometheus)"
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=120, cwd=DEPLOY / "prometheus"
    )


def test_rule_files_are_valid() -> None:
    files = [str(path) for path in rule_files()]
    assert files
    done = promtool("check", "rules", *files)
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_config_is_valid_with_its_rules() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_unit_tests_pass() -> None:
    files = [str(path) for path in rule_test_files()]
    assert files
    done = promtool("test", "rules", *files)
    assert done.returncode == 0, done.stdout + done.stderr


def test_metric_names_are_read_out_of_promql() -> None:
    expr = (
        'sum by (type, outcome) (rate(vectorops_operations_total{outcome="failed",'
        ' type=~"IN.*"}[5m])) / on (type) group_left max(up{job="x"}) '
        "and histogram_quantile(0.99, sum by (le) (rate(a_bucket[1h] offset 5m))) > bool 0"
    )
    assert metric_names(expr) == {"vectorops_operations_total", "up", "a_bucket"}
