"""The one table of kbrelease's secrets, and everything derived from it.

Each secret is named once, in :data:`SECRETS`: its environment variable, the
config key that holds it after loading (if any), what it is, and which running
parts need it. From this table come

* the refusal of a secret written in ``kbrelease.yaml`` (:func:`refuse_in_file`),
* reading the secrets from the environment (``kbrelease.config.load_config``),
* their registration with the redaction (:func:`register_config_secrets`),
  so every output path masks them,
* the ``secretKeyRef`` entries of the rendered Deployment and Workflow
  (:func:`keys_for`), the compose file's check, and the generated docs.

Secrets are never written anywhere by kbrelease; rendered manifests only
*reference* keys of the Secret ``deploy.secret_name``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from kbrelease.errors import ConfigError
from kbrelease.trust.redact import redact, register_secret

if TYPE_CHECKING:
    from kbrelease.config import Config

# Parts of a deployment that run kbrelease: the publish workflow's steps
# (sync, build, verify, switch, gc), the search service (with its in-service
# monitor), and the CI job that writes the data index.
Component = Literal["workflow", "service", "ci"]


@dataclass(frozen=True)
class Secret:
    """One secret: where it comes from, where it lives in the config, who needs it."""

    env: str
    """The environment variable (and the key of the Kubernetes Secret)."""
    path: str | None
    """Dotted config key holding it after loading; None when a library reads the variable itself (boto3)."""
    description: str
    components: frozenset[Component]
    aliases: tuple[str, ...] = ()
    """Other variables read when ``env`` is unset (OPENAI_API_KEY)."""
    kind: Literal["value", "url_list"] = "value"


SECRETS: tuple[Secret, ...] = (
    Secret(
        "MILVUS_TOKEN",
        "milvus.token",
        "the Milvus token (`user:password` or an API key); an environment's `token_env`/`token_file` replaces it",
        frozenset({"workflow", "service"}),
    ),
    Secret(
        "TEXT_EMBEDDING_API_KEY",
        "text_api_key",
        "API key of the text embedding endpoint (`OPENAI_API_KEY` is read too)",
        frozenset({"workflow", "service"}),
        aliases=("OPENAI_API_KEY",),
    ),
    Secret("AWS_ACCESS_KEY_ID", None, "S3 access key id (read by boto3)", frozenset({"workflow", "service", "ci"})),
    Secret("AWS_SECRET_ACCESS_KEY", None, "S3 secret access key (read by boto3)", frozenset({"workflow", "service", "ci"})),
    Secret("AWS_SESSION_TOKEN", None, "S3 session token of temporary credentials (read by boto3)", frozenset({"workflow", "service"})),
    Secret(
        "KBRELEASE_API_TOKEN",
        "service.api_token",
        "bearer token every read endpoint of the service (search, data index) requires when set",
        frozenset({"service"}),
    ),
    Secret(
        "KBRELEASE_ADMIN_TOKEN",
        "service.admin_token",
        "bearer token of the service's admin endpoints: switch, rollback, logs (unset disables them)",
        frozenset({"service"}),
    ),
    Secret(
        "KBRELEASE_ALERT_WEBHOOKS",
        "monitor.webhook_urls",
        "comma-separated webhook URLs for monitor alerts and the workflows' exit handler, Slack-compatible",
        frozenset({"service", "workflow"}),
        kind="url_list",
    ),
    Secret(
        "KBRELEASE_PAGERDUTY_ROUTING_KEY",
        "monitor.pagerduty.routing_key",
        "PagerDuty Events API v2 routing (integration) key for monitor alerts",
        frozenset({"service"}),
    ),
    Secret("KBRELEASE_SMTP_PASSWORD", "monitor.email.password", "SMTP password of the monitor's email alerts", frozenset({"service"})),
)

# Config keys that hold a URL which is not itself a secret but may carry one
# (userinfo, ``?api_key=``): the credentials in them are registered for redaction.
URL_KEYS: tuple[str, ...] = ("milvus.uri", "text.base_url", "s3.endpoint_url")
_TOKEN_LIKE = 16
_SEGMENT_LIKE = 12


def keys_for(component: Component) -> tuple[str, ...]:
    """The Secret keys ``component`` reads, in table order."""
    return tuple(s.env for s in SECRETS if component in s.components)


def by_env(name: str) -> Secret:
    return next(s for s in SECRETS if s.env == name)


def refuse_in_file(loaded: Mapping[str, Any], where: Path) -> None:
    """A secret written in the config file is refused, naming the variable to use instead."""
    for secret in SECRETS:
        if secret.path is None:
            continue
        *parents, leaf = secret.path.split(".")
        node: Any = loaded
        for key in parents:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and leaf in node:
            raise ConfigError(f"{where}: {secret.path} must not be written in the config file; set {secret.env} in the environment instead")


def read_env(secret: Secret, env: Mapping[str, str]) -> str | None:
    """The value of ``secret`` from ``env`` (its variable, else an alias), or None."""
    for name in (secret.env, *secret.aliases):
        if env.get(name):
            return env[name]
    return None


def parse_url_list(secret: Secret, value: str) -> list[str]:
    """Comma-, space- or newline-separated http(s) URLs, never echoed in an error (they embed secrets)."""
    urls = [u for u in value.replace("\n", ",").replace(" ", ",").split(",") if u]
    for i, url in enumerate(urls, 1):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{secret.env}: entry #{i} is not an http(s) URL; give comma-separated URLs")
    return urls


def url_credentials(url: str) -> list[str]:
    """The secret parts of a URL: the password (or the whole userinfo) and secret-looking query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        _, colon, password = userinfo.partition(":")
        # A bare user name is only a secret when it looks like a token (https://<token>@host);
        # registering "admin" would mask the word everywhere.
        if colon or len(userinfo) >= _TOKEN_LIKE:
            # As written, decoded, and as HTTP clients send it (Authorization: Basic base64(user:password)).
            found += [userinfo, unquote(userinfo), base64.b64encode(unquote(userinfo).encode()).decode()]
        if password:
            found += [password, unquote(password)]
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if redact(f"{key}=x") != f"{key}=x":  # a key the redaction treats as secret
            found.append(value)
    return found


def _url_secret_parts(url: str) -> list[str]:
    """A URL that is itself a secret (a webhook) keeps its secret in the path: the path, and a token-like last segment."""
    parts = urlsplit(url)
    found = [parts.path + (f"?{parts.query}" if parts.query else ""), *url_credentials(url)]
    last = parts.path.rstrip("/").rsplit("/", 1)[-1]
    if len(last) >= _SEGMENT_LIKE:
        found.append(last)
    return [f for f in found if len(f) > 1]


def value_at(cfg: Config, dotted: str) -> Any:
    """The value of the config key ``dotted`` (``"milvus.token"``), None when absent."""
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part, None)
    return node


def plain_values(cfg: Config) -> list[str]:
    """Every secret value the loaded config holds (for redaction and for checks that nothing carries them)."""
    out: list[str] = []
    for secret in SECRETS:
        if secret.path is None:
            continue
        value = value_at(cfg, secret.path)
        items = value if isinstance(value, list) else [value]
        for item in items:
            plain = item.get_secret_value() if hasattr(item, "get_secret_value") else item
            if plain:
                out.append(str(plain))
                if secret.kind == "url_list":
                    out += _url_secret_parts(str(plain))
    for dotted in URL_KEYS:
        value = value_at(cfg, dotted)
        if isinstance(value, str):
            out += url_credentials(value)
    return out


def register_config_secrets(cfg: Config, env: Mapping[str, str]) -> None:
    """Register every secret of ``cfg`` and of the environment with the redaction (at config load)."""
    for value in plain_values(cfg):
        register_secret(value)
    for secret in SECRETS:
        if secret.path is None:
            register_secret(read_env(secret, env))
