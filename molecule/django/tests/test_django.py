"""A Django project deployed by an infra repo's own playbook (examples/infra_repo/site.yml): ORM
tasks on PostgreSQL, beat's schedule in the database, workers killed under an ORM workload, and a
new version whose migration runs before the workers hand over to it. Each run of `ledger.record`
writes one row: the database itself counts lost and repeated tasks."""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import time
from pathlib import Path

import pytest
from conftest import (
    CONFIG_DIR,
    current_unit,
    in_worker_environment,
    journal,
    main_pid,
    record_figures,
    run_playbook,
    scenario_file,
    scenario_host,
    send_tasks,
    task_results,
    wait_for,
)

DB, APP1, APP2 = "rc-django-db", "rc-django-app1", "rc-django-app2"
APPS = (APP1, APP2)
REPO = Path(__file__).parents[3]
PROJECT = REPO / "examples" / "django_project"
SECRETS = ("Proj-Db-Secret-5c1d7e", "Proj-Django-Secret-Key-9a4f2b81e6d3c07f")
TASKS = int(os.environ.get("CHAOS_TASKS", "200")) // 2
SEED = int(os.environ.get("CHAOS_SEED", str(int(time.time()))))
# A pool process commits its row, stores the result and only then hands the run back to the main
# process, which acks the message: a row written this shortly before its pool process or main
# process was killed may belong to a run that was never acked, and that task runs again
# (docs/delivery.md, at-least-once).
ACK_SLACK_SECONDS = 2.0


@pytest.fixture(scope="module")
def fleet() -> dict:
    return {name: scenario_host(name) for name in (DB, *APPS)}


def sql(db, query: str) -> list[list[str]]:
    """Rows of QUERY in the project's database, as PostgreSQL's superuser on its host."""
    output = db.check_output(f"runuser -u postgres -- psql -d proj -AtX -F '|' -c {shlex.quote(query)}")
    return [line.split("|") for line in output.splitlines() if line]


def entries(db, key_prefix: str) -> list[dict]:
    """The ledger's rows whose key starts with KEY_PREFIX, oldest first."""
    rows = sql(
        db,
        "SELECT key, task_id, hostname, release, extract(epoch FROM written_at) FROM ledger_entry "  # noqa: S608 - our keys
        f"WHERE key LIKE '{key_prefix}%' ORDER BY written_at",
    )
    return [
        {"key": key, "task_id": task_id, "hostname": hostname, "release": release, "t": float(t)}
        for key, task_id, hostname, release, t in rows
    ]


def manage(host, *args: str, version: str = "1.0.0") -> str:
    """manage.py ARGS of VERSION, as the web role runs it (its user, settings and credentials)."""
    argv = [
        "systemd-run", "--quiet", "--pipe", "--wait", "--collect", "-p", "User=proj",
        "-p", "EnvironmentFile=/etc/proj/proj.env", "-p", f"WorkingDirectory=/srv/proj/releases/{version}",
        "-p", "LoadCredential=django_secret_key:/etc/proj/credentials/django_secret_key",
        "-p", "LoadCredential=db_password:/etc/proj/credentials/db_password",
        f"/srv/proj/venvs/{version}/bin/python", "manage.py", *args,
    ]  # fmt: skip
    return host.check_output(shlex.join(argv))


def test_orm_tasks_write_rows_that_the_workers_read_back(fleet) -> None:
    keys = [f"round-trip-{number}" for number in range(8)]
    ids = send_tasks(fleet[APP1], [("ledger.record", [key, 5], "celery") for key in keys])
    results = task_results(fleet[APP1], ids)
    assert {result["release"] for result in results} == {"1.0.0"}
    rows = entries(fleet[DB], "round-trip-")
    assert sorted(row["key"] for row in rows) == sorted(keys)
    assert {row["hostname"] for row in rows} <= set(APPS)
    [total] = task_results(fleet[APP2], send_tasks(fleet[APP2], [("ledger.total", [keys[0]], "celery")]))
    assert total == {"count": 1, "sum": 5}


def test_the_projects_secrets_are_only_in_root_only_credential_files(fleet) -> None:
    for name in APPS:
        host = fleet[name]
        for secret in SECRETS:
            where = (
                f"grep -rlF -- {shlex.quote(secret)} /etc/systemd/system {CONFIG_DIR} /etc/proj /srv/proj "
                "/opt/celery /opt/celery-beat /run/celery 2>/dev/null"
            )
            files = set(host.run(where).stdout.split())
            allowed = {f"{CONFIG_DIR}/credentials/{service}/{name}" for service in ("worker", "beat") for name in
                       ("db_password", "django_secret_key")}  # fmt: skip
            allowed |= {"/etc/proj/credentials/db_password", "/etc/proj/credentials/django_secret_key"}
            assert files <= allowed, files
            for path in files:
                assert host.file(path).mode == 0o600, path
                assert host.file(path).user == "root", path
            assert secret not in host.check_output("ps -eo args")
            assert secret not in host.check_output("journalctl --no-pager -o cat")
            assert secret not in host.check_output("cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' || true")


def test_beat_sends_the_schedule_it_reads_from_the_database_once_per_tick(fleet) -> None:
    """django-celery-beat's DatabaseScheduler on the one scheduler host: a periodic task added to
    the database, not to any file a deploy writes, runs every 2 s, once per tick."""
    assert [fleet[name].run("systemctl is-active celery-beat.service").stdout.strip() for name in APPS] == [
        "active",
        "inactive",
    ]
    create = (
        "from django_celery_beat.models import IntervalSchedule, PeriodicTask\n"
        "every, _ = IntervalSchedule.objects.get_or_create(every=2, period=IntervalSchedule.SECONDS)\n"
        "PeriodicTask.objects.update_or_create(name='heartbeat', defaults={'interval': every, "
        "'task': 'ledger.record', 'args': '[\"beat-tick\", 1]', 'enabled': True})\n"
    )
    manage(fleet[APP1], "shell", "-c", create)
    try:
        ticks = wait_for(lambda: len(rows := entries(fleet[DB], "beat-tick")) >= 6 and rows, 90, "6 beat ticks")
    finally:
        manage(fleet[APP1], "shell", "-c", "from django_celery_beat.models import PeriodicTask\n"
               "PeriodicTask.objects.filter(name='heartbeat').update(enabled=False)")  # fmt: skip
    spacing = [b["t"] - a["t"] for a, b in zip(ticks, ticks[1:])]
    assert min(spacing) > 1.0, f"a tick ran twice: {spacing}"
    scheduler = fleet[APP1].run("journalctl --no-pager -o cat -u celery-beat.service | grep -c DatabaseScheduler")
    assert int(scheduler.stdout.strip() or 0) > 0, journal(fleet[APP1], "celery-beat.service")


def test_beat_with_the_database_scheduler_still_refuses_a_second_host(fleet) -> None:
    before = {name: fleet[name].run("systemctl show -p MainPID --value celery-beat.service").stdout for name in APPS}
    result = run_playbook(scenario_file("beat_on_app_servers.yml"))
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output[-3000:]
    assert "celery_beat runs one beat per schedule" in output, output[-3000:]
    assert {
        name: fleet[name].run("systemctl show -p MainPID --value celery-beat.service").stdout for name in APPS
    } == before
    assert fleet[APP2].run("systemctl cat celery-beat.service").rc != 0, "beat was installed on a second host"


def task_durations(rng: random.Random, count: int) -> list[float]:
    """Mostly short tasks, some of a few seconds."""
    return [round(rng.uniform(0.1, 1.0) if rng.random() < 0.85 else rng.uniform(1.0, 8.0), 2) for _ in range(count)]


def strike(fleet, fault: str) -> dict:
    """FAULT ("kill-main", "kill-child" on an app server; "restart-database") now; when it struck,
    from and to, by the struck host's clock (every test host shares the machine's)."""
    if fault == "restart-database":
        began, ended = fleet[DB].check_output("date +%s.%N && systemctl restart postgresql && date +%s.%N").split()
        return {"fault": fault, "host": DB, "from": float(began), "to": float(ended)}
    name = APP1 if fault == "kill-main" else APP2
    host = fleet[name]
    pid = main_pid(host, current_unit(host, "default"))
    victim = pid if fault == "kill-main" else int(host.check_output(f"pgrep -P {pid} | head -n 1"))
    struck = float(host.check_output(f"kill -KILL {victim} && date +%s.%N"))
    return {"fault": fault, "host": name, "from": struck, "to": struck}


def explains(fault: dict, row: dict) -> bool:
    """Whether FAULT may have made the run that wrote ROW run again: a process of its worker was
    killed, or the database restarted, just after the row was committed and before the run was
    acknowledged (for a restart, before the commit's answer reached the task, which then retried)."""
    if not fault["from"] - ACK_SLACK_SECONDS <= row["t"] <= fault["to"]:
        return False
    return fault["fault"] == "restart-database" or fault["host"] == row["hostname"]


def test_killed_workers_and_a_database_restart_lose_no_orm_task(fleet) -> None:
    """SIGKILL of a worker's main process (its pool goes with it) and of a pool process, and a
    PostgreSQL restart, while ORM tasks run: every task writes its row (ledger.record retries on
    a lost connection), and a row is written twice only for a run that had committed and not yet
    been acknowledged when the fault struck."""
    rng = random.Random(SEED)  # noqa: S311 - a workload to replay, not a secret
    keys = [f"chaos-{SEED}-{number}" for number in range(TASKS)]
    send_tasks(fleet[APP1], [("ledger.record", [key, 1, seconds], "celery") for key, seconds in
                             zip(keys, task_durations(rng, TASKS), strict=True)])  # fmt: skip
    faults = []
    for fault in ("kill-main", "restart-database", "kill-child"):
        time.sleep(5.0)
        faults.append(strike(fleet, fault))
    started = time.time()
    prefix = f"chaos-{SEED}-"
    rows = wait_for(
        lambda: (found := entries(fleet[DB], prefix)) and len({row["key"] for row in found}) == TASKS and found,
        300,
        f"a row for each of {TASKS} tasks (seed {SEED})",
        interval=2.0,
    )
    by_key: dict[str, list[dict]] = {}
    for row in rows:
        by_key.setdefault(row["key"], []).append(row)
    unexplained = [
        (key, written)
        for key, written in by_key.items()
        if not all(any(explains(fault, row) for fault in faults) for row in written[:-1])
    ]
    repeated = sum(len(written) - 1 for written in by_key.values())
    record_figures(
        "django-chaos",
        f"seed {SEED}: {TASKS} ORM tasks, 0 lost, {repeated} written twice, all rows {time.time() - started:.0f} s "
        f"after the last fault",
    )
    assert unexplained == [], (
        f"seed {SEED}: rows written twice without a fault to explain them: {unexplained}, faults: {faults}"
    )


# Sends ledger.record every 0.2 s until the stop file appears; prints the keys and any send error.
PRODUCER = """
import json, os, sys, time
from reliable_celery_app import app
keys, errors, number = [], [], 0
deadline = time.monotonic() + 900
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    key = f"deploy-{number}"
    try:
        app.send_task("ledger.record", args=[key, 1, 0.3], queue="celery")
        keys.append(key)
    except Exception as error:
        errors.append(type(error).__name__)
    number += 1
    time.sleep(0.2)
print(json.dumps({"keys": keys, "errors": errors}))
"""
PRODUCER_UNIT, PRODUCER_OUTPUT, PRODUCER_STOP = "rc-producer", "/tmp/rc-producer.json", "/tmp/rc-producer.stop"  # noqa: S108


def next_version(directory: Path) -> Path:
    """The project's next commit: a nullable column, with its migration (additive: the running
    version's INSERTs still work once it is applied)."""
    shutil.copytree(PROJECT, directory, ignore=shutil.ignore_patterns("__pycache__"))
    models = directory / "ledger" / "models.py"
    models.write_text(
        models.read_text().replace(
            "    written_at = models.DateTimeField(auto_now_add=True)\n",
            "    written_at = models.DateTimeField(auto_now_add=True)\n    note = models.TextField(null=True)\n",
        )
    )
    (directory / "ledger" / "migrations" / "0002_entry_note.py").write_text(
        "from django.db import migrations, models\n\n\n"
        "class Migration(migrations.Migration):\n"
        '    dependencies = [("ledger", "0001_initial")]\n'
        '    operations = [migrations.AddField(model_name="entry", name="note", field=models.TextField(null=True))]\n'
    )
    return directory


def test_a_new_version_migrates_first_then_the_workers_hand_over_without_losing_a_task(fleet, tmp_path) -> None:
    app2 = fleet[APP2]
    app2.run(f"rm -f {PRODUCER_STOP} {PRODUCER_OUTPUT}; systemctl reset-failed {PRODUCER_UNIT}")
    argv = ["/opt/celery/current/bin/python", "-c", PRODUCER, PRODUCER_STOP]
    app2.check_output(in_worker_environment("default", argv, unit=PRODUCER_UNIT, output=PRODUCER_OUTPUT))
    beat_pid = main_pid(fleet[APP1], "celery-beat.service")

    deployed = run_playbook(
        scenario_file("converge.yml"),
        extra_vars={"proj_version": "2.0.0", "proj_source": str(next_version(tmp_path / "v2"))},
    )
    app2.check_output(f"touch {PRODUCER_STOP}")
    wait_for(lambda: app2.run(f"systemctl is-active {PRODUCER_UNIT}").stdout.strip() != "active", 60, "the producer")
    sent = json.loads(app2.file(PRODUCER_OUTPUT).content_string)
    assert deployed.returncode == 0, deployed.stdout[-6000:] + deployed.stderr[-3000:]
    for secret in SECRETS:
        assert secret not in deployed.stdout + deployed.stderr
    assert sent["errors"] == [], sent["errors"][:10]

    rows = wait_for(
        lambda: len(found := entries(fleet[DB], "deploy-")) >= len(sent["keys"]) and found,
        120,
        "every deploy task's row",
    )
    assert sorted(row["key"] for row in rows) == sorted(sent["keys"]), "a task was lost or ran twice"
    [[applied]] = sql(
        fleet[DB],
        "SELECT extract(epoch FROM applied) FROM django_migrations WHERE app = 'ledger' AND name = '0002_entry_note'",
    )
    old = [row for row in rows if row["release"] == "1.0.0"]
    new = [row for row in rows if row["release"] == "2.0.0"]
    assert {row["hostname"] for row in new} == set(APPS), "every app server runs the new version"
    assert min(row["t"] for row in new) > float(applied), "a worker ran the new version before its migration"
    assert any(row["t"] > float(applied) for row in old), "the old version wrote nothing on the migrated schema"
    record_figures(
        "django-deploy",
        f"version 2.0.0: {len(rows)} tasks, 0 lost, 0 twice; {sum(r['t'] > float(applied) for r in old)} written by "
        f"1.0.0 after the migration, the first by 2.0.0 {min(r['t'] for r in new) - float(applied):.1f} s after it",
    )
    assert main_pid(fleet[APP1], "celery-beat.service") != beat_pid, "beat still runs the old version"
    assert "/srv/proj/releases/2.0.0" in fleet[APP1].check_output(
        "cat /opt/celery-beat/current/lib/python3*/site-packages/reliable_celery_app_path.pth"
    )


def test_a_failed_migration_stops_the_run_before_any_worker_or_beat_changes(fleet, tmp_path) -> None:
    version = next_version(tmp_path / "v3")
    (version / "ledger" / "migrations" / "0003_fails.py").write_text(
        "from django.db import migrations\n\n\n"
        "def fail(apps, schema_editor):\n"
        '    raise RuntimeError("this migration fails")\n\n\n'
        "class Migration(migrations.Migration):\n"
        '    dependencies = [("ledger", "0002_entry_note")]\n'
        "    operations = [migrations.RunPython(fail)]\n"
    )
    services = {(name, unit) for name in APPS for unit in (current_unit(fleet[name], "default"),)}
    services.add((APP1, "celery-beat.service"))
    before = {(name, unit): main_pid(fleet[name], unit) for name, unit in services}

    result = run_playbook(
        scenario_file("converge.yml"), extra_vars={"proj_version": "3.0.0", "proj_source": str(version)}
    )
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output[-3000:]
    assert "this migration fails" in output, output[-3000:]
    assert "PLAY [Find the hosts of each part of the stack]" not in result.stdout, "the run went on after the migration"
    assert {(name, unit): main_pid(fleet[name], unit) for name, unit in services} == before
    assert not sql(fleet[DB], "SELECT 1 FROM django_migrations WHERE app = 'ledger' AND name = '0003_fails'")
