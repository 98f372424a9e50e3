"""API keys of `exapt serve`: a JSON file of salted scrypt hashes, never the keys.

A key reads `exapt_<id>_<secret>`: the id (public, random) finds the entry, the secret
(32 random bytes) is checked against scrypt(secret, salt) with `hmac.compare_digest`. An
unknown id costs the same scrypt as a known one, so the answer's timing does not tell
whether a name exists. Verified keys are remembered per process under an HMAC of the key
(with a per-process secret), so scrypt runs once per key, not once per request; the cache
is dropped whenever the file changes (a revoke takes effect on the next request).

    exapt keys add alice --keys keys.json --role predict     # prints the key once
    exapt keys revoke alice --keys keys.json
    exapt keys list --keys keys.json
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExaptError
from ..files import atomic_write_text

ROLES = ("predict", "metrics", "admin")
PREFIX = "exapt_"
SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 32}   # ~16 MiB and tens of ms per check: slow to guess
FORMAT = 1


def _scrypt(secret: str, salt: bytes, params: dict) -> bytes:
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, maxmem=64 * 2 ** 20, **params)


@dataclass(frozen=True)
class Caller:
    name: str
    roles: frozenset
    rate: float | None    # requests per second for this key (None: the server's default)


class KeyFile:
    """The key file: add, revoke, list, verify."""

    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: dict[bytes, Caller] = {}
        self._pepper = secrets.token_bytes(32)
        self._stamp = None
        self._entries: list[dict] = []

    # -- the file ---------------------------------------------------------------------
    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        if self.path.is_dir():
            raise ExaptError(f"--keys {self.path} is a folder; give a key file (JSON)")
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = data["keys"]
            if data.get("exapt_keys") != FORMAT or not isinstance(entries, list):
                raise ValueError("not an exapt key file")
            for e in entries:
                bytes.fromhex(e["salt"]), bytes.fromhex(e["hash"]), str(e["name"]), str(e["id"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ExaptError(f"--keys {self.path}: not a key file written by `exapt keys` "
                             f"({str(e).splitlines()[0][:100] if str(e) else type(e).__name__})") from None
        return entries

    def write(self, entries: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"exapt_keys": FORMAT, "keys": entries}, indent=1) + "\n")
        os.chmod(self.path, 0o600)

    def add(self, name: str, roles: list[str], rate: float | None = None) -> str:
        """A new key for `name` (printed once by the CLI); the file keeps its salted hash."""
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ExaptError(f"key name {name!r}: use letters, digits, '-', '_' or '.'")
        bad = [r for r in roles if r not in ROLES]
        if bad or not roles:
            raise ExaptError(f"--role {','.join(bad) or '(none)'}: choose from {', '.join(ROLES)}")
        if rate is not None and not rate > 0:
            raise ExaptError(f"--rate {rate}: give requests per second > 0")
        entries = self.read()
        if any(e["name"] == name and not e.get("revoked") for e in entries):
            raise ExaptError(f"key {name!r} exists in {self.path}; revoke it first or choose another name")
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_bytes(16)
        entries.append({"name": name, "id": key_id, "roles": sorted(set(roles)), "rate": rate,
                        "salt": salt.hex(), "hash": _scrypt(secret, salt, SCRYPT).hex(), "scrypt": SCRYPT,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "revoked": None})
        self.write(entries)
        return f"{PREFIX}{key_id}_{secret}"

    def revoke(self, name: str) -> int:
        entries = self.read()
        live = [e for e in entries if e["name"] == name and not e.get("revoked")]
        if not live:
            raise ExaptError(f"no live key named {name!r} in {self.path}")
        for e in live:
            e["revoked"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.write(entries)
        return len(live)

    def listing(self) -> list[dict]:
        return [{k: e.get(k) for k in ("name", "id", "roles", "rate", "created", "revoked")} for e in self.read()]

    # -- checking a request's key -----------------------------------------------------
    def _refresh(self) -> None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._entries = self.read() if stamp is not None else []
            self._seen.clear()
            self._stamp = stamp

    def verify(self, presented: str | None) -> Caller | None:
        """The caller a key belongs to, or None for a missing, malformed, unknown or revoked key."""
        if not presented:
            return None
        with self._lock:
            self._refresh()
            tag = hmac.new(self._pepper, presented.encode("utf-8", "replace"), hashlib.sha256).digest()
            if tag in self._seen:
                return self._seen[tag]
            entries = self._entries
        key_id, _, secret = presented[len(PREFIX):].partition("_") if presented.startswith(PREFIX) else ("", "", "")
        entry = next((e for e in entries if hmac.compare_digest(e["id"], key_id)), None)
        # the same work whether or not the id exists: timing tells nothing
        salt = bytes.fromhex(entry["salt"]) if entry else b"\0" * 16
        digest = _scrypt(secret or "-", salt, entry.get("scrypt", SCRYPT) if entry else SCRYPT)
        if entry is None or not hmac.compare_digest(digest, bytes.fromhex(entry["hash"])) or entry.get("revoked"):
            return None
        caller = Caller(entry["name"], frozenset(entry["roles"]), entry.get("rate"))
        with self._lock:
            self._seen[tag] = caller
        return caller
