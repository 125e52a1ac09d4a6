"""Department webhook secrets, read from a YAML file mounted at deploy time.

Format::

    departments:
      housing_bureau: [whsec_new..., whsec_old...]   # first signs; all verify
      water_bureau: whsec_...

Several secrets per department let a secret be rotated without downtime.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


class SecretsError(ValueError):
    pass


def load_secrets(path: Path | None) -> dict[str, list[str]]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise SecretsError(f"{path}: cannot read secrets: {error}") from error
    departments = data.get("departments") if isinstance(data, dict) else None
    if not isinstance(departments, dict):
        raise SecretsError(f"{path}: expected a 'departments' mapping")
    secrets: dict[str, list[str]] = {}
    for department, value in departments.items():
        values = [value] if isinstance(value, str) else value
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and v.startswith("whsec_") for v in values)
        ):
            raise SecretsError(f"{path}: {department}: expected whsec_… secret(s)")
        secrets[str(department)] = values
    return secrets


def require_secrets(
    secrets: dict[str, list[str]], departments: list[str], path: Path | None
) -> None:
    missing = [d for d in departments if d not in secrets]
    if missing:
        raise SecretsError(
            f"{path or 'CIVIC_SECRETS_FILE (unset)'}: no webhook secret for "
            + ", ".join(sorted(missing))
        )


def load_secrets_or_exit(path: Path | None, departments: list[str]) -> dict[str, list[str]]:
    """For service start: every department needs a secret; else one line and exit(2)."""
    try:
        secrets = load_secrets(path)
        require_secrets(secrets, departments, path)
    except SecretsError as error:
        print(f"bad secrets: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return secrets
