"""A rendered WorkflowTemplate read back as a graph of steps.

One reading of the YAML serves three users: ``argo run-local`` executes it,
the docs draw it, and the tests check it (every task's template exists,
every dependency exists, every ``withParam`` names a task it depends on).
Only what kbrelease renders is understood: a DAG entrypoint whose tasks
depend on others by ``depends: "a && b"`` (or ``dependencies:``), with
parameters and ``withParam`` over another task's ``outputs.result``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kbrelease.errors import ConfigError

_RESULT_REF = re.compile(r"^\{\{tasks\.([A-Za-z0-9-]+)\.outputs\.result\}\}$")
_DEP = re.compile(r"^([A-Za-z0-9-]+)(?:\.Succeeded)?$")


@dataclass
class TaskSpec:
    """One task of the DAG."""

    name: str
    template: str
    depends: list[str]
    arguments: dict[str, str]
    with_param: str | None = None

    @property
    def producer(self) -> str | None:
        """The task whose printed JSON list this task fans out over."""
        if self.with_param is None:
            return None
        m = _RESULT_REF.match(self.with_param)
        return m.group(1) if m else None


@dataclass
class Dag:
    """The entrypoint DAG of a WorkflowTemplate, with its templates and parameters."""

    name: str
    entrypoint: str
    parameters: dict[str, str | None]
    templates: dict[str, dict[str, Any]]
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    """The whole ``spec`` of the WorkflowTemplate (volumes, parallelism, ...)."""

    def order(self) -> list[str]:
        """Task names in an order where every task comes after its dependencies."""
        done: list[str] = []
        seen: set[str] = set()
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            if name in visiting:
                raise ConfigError(f"workflow {self.name}: tasks depend on each other in a cycle through {name!r}")
            visiting.add(name)
            for dep in self.tasks[name].depends:
                visit(dep)
            visiting.discard(name)
            seen.add(name)
            done.append(name)

        for name in self.tasks:
            visit(name)
        return done

    def problems(self) -> list[str]:
        """Structural errors: unknown templates or dependencies, withParam not fed by a dependency."""
        out = []
        for t in self.tasks.values():
            if t.template not in self.templates:
                out.append(f"task {t.name}: template {t.template!r} does not exist")
            for dep in t.depends:
                if dep not in self.tasks:
                    out.append(f"task {t.name}: depends on unknown task {dep!r}")
            if t.with_param is not None:
                if t.producer is None:
                    out.append(f"task {t.name}: withParam {t.with_param!r} is not a task's outputs.result")
                elif t.producer not in t.depends:
                    out.append(f"task {t.name}: withParam reads {t.producer!r}, which it does not depend on")
            declared = {p["name"] for p in (self.templates.get(t.template, {}).get("inputs") or {}).get("parameters") or []}
            if set(t.arguments) != declared and t.template in self.templates:
                out.append(f"task {t.name}: passes {sorted(t.arguments)} but template {t.template!r} takes {sorted(declared)}")
        if not out:
            try:
                self.order()
            except ConfigError as exc:
                out.append(str(exc))
        return out


def _depends(task: dict[str, Any]) -> list[str]:
    if "dependencies" in task:
        return list(task["dependencies"] or [])
    expr = (task.get("depends") or "").strip()
    if not expr:
        return []
    names = []
    for part in expr.split("&&"):
        m = _DEP.match(part.strip().strip("()").strip())
        if not m:
            raise ConfigError(f"task {task.get('name')!r}: cannot read depends {expr!r}; only 'a && b' (optionally a.Succeeded) is understood")
        names.append(m.group(1))
    return names


def parse(template: dict[str, Any]) -> Dag:
    """Read a WorkflowTemplate (as a dict) into a :class:`Dag`."""
    if template.get("kind") not in ("WorkflowTemplate", "Workflow"):
        raise ConfigError(f"expected a WorkflowTemplate, got kind {template.get('kind')!r}")
    spec = template.get("spec") or {}
    templates = {t["name"]: t for t in spec.get("templates") or []}
    entry = spec.get("entrypoint")
    if entry not in templates or "dag" not in templates[entry]:
        raise ConfigError(f"workflow {template.get('metadata', {}).get('name')}: entrypoint {entry!r} is not a DAG template")
    params = {p["name"]: p.get("value") for p in (spec.get("arguments") or {}).get("parameters") or []}
    dag = Dag(name=str((template.get("metadata") or {}).get("name")), entrypoint=str(entry), parameters=params, templates=templates, spec=spec)
    for task in templates[entry]["dag"].get("tasks") or []:
        args = {p["name"]: str(p.get("value", "")) for p in (task.get("arguments") or {}).get("parameters") or []}
        dag.tasks[task["name"]] = TaskSpec(task["name"], task["template"], _depends(task), args, task.get("withParam"))
    return dag


def load_documents(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every YAML document of the ``.yaml``/``.yml`` files in ``folder`` (as ``kubectl apply -f`` reads them)."""
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; render one with `kbrelease argo render -o {folder}`")
    out = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict):
                out.append((path, doc))
    return out


def load(folder: Path) -> tuple[Dag, list[dict[str, Any]]]:
    """The WorkflowTemplate of a rendered folder as a :class:`Dag`, and every other object."""
    docs = load_documents(folder)
    workflows = [d for _, d in docs if d.get("kind") == "WorkflowTemplate"]
    if len(workflows) != 1:
        raise ConfigError(f"{folder} holds {len(workflows)} WorkflowTemplates, expected 1; render it with `kbrelease argo render -o {folder}`")
    return parse(workflows[0]), [d for _, d in docs if d.get("kind") != "WorkflowTemplate"]
