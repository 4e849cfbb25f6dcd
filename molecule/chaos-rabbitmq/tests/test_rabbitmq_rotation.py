"""The RabbitMQ password rotation roles/celery_broker/README.md documents: a second user, the clients
rolled onto it, then the old user deleted. Runs after test_rabbitmq.py (file order)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import call_task, recap, run_playbook, scenario_host
from test_chaos import BROKER, WORKERS
from test_rabbitmq import amqp_login

SITE = Path(__file__).parents[3] / "playbooks" / "site.yml"
OLD_USER, OLD_PASSWORD = "celery", "Demo-Broker-Secret-4b1e93a7"
NEW_USER, NEW_PASSWORD = "celery2", "New/Broker#Secret?4b1e@93a7%40"


def test_a_rotation_through_a_second_user_keeps_the_old_one_until_deleted() -> None:
    rotated = {"celery_broker_rabbitmq_user": NEW_USER, "celery_broker_password": NEW_PASSWORD}
    result = run_playbook(SITE, extra_vars=rotated)
    assert result.returncode == 0, result.stdout[-5000:]
    assert NEW_PASSWORD not in result.stdout + result.stderr
    for name in (BROKER, *WORKERS):
        assert recap(result, name)["failed"] == 0, name
    broker, worker = scenario_host(BROKER), scenario_host(WORKERS[0])
    # During the roll both users log in: clients not yet redeployed keep working.
    assert amqp_login(worker, OLD_USER, OLD_PASSWORD) == "accepted"
    assert amqp_login(worker, NEW_USER, NEW_PASSWORD) == "accepted"
    broker_url = worker.check_output("cat /etc/celery/credentials/worker/broker_url")
    assert broker_url.startswith(f"amqp://{NEW_USER}:New%2FBroker%23Secret%3F4b1e%4093a7%2540@"), "not percent-encoded"
    assert call_task(worker, "example.add", [1, 2])["result"] == 3

    broker.check_output(f"rabbitmqctl delete_user {OLD_USER}")
    assert amqp_login(worker, OLD_USER, OLD_PASSWORD) == "refused"
    assert call_task(worker, "example.add", [2, 3])["result"] == 5
    listed = broker.check_output(f"rabbitmqctl list_user_permissions {NEW_USER} --quiet --formatter json")
    permissions = json.loads(listed)
    assert permissions == [{"vhost": "celery", "configure": ".*", "write": ".*", "read": ".*"}]
    tags = json.loads(broker.check_output("rabbitmqctl list_users --quiet --formatter json"))
    assert [user["tags"] for user in tags if user["user"] == NEW_USER] == [[]]
