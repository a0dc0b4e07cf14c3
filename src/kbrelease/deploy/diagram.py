"""A Mermaid flowchart of a rendered workflow, for the docs (drawn from the template, never by hand)."""

from __future__ import annotations

import re

from kbrelease.deploy.dag import Dag

_PARAM = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")


def _node_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _command(dag: Dag, task: str) -> str:
    spec = dag.tasks[task]
    template = dag.templates[spec.template]
    container = template.get("container")
    if container is None:
        return "approval (argo resume)" if "suspend" in template else spec.template

    def value(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref.startswith("inputs.parameters."):
            raw = spec.arguments.get(ref.split(".", 2)[2], "")
            return "I/N" if raw == "{{item}}" else ("R" if "workflow.parameters" in raw else raw)
        return "R" if ref.startswith("workflow.parameters.") else ref

    args = " ".join(_PARAM.sub(value, a) for a in container.get("args") or [])
    return f"kbrelease {args}"


def mermaid(dag: Dag) -> str:
    """``flowchart TD`` source: one node per task with its command; fan-outs and GPU steps marked."""
    lines = ["flowchart TD"]
    for name in dag.order():
        spec = dag.tasks[name]
        template = dag.templates[spec.template]
        label = f"<b>{name}</b><br/><code>{_command(dag, name)}</code>"
        limits = ((template.get("container") or {}).get("resources") or {}).get("limits") or {}
        if any("gpu" in key for key in limits):
            label += "<br/>GPU"
        if spec.with_param:
            label += "<br/>one step per shard"
            lines.append(f'    {_node_id(name)}[["{label}"]]')
        elif "suspend" in template:
            lines.append(f'    {_node_id(name)}{{"{label}"}}')
        else:
            lines.append(f'    {_node_id(name)}["{label}"]')
    for name in dag.order():
        for dep in dag.tasks[name].depends:
            lines.append(f"    {_node_id(dep)} --> {_node_id(name)}")
    return "\n".join(lines) + "\n"
