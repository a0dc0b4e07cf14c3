"""The publish workflow as an Argo WorkflowTemplate, built with hera from the config.

::

    sync-<source> (each source, in parallel)
        └─▶ index                      kbrelease build --release R --prepare
              └─▶ shards-<source>      kbrelease argo shards --release R --source S   → ["1/3","2/3","3/3"]
                    └─▶ build-<source> (withParam: one step per shard; text on CPU, images on a GPU)
                          └─▶ finalize → verify → [diff → approve: suspend] → switch → gc

Every step runs the ``kbrelease`` command a user runs locally, in the same
container image, with the same config (mounted from a ConfigMap) and the
workspace on a shared volume. The release name is the workflow parameter
``database-name`` (the seed workflow's name for it); its database is
``<db_prefix><release>``.
"""

from __future__ import annotations

from typing import Any

from kbrelease.config import Config, ResourcesConfig
from kbrelease.config.secrets import keys_for
from kbrelease.deploy import k8s
from kbrelease.deploy.settings import image, labels, names, slug

RELEASE_PARAM = "database-name"
RELEASE = f"{{{{workflow.parameters.{RELEASE_PARAM}}}}}"
# Retry only what may succeed later: a lost pod (status Error: evicted, node
# gone) or kbrelease's exit code for transient errors (75, EX_TEMPFAIL).
# Anything else (bad config, a release that fails verification) would fail
# the same way again.
RETRY_EXPRESSION = 'lastRetry.status == "Error" || asInt(lastRetry.exitCode) == 75'


def _input(name: str) -> str:
    return f"{{{{inputs.parameters.{name}}}}}"


def task_names(cfg: Config) -> dict[str, str]:
    """Source name -> the part of its task names (``sync-<x>``, ``build-<x>``), unique."""
    out: dict[str, str] = {}
    for src in cfg.sources:
        base = slug(src.name)
        candidate, n = base, 2
        while candidate in out.values():
            candidate, n = f"{base}-{n}", n + 1
        out[src.name] = candidate
    return out


CRON_RELEASE = "r" + "".join(f"{{{{workflow.creationTimestamp.{c}}}}}" for c in "YmdHM")
"""The release name of a scheduled publish: ``r`` and the run's creation time to the minute (``r202612040300``)."""
NOTIFY_ARGS = ["notify", "--workflow", "{{workflow.name}}", "--status", "{{workflow.status}}", "--release", RELEASE, "--failures", "{{workflow.failures}}"]
"""The exit handler's command: Argo fills in the run's name, its result and the failed steps (JSON)."""


def _step_factory(cfg: Config) -> Any:
    """``step(name, args, inputs, spec=None, gpu=False)``: a hera Container running ``kbrelease <args>`` the way every step does."""
    import hera.workflows as w
    from hera.workflows import models as m

    d = cfg.deploy
    retry = w.RetryStrategy(
        limit=d.retry.limit,
        retry_policy="Always",
        expression=RETRY_EXPRESSION,
        backoff=m.Backoff(duration=d.retry.backoff, factor=m.IntOrString(d.retry.factor), max_duration=d.retry.max_duration),
    )
    env = k8s.secret_env(cfg, keys_for("workflow"))

    def step(name: str, args: list[str], inputs: list[str], spec: ResourcesConfig | None = None, gpu: bool = False) -> Any:
        use_gpu = gpu and d.gpu.enabled
        extra = {d.gpu.resource: str(d.gpu.count)} if use_gpu else None
        return w.Container(
            name=name,
            image=image(cfg, gpu=use_gpu),
            image_pull_policy=d.image_pull_policy,
            command=["kbrelease"],
            args=args,
            inputs=[w.Parameter(name=i) for i in inputs],
            env_from=k8s.config_env_from(cfg),
            env=env,
            volume_mounts=k8s.volume_mounts(),
            resources=k8s.resources(spec or d.step_resources, extra),
            security_context=k8s.container_security(),
            retry_strategy=retry,
            timeout=d.step_timeout,
            node_selector=(d.gpu.node_selector or None) if use_gpu else None,
            tolerations=[m.Toleration(**t.model_dump(exclude_none=True)) for t in d.gpu.tolerations] if use_gpu else None,
        )

    return step


def _pod_settings(cfg: Config) -> dict[str, Any]:
    """What every workflow of the deployment sets alike: account, security, volumes, pull secrets, clean-up."""
    from hera.workflows import models as m

    n, d = names(cfg), cfg.deploy
    return {
        "namespace": d.namespace,
        "labels": labels(cfg, "workflow"),
        "service_account_name": d.service_account or n.workflow_account,
        "security_context": k8s.pod_security(),
        "volumes": k8s.volumes(cfg),
        "image_pull_secrets": d.image_pull_secrets or None,
        "pod_gc": m.PodGC(strategy="OnPodSuccess"),
        "ttl_strategy": m.TTLStrategy(seconds_after_completion=d.workflow_ttl),
        "pod_metadata": m.Metadata(labels=labels(cfg, "workflow")),
    }


def workflow_template(cfg: Config) -> Any:
    """The hera ``WorkflowTemplate`` (call ``.to_dict()`` or ``.to_yaml()``)."""
    import hera.workflows as w
    from hera.workflows import models as m

    n = names(cfg)
    d = cfg.deploy
    step = _step_factory(cfg)
    release, source, shard = _input("release"), _input("source"), _input("shard")
    with w.WorkflowTemplate(
        name=n.workflow,
        annotations={"workflows.argoproj.io/description": "kbrelease: sync → index → build (per source and shard) → verify → switch → gc"},
        entrypoint="publish",
        arguments=w.Parameter(name=RELEASE_PARAM, description="Release name; its Milvus database is <db_prefix><release>"),
        parallelism=d.parallelism,
        # One publish at a time: runs share the workspace's mirror and data index.
        synchronization=m.Synchronization(mutexes=[m.Mutex(name=f"{d.name}-publish")]),
        on_exit="notify" if d.exit_alerts else None,
        **_pod_settings(cfg),
    ) as template:
        if d.exit_alerts:
            step("notify", NOTIFY_ARGS, [])
        sync_t = step("sync", ["sync", "--source", source], ["source"])
        index_t = step("index", ["build", "--release", release, "--prepare", "--shard-files", str(d.shard_files)], ["release"])
        shards_t = step("shards", ["argo", "shards", "--release", release, "--source", source], ["release", "source"])
        build_args = ["build", "--release", release, "--source", source, "--shard", shard]
        build_text_t = step("build-text", build_args, ["release", "source", "shard"])
        build_image_t = step("build-image", build_args, ["release", "source", "shard"], d.image_step_resources, gpu=True)
        finalize_t = step("finalize", ["build", "--release", release, "--finalize"], ["release"])
        verify_t = step("verify", ["verify", release], ["release"])
        approve_t = w.Suspend(name="approve") if d.approval else None
        diff_t = step("diff", ["diff", release], ["release"]) if d.approval else None
        switch_t = step("switch", ["switch", release], ["release"])
        gc_t = step("gc", ["gc"], [])

        with w.DAG(name="publish"):
            per_source = task_names(cfg)
            syncs = [sync_t(name=f"sync-{per_source[s.name]}", arguments={"source": s.name}) for s in cfg.sources]
            index = index_t(name="index", arguments={"release": RELEASE})
            syncs >> index  # type: ignore[operator]
            builds = []
            for src in cfg.sources:
                key = per_source[src.name]
                shards = shards_t(name=f"shards-{key}", arguments={"release": RELEASE, "source": src.name})
                build_t = build_image_t if src.modality == "image" else build_text_t
                build = build_t(
                    name=f"build-{key}",
                    arguments={"release": RELEASE, "source": src.name, "shard": "{{item}}"},
                    with_param=f"{{{{tasks.shards-{key}.outputs.result}}}}",
                )
                index >> shards >> build
                builds.append(build)
            finalize = finalize_t(name="finalize", arguments={"release": RELEASE})
            builds >> finalize  # type: ignore[operator]
            verify = verify_t(name="verify", arguments={"release": RELEASE})
            switch = switch_t(name="switch", arguments={"release": RELEASE})
            gc = gc_t(name="gc")
            if approve_t is not None and diff_t is not None:
                # The approver reads what changed (files, chunks, golden queries) in the diff step's log, then resumes.
                finalize >> verify >> diff_t(name="diff", arguments={"release": RELEASE}) >> approve_t(name="approve") >> switch >> gc
            else:
                finalize >> verify >> switch >> gc
    return template


def cron_workflows(cfg: Config) -> list[tuple[str, Any]]:
    """``(file name, hera CronWorkflow)`` for each configured schedule (``deploy.schedule``): publish, monitor."""
    import hera.workflows as w
    from hera.workflows import models as m

    n, d = names(cfg), cfg.deploy
    out: list[tuple[str, Any]] = []
    common: dict[str, Any] = {"timezone": d.schedule.timezone, "concurrency_policy": "Forbid", "starting_deadline_seconds": 600}
    if d.schedule.publish:
        publish = w.CronWorkflow(
            name=f"{d.name}-publish-scheduled",
            schedules=[d.schedule.publish],
            annotations={"workflows.argoproj.io/description": f"kbrelease: publish on a schedule, release {CRON_RELEASE}"},
            workflow_template_ref=m.WorkflowTemplateRef(name=n.workflow),
            arguments=w.Parameter(name=RELEASE_PARAM, value=CRON_RELEASE),
            namespace=d.namespace,
            labels=labels(cfg, "workflow"),
            **common,
        )
        out.append(("11-publish-cronworkflow.yaml", publish))
    if d.schedule.monitor:
        step = _step_factory(cfg)
        with w.CronWorkflow(
            name=f"{d.name}-monitor",
            schedules=[d.schedule.monitor],
            annotations={"workflows.argoproj.io/description": "kbrelease: integrity monitor; alerts go to KBRELEASE_ALERT_WEBHOOKS"},
            entrypoint="monitor",
            **_pod_settings(cfg),
            **common,
        ) as monitor:
            step("monitor", ["monitor"], [])
        out.append(("12-monitor-cronworkflow.yaml", monitor))
    return out
