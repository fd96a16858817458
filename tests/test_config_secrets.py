"""Secret-looking keys are dropped from logged hyperparameters and checkpoints by their name:
credentials go, keys that merely contain a secret word (tokenizer, max_new_tokens) stay."""

from __future__ import annotations

import pytest

from bigtrain.config import as_dict
from bigtrain.config.secrets import is_secret_key, strip_secrets
from conftest import make_cfg

KEPT = ["tokenizer", "max_new_tokens", "tokens", "seq_len", "key_path", "keys", "monitor", "secretary"]
DROPPED = [
    "hf_token",
    "api_key",
    "wandb_api_key",
    "password",
    "secret",
    "access_token",
    "API-KEY",
    "apiKey",
    "client_secret",
    "db_passwd",
    "credentials",
    "aws_secret_access_key",
    "private_key",
]


@pytest.mark.parametrize("key", KEPT)
def test_ordinary_keys_are_kept(key):
    assert not is_secret_key(key)


@pytest.mark.parametrize("key", DROPPED)
def test_secret_keys_are_dropped(key):
    assert is_secret_key(key)


def test_strip_secrets_at_any_depth():
    value = {
        "data": {"tokenizer": "tok.json", "seq_len": 128, "hf_token": "hf_x"},
        "runs": [{"password": "pw", "host": "h"}, ({"access_token": "t", "tokens": 5},)],
        "secret": {"nested": 1},
        "api_key": "k",
    }
    assert strip_secrets(value) == {
        "data": {"tokenizer": "tok.json", "seq_len": 128},
        "runs": [{"host": "h"}, ({"tokens": 5},)],
    }


def test_logged_hyperparameters_keep_the_tokenizer_and_max_new_tokens():
    logged = strip_secrets(as_dict(make_cfg(["data=stdlib_text", "model=gpt/tiny", "metrics=lm"])))
    assert logged["data"]["tokenizer"] is None and "seq_len" in logged["data"]
    assert logged["callbacks"]["samples"]["max_new_tokens"] == 80
