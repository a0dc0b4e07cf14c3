"""``kbrelease argo render -o DIR``: every object, one YAML file each, ready for ``kubectl apply -f DIR``.

Files are numbered in the order they must be applied (namespace first).
A file this renderer wrote before and no longer renders (the HPA after
``deploy.hpa.enabled: false``) is removed; other files in ``DIR`` are left alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kbrelease.atomic import atomic_write
from kbrelease.config import Config
from kbrelease.config.secrets import keys_for, plain_values
from kbrelease.deploy import k8s
from kbrelease.deploy.settings import check_deployable, names
from kbrelease.deploy.workflow import RELEASE_PARAM, cron_workflows, workflow_template
from kbrelease.errors import ConfigError

HEADER = "# Rendered by `kbrelease argo render` from kbrelease.yaml; do not edit: change the config and render again.\n"


@dataclass
class RenderInfo:
    """What was written where."""

    folder: str
    files: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    workflow_template: str = ""
    namespace: str = ""

    def asdict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"rendered {len(self.files)} files into {self.folder}:"]
        lines += [f"  {f}" for f in self.files]
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [
            "next:",
            f"  kubectl -n {self.namespace} create secret generic <secret> --from-literal=MILVUS_TOKEN=...   (see {self.folder}/README.md)",
            f"  kubectl apply -f {self.folder}",
            f"  argo -n {self.namespace} submit --from workflowtemplate/{self.workflow_template} -p {RELEASE_PARAM}=v1",
        ]
        return "\n".join(lines)


def objects(cfg: Config) -> list[tuple[str, dict[str, Any]]]:
    """``(file name, object)`` for everything the deployment needs, in apply order."""
    out: list[tuple[str, dict[str, Any]]] = []
    if cfg.deploy.create_namespace:
        out.append(("00-namespace.yaml", k8s.namespace(cfg).to_dict()))
    env_map, file_map = k8s.config_maps(cfg)
    out += [("01-config-env.yaml", env_map.to_dict()), ("02-config-file.yaml", file_map.to_dict())]
    out.append(("03-workspace-pvc.yaml", k8s.workspace_pvc(cfg).to_dict()))
    if cfg.deploy.service_account is None:
        account, role, binding = k8s.workflow_rbac(cfg)
        out += [("04-workflow-serviceaccount.yaml", account.to_dict()), ("05-workflow-role.yaml", role.to_dict())]
        out.append(("06-workflow-rolebinding.yaml", binding.to_dict()))
    out.append(("10-workflow-template.yaml", workflow_template(cfg).to_dict()))
    out += [(name, cron.to_dict()) for name, cron in cron_workflows(cfg)]
    out.append(("20-search-deployment.yaml", k8s.service_deployment(cfg).to_dict()))
    out.append(("21-search-service.yaml", k8s.service(cfg).to_dict()))
    if cfg.deploy.replicas > 1 or cfg.deploy.hpa.enabled:
        out.append(("22-search-pdb.yaml", k8s.disruption_budget(cfg).to_dict()))
    if cfg.deploy.hpa.enabled:
        out.append(("23-search-hpa.yaml", k8s.autoscaler(cfg).to_dict()))
    return out


def readme(cfg: Config) -> str:
    n = names(cfg)
    keys = " ".join(f"--from-literal={k}=..." for k in keys_for("service"))
    return f"""# kbrelease on Kubernetes (rendered)

Rendered by `kbrelease argo render` from kbrelease.yaml; render again after changing it.

1. Create the Secret the pods read (every key is optional; only references are rendered):

       kubectl create namespace {cfg.deploy.namespace} --dry-run=client -o yaml | kubectl apply -f -
       kubectl -n {cfg.deploy.namespace} create secret generic {cfg.deploy.secret_name} {keys}

   Keys read by the workflow: {", ".join(keys_for("workflow"))}.
   Keys read by the search service: {", ".join(keys_for("service"))}.

2. Apply everything (Argo Workflows must be installed in the cluster):

       kubectl apply -f .

3. Publish a release:

       argo -n {cfg.deploy.namespace} submit --from workflowtemplate/{n.workflow} -p {RELEASE_PARAM}=v1 --watch

   With `deploy.approval: true` the workflow stops before the switch: `argo -n {cfg.deploy.namespace} resume @latest`.
   The search service `{n.service}` follows the live release; `kubectl -n {cfg.deploy.namespace} port-forward svc/{n.service} 8000`.

Try the workflow on one machine first: `kbrelease argo run-local . -p {RELEASE_PARAM}=v1`.
"""


def _refuse_secret_values(cfg: Config, texts: list[tuple[str, str]]) -> None:
    """The last guard: no configured secret value may reach a rendered file (they are only referenced)."""
    values = plain_values(cfg)
    for name, text in texts:
        if any(v in text for v in values):
            raise ConfigError(f"{name} would carry a secret value; secrets are only referenced from the Secret {cfg.deploy.secret_name} (nothing was written)")


def with_deploy(cfg: Config, changes: dict[str, Any]) -> Config:
    """``cfg`` with ``deploy`` keys replaced (``None`` values left as configured), validated like the config file's."""
    from pydantic import ValidationError

    from kbrelease.config import DeployConfig

    merged = cfg.deploy.model_dump()
    for dotted, value in changes.items():
        if value is None:
            continue
        node = merged
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    try:
        deploy = DeployConfig.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(f"deploy.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{problems}; fix the option") from None
    return cfg.model_copy(update={"deploy": deploy})


def render(cfg: Config, out: Path) -> RenderInfo:
    """Write every object of :func:`objects` (plus a README) into ``out``."""
    warnings = check_deployable(cfg)
    out.mkdir(parents=True, exist_ok=True)
    info = RenderInfo(folder=str(out), warnings=warnings, workflow_template=names(cfg).workflow, namespace=cfg.deploy.namespace)
    wanted = objects(cfg)
    keep = {name for name, _ in wanted}
    for old in sorted(out.glob("*.yaml")):
        if old.name not in keep and old.read_text(encoding="utf-8").startswith(HEADER):
            old.unlink()
            info.removed.append(old.name)
    texts = [(name, HEADER + yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, width=200)) for name, obj in wanted]
    _refuse_secret_values(cfg, texts)
    for name, text in texts:
        atomic_write(out / name, text)
        info.files.append(name)
    atomic_write(out / "README.md", readme(cfg))
    info.files.append("README.md")
    return info
