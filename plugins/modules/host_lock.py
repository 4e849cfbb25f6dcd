#!/usr/bin/python
# Copyright: reliable.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_lock
short_description: Hold a host for one ansible-playbook run of the reliable.celery roles
version_added: 0.1.0
description:
  - Makes sure that one ansible-playbook run at a time changes the Celery services of a host. The roles of this
    collection take the lock before their first change and release it after their last task; a second run that
    reaches the host meanwhile fails at once with a message naming the run that holds it.
  - The run is the controller's ansible-playbook process. The action plugin of the same name identifies it
    (controller host name, pid namespace, boot id, pid and the pid's start time, user) and passes it as
    O(holder); the same run takes the lock again as often as it likes (re-entrant).
  - The holder is gone, and its record is taken over, when its ansible-playbook process no longer runs (checked by
    the action plugin when the record comes from the same controller, for example after Ctrl-C), or when it has not
    renewed its lock for its O(lease_seconds) (a holder on another controller). Every lock task renews the lease.
  - The record is C(holder.json) in O(path), replaced by a rename under an exclusive C(flock) of C(mutex) beside it.
author:
  - reliable.celery maintainers (@reliable-celery)
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on
      the controller.
    support: full
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Reads the record and fails as outside check mode if another live run holds the host; writes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: full
    details: The record is the run's bookkeeping, not the host's configuration; the module always reports
      C(changed=false).
options:
  state:
    description:
      - V(held) takes or renews the lock for O(holder); V(released) removes O(holder)'s record.
    type: str
    choices: [held, released]
    default: held
  holder:
    description:
      - The run that takes the lock, as the action plugin identifies it. Set by the action plugin.
    type: dict
    required: true
  lease_seconds:
    description:
      - How long the record stays valid without renewal. Must exceed the longest time between two lock tasks of a run.
    type: int
    default: 3600
  take_over:
    description:
      - The id of a record whose holder the action plugin found gone; replaced only if it is still the current one.
    type: str
  path:
    description:
      - Directory of the record (created with mode 0700). Below C(/run) a reboot, which ends every run, clears it.
    type: path
    default: /run/reliable-celery/lock
notes:
  - Use it through the action plugin (the task C(reliable.celery.host_lock)); it sets O(holder) and O(take_over).
"""

EXAMPLES = r"""
- name: Hold the host for this run
  reliable.celery.host_lock:
    lease_seconds: 3600

- name: Release the host
  reliable.celery.host_lock:
    state: released
"""

RETURN = r"""
acquired:
  description: Whether this run holds the host now (V(state=held)) or held it until this task (V(state=released)).
  returned: always
  type: bool
action:
  description: What happened, V(acquire), V(renew), V(take_over) or V(held) (another run holds the host); with
    V(state=released) V(release), or V(none) when there was no record of this run (or, in check mode, no lock
    directory yet).
  returned: always
  type: str
directory:
  description: The directory of the record, O(path).
  returned: always
  type: str
holder:
  description: The record of the run that holds the host after this task, or of the run found holding it.
  returned: when a run holds the host (except in check mode without a lock directory)
  type: dict
took_over:
  description: The holder whose record this task replaced, and why it was found gone.
  returned: when O(state=held) and the lock was taken over
  type: dict
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.reliable.celery.plugins.module_utils import _host_lock


def hold(files, params, now, check_mode):
    holder_id = _host_lock.identity_id(params["holder"])
    record = files.read()
    decision = _host_lock.decide(record, holder_id, now, params["take_over"])
    action = decision[0]
    if action == _host_lock.HELD:
        return {"acquired": False, "action": action, "holder": record, "directory": files.directory}
    written = _host_lock.new_record(params["holder"], record, decision, now, params["lease_seconds"])
    if not check_mode:
        files.write(written)
    result = {"acquired": True, "action": action, "holder": written, "directory": files.directory}
    if action == _host_lock.TAKE_OVER:
        result["took_over"] = written["took_over"]
    return result


def release(files, params, check_mode):
    record = files.read()
    if record is None or record.get("id") != _host_lock.identity_id(params["holder"]):
        return {"acquired": False, "action": "none", "holder": record, "directory": files.directory}
    if not check_mode:
        files.remove()
    return {"acquired": True, "action": "release", "directory": files.directory}


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["held", "released"], "default": "held"},
            "holder": {"type": "dict", "required": True},
            "lease_seconds": {"type": "int", "default": 3600},
            "take_over": {"type": "str"},
            "path": {"type": "path", "default": "/run/reliable-celery/lock"},
        },
        supports_check_mode=True,
    )
    params = module.params
    if params["lease_seconds"] < 1:
        module.fail_json(msg="lease_seconds must be a whole number >= 1, got %d" % params["lease_seconds"])
    files = _host_lock.LockFiles(params["path"])
    if module.check_mode and not os.path.isdir(params["path"]):
        # No run has held this host since boot: nothing to read, and check mode creates nothing.
        module.exit_json(changed=False, acquired=params["state"] == "held", action="none", directory=params["path"])
    try:
        with files:
            if params["state"] == "held":
                result = hold(files, params, time.time(), module.check_mode)
            else:
                result = release(files, params, module.check_mode)
    except OSError as error:
        module.fail_json(msg="cannot use the host lock in %s: %s" % (params["path"], error))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
