"""Rendering a project the way a user does (`kbrelease argo render`, secrets in the environment), and reading it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

# Real-looking secrets, set while rendering: none may appear anywhere in the output.
SECRETS = {
    "MILVUS_TOKEN": "root:Mv-9f3Kq7LpX2wZt",
    "AWS_ACCESS_KEY_ID": "AKIAZ7Q3EXAMPLE4KB9",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8Kb41",
    "TEXT_EMBEDDING_API_KEY": "sk-live-51HkbReleaseTestKey0q9w8e7r6t",
    "KBRELEASE_API_TOKEN": "kbr-api-7c1d5e9f0a2b4c6d",
    "KBRELEASE_ADMIN_TOKEN": "kbr-admin-3e5f7a9b1c3d5e7f",
    "KBRELEASE_PAGERDUTY_ROUTING_KEY": "R0UTINGKEY0123456789abcdefABCDEF",
    "KBRELEASE_SMTP_PASSWORD": "smtp-Pw-5a7c9e1b3d",
}

CONFIG = """\
workspace: ws
sources:
  - {name: docs, path: s3://kb-bucket/text, modality: text}
  - {name: pictures, path: s3://kb-bucket/images, modality: image}
  - {name: faq_2024, path: s3://kb-bucket/faq, modality: text, collection: faq}
s3:
  endpoint_url: http://minio.storage:9000
text:
  embedder: openai
  base_url: http://embeddings.internal/v1
  model: text-embedding-3-small
  dim: 1536
milvus:
  uri: http://milvus.milvus:19530
  db_prefix: kb_
deploy:
  namespace: search
  image: registry.example.com/kbrelease
  tag: "1.2.3"
  shard_files: 1000
  approval: true
  gpu:
    node_selector: {nvidia.com/gpu.present: "true"}
    tolerations:
      - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
      - {key: dedicated, operator: Equal, value: gpu, effect: NoExecute}
  replicas: 3
  hpa: {enabled: true, min_replicas: 3, max_replicas: 12}
"""


def render_cli(folder: Path, config_text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    from kbrelease.cli import app

    cfg = folder / "kbrelease.yaml"
    cfg.write_text(config_text, encoding="utf-8")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    out = folder / "k8s"
    result = CliRunner().invoke(app, ["-c", str(cfg), "argo", "render", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def documents(folder: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted(folder.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def by_kind(folder: Path, kind: str) -> list[dict[str, Any]]:
    return [d for d in documents(folder) if d["kind"] == kind]


def argo_schema(kind: str = "WorkflowTemplate") -> dict[str, Any]:
    """JSON schema of an Argo ``kind`` (WorkflowTemplate, CronWorkflow) from hera's models, with unknown keys forbidden at every level."""
    from hera.workflows import models as m

    schema = getattr(m, kind).model_json_schema(by_alias=True, mode="validation")

    def forbid(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            for value in node.values():
                forbid(value)
        elif isinstance(node, list):
            for value in node:
                forbid(value)

    forbid(schema)
    return schema


def schema_errors(doc: dict[str, Any], kind: str = "WorkflowTemplate") -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(argo_schema(kind))
    return [f"{e.json_path}: {e.message[:300]}" for e in validator.iter_errors(doc)]


def parse_kbrelease(args: list[str]) -> Any:
    """Parse a command line with the real typer app (options and arguments checked, nothing run)."""
    import typer.main

    from kbrelease.cli import app

    root = typer.main.get_command(app)
    ctx = root.make_context("kbrelease", list(args))
    group: Any = root
    rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
    while True:
        name, cmd, rest = group.resolve_command(ctx, rest)
        ctx = cmd.make_context(name, rest, parent=ctx)
        if not hasattr(cmd, "commands"):
            return cmd
        group = cmd
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
