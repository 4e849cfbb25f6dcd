"""Flower's Prometheus metrics ask for the same login as its UI (Flower 2.2 leaves /metrics open)."""

from __future__ import annotations

import shlex

import pytest
from conftest import scenario_host

BROKER, BEAT = "rc-site-broker", "rc-site-beat"
# examples/inventory/group_vars/flower.yml
FLOWER_USER, FLOWER_PASSWORD = "admin", "Demo-Flower-Secret-91c2"
# Prints the status and the start of the body; the login (USER:PASSWORD) comes on stdin, if any.
FLOWER_GET = """
import sys, urllib.request, urllib.error, base64
request = urllib.request.Request(sys.argv[1])
login = sys.stdin.read()
if login:
    request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        print(response.status, response.read().decode())
except urllib.error.HTTPError as error:
    print(error.code)
"""


def get(host, url: str, login: str = "") -> tuple[int, str]:
    command = f"printf %s {shlex.quote(login)} | python3 -c {shlex.quote(FLOWER_GET)} {shlex.quote(url)}"
    status, _, body = host.check_output(command).partition(" ")
    return int(status), body


@pytest.fixture(scope="module")
def hosts() -> dict:
    return {name: scenario_host(name) for name in (BROKER, BEAT)}


@pytest.mark.parametrize(("client", "address"), [(BROKER, "127.0.0.1"), (BEAT, BROKER)])
def test_metrics_answer_only_with_a_login(hosts, client: str, address: str) -> None:
    url = f"http://{address}:5555/flower/metrics"
    assert get(hosts[client], url)[0] == 401
    assert get(hosts[client], url, f"{FLOWER_USER}:wrong-password")[0] == 401
    status, body = get(hosts[client], url, f"{FLOWER_USER}:{FLOWER_PASSWORD}")
    assert status == 200
    assert "\nflower_events_total" in body or "\n# TYPE flower_" in body, body[-3000:]


def test_the_health_check_still_answers_without_a_login(hosts) -> None:
    """The role (and a load balancer) ask /healthcheck without a login."""
    assert get(hosts[BROKER], "http://127.0.0.1:5555/flower/healthcheck") == (200, "OK")
