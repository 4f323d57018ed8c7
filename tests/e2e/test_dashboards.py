"""The Grafana dashboards and the alert rules, proven against a real Prometheus
that scrapes the real stack: after one INDEX and one REINDEX through the public
API, every panel query of every dashboard returns data, every metric a
dashboard or a rule names is one the services expose, and every rule
evaluates without error."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from api import HASH_MODEL, Client, config, directory
from corpus import FIRST_SOURCE, write_source, write_text_corpus
from observability import (
    SYNTHETIC,
    exposed_names,
    metric_names,
    panel_queries,
    rule_files,
)

from vectorops.common.v1 import operation_pb2

pytestmark = pytest.mark.integration

HASH_256 = "vectorops/hash-bow-256"
SCRAPE_SECONDS = 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class Prometheus:
    """A real ``prometheus`` (Debian's package; ``make test`` installs it) scraping
    the stack every second, with the project's rule files loaded."""

    def __init__(self, folder: Path, targets: dict[str, int]) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed: `make test` installs it (apt prometheus)"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        static = [
            {"targets": [f"127.0.0.1:{port}"], "labels": {"service": service}}
            for service, port in targets.items()
        ]
        settings = {
            "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files()],
            "scrape_configs": [{"job_name": "vectorops", "static_configs": static}],
        }
        folder.mkdir(parents=True, exist_ok=True)
        config_file = folder / "prometheus.yml"
        config_file.write_text(json.dumps(settings))  # JSON is YAML
        self.log = folder / "prometheus.log"
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while True:
            assert self._process.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "prometheus never became ready"
                time.sleep(0.2)

    def wait_scraped(self, services: int, seconds: float = 30) -> None:
        """Until every target has been scraped: counters then have a sample from
        before the work, so their rates show it."""
        deadline = time.monotonic() + seconds
        while len(self.query("up == 1")) < services:
            assert time.monotonic() < deadline, f"targets not scraped: {self.query('up')}"
            time.sleep(0.2)
        time.sleep(2 * SCRAPE_SECONDS)

    def query(self, expr: str) -> list[dict]:
        answer = _get_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def get(self, path: str) -> dict:
        answer = _get_json(f"{self.url}{path}")
        assert answer["status"] == "success", answer
        return answer["data"]

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory) -> Iterator[Prometheus]:
    targets = {
        service.value: endpoint.metrics_port for service, endpoint in stack.endpoints.items()
    }
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), targets)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def worked(stack, prometheus) -> None:
    """One INDEX and one REINDEX (with a search) on the stack Prometheus watches."""
    prometheus.wait_scraped(len(stack.endpoints))
    api = Client(stack, stack.tokens.clear["user"])
    try:
        root = stack.options.roots()[0] / f"dashboards-{uuid.uuid4().hex[:8]}"
        probes = write_source(root, FIRST_SOURCE)
        write_text_corpus(root / "bulk", 20, 200)
        created = api.create(
            f"dashboards-{uuid.uuid4().hex[:6]}", config(HASH_MODEL, 64, 8), [directory(str(root))]
        )
        api.finish(created.operation.id)
        collection = api.get(created.collection.id)
        assert api.search(collection.id, probes[0].query).hits
        reindex = api.reindex(
            collection.id,
            config(HASH_256, 64, 8),
            collection.generation,
            operation_pb2.ValidationThresholds(min_topk_overlap=0.0),
        )
        api.finish(reindex.id)
    finally:
        api.close()
    # Every poller has reported (they poll every few seconds) and Prometheus has
    # scraped what they reported.
    time.sleep(8)


def _has_data(result: list[dict]) -> bool:
    """At least one series with a number (a quantile over no observations is NaN)."""
    return any(not math.isnan(float(series["value"][1])) for series in result)


def test_every_panel_query_returns_data(prometheus, worked) -> None:
    queries = panel_queries()
    assert len(queries) >= 40, "the four dashboards hold the on-call panels"
    empty = [
        f"{query}: {query.expr}" for query in queries if not _has_data(prometheus.query(query.expr))
    ]
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_every_metric_named_is_one_the_services_expose(stack, prometheus, worked) -> None:
    exposed = set(SYNTHETIC)
    for endpoint in stack.endpoints.values():
        with urllib.request.urlopen(endpoint.metrics_url, timeout=10) as page:
            exposed |= exposed_names(page.read().decode())
    named = {
        name: f"panel {query}" for query in panel_queries() for name in metric_names(query.expr)
    }
    rules = [rule for group in prometheus.get("/api/v1/rules")["groups"] for rule in group["rules"]]
    assert rules, "the rule files loaded no rules"
    for rule in rules:
        named.update(dict.fromkeys(metric_names(rule["query"]), f"rule {rule['name']}"))
    unknown = {name: where for name, where in named.items() if name not in exposed}
    assert not unknown, f"metrics no service exposes: {unknown}"


def test_every_rule_evaluates_against_the_live_metrics(prometheus, worked) -> None:
    groups = prometheus.get("/api/v1/rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    broken = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert not broken, broken


def test_every_service_is_scraped(stack, prometheus, worked) -> None:
    up = {series["metric"]["service"]: series["value"][1] for series in prometheus.query("up")}
    assert up == dict.fromkeys((service.value for service in stack.endpoints), "1")
