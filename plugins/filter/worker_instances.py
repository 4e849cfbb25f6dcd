# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The worker_instances filter: celery_worker_instances checked, completed and turned into options."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

APP = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_QUEUE = re.compile(r"^[A-Za-z0-9_.:-]+$")
_AUTOSCALE = re.compile(r"^([1-9][0-9]*),([0-9]+)$")
# A size as systemd's MemoryHigh=/MemoryMax= take it: bytes, or with a K, M, G or T suffix (base 1024).
_SIZE = re.compile(r"^([1-9][0-9]*)([KMGT]?)$")
_SIZE_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
MEMORY_LIMITS = {"memory_high": "MemoryHigh", "memory_max": "MemoryMax"}
POOLS = ("prefork", "threads", "solo", "gevent", "eventlet")
LOGLEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
STRATEGIES = ("drain", "handover")
_KEYS = {
    "name", "app", "queues", "pool", "concurrency", "autoscale", "max_tasks_per_child",
    "max_memory_per_child", "loglevel", "extra_args", "environment", "restart_strategy", "mingle",
    "memory_high", "memory_max",
}  # fmt: skip
WITHOUT_MINGLE = "--without-mingle"

# `celery worker` options the role sets itself (or that would start a second beat, detach from
# systemd, or change the node's identity), long and short. Short options that take a value end a
# cluster of short flags (`-Ec4` is -E, then -c with 4).
MANAGED_LONG = {
    "--app", "--broker", "--result-backend", "--config", "--workdir", "--hostname", "--statedb",
    "--pool", "--concurrency", "--autoscale", "--queues", "--loglevel", "--logfile", "--pidfile",
    "--detach", "--beat", "--schedule", "--scheduler", "--uid", "--gid", "--max-tasks-per-child",
    "--max-memory-per-child",
}  # fmt: skip
MANAGED_SHORT = set("AbnSPcQlfDBs")
_SHORT_WITH_VALUE = set("AbnSPcQlfsOXIe")


def managed_option(argument):
    """The managed option ARGUMENT sets (``-c7`` -> ``-c``), or None."""
    if argument.startswith("--"):
        name = argument.split("=", 1)[0]
        return name if name in MANAGED_LONG else None
    if argument.startswith("-") and len(argument) > 1:
        for letter in argument[1:]:
            if letter in MANAGED_SHORT:
                return "-" + letter
            if letter in _SHORT_WITH_VALUE:
                return None
    return None


def worker_options(instance):
    """The ``celery worker`` options of one completed instance, in a stable order."""
    options = ["--queues=" + ",".join(instance["queues"]), "--pool=" + instance["pool"]]
    options.append("--loglevel=" + instance["loglevel"])
    for key in ("concurrency", "autoscale", "max_tasks_per_child", "max_memory_per_child"):
        if instance.get(key) is not None:
            options.append("--%s=%s" % (key.replace("_", "-"), instance[key]))
    if not instance["mingle"] and WITHOUT_MINGLE not in instance["extra_args"]:
        options.append(WITHOUT_MINGLE)
    return options + instance["extra_args"]


def worker_instances(instances, app, restart_strategy="handover"):
    """INSTANCES with their defaults, each value of the type its argument spec says, and ``options``.

    Values come as the argument spec would convert them: a name given as a number is its
    string, a queue list given as a string is split at commas, numbers may be strings of digits.
    Every error names the instance and the field, and what is allowed; never an environment value.
    """
    if not isinstance(instances, list) or not instances:
        raise AnsibleFilterError("celery_worker_instances must be a non-empty list of instances (mappings)")
    completed = [_instance(index, entry, app, restart_strategy) for index, entry in enumerate(instances)]
    names = [instance["name"] for instance in completed]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise AnsibleFilterError(f"celery_worker_instances: instance names must be unique; repeated: {duplicates}")
    return completed


def _instance(index, entry, app, restart_strategy):
    name = _name(index, entry)
    where = f"celery_worker_instances entry {name!r}"

    def fail(field, allowed):
        raise AnsibleFilterError(f"{where}: {field} {allowed}, got {entry.get(field)!r}")

    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise AnsibleFilterError(f"{where}: unknown keys {unknown}; allowed: {sorted(_KEYS)}")
    instance = {
        "name": name,
        "app": entry.get("app", app),
        "queues": entry.get("queues", ["celery"]),
        "pool": entry.get("pool", "prefork"),
        "loglevel": entry.get("loglevel", "INFO"),
        "extra_args": entry.get("extra_args", []),
        "environment": entry.get("environment", {}),
        "restart_strategy": entry.get("restart_strategy", restart_strategy),
        "mingle": entry.get("mingle", False),
    }
    if isinstance(instance["queues"], str):
        instance["queues"] = [queue.strip() for queue in instance["queues"].split(",")]
    _check_choices(instance, entry, fail)
    _add_pool_size(instance, entry, fail)
    _add_memory(instance, entry, fail)
    _check_extra_args(instance["extra_args"], where, fail)
    _check_mingle(instance, fail)
    if not isinstance(instance["environment"], dict):
        fail("environment", "must be a mapping of variable names to values")
    instance["options"] = worker_options(instance)
    return instance


def _check_mingle(instance, fail):
    try:
        instance["mingle"] = boolean(instance["mingle"])  # as the argument spec converts a bool
    except TypeError:
        fail("mingle", "must be true or false")
    if instance["mingle"] and WITHOUT_MINGLE in instance["extra_args"]:
        fail("mingle", f"must be false (or {WITHOUT_MINGLE} left out of extra_args): extra_args has {WITHOUT_MINGLE}")


def _name(index, entry):
    if not isinstance(entry, dict):
        raise AnsibleFilterError(f"celery_worker_instances[{index}] must be a mapping with at least a name")
    name = entry.get("name")
    if isinstance(name, int) and not isinstance(name, bool):
        name = str(name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise AnsibleFilterError(
            f"celery_worker_instances[{index}].name must be 1-64 letters, digits, '_' and '-' starting with a "
            f"letter or digit, got {name!r}"
        )
    return name


def _check_choices(instance, entry, fail):
    if not isinstance(instance["app"], str) or not APP.match(instance["app"]):
        if "app" in entry:
            fail("app", "must be PACKAGE.MODULE:ATTRIBUTE (for example proj.celery:app)")
        raise AnsibleFilterError(
            f"celery_worker_app must be PACKAGE.MODULE:ATTRIBUTE (for example proj.celery:app), got {instance['app']!r}"
        )
    queues = instance["queues"]
    if not isinstance(queues, list) or not queues or not all(isinstance(q, str) and _QUEUE.match(q) for q in queues):
        fail("queues", "must be a non-empty list of queue names (letters, digits, '_', '.', ':', '-')")
    for field, choices in (("pool", POOLS), ("loglevel", LOGLEVELS), ("restart_strategy", STRATEGIES)):
        if instance[field] not in choices:
            fail(field, f"must be one of {', '.join(choices)}")


def _add_pool_size(instance, entry, fail):
    for field in ("concurrency", "max_tasks_per_child", "max_memory_per_child"):
        if entry.get(field) is not None:
            instance[field] = _positive(entry[field], lambda field=field: fail(field, "must be a whole number > 0"))
    autoscale = entry.get("autoscale")
    if autoscale is None:
        return
    match = _AUTOSCALE.match(str(autoscale))
    if instance["pool"] != "prefork" or not match or int(match.group(1)) < int(match.group(2)):
        fail("autoscale", "must be 'MAX,MIN' with MAX >= MIN >= 0, with the prefork pool only")
    if "concurrency" in instance:
        fail("autoscale", "cannot be set together with concurrency")
    instance["autoscale"] = str(autoscale)


def _add_memory(instance, entry, fail):
    """The instance's systemd memory limits (``memory``: MemoryHigh=/MemoryMax= in bytes) and, for prefork
    without its own max_memory_per_child, that of each pool process: an equal share of the lower limit
    among the pool's processes and the main process, so that a process that grew past its share is
    replaced after its task, before the cgroup's limit makes the kernel kill one mid-task."""
    limits = {}
    for field, directive in MEMORY_LIMITS.items():
        value = entry.get(field)
        if value is None:
            continue
        match = _SIZE.match(str(value).strip()) if not isinstance(value, bool) else None
        if not match:
            fail(field, "must be a size in bytes, or with a K, M, G or T suffix (512M, 2G)")
        limits[directive] = int(match.group(1)) * _SIZE_FACTORS[match.group(2)]
    if limits.get("MemoryHigh", 0) > limits.get("MemoryMax", float("inf")):
        fail("memory_high", f"must not be above memory_max ({entry.get('memory_max')!r})")
    instance["memory"] = limits
    if not limits or instance["pool"] != "prefork" or "max_memory_per_child" in instance:
        return
    processes = instance.get("concurrency") or int(instance.get("autoscale", "0,0").split(",")[0])
    if not processes:
        fail(
            "memory_high" if "MemoryHigh" in limits else "memory_max",
            "needs concurrency or autoscale (or max_memory_per_child) to derive each pool process's share",
        )
    instance["max_memory_per_child"] = min(limits.values()) // 1024 // (processes + 1)


def _check_extra_args(extra_args, where, fail):
    if not isinstance(extra_args, list) or not all(
        isinstance(arg, str) and arg and not re.search(r"\s", arg) for arg in extra_args
    ):
        fail("extra_args", "must be a list of arguments without whitespace")
    managed = [option for option in map(managed_option, extra_args) if option]
    if managed:
        raise AnsibleFilterError(
            f"{where}: extra_args may not set {', '.join(managed)}: the role manages the app, broker, node name, "
            f"state db, pool, concurrency, queues, log level and file, pid file, detach, beat and user "
            f"({', '.join(sorted(MANAGED_LONG))} and their short forms)"
        )


def worker_slot_units(slots, common):
    """celery_base's unit of each slot of an instance: COMMON with the slot's unit name, description,
    node name, state db and runtime directory (each with the slot's suffix)."""
    units = []
    for slot in slots:
        suffix = slot["suffix"]
        unit = {key: value for key, value in common.items() if key not in ("runtime_directory_base", "statedb_base")}
        unit.update(
            name=slot["template"],
            description="Celery worker %i" + slot["description"],
            runtime_directory=common["runtime_directory_base"] + suffix,
            # systemd expands %i and %S; Celery's own %h is written %%h.
            celery_args=[
                "worker",
                f"--hostname=%i{suffix}@%%h",
                f"--statedb={common['statedb_base']}{suffix}.state",
                "$CELERY_WORKER_ARGS",
            ],
        )
        units.append(unit)
    return units


def _positive(value, fail):
    if isinstance(value, bool):
        fail()
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 1:
        fail()
    return value


UNIT_DIR = "/etc/systemd/system"
MEMORY_DROP_IN = "50-reliable-celery-memory.conf"


def worker_memory_drop_ins(instances, slots):
    """The memory drop-ins of every slot of INSTANCES (worker_instances): ``set``, each with its ``limits``,
    for the instances that have limits; ``unset``, the paths of those that have none; ``read``, the paths
    whose state on the host decides what the tasks change (every drop-in, and the directory of each to
    set)."""
    drop_ins = {"set": [], "unset": [], "read": []}
    for instance in instances:
        for slot in slots:
            path = f"{_drop_in_directory(slot, instance['name'])}/{MEMORY_DROP_IN}"
            if instance["memory"]:
                drop_ins["set"].append({"path": path, "name": instance["name"], "limits": instance["memory"]})
                drop_ins["read"] += [_drop_in_directory(slot, instance["name"]), path]
            else:
                drop_ins["unset"].append(path)
    drop_ins["read"] += drop_ins["unset"]
    return drop_ins


INSTANCE_FILE_SUFFIX = ".env"


def worker_instance_file(name, instance_dir):
    """The file in INSTANCE_DIR of the instance NAME, with its options and environment (``%i`` for a unit's)."""
    return f"{instance_dir}/{name}{INSTANCE_FILE_SUFFIX}"


def worker_removed_instances(instance_files, instances, slots, instance_dir, state_dir):
    """The instances that have a file in INSTANCE_DIR (INSTANCE_FILES, the names of its files) but are no
    longer among INSTANCES: their ``names``, the ``units`` of both their slots, and the ``paths`` to
    remove (instance file, state directory below STATE_DIR, each slot's drop-in directory). Hidden files
    are not instances."""
    wanted = {instance["name"] for instance in instances}
    on_host = (
        name.removesuffix(INSTANCE_FILE_SUFFIX)
        for name in instance_files
        if name.endswith(INSTANCE_FILE_SUFFIX) and not name.startswith(".")
    )
    names = sorted(name for name in on_host if name not in wanted)
    return {
        "names": names,
        "units": [f"{slot['prefix']}{name}.service" for name in names for slot in slots],
        "paths": [worker_instance_file(name, instance_dir) for name in names]
        + [f"{state_dir}/worker-{name}" for name in names]
        + [_drop_in_directory(slot, name) for name in names for slot in slots],
    }


def _drop_in_directory(slot, name):
    return f"{UNIT_DIR}/{slot['prefix']}{name}.service.d"


class FilterModule:
    def filters(self):
        return {
            "worker_instances": worker_instances,
            "worker_slot_units": worker_slot_units,
            "worker_memory_drop_ins": worker_memory_drop_ins,
            "worker_removed_instances": worker_removed_instances,
            "worker_instance_file": worker_instance_file,
        }
