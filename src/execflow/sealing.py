"""Secret values at rest: sealed with authenticated encryption, opened only to run a task.

A `Sealer` holds the keys (Fernet: AES-128-CBC with HMAC-SHA256, from the `cryptography`
package), newest first; it seals with the first and opens with any, so keys can be rotated
while old values remain readable. Keys come from `EXECFLOW_SECRET_KEYS` or from a key file,
created with mode 0600 on first start; a file that others may read is refused.

A sealed value travels through execflow as a `Sealed`: a string that reads as the mask
wherever it is printed, serialised or compared, and carries its ciphertext in `token`.
Only the store (to write the ciphertext) and the engine (to hand the value to a task) look
inside.

A key is named by its `fingerprint`, a digest that does not reveal it: the database records the
fingerprints of the keys that seal its values (`execflow.store.keys`), never the keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# what a secret value reads as wherever it is shown
SECRET_MASK = "******"

# how often a key file is looked at again for keys another command added (a rotation)
RELOAD_SECONDS = 1.0


# what a key's digest starts with: the digest of a key is then of no use for anything else
FINGERPRINT_LABEL = b"execflow secret key fingerprint\x00"


class SecretKeyError(Exception):
    """The keys cannot be loaded, or do not open a sealed value."""


def fingerprint(key: bytes) -> str:
    """A key's name: 16 hex digits of SHA-256 over a label and the key's 32 bytes. It cannot
    give the key back (a key is 256 random bits), and a key written differently (base64
    padding) has the same one."""
    raw = base64.urlsafe_b64decode(key)
    return hashlib.sha256(FINGERPRINT_LABEL + raw).hexdigest()[:16]


class Sealed(str):
    """A sealed secret: reads as the mask; `token` is its ciphertext."""

    token: str

    def __new__(cls, token: str) -> Sealed:
        sealed = super().__new__(cls, SECRET_MASK)
        sealed.token = token
        return sealed

    def __repr__(self) -> str:
        return "Sealed('******')"

    def __reduce__(self) -> Any:
        return (Sealed, (self.token,))


def parse_keys(text: str, where: str) -> list[bytes]:
    """Fernet keys, one per line or separated by commas; `#` starts a comment."""
    keys = []
    for line in text.splitlines():
        for part in line.split("#", 1)[0].split(","):
            if part := part.strip():
                try:
                    Fernet(part)
                except ValueError:
                    raise SecretKeyError(
                        f"{where}: {part[:4]}… is not a key (32 url-safe base64-encoded bytes; "
                        "make one with `execflow secrets new-key`)"
                    ) from None
                keys.append(part.encode())
    if not keys:
        raise SecretKeyError(f"{where}: no key")
    return keys


def new_key() -> str:
    return Fernet.generate_key().decode()


def read_key_file(path: Path) -> list[bytes]:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretKeyError(
            f"{path}: others may read this key file (mode {stat.S_IMODE(mode):04o}); "
            f"make it private with `chmod 600 {path}`"
        )
    return parse_keys(path.read_text(), str(path))


def write_key_file(path: Path, keys: Sequence[bytes]) -> None:
    """Replace the key file in one step, private from its first byte."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# execflow secret keys, newest first: it seals, all open\n")
        fh.writelines(key.decode() + "\n" for key in keys)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temporary, path)


class Sealer:
    """Seals and opens secret values with a list of keys, newest first."""

    def __init__(
        self, keys: Sequence[bytes], key_file: Path | None = None, source: str = ""
    ) -> None:
        self._set(keys)
        self.key_file = key_file
        # where the keys come from, as an operator would set it (named in refusals)
        self.source = source or (
            f"the key file {key_file} (EXECFLOW_SECRET_KEY_FILE)" if key_file else "memory"
        )
        self._file_stamp = _stamp(key_file) if key_file else None
        self._checked_at = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def from_keys(cls, text: str, where: str = "EXECFLOW_SECRET_KEYS") -> Sealer:
        return cls(parse_keys(text, where), source=where)

    @classmethod
    def from_file(cls, path: Path, create: bool = True) -> Sealer:
        """The keys of a key file, made (one new key, mode 0600) when it does not exist."""
        if not path.exists():
            if not create:
                raise SecretKeyError(f"{path}: no such key file")
            write_key_file(path, [new_key().encode()])
        return cls(read_key_file(path), path)

    @classmethod
    def ephemeral(cls) -> Sealer:
        """A sealer with a key that lives only in memory: for tests and throwaway stores."""
        return cls([Fernet.generate_key()])

    def _set(self, keys: Sequence[bytes]) -> None:
        self.keys = list(keys)
        self._primary = Fernet(self.keys[0])
        self._all = MultiFernet([Fernet(k) for k in self.keys])
        self._fingerprints = [fingerprint(k) for k in self.keys]

    def fingerprints(self) -> list[str]:
        """The keys' fingerprints, newest (the sealing key's) first; the key file is looked
        at again first when it is due (see `RELOAD_SECONDS`)."""
        self._refresh()
        return self._fingerprints

    # keys may change underneath: `execflow secrets rotate` rewrites the key file ---------

    def _refresh(self, force: bool = False) -> bool:
        """Load the key file again if it changed; True when the keys did."""
        if self.key_file is None:
            return False
        now = time.monotonic()
        if not force and now - self._checked_at < RELOAD_SECONDS:
            return False
        with self._lock:
            self._checked_at = now
            stamp = _stamp(self.key_file)
            if stamp == self._file_stamp:
                return False
            self._set(read_key_file(self.key_file))
            self._file_stamp = stamp
            return True

    # sealing and opening ----------------------------------------------------------------

    def seal(self, value: Any) -> Sealed:
        if isinstance(value, Sealed):
            return value
        self._refresh()
        text = json.dumps(value, separators=(",", ":"))
        return Sealed(self._primary.encrypt(text.encode()).decode())

    def open(self, value: Sealed) -> Any:
        return json.loads(self._with_keys("decrypt", value.token))

    def reseal(self, token: str) -> str:
        """The same value sealed with the newest key."""
        self._refresh()
        return self._with_keys("rotate", token).decode()

    def _with_keys(self, how: str, token: str) -> bytes:
        """MultiFernet's `how` (decrypt, rotate) on a token; when the keys in hand do not
        open it, the key file is read again once (another process may have rotated them)."""
        while True:
            try:
                result: bytes = getattr(self._all, how)(token.encode())
                return result
            except InvalidToken:
                if not self._refresh(force=True):
                    raise SecretKeyError(
                        "a sealed value does not open with the configured secret keys "
                        "(EXECFLOW_SECRET_KEYS or the key file); was a key removed too soon?"
                    ) from None

    def opens_with_newest(self, token: str) -> bool:
        try:
            self._primary.decrypt(token.encode())
        except InvalidToken:
            return False
        return True

    def seal_inputs(self, inputs: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
        """Inputs with the values of `names` sealed (None stays None: there is nothing)."""
        names = set(names)
        return {k: (self.seal(v) if k in names and v is not None else v) for k, v in inputs.items()}

    def open_inputs(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Inputs with every sealed value opened, and the text of those values (longest
        first), which the engine masks wherever it would write them."""
        opened = dict(inputs)
        texts = set()
        for k, v in inputs.items():
            if isinstance(v, Sealed):
                opened[k] = value = self.open(v)
                if value is not None and value != "":
                    texts.add(value if isinstance(value, str) else json.dumps(value))
        return opened, sorted(texts, key=len, reverse=True)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def sealer_for(keys: str, key_file: Path) -> Sealer:
    """The node's sealer: the keys given in configuration, else those of the key file."""
    if keys.strip():
        return Sealer.from_keys(keys)
    return Sealer.from_file(key_file)
