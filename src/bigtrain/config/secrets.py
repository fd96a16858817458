"""Secret-looking keys kept out of logged hyperparameters and checkpoints.

A key is secret by its name, not by a substring: its words (split at `_`, `-`, `.`, spaces and
camelCase) end in a credential word (`hf_token`, `db_password`, `client_secret`) or in a key
pair (`api_key`, `wandbApiKey`, `AWS_SECRET_ACCESS_KEY`). So `tokenizer`, `max_new_tokens` and
`key_path` stay, and `access_token` or `API-KEY` go.
"""

from __future__ import annotations

import re
from typing import Any

# The last word of a secret key.
SECRET_WORDS = frozenset(
    {"token", "password", "passwd", "secret", "secrets", "credential", "credentials"}
    | {"apikey", "privatekey", "secretkey", "accesskey"}
)
# The last two words of a secret key.
SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("secret", "key"), ("access", "key")})
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def key_words(key: Any) -> list[str]:
    """The lower-case words of a key: 'wandbApiKey' -> ['wandb', 'api', 'key']."""
    return [w.lower() for w in _WORDS.findall(str(key))]


def is_secret_key(key: Any) -> bool:
    """Whether a key's name says it holds a credential."""
    words = key_words(key)
    return bool(words) and (words[-1] in SECRET_WORDS or tuple(words[-2:]) in SECRET_PAIRS)


def strip_secrets(value: Any) -> Any:
    """`value` without dict keys that name secrets (at any depth), for logging and checkpoints."""
    if isinstance(value, dict):
        return {k: strip_secrets(v) for k, v in value.items() if not is_secret_key(k)}
    if isinstance(value, (list, tuple)):
        return type(value)(strip_secrets(v) for v in value)
    return value
