"""``kbrelease argo run-local DIR``: run a rendered workflow on this machine, step by step.

What Argo would do with the WorkflowTemplate in ``DIR``, done with local
processes: tasks start when their dependencies succeeded, independent
branches run at the same time (up to ``parallelism``), ``withParam`` fans a
task out over the JSON list its producer printed, failed steps are retried
as the template's ``retryStrategy`` says (limit, backoff, and the retry
expression kbrelease renders), a step past its template's ``timeout`` is
killed and fails, and a failure stops new steps from starting (Argo's
``failFast``). Each step gets the container's environment: the
ConfigMap's variables, the Secret's keys taken from this environment, and
the volumes mapped to local folders (the workspace PVC to
``workspace_dir``, ConfigMap volumes to files written from the ConfigMap;
scratch ``emptyDir`` volumes are this machine's own folders).

Only ``kbrelease`` steps run (with this Python); a suspend step (approval)
passes only with ``approve``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from kbrelease.config import OTHER_ENV, SIMPLE_ENV
from kbrelease.config.secrets import SECRETS
from kbrelease.deploy.dag import TaskSpec, load
from kbrelease.errors import ConfigError

Status = Literal["Succeeded", "Failed", "Error", "Skipped", "Suspended"]
_REF = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_CLAUSE_STATUS = re.compile(r'^lastRetry\.status\s*==\s*"(\w+)"$')
_CLAUSE_CODE = re.compile(r'^asInt\(lastRetry\.exitCode\)\s*==\s*(\d+)$|^lastRetry\.exitCode\s*==\s*"(\d+)"$')


@dataclass
class StepRun:
    """One node: a task, or one item of a fanned-out task."""

    node: str
    task: str
    template: str
    argv: list[str]
    status: Status = "Skipped"
    exit_code: int | None = None
    attempts: int = 0
    seconds: float = 0.0
    log: str = ""
    result: str = ""


@dataclass
class LocalRunInfo:
    """What ``run-local`` did, node by node."""

    workflow: str
    parameters: dict[str, str]
    steps: list[StepRun] = field(default_factory=list)
    seconds: float = 0.0
    logs: str = ""

    @property
    def succeeded(self) -> bool:
        return bool(self.steps) and all(s.status == "Succeeded" for s in self.steps)

    def asdict(self) -> dict[str, Any]:
        return asdict(self) | {"succeeded": self.succeeded}

    def __str__(self) -> str:
        verdict = "succeeded" if self.succeeded else "did NOT succeed"
        lines = [f"workflow {self.workflow} {verdict} in {self.seconds:.1f}s (logs: {self.logs})"]
        for s in self.steps:
            retry = f", {s.attempts} attempts" if s.attempts > 1 else ""
            code = f", exit {s.exit_code}" if s.exit_code not in (None, 0) else ""
            lines.append(f"  {s.status:<10} {s.node:<28} {s.seconds:6.1f}s{retry}{code}")
        return "\n".join(lines)


def _seconds(text: str | int | None) -> float:
    if text is None:
        return 0.0
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ConfigError(f"cannot read the duration {text!r}; use e.g. 30s, 2m, 1h")
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def should_retry(strategy: Mapping[str, Any], status: str, exit_code: int) -> bool:
    """Argo's retry decision for one failed attempt (policy, then the expression kbrelease renders)."""
    policy = strategy.get("retryPolicy") or "OnFailure"
    allowed = {"Always": {"Failed", "Error"}, "OnFailure": {"Failed"}, "OnError": {"Error"}, "OnTransientError": {"Error"}}[policy]
    if status not in allowed:
        return False
    expr = strategy.get("expression")
    if not expr:
        return True
    for clause in (c.strip() for c in str(expr).split("||")):
        m_status = _CLAUSE_STATUS.match(clause)
        m_code = _CLAUSE_CODE.match(clause)
        if m_status:
            if status == m_status.group(1):
                return True
        elif m_code:
            if exit_code == int(m_code.group(1) or m_code.group(2)):
                return True
        else:
            raise ConfigError(f"run-local cannot evaluate the retry expression clause {clause!r}")
    return False


class LocalRunner:
    """Runs the DAG of a rendered folder; see the module docstring."""

    def __init__(
        self,
        folder: Path,
        workspace_dir: Path,
        parameters: Mapping[str, str] | None = None,
        parallelism: int | None = None,
        approve: bool = False,
        env: Mapping[str, str] | None = None,
        echo: Callable[[str], None] | None = None,
        logs_dir: Path | None = None,
    ) -> None:
        self.folder = folder
        self.dag, others = load(folder)
        problems = self.dag.problems()
        if problems:
            raise ConfigError(f"the workflow in {folder} is broken: " + "; ".join(problems))
        self.config_maps = {d["metadata"]["name"]: d.get("data") or {} for d in others if d.get("kind") == "ConfigMap"}
        self.params = {k: v for k, v in self.dag.parameters.items() if v is not None} | dict(parameters or {})
        missing = [k for k in self.dag.parameters if k not in self.params]
        if missing:
            raise ConfigError(f"workflow parameter(s) {', '.join(missing)} not given; pass -p {missing[0]}=VALUE")
        spec = self.dag.spec
        self.parallelism = parallelism or int(spec.get("parallelism") or 4)
        self.approve = approve
        self.workspace_dir = workspace_dir.resolve()
        self.base_env = dict(os.environ if env is None else env)
        self.echo = echo or (lambda _line: None)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.logs = (logs_dir or self.workspace_dir / "logs" / "run-local" / stamp).resolve()
        self._mounts = self._volumes(spec)

    # --- the container, locally ---------------------------------------------------
    def _volumes(self, spec: dict[str, Any]) -> dict[str, Path]:
        """Volume name -> the local folder that stands in for it."""
        out: dict[str, Path] = {}
        for vol in spec.get("volumes") or []:
            name = vol["name"]
            if "persistentVolumeClaim" in vol:
                out[name] = self.workspace_dir
            elif "configMap" in vol:
                folder = self.logs / "volumes" / name
                folder.mkdir(parents=True, exist_ok=True)
                for key, text in self.config_maps.get(vol["configMap"]["name"], {}).items():
                    (folder / key).write_text(text, encoding="utf-8")
                out[name] = folder
            # emptyDir (/tmp): this machine's own /tmp serves; mapping it would also
            # rewrite local source paths that happen to live under /tmp.
        self.workspace_dir.mkdir(parents=True, exist_ok=True)
        return out

    def _localize(self, value: str, mounts: list[tuple[str, Path]]) -> str:
        for mount_path, local in mounts:
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return str(local) + value[len(mount_path.rstrip("/")) :]
        return value

    def _environment(self, container: dict[str, Any], mounts: list[tuple[str, Path]]) -> dict[str, str]:
        # This shell's kbrelease settings must not leak in: the pod has only its own.
        ours = set(SIMPLE_ENV) | set(OTHER_ENV) | {name for s in SECRETS for name in (s.env, *s.aliases)}
        env = {k: v for k, v in self.base_env.items() if k not in ours and not k.startswith("KBRELEASE_")}
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                env.update(self.config_maps.get(source["configMapRef"]["name"], {}))
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref is not None:
                # The Secret's key, from this machine's environment (never from a file).
                if ref["key"] in self.base_env:
                    env[item["name"]] = self.base_env[ref["key"]]
                else:
                    env.pop(item["name"], None)
                    if not ref.get("optional"):
                        raise ConfigError(f"secret key {ref['key']} is required by the workflow; set it in the environment")
        return {k: self._localize(v, mounts) for k, v in env.items()}

    def _substitute(self, text: str, inputs: Mapping[str, str], item: str | None) -> str:
        def one(m: re.Match[str]) -> str:
            ref = m.group(1)
            if ref.startswith("workflow.parameters."):
                return self.params[ref.split(".", 2)[2]]
            if ref.startswith("inputs.parameters."):
                return inputs[ref.split(".", 2)[2]]
            if ref == "item" and item is not None:
                return item
            raise ConfigError(f"run-local cannot resolve {{{{{ref}}}}}")

        return _REF.sub(one, text)

    # --- running ------------------------------------------------------------------
    def _attempt(self, run: StepRun, argv: list[str], env: dict[str, str], cwd: Path, timeout: float | None = None) -> tuple[int, str]:
        log = self.logs / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', run.node)}.log"
        run.log = str(log)
        with log.open("a", encoding="utf-8") as err:
            err.write(f"$ kbrelease {' '.join(argv[3:])}   (attempt {run.attempts})\n")
            err.flush()
            try:
                proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True, check=False, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                # Argo fails a node past its template's timeout; so does this.
                err.write(f"step exceeded its timeout of {timeout:g}s and was killed\n")
                run.status = "Failed"
                return 124, exc.stdout if isinstance(exc.stdout, str) else ""
            err.write(proc.stdout)
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        run.status = "Succeeded" if proc.returncode == 0 else ("Error" if proc.returncode < 0 else "Failed")
        return code, proc.stdout

    def _run_node(self, task: TaskSpec, node: str, item: str | None) -> StepRun:
        template = self.dag.templates[task.template]
        run = StepRun(node=node, task=task.name, template=task.template, argv=[])
        if "suspend" in template:
            run.status = "Succeeded" if self.approve else "Suspended"
            self.echo(f"{'approved' if self.approve else 'suspended'}: {node}" + ("" if self.approve else " (pass --approve to go on)"))
            return run
        container = template.get("container")
        if container is None or container.get("command") != ["kbrelease"]:
            raise ConfigError(f"template {task.template!r}: run-local runs only containers whose command is ['kbrelease']")
        inputs = {k: self._substitute(v, {}, item) for k, v in task.arguments.items()}
        mounts = sorted(
            ((vm["mountPath"], self._mounts[vm["name"]]) for vm in container.get("volumeMounts") or [] if vm["name"] in self._mounts),
            key=lambda pair: -len(pair[0]),
        )
        args = [self._localize(self._substitute(a, inputs, item), mounts) for a in container.get("args") or []]
        argv = [sys.executable, "-m", "kbrelease.cli", *args]
        run.argv = ["kbrelease", *args]
        env = self._environment(container, mounts)
        strategy = template.get("retryStrategy") or {}
        limit = int(strategy.get("limit") or 0)
        backoff = strategy.get("backoff") or {}
        delay, factor, cap = _seconds(backoff.get("duration")), float(backoff.get("factor") or 1), backoff.get("maxDuration")
        timeout = _seconds(template["timeout"]) if template.get("timeout") else None
        started = time.monotonic()
        self.echo(f"start:  {node}: {' '.join(run.argv)}")
        while True:
            run.attempts += 1
            code, out = self._attempt(run, argv, env, self.workspace_dir, timeout)
            run.exit_code = code
            if run.status == "Succeeded":
                run.result = out.strip()
                break
            elapsed = time.monotonic() - started
            if run.attempts > limit or not should_retry(strategy, run.status, code) or (cap and elapsed + delay > _seconds(cap)):
                break
            self.echo(f"retry:  {node} exited {code}; attempt {run.attempts + 1} in {delay:g}s")
            time.sleep(delay)
            delay *= factor
        run.seconds = round(time.monotonic() - started, 3)
        self.echo(f"{'done:  ' if run.status == 'Succeeded' else 'FAILED:'} {node} ({run.seconds:.1f}s, exit {code})")
        return run

    def _expand(self, task: TaskSpec, results: Mapping[str, str]) -> list[tuple[str, str | None]]:
        if task.with_param is None:
            return [(task.name, None)]
        producer = task.producer or ""
        try:
            items = json.loads(results.get(producer, ""))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"task {task.name}: withParam expects {producer} to print a JSON list, got {results.get(producer)!r}") from exc
        if not isinstance(items, list):
            raise ConfigError(f"task {task.name}: withParam expects a JSON list from {producer}")
        values = [v if isinstance(v, str) else json.dumps(v) for v in items]
        return [(f"{task.name}({i}:{v})", v) for i, v in enumerate(values)]

    def run(self) -> LocalRunInfo:
        started = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        info = LocalRunInfo(self.dag.name, dict(self.params), logs=str(self.logs))
        state: dict[str, Status] = {}
        results: dict[str, str] = {}
        pending = {name: self.dag.tasks[name] for name in self.dag.order()}
        running: dict[Future[StepRun], str] = {}
        nodes_left: dict[str, int] = {}
        node_fail: dict[str, Status] = {}
        stop = False
        with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
            while pending or running:
                if not stop:
                    for name, task in list(pending.items()):
                        if not all(state.get(d) == "Succeeded" for d in task.depends):
                            continue
                        del pending[name]
                        nodes = self._expand(task, results)
                        nodes_left[name] = len(nodes)
                        if not nodes:
                            state[name] = "Succeeded"
                        for node, item in nodes:
                            running[pool.submit(self._run_node, task, node, item)] = name
                if not running:
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    name = running.pop(fut)
                    step = fut.result()
                    info.steps.append(step)
                    nodes_left[name] -= 1
                    if step.status != "Succeeded":
                        node_fail[name] = step.status
                        stop = True  # failFast: let running steps finish, start nothing new
                    if step.node == name:
                        results[name] = step.result
                    if nodes_left[name] == 0:
                        state[name] = node_fail.get(name, "Succeeded")
        for name in pending:
            info.steps.append(StepRun(node=name, task=name, template=self.dag.tasks[name].template, argv=[], status="Skipped"))
        info.seconds = round(time.monotonic() - started, 3)
        return info
