# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service_host_problems filter: what on a host keeps a Celery service from running there, as
the module celery_service_info read it; each problem a message naming the variable to change."""

from __future__ import annotations

from ansible_collections.reliable.celery.plugins.plugin_utils.problems import problems

NEVER_CHANGED = "the role never changes a directory it did not create"
MUTABLE_HINT = "set {variable}_mutable to true (its description says what can go wrong)"


def _cannot_enter(found, service):
    return (
        f"owned by {found['owner']}:{found['group']} with mode {found['mode']}, which the user {service['user']}"
        f" (group {service['group']}) cannot enter"
    )


def _directory_problems(host, service, directories):
    """An existing directory of the service's is used as it is: it must be a directory, and the home one the
    user may enter (tasks/directories.yml creates the missing ones)."""
    for directory in directories:
        found = host["paths"][directory["path"]]
        if not found["exists"]:
            continue
        if found["isdir"] and (directory["variable"] != "home" or found["service_may_enter"]):
            continue
        what = _cannot_enter(found, service) if found["isdir"] else "not a directory (a symbolic link is not followed)"
        yield (
            f"{service['variable_prefix']}_{directory['variable']}: {directory['path']} exists and is {what}."
            f" {NEVER_CHANGED.capitalize()}: choose another path (for a service with its own user, its own home), or"
            " change that directory yourself."
        )


def _state_root_problems(host, service, state_roots):
    """systemd creates the state directories below /var/lib (StateDirectory=) for the service user: the first
    level may be another service's home, which this user must enter."""
    for root in state_roots:
        found = host["paths"][root]
        if found["isdir"] and not found["service_may_enter"]:
            yield (
                f"{service['variable_prefix']}: systemd keeps the service's state below {root}, which exists and is"
                f" owned by {found['owner']}:{found['group']} with mode {found['mode']}: the user {service['user']}"
                f" (group {service['group']}) cannot enter it. It is probably the home of another service with another"
                f" user; {NEVER_CHANGED}: give each service user its own home (the *_home"
                " variables), or the same user."
            )


def _app_problem(host, service):
    """The app code another role put on the host (docs/including.md): one directory per version, so that a worker
    that still runs an older release (draining, or kept for a rollback) keeps importing the code it started with.
    The first problem only: the later ones mean nothing for a directory the user cannot read."""
    path = service["app_path"]
    if not path:
        return None
    app = host["app_directory"]
    variable = f"{service['variable_prefix']}_app_path"
    if not (app["isdir"] and app["service_may_enter"]):
        what = f"is {_cannot_enter(app, service)}" if app["isdir"] else "is not a directory on this host"
        return (
            f"{variable}: {path} {what}. Put the app's code there before this role runs (the services import it from"
            " there), readable by the service user."
        )
    if service["app_path_mutable"]:
        return None
    if app["links"]:
        return (
            f"{variable}: {path} goes through the symbolic link {', '.join(app['links'])}, which can be pointed at"
            " other code while a service imports from it. Give the directory of one version (such as"
            f" /srv/app/releases/ID); to accept a path that changes, {MUTABLE_HINT.format(variable=variable)}."
        )
    if app["changed_since"]:
        return (
            f"{variable}: the code in {path} changed (files added, removed or rewritten) since the release"
            f" {', '.join(app['changed_since'])} was built from it, under services that may still import from it;"
            " nothing was changed on this host. Deploy each version of the app to a directory of its own and give"
            f" that one; to accept a directory that changes, {MUTABLE_HINT.format(variable=variable)}."
        )
    return None


def service_host_problems(host, service, directories, state_roots):
    """The problems on the host, in the order a user would fix them: the service's directories, the roots of its
    state directories, its app directory. HOST is celery_service_info's result, SERVICE celery_base_service,
    DIRECTORIES celery_base's directories ({path, variable}) and STATE_ROOTS the first levels below /var/lib of
    the units' state directories. An empty list: nothing keeps the service from running there."""
    checks = (
        lambda found: _directory_problems(found, service, directories),
        lambda found: _state_root_problems(found, service, state_roots),
        lambda found: _app_problem(found, service),
    )
    return problems("service_host_problems", "celery_service_info's result", host, checks)


class FilterModule:
    def filters(self):
        return {"service_host_problems": service_host_problems}
