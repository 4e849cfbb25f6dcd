from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.worker_instances import (
    managed_option,
    worker_instance_file,
    worker_instances,
    worker_memory_drop_ins,
    worker_removed_instances,
    worker_slot_units,
)

APP = "proj.celery:app"


def one(**entry: object) -> dict:
    return worker_instances([{"name": "w", **entry}], APP)[0]


def test_defaults_are_filled_and_options_built() -> None:
    instance = one(concurrency=4, max_tasks_per_child=100, extra_args=["--without-mingle"])
    assert instance["app"] == APP
    assert instance["restart_strategy"] == "handover"
    assert instance["options"] == [
        "--queues=celery",
        "--pool=prefork",
        "--loglevel=INFO",
        "--concurrency=4",
        "--max-tasks-per-child=100",
        "--without-mingle",
    ]


def test_mingle_is_off_unless_asked() -> None:
    assert one()["options"][-1] == "--without-mingle"
    assert one(extra_args=["--without-mingle"])["options"].count("--without-mingle") == 1
    assert "--without-mingle" not in one(mingle=True)["options"]
    assert "--without-mingle" not in one(mingle="true")["options"]


def test_values_are_used_as_the_argument_spec_converts_them() -> None:
    instance = worker_instances([{"name": 2, "queues": "celery,reports", "concurrency": "3"}], APP, "drain")[0]
    assert instance["name"] == "2"
    assert instance["queues"] == ["celery", "reports"]
    assert instance["concurrency"] == 3
    assert instance["restart_strategy"] == "drain"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "a.b"}, "name must be"),
        ({"name": "w", "app": "proj"}, "app must be PACKAGE.MODULE:ATTRIBUTE"),
        ({"name": "w", "queues": []}, "queues must be"),
        ({"name": "w", "queues": ["a b"]}, "queues must be"),
        ({"name": "w", "pool": "fork"}, "pool must be one of"),
        ({"name": "w", "concurrency": 0}, "concurrency must be a whole number"),
        ({"name": "w", "autoscale": "2,4"}, "autoscale must be"),
        ({"name": "w", "autoscale": "4,2", "pool": "threads"}, "autoscale must be"),
        ({"name": "w", "autoscale": "4,2", "concurrency": 2}, "not be set together"),
        ({"name": "w", "extra_args": ["--a b"]}, "without whitespace"),
        ({"name": "w", "restart_strategy": "kill"}, "restart_strategy must be"),
        ({"name": "w", "quues": ["a"]}, "unknown keys"),
        ({"name": "w", "mingle": "sometimes"}, "mingle must be true or false"),
        ({"name": "w", "mingle": True, "extra_args": ["--without-mingle"]}, "mingle must be false"),
        ({"name": "w", "memory_max": "2GB"}, "memory_max must be a size in bytes, or with a K, M, G or T suffix"),
        ({"name": "w", "memory_high": "50%"}, "memory_high must be a size"),
        ({"name": "w", "memory_max": True}, "memory_max must be a size"),
        ({"name": "w", "memory_high": "2G", "memory_max": "1G"}, "memory_high must not be above memory_max"),
        ({"name": "w", "memory_max": "1G"}, "memory_max needs concurrency or autoscale"),
    ],
)
def test_bad_entries_name_the_instance_and_field(entry: dict, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        worker_instances([entry], APP)


def test_memory_limits_in_bytes_and_each_pool_process_gets_a_share_of_the_lower() -> None:
    instance = one(concurrency=3, memory_high="768M", memory_max="1G")
    assert instance["memory"] == {"MemoryHigh": 768 * 1024**2, "MemoryMax": 1024**3}
    assert instance["max_memory_per_child"] == 768 * 1024 // 4, "3 pool processes and the main process"
    assert "--max-memory-per-child=196608" in instance["options"]
    assert one(autoscale="7,1", memory_max=2 * 1024**3)["max_memory_per_child"] == 2 * 1024**2 // 8


def test_an_own_max_memory_per_child_wins_and_other_pools_have_no_children() -> None:
    assert one(concurrency=3, memory_max="1G", max_memory_per_child=1000)["max_memory_per_child"] == 1000
    threads = one(pool="threads", memory_max="1G")
    assert (threads["memory"], "max_memory_per_child" in threads) == ({"MemoryMax": 1024**3}, False)
    assert one()["memory"] == {}


def test_a_bad_default_app_names_celery_worker_app() -> None:
    with pytest.raises(AnsibleFilterError, match=r"celery_worker_app must be PACKAGE\.MODULE:ATTRIBUTE"):
        worker_instances([{"name": "w"}], "proj/celery.py")


def test_names_are_unique() -> None:
    with pytest.raises(AnsibleFilterError, match="unique; repeated: \\['a'\\]"):
        worker_instances([{"name": "a"}, {"name": "a"}], APP)


@pytest.mark.parametrize(
    ("argument", "option"),
    [
        ("--concurrency=7", "--concurrency"),
        ("--queues", "--queues"),
        ("-c7", "-c"),
        ("-Qreports", "-Q"),
        ("-nhijack@x", "-n"),
        ("-Sfile", "-S"),
        ("-f/tmp/log", "-f"),
        ("-B", "-B"),
        ("--beat", "--beat"),
        ("-EB", "-B"),
        ("-Ec4", "-c"),
        ("--detach", "--detach"),
        ("--uid=0", "--uid"),
    ],
)
def test_every_form_of_a_managed_option_is_found(argument: str, option: str) -> None:
    assert managed_option(argument) == option
    with pytest.raises(AnsibleFilterError, match=f"may not set {option}"):
        one(extra_args=[argument])


@pytest.mark.parametrize("argument", ["--without-mingle", "-E", "-Ofair", "-Xc", "--prefetch-multiplier=1", "7"])
def test_other_options_pass(argument: str) -> None:
    assert managed_option(argument) is None


def test_each_slot_gets_its_own_node_state_db_and_runtime_directory() -> None:
    slots = [
        {"template": "celery-worker@.service", "suffix": "", "description": ""},
        {"template": "celery-worker-b@.service", "suffix": ".b", "description": " (slot b)"},
    ]
    common = {"runtime_directory_base": "celery/worker-%i", "statedb_base": "%S/celery/worker-%i/worker", "x": 1}
    a, b = worker_slot_units(slots, common)
    assert (a["name"], a["runtime_directory"], a["x"]) == ("celery-worker@.service", "celery/worker-%i", 1)
    assert a["celery_args"] == [
        "worker",
        "--hostname=%i@%%h",
        "--statedb=%S/celery/worker-%i/worker.state",
        "$CELERY_WORKER_ARGS",
    ]
    assert b["description"] == "Celery worker %i (slot b)"
    assert b["celery_args"][1:3] == ["--hostname=%i.b@%%h", "--statedb=%S/celery/worker-%i/worker.b.state"]
    assert "statedb_base" not in b


def test_memory_drop_ins_are_written_for_both_slots_of_instances_with_limits_and_removed_otherwise() -> None:
    slots = [{"prefix": "celery-worker@"}, {"prefix": "celery-worker-b@"}]
    instances = worker_instances([{"name": "big", "concurrency": 1, "memory_max": "1G"}, {"name": "small"}], APP)
    drop_ins = worker_memory_drop_ins(instances, slots)
    assert drop_ins["set"] == [
        {"path": f"/etc/systemd/system/{prefix}big.service.d/50-reliable-celery-memory.conf", "name": "big",
         "limits": {"MemoryMax": 1024**3}}
        for prefix in ("celery-worker@", "celery-worker-b@")
    ]  # fmt: skip
    assert drop_ins["unset"] == [
        "/etc/systemd/system/celery-worker@small.service.d/50-reliable-celery-memory.conf",
        "/etc/systemd/system/celery-worker-b@small.service.d/50-reliable-celery-memory.conf",
    ]
    assert drop_ins["read"] == [
        "/etc/systemd/system/celery-worker@big.service.d",
        drop_ins["set"][0]["path"],
        "/etc/systemd/system/celery-worker-b@big.service.d",
        drop_ins["set"][1]["path"],
        *drop_ins["unset"],
    ]


def test_removed_instances_are_those_with_a_file_that_are_no_longer_wanted() -> None:
    slots = [{"prefix": "celery-worker@"}, {"prefix": "celery-worker-b@"}]
    files = ["kept.env", "gone.env", ".hidden.env", "notes.txt", "old.env.bak", "a.env"]
    removed = worker_removed_instances(
        files, [{"name": "kept"}], slots, "/etc/celery/worker-instances", "/var/lib/celery"
    )
    assert removed["names"] == ["a", "gone"]
    assert removed["units"] == [
        "celery-worker@a.service",
        "celery-worker-b@a.service",
        "celery-worker@gone.service",
        "celery-worker-b@gone.service",
    ]
    assert removed["paths"] == [
        "/etc/celery/worker-instances/a.env",
        "/etc/celery/worker-instances/gone.env",
        "/var/lib/celery/worker-a",
        "/var/lib/celery/worker-gone",
        "/etc/systemd/system/celery-worker@a.service.d",
        "/etc/systemd/system/celery-worker-b@a.service.d",
        "/etc/systemd/system/celery-worker@gone.service.d",
        "/etc/systemd/system/celery-worker-b@gone.service.d",
    ]


def test_no_removed_instances_when_every_file_is_wanted() -> None:
    removed = worker_removed_instances(["a.env"], [{"name": "a"}], [{"prefix": "p@"}], "/d", "/s")
    assert removed == {"names": [], "units": [], "paths": []}


def test_the_file_the_role_writes_is_the_one_the_unit_reads_and_removal_finds() -> None:
    assert worker_instance_file("%i", "/etc/celery/worker-instances") == "/etc/celery/worker-instances/%i.env"
    written = worker_instance_file("w-1.x", "/etc/celery/worker-instances")
    removed = worker_removed_instances(
        [written.rsplit("/", 1)[1]], [], [{"prefix": "p@"}], "/etc/celery/worker-instances", "/s"
    )
    assert removed["names"] == ["w-1.x"]
    assert written in removed["paths"]
