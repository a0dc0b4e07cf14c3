"""Choosing the environment (dev, prod, ...) while the configuration loads.

``load_config`` calls :func:`select_environment` on the raw mapping (before
validation), so the chosen environment's Milvus keys are folded into
``milvus:`` once and every stage just reads ``cfg.milvus``; then
:func:`environment_token` reads the token the environment names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kbrelease.errors import ConfigError

if TYPE_CHECKING:
    from kbrelease.config import Config

# Keys of an ``environments:`` entry that replace a ``milvus:`` key, and the
# variable that would set the same key (a conflict is refused, not resolved).
_ENV_OVERRIDES = {"milvus_uri": ("uri", "MILVUS_URI"), "db_prefix": ("db_prefix", "MILVUS_DB_PREFIX"), "registry_db": ("registry_db", None)}
_TOKEN_KEYS = ("token", "milvus_token", "password", "api_key")


def select_environment(data: dict[str, Any], env: Mapping[str, str], where: str) -> None:
    """Resolve the environment name once and fold its entry into ``milvus:``.

    Precedence of the name: --env > KBRELEASE_ENV > ``environment:`` >
    ``default_environment:`` > "default".
    """
    envs = data.get("environments") or {}
    if not isinstance(envs, dict):
        raise ConfigError(f"{where}: 'environments' must be a mapping of environment name to settings")
    for name, entry in envs.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: environments.{name} must be a mapping (milvus_uri, token_env, db_prefix, service_port)")
        for key in _TOKEN_KEYS:
            if key in entry:
                raise ConfigError(
                    f"{where}: environments.{name}.{key}: secrets must never be written in the config file; "
                    f"name the variable that holds it (token_env: MILVUS_TOKEN_{str(name).upper()}) or a file (token_file: /run/secrets/milvus-{name})"
                )
    name = data.get("environment") or data.get("default_environment") or "default"
    data["environment"] = name
    if not envs:
        return
    if name not in envs:
        configured = ", ".join(map(str, envs))
        if name == "default":
            raise ConfigError(f"{where} configures environments ({configured}); choose one with --env NAME, KBRELEASE_ENV or default_environment")
        raise ConfigError(f"unknown environment {name!r}: {where} configures {configured}; use one of them or add {name!r} under 'environments:'")
    milvus = data.setdefault("milvus", {})
    if not isinstance(milvus, dict):
        raise ConfigError(f"{where}: 'milvus' must be a mapping")
    entry = envs[name]
    for key, (target, var) in _ENV_OVERRIDES.items():
        value = entry.get(key)
        if value is None:
            continue
        if var and env.get(var) and env[var] != value:
            raise ConfigError(f"{var} (from the environment) conflicts with environments.{name}.{key} in {where}; unset {var} or edit the environment")
        milvus[target] = value


def environment_token(cfg: Config, env: Mapping[str, str]) -> str | None:
    """The Milvus token of the selected environment: its token_env, its token_file, else MILVUS_TOKEN."""
    entry = cfg.environment_config
    name = cfg.environment
    if entry is not None and entry.token_env:
        value = env.get(entry.token_env)
        if not value:
            raise ConfigError(f"environment {name!r} reads its Milvus token from ${entry.token_env}, which is not set; export it, or remove token_env")
        return value
    if entry is not None and entry.token_file:
        try:
            value = entry.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"environment {name!r}: token_file {entry.token_file} cannot be read ({exc.strerror}); check the path and its permissions"
            ) from None
        if not value:
            raise ConfigError(f"environment {name!r}: token_file {entry.token_file} is empty; write the token into it")
        return value
    return env.get("MILVUS_TOKEN") or None
