# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rabbitmq_password_hash filter: RabbitMQ's salted SHA-256 password hash."""

from __future__ import annotations

import base64
import hashlib

from ansible.errors import AnsibleFilterError

ALGORITHM = "rabbit_password_hashing_sha256"


def rabbitmq_password_hash(password, salt_seed):
    """base64(salt ++ sha256(salt ++ password)), as rabbit_password_hashing_sha256 computes it.

    The 4-byte salt is derived from SALT_SEED and the password (4 printable ASCII bytes) rather
    than drawn at random, so the same password gives the same definitions file on every run
    (idempotent) and a new password a new hash. The password itself never reaches the host.
    """
    if not isinstance(password, str) or not password:
        raise AnsibleFilterError("rabbitmq_password_hash: the password must be a non-empty string")
    seed = hashlib.sha256(f"{salt_seed}:{password}".encode()).digest()
    salt = bytes(33 + byte % 94 for byte in seed[:4])
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


class FilterModule:
    def filters(self):
        return {"rabbitmq_password_hash": rabbitmq_password_hash}
