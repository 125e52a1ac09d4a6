"""API keys for people and systems calling our HTTP APIs, stored hashed.

One YAML file (``CIVIC_API_KEYS_FILE``) lists the clients; only the SHA-256 of
each key is kept, so the file reveals no usable key::

    clients:
      - name: appeal-platform        # shown in audit trails
        roles: [platform]            # what it may do
        sha256: 9f86d081884c7d65...  # hash_key("the key")

Roles used across services: ``platform`` (the appeal platform: full request
data), ``app`` (citizen apps, Open311 clients), ``operator`` (dispatch-centre
staff: triage), ``supervisor`` (approves extensions), ``ops`` (replays, reports).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from fastapi import HTTPException, Request

ROLES = frozenset({"platform", "app", "operator", "supervisor", "ops"})


class ApiKeysError(ValueError):
    pass


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "ck_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Client:
    name: str
    roles: frozenset[str]


@dataclass(frozen=True)
class ApiKeys:
    by_hash: dict[str, Client]

    @classmethod
    def load(cls, path: Path | None) -> ApiKeys:
        if path is None:
            return cls({})
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ApiKeysError(f"{path}: cannot read API keys: {error}") from error
        by_hash: dict[str, Client] = {}
        for index, entry in enumerate(data.get("clients") or []):
            name, roles, digest = entry.get("name"), entry.get("roles"), entry.get("sha256")
            if not isinstance(name, str) or not isinstance(digest, str) or len(digest) != 64:
                raise ApiKeysError(f"{path}: clients[{index}] needs name and a 64-hex sha256")
            unknown = set(roles or []) - ROLES
            if not roles or unknown:
                raise ApiKeysError(
                    f"{path}: clients[{index}] ({name}): bad roles {sorted(unknown)}"
                )
            by_hash[digest.lower()] = Client(name, frozenset(roles))
        return cls(by_hash)

    def identify(self, key: str | None) -> Client | None:
        # A lookup by digest leaks nothing useful: the digest of a guess is public anyway.
        return self.by_hash.get(hash_key(key)) if key else None


def presented_key(request: Request) -> str | None:
    """The key from ``Authorization: Bearer``, ``X-Api-Key`` or (Open311) ``api_key``."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or request.query_params.get("api_key")


def require(keys: ApiKeys, request: Request, *roles: str) -> Client:
    """The calling client if it holds one of ``roles``: else 401 (no/unknown key) or 403."""
    client = keys.identify(presented_key(request))
    if client is None:
        raise HTTPException(
            401, "missing or unknown API key", headers={"WWW-Authenticate": "Bearer"}
        )
    if roles and not client.roles & set(roles):
        raise HTTPException(403, f"{client.name} may not do this (needs role {' or '.join(roles)})")
    return client
