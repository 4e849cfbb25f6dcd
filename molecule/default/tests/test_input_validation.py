"""Bad input to the roles is refused before anything changes on the host, with a message naming
the variable and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import fingerprint, run_playbook, scenario_file

# How the molecule inventory reaches the test host (its name is the container's).
CONNECTION = "community.docker.docker"
WORKER = "reliable.celery.celery_worker"
BROKER = "reliable.celery.celery_broker"
VALID = {
    "celery_worker_app": "reliable_celery_example.celery:app",
    "celery_worker_app_packages": ["/usr/local/src/reliable-celery-example"],
    "celery_worker_broker_url": "redis://:Broker-Secret-7f3a-0d2c9e@127.0.0.1:6379/0",
    "celery_worker_instances": [{"name": "default", "queues": ["celery"], "concurrency": 2}],
}


def instance(**fields: object) -> list[dict]:
    return [{"name": "default", "queues": ["celery"], **fields}]


# Each check lives once, in a filter with unit tests (tests/unit/plugins/filter/); these cases
# prove end to end that the roles apply them before anything changes, and show their messages.
CASES = {
    "wrong type": ({"celery_worker_max_task_seconds": "ten minutes"}, "celery_worker_max_task_seconds"),
    "zero max task seconds": ({"celery_worker_max_task_seconds": 0}, "celery_worker_max_task_seconds must be"),
    "unknown pool": ({"celery_worker_instances": instance(pool="fork")}, "prefork, threads, solo, gevent, eventlet"),
    "empty queue list": ({"celery_worker_instances": instance(queues=[])}, "queues must be a non-empty list"),
    "duplicate instance names": ({"celery_worker_instances": instance() + instance()}, "names must be unique"),
    "invalid instance name": ({"celery_worker_instances": [{"name": "web/1"}]}, "name must be 1-64 letters"),
    "unknown instance option": ({"celery_worker_instances": instance(concurency=2)}, "concurency"),
    "managed option in extra_args, attached short form": (
        {"celery_worker_instances": instance(extra_args=["-c8"])},
        "extra_args may not set -c",
    ),
    "malformed app path": ({"celery_worker_app": "proj/celery.py"}, "PACKAGE.MODULE:ATTRIBUTE"),
    "missing broker URL": ({"celery_worker_broker_url": None}, "celery_worker_broker_url"),
    "unsupported broker scheme": (
        {"celery_worker_broker_url": "kafka://broker:9092"},
        "allowed: redis, rediss, amqp, amqps, pyamqp",
    ),
    "broker URL over two lines": (
        {"celery_worker_broker_url": "redis://:Broker-Secret-7f3a-0d2c9e@127.0.0.1:6379/0\nX=1"},
        "celery_worker_broker_url must be one line",
    ),
    "password with a slash, not encoded": (
        {"celery_worker_broker_url": "redis://:Broker/Secret-7f3a@127.0.0.1:6379/0"},
        "must be percent-encoded",
    ),
    "visibility timeout below the longest task without leases": (
        {
            "celery_worker_redis_leases": False,
            "celery_worker_settings": {"broker_transport_options": {"visibility_timeout": 60}},
        },
        "visibility_timeout must be at least celery_worker_max_task_seconds",
    ),
    "visibility timeout below the shortest lease": (
        {"celery_worker_settings": {"broker_transport_options": {"visibility_timeout": 5}}},
        "visibility_timeout must be at least 10 s with celery_worker_redis_leases",
    ),
    "lease below ten seconds": ({"celery_worker_redis_lease_seconds": 5}, "celery_worker_redis_lease_seconds must be"),
    "negative unfinished runs": (
        {"celery_worker_max_unfinished_runs": -1},
        "celery_worker_max_unfinished_runs must be a whole number >= 0",
    ),
    "stop timeout of zero": (
        {"celery_worker_stop_timeout_seconds": 0},
        "celery_worker_stop_timeout_seconds must be a whole number >= 1",
    ),
    "dead-letter queue consumed": (
        {"celery_worker_dead_letter_queue": "celery"},
        "celery_worker_dead_letter_queue must be a queue name that no instance",
    ),
    "late acks without reject on worker lost": (
        {"celery_worker_settings": {"task_reject_on_worker_lost": False}},
        "task_acks_late and task_reject_on_worker_lost must stay true",
    ),
    "prefetch above one with late acks": (
        {"celery_worker_settings": {"worker_prefetch_multiplier": 4}},
        "celery_worker_allow_prefetch_with_acks_late",
    ),
    "state db in settings": (
        {"celery_worker_settings": {"worker_state_db": "/var/lib/shared.db"}},
        "may not be in celery_worker_settings",
    ),
    "reserved environment name": (
        {"celery_worker_environment": {"CELERY_BROKER_URL": "x"}},
        "refused names: CELERY_BROKER_URL",
    ),
    "multi-line environment value": ({"celery_worker_environment": {"TOKEN": "a\nb"}}, "multi-line values: TOKEN"),
    "no app to install": ({"celery_worker_app_packages": []}, "must name the app to install"),
    # celery_base checks what every service takes: Flower's user-name rule now holds for workers too.
    "service user that is no account name": ({"celery_worker_user": "Celery Admin"}, "system account names"),
    # An existing account is used unchanged, so root, a person's account or a login shell is refused.
    "root as the service user": ({"celery_worker_user": "root"}, "celery_worker_user is user 'root' with id 0 (root)"),
    "a non-system account as the service user": (
        {"celery_worker_user": "nobody"},
        "celery_worker_user is user 'nobody', an existing account that is not a system account (id 65534 >= UID_MIN",
    ),
    "a system account with a login shell as the service user": (
        {"celery_worker_user": "sync"},
        "celery_worker_user is user 'sync', an existing system account with the login shell '/bin/sync'",
    ),
    "a system directory as the config dir": (
        {"celery_worker_config_dir": "/etc"},
        "celery_worker_config_dir must be an absolute, normalised path at least two levels deep",
    ),
    "a system directory as the home": ({"celery_worker_home": "/var/lib"}, "keep no files; refused: /var/lib."),
    "the root among the read-write paths": (
        {"celery_worker_read_write_paths": ["/srv/app/uploads", "/"]},
        "celery_worker_read_write_paths must be an absolute, normalised path",
    ),
    "an app credential named as the role's own": (
        {"celery_worker_app_credentials": {"broker_url": "App-Credential-3e9b1f"}},
        "celery_worker_app_credentials: names must be 1-64 letters",
    ),
    "an app directory the units hide": (
        {"celery_worker_app_path": "/home/deploy/app"},
        "celery_worker_app_path must be an absolute, normalised path",
    ),
    "an unknown installer": ({"celery_worker_installer": "conda"}, "celery_worker_installer must be one of: pip, uv"),
    "uv with a wheelhouse that lacks it": (
        {"celery_worker_installer": "uv", "celery_worker_app_wheelhouse": str(Path(__file__).parent)},
        "celery_worker_installer uv is installed from the wheelhouse",
    ),
    "an app directory that is missing on the host": (
        {"celery_worker_app_path": "/srv/no-such-app/releases/1"},
        "celery_worker_app_path: /srv/no-such-app/releases/1 is not a directory on this host",
    ),
}
BROKER_VALID = {"celery_broker_password": "Broker-Secret-7f3a-0d2c9e"}
BROKER_CASES = {
    "broker: missing password": ({"celery_broker_password": None}, "celery_broker_password"),
    "broker: short password": ({"celery_broker_password": "short"}, "at least 16 characters"),
    "broker: password with a space": ({"celery_broker_password": "a password with spaces"}, "without whitespace"),
    "broker: unknown type": ({"celery_broker_type": "kafka"}, "celery_broker_type"),
    "broker: bind address that is a name": ({"celery_broker_bind_addresses": ["redis.example"]}, "IP address"),
    "broker: no bind address": ({"celery_broker_bind_addresses": []}, "at least one IP address"),
    "broker: port out of range": ({"celery_broker_redis_port": 70000}, "celery_broker_redis_port must be 1-65535"),
    "broker: maxmemory not a size": ({"celery_broker_redis_maxmemory": "lots"}, "celery_broker_redis_maxmemory"),
    "broker: appendfsync no": ({"celery_broker_redis_appendfsync": "no"}, "always, everysec"),
    "broker: malformed IPv6 address": ({"celery_broker_bind_addresses": ["1::2::3"]}, "refused: ['1::2::3']"),
    "broker: rabbitmq port out of range": (
        {"celery_broker_type": "rabbitmq", "celery_broker_rabbitmq_port": 0},
        "celery_broker_rabbitmq_port must be 1-65535",
    ),
    "broker: rabbitmq port of the Erlang distribution": (
        {"celery_broker_type": "rabbitmq", "celery_broker_rabbitmq_port": 25672},
        "not 4369 or 25672",
    ),
    "broker: optional bind address on rabbitmq": (
        {"celery_broker_type": "rabbitmq", "celery_broker_bind_addresses": ["127.0.0.1", "-10.0.0.5"]},
        "refused: ['-10.0.0.5']",
    ),
    "broker: rabbitmq listeners that overlap": (
        {"celery_broker_type": "rabbitmq", "celery_broker_bind_addresses": ["::", "127.0.0.1"]},
        "must be the only address",
    ),
    "broker: guest as the rabbitmq user": (
        {"celery_broker_type": "rabbitmq", "celery_broker_rabbitmq_user": "guest"},
        "celery_broker_rabbitmq_user not guest",
    ),
    "broker: rabbitmq user with a colon": (
        {"celery_broker_type": "rabbitmq", "celery_broker_rabbitmq_user": "celery:admin"},
        "celery_broker_rabbitmq_user and celery_broker_rabbitmq_vhost must be 1-64 letters",
    ),
    "broker: default vhost /": (
        {"celery_broker_type": "rabbitmq", "celery_broker_rabbitmq_vhost": "/"},
        "got user celery, vhost /",
    ),
    "broker: zero max task seconds": (
        {"celery_broker_type": "rabbitmq", "celery_broker_max_task_seconds": 0},
        "celery_broker_max_task_seconds must be a whole number >= 1",
    ),
    "broker: negative margin": (
        {"celery_broker_type": "rabbitmq", "celery_broker_timeout_margin_seconds": -1},
        "celery_broker_timeout_margin_seconds must be a whole number >= 0",
    ),
    "broker: max task seconds not a number": (
        {"celery_broker_type": "rabbitmq", "celery_broker_max_task_seconds": "ten minutes"},
        "celery_broker_max_task_seconds",
    ),
}
BEAT = "reliable.celery.celery_beat"
BEAT_VALID = {
    "celery_beat_app": "reliable_celery_example.celery:app",
    "celery_beat_app_packages": ["/usr/local/src/reliable-celery-example"],
    "celery_beat_broker_url": "redis://:Broker-Secret-7f3a-0d2c9e@127.0.0.1:6379/0",
}
BEAT_CASES = {
    "beat: missing app": ({"celery_beat_app": None}, "celery_beat_app"),
    "beat: malformed app path": ({"celery_beat_app": "proj/celery.py"}, "PACKAGE.MODULE:ATTRIBUTE"),
    "beat: unsupported broker scheme": ({"celery_beat_broker_url": "kafka://b:9092"}, "allowed: redis, rediss"),
    "beat: schedule file in the settings": (
        {"celery_beat_settings": {"beat_schedule_filename": "/tmp/schedule"}},  # noqa: S108 - the refused input
        "may not set broker_url, result_backend, beat_schedule_filename or beat_scheduler",
    ),
    "beat: reserved environment name": (
        {"celery_beat_environment": {"RELIABLE_CELERY_APP": "x"}},
        "refused names: RELIABLE_CELERY_APP",
    ),
    "beat: unknown log level": ({"celery_beat_loglevel": "LOUD"}, "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    "beat: malformed scheduler": ({"celery_beat_scheduler": "DatabaseScheduler"}, "celery_beat_scheduler must be"),
    "beat: root as the service group": (
        {"celery_beat_group": "root"},
        "celery_beat_group is group 'root' with id 0 (root)",
    ),
    "beat: a home in /home": (
        {"celery_beat_home": "/home/deploy"},
        "celery_beat_home must be an absolute, normalised path",
    ),
}
FLOWER = "reliable.celery.celery_flower"
FLOWER_VALID = {"celery_flower_broker_url": "redis://:Broker-Secret-7f3a-0d2c9e@127.0.0.1:6379/0"}
FLOWER_PASSWORD = "Long-enough-pass-91"  # noqa: S105 - a test value
FLOWER_CASES = {
    "flower: non-loopback address without auth": ({"celery_flower_address": "0.0.0.0"}, "not a loopback address"),  # noqa: S104
    "flower: IPv6 any without auth": ({"celery_flower_address": "::"}, "not a loopback address"),
    "flower: short password": (
        {"celery_flower_basic_auth": [{"username": "ops", "password": "Short-pw-1"}]},
        "at least 12 characters",
    ),
    "flower: colon in username": (
        {"celery_flower_basic_auth": [{"username": "ops:x", "password": FLOWER_PASSWORD}]},
        "without ':', ',' or whitespace",
    ),
    "flower: duplicate usernames": (
        {"celery_flower_basic_auth": [{"username": "ops", "password": FLOWER_PASSWORD}] * 2},
        'refused: "ops"',
    ),
    "flower: bad url prefix": (
        {"celery_flower_url_prefix": "flo wer/(x)"},
        "celery_flower_url_prefix empty or path segments",
    ),
    "flower: privileged port": ({"celery_flower_port": 80}, "celery_flower_port must be 1024-65535"),
    "flower: host name as address": (
        {"celery_flower_address": "flower.example.com"},
        "celery_flower_address must be an IP address",
    ),
    "flower: managed option": ({"celery_flower_options": {"basic_auth": "x:y"}}, "refused: basic_auth"),
    "flower: unpinned version": ({"celery_flower_version": "latest"}, "celery_flower_version must be an exact version"),
    "flower: a system directory as the install dir": (
        {"celery_flower_install_dir": "/usr/local"},
        "celery_flower_install_dir must be an absolute, normalised path",
    ),
}


ALL_CASES = {
    **{name: (WORKER, {**VALID, **overrides}, message) for name, (overrides, message) in CASES.items()},
    **{name: (BROKER, {**BROKER_VALID, **overrides}, message) for name, (overrides, message) in BROKER_CASES.items()},
    **{name: (BEAT, {**BEAT_VALID, **overrides}, message) for name, (overrides, message) in BEAT_CASES.items()},
    **{name: (FLOWER, {**FLOWER_VALID, **overrides}, message) for name, (overrides, message) in FLOWER_CASES.items()},
}


def refused_together(host, directory: Path) -> dict[str, tuple[str, int]]:
    """Every case in one ansible-playbook run, each as a host of its own: an alias of the test host
    whose host variables are the case's (a run per case spent most of its time starting Ansible).
    celery_beat refuses a play of several hosts, so each of its cases has a play of its own.
    Per case: FAILED and the strings of each failed result, and how many tasks it changed.
    (molecule/default/refusals.yml)"""
    real = host.backend.get_hostname()
    hosts = {}
    for index, (role, variables, _) in enumerate(ALL_CASES.values()):
        given = {key: value for key, value in variables.items() if value is not None}
        hosts[f"case{index}"] = {"ansible_host": real, "ansible_connection": CONNECTION, "test_role": role, **given}
    alone = [name for name, variables in hosts.items() if variables["test_role"] == BEAT]
    inventory = directory / "cases.json"
    inventory.write_text(json.dumps({"cases": {"hosts": hosts}}))
    playbook = directory / "cases.yml"
    plays = [{"ansible.builtin.import_playbook": str(scenario_file("refusals.yml")), "vars": {"test_hosts": pattern}}
             for pattern in ["cases:!" + ":!".join(alone), *alone]]  # fmt: skip
    playbook.write_text(json.dumps(plays))
    result = run_playbook(playbook, "-i", str(inventory), "--limit", "cases", json_output=True)
    report = json.loads(result.stdout)
    outputs = {name: [] for name in hosts}
    for play in report["plays"]:
        for task in play["tasks"]:
            for name, outcome in task["hosts"].items():
                # Only failed results, as Ansible's output shows only theirs: a message must come
                # from the refusal, not from what a passed task returned.
                if outcome.get("failed"):
                    outputs[name] += ["FAILED", *texts(outcome)]
    return {case: ("\n".join(outputs[name]), report["stats"][name]["changed"]) for case, name in zip(ALL_CASES, hosts)}


def texts(value: object):
    """Every string in a task's result (its messages, nested in loops' results)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)


@pytest.fixture(scope="module")
def refusals(host, tmp_path_factory) -> dict[str, tuple[str, int]]:
    """Every case run once, with the host's files fingerprinted before and after all of them."""
    before = fingerprint(host)
    results = refused_together(host, tmp_path_factory.mktemp("cases"))
    assert fingerprint(host) == before, "a refused run changed the host"
    return results


@pytest.mark.parametrize(("case", "spec"), ALL_CASES.items(), ids=list(ALL_CASES))
def test_bad_input_is_refused_before_any_change(host, refusals, case: str, spec: tuple[str, dict, str]) -> None:
    message = spec[2]
    output, changed = refusals[case]
    assert "FAILED" in output.splitlines(), f"{case} was not refused:\n{output[-3000:]}"
    # Messages are compared with their whitespace folded, as Ansible may fold long ones.
    assert " ".join(message.split()) in " ".join(output.split()), f"{case}: expected {message!r} in:\n{output[-3000:]}"
    assert changed == 0
