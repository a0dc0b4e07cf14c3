"""`kbrelease argo render`: every object parses, validates offline, and is wired the way the workflow needs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from deploy.rendering import CONFIG, SECRETS, by_kind, documents, parse_kbrelease, render_cli, schema_errors
from kbrelease.config import load_config
from kbrelease.config.secrets import keys_for
from kbrelease.deploy.dag import load

SEED_VARIABLES = (
    "S3_PATH_TEXT",
    "S3_PATH_IMAGE",
    "COLLECTION_NAME_TEXT",
    "COLLECTION_NAME_IMAGE",
    "MILVUS_URI",
    "TEXT_EMBEDDING_BASE_URL",
    "TEXT_EMBEDDING_MODEL",
    "TEXT_EMBEDDING_DIM",
    "IMAGE_EMBEDDING_MODEL",
)


def test_render_writes_every_object_in_apply_order(rendered: Path) -> None:
    kinds = [d["kind"] for d in documents(rendered)]

    assert kinds == [
        "Namespace",
        "ConfigMap",
        "ConfigMap",
        "PersistentVolumeClaim",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "WorkflowTemplate",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ]
    assert {d["metadata"].get("namespace") for d in documents(rendered) if d["kind"] != "Namespace"} == {"search"}
    assert "kubectl apply -f ." in (rendered / "README.md").read_text(encoding="utf-8")


def test_no_secret_value_appears_anywhere(rendered: Path) -> None:
    for path in rendered.iterdir():
        text = path.read_text(encoding="utf-8")
        for name, value in SECRETS.items():
            assert value not in text, f"{name} leaked into {path.name}"


def test_secrets_are_only_referenced(rendered: Path) -> None:
    config_env = next(d for d in by_kind(rendered, "ConfigMap") if d["metadata"]["name"] == "kbrelease-config")
    assert not set(SECRETS) & set(config_env["data"])
    template = by_kind(rendered, "WorkflowTemplate")[0]
    for t in template["spec"]["templates"]:
        if "container" not in t:
            continue
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in t["container"]["env"]}
        assert set(refs) == set(keys_for("workflow"))
        assert {r["name"] for r in refs.values()} == {"kbrelease-secrets"}
        assert all("value" not in e for e in t["container"]["env"])


def test_argo_objects_match_the_schema_from_heras_models(rendered: Path) -> None:
    template = by_kind(rendered, "WorkflowTemplate")[0]

    assert schema_errors(template) == []


def test_the_argo_schema_forbids_unknown_keys(rendered: Path) -> None:
    template = by_kind(rendered, "WorkflowTemplate")[0]
    template["spec"]["templates"][0]["container"]["imagePullPolicyy"] = "Always"

    assert schema_errors(template)


def test_core_objects_validate_against_kubernetes_schemas(rendered: Path) -> None:
    import kubernetes_validate

    checked = 0
    for doc in documents(rendered):
        if doc["apiVersion"].startswith("argoproj.io/"):
            continue
        kubernetes_validate.validate(doc, "1.30", strict=True)
        checked += 1
    assert checked == 11


def test_kubernetes_validate_rejects_a_wrong_field(rendered: Path) -> None:
    import kubernetes_validate

    deployment = by_kind(rendered, "Deployment")[0]
    deployment["spec"]["replica"] = 3

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.30", strict=True)


def test_workflow_graph_is_complete(rendered: Path) -> None:
    dag, _ = load(rendered)

    assert dag.problems() == []
    assert dag.parameters == {"database-name": None}
    tasks = dag.tasks
    assert set(tasks) == {
        *(f"{step}-{s}" for step in ("sync", "shards", "build") for s in ("docs", "pictures", "faq-2024")),
        "index",
        "finalize",
        "verify",
        "diff",
        "approve",
        "switch",
        "gc",
    }
    assert tasks["index"].depends == ["sync-docs", "sync-pictures", "sync-faq-2024"]
    for s in ("docs", "pictures", "faq-2024"):
        assert tasks[f"shards-{s}"].depends == ["index"]
        assert tasks[f"build-{s}"].producer == f"shards-{s}"
    assert sorted(tasks["finalize"].depends) == ["build-docs", "build-faq-2024", "build-pictures"]
    assert tasks["diff"].depends == ["verify"]  # the approver reads what changed in this step's log
    assert dag.templates["diff"]["container"]["args"] == ["diff", "{{inputs.parameters.release}}"]
    assert tasks["approve"].depends == ["diff"]
    assert "suspend" in dag.templates["approve"]
    assert tasks["switch"].depends == ["approve"]
    assert tasks["gc"].depends == ["switch"]
    assert tasks["sync-faq-2024"].arguments == {"source": "faq_2024"}  # the real source name reaches the command


def _gpu_limits(template: dict[str, Any]) -> dict[str, str]:
    limits = template["container"]["resources"]["limits"]
    return {k: v for k, v in limits.items() if "gpu" in k}


def test_only_image_steps_get_a_gpu_its_node_selector_and_tolerations(rendered: Path) -> None:
    dag, _ = load(rendered)
    image_templates = {dag.tasks[f"build-{s}"].template for s in ("pictures",)}
    text_templates = {dag.tasks[f"build-{s}"].template for s in ("docs", "faq-2024")}
    assert image_templates == {"build-image"} and text_templates == {"build-text"}

    for name, template in dag.templates.items():
        if "container" not in template:
            continue
        if name == "build-image":
            assert _gpu_limits(template) == {"nvidia.com/gpu": "1"}
            assert template["container"]["resources"]["requests"]["nvidia.com/gpu"] == "1"
            assert template["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {t["key"] for t in template["tolerations"]} == {"nvidia.com/gpu", "dedicated"}
            assert template["container"]["image"] == "registry.example.com/kbrelease:1.2.3-gpu"
        else:
            assert _gpu_limits(template) == {}, name
            assert "nodeSelector" not in template and "tolerations" not in template, name
            assert template["container"]["image"] == "registry.example.com/kbrelease:1.2.3"


def test_every_step_retries_transient_failures_with_backoff(rendered: Path) -> None:
    dag, _ = load(rendered)
    containers = [t for t in dag.templates.values() if "container" in t]

    assert len(containers) == 10  # the diff step of the approval included
    for t in containers:
        retry = t["retryStrategy"]
        assert retry["limit"] == 3 and retry["retryPolicy"] == "Always"
        assert "asInt(lastRetry.exitCode) == 75" in retry["expression"]
        assert retry["backoff"] == {"duration": "30s", "factor": 2, "maxDuration": "30m"}
        assert t["timeout"] == "6h"  # a hung step never holds a node (or a GPU) for good


def test_without_gpus_image_steps_run_on_the_cpu_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = render_cli(tmp_path, CONFIG.replace("  gpu:\n", "  gpu:\n    enabled: false\n"), monkeypatch)
    dag, _ = load(out)

    image_step = dag.templates["build-image"]
    assert _gpu_limits(image_step) == {}
    assert "nodeSelector" not in image_step and "tolerations" not in image_step
    assert image_step["container"]["image"] == "registry.example.com/kbrelease:1.2.3"


def test_every_step_is_a_valid_kbrelease_command(rendered: Path) -> None:
    dag, _ = load(rendered)
    samples = {"release": "v7", "source": "docs", "shard": "2/3"}
    seen = set()
    for t in dag.templates.values():
        if "container" not in t:
            continue
        assert t["container"]["command"] == ["kbrelease"]
        args = [re.sub(r"\{\{inputs\.parameters\.(\w+)\}\}", lambda m: samples[m.group(1)], a) for a in t["container"]["args"]]
        assert "{{" not in " ".join(args)
        seen.add(parse_kbrelease(args).name)
    assert seen == {"sync", "build", "shards", "verify", "diff", "switch", "gc"}


def test_the_service_runs_kbrelease_serve_with_probes_and_resources(rendered: Path) -> None:
    from kbrelease.cli import app

    deployment = by_kind(rendered, "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["kbrelease"] and container["args"] == ["serve"]
    if any(c.name == "serve" for c in app.registered_commands):  # the service's command, once merged
        parse_kbrelease(container["args"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8000}
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "1536Mi"}
    assert {"name": "KBRELEASE_SERVICE_HOST", "value": "0.0.0.0"} in container["env"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    hpa = by_kind(rendered, "HorizontalPodAutoscaler")[0]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    service = by_kind(rendered, "Service")[0]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_config_map_carries_the_seed_variables_and_a_loadable_config(rendered: Path, tmp_path: Path) -> None:
    maps = {d["metadata"]["name"]: d["data"] for d in by_kind(rendered, "ConfigMap")}
    env = maps["kbrelease-config"]
    for name in SEED_VARIABLES:
        assert name in env, name
    assert env["S3_PATH_TEXT"] == "s3://kb-bucket/text" and env["COLLECTION_NAME_IMAGE"] == "pictures"
    assert env["MILVUS_URI"] == "http://milvus.milvus:19530"

    pod_config = tmp_path / "pod.yaml"
    pod_config.write_text(maps["kbrelease-config-file"]["kbrelease.yaml"], encoding="utf-8")
    cfg = load_config(pod_config, env=env)  # exactly what a pod loads
    assert [s.name for s in cfg.sources] == ["docs", "pictures", "faq_2024"]
    assert str(cfg.workspace) == "/workspace"
    assert cfg.cache.journal == "delete"  # the cache lives on a volume shared by several nodes
    assert cfg.text.embedder == "openai" and cfg.text.dim == 1536
    assert cfg.text.quantize == "none"  # `auto` pinned: pods on different CPUs must not embed in two precisions


def test_pods_load_collections_with_the_replicas_of_the_milvus_cluster(rendered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = {d["metadata"]["name"]: d["data"] for d in by_kind(rendered, "ConfigMap")}["kbrelease-config"]
    config = CONFIG.replace("  uri: http://milvus.milvus:19530\n", "  uri: http://milvus-proxy.db:19530\n  replica_number: 3\n")
    cluster = render_cli(tmp_path, config, monkeypatch)
    env = {d["metadata"]["name"]: d["data"] for d in by_kind(cluster, "ConfigMap")}["kbrelease-config"]

    assert default["MILVUS_REPLICA_NUMBER"] == "1"
    assert (env["MILVUS_URI"], env["MILVUS_REPLICA_NUMBER"]) == ("http://milvus-proxy.db:19530", "3")
    pod = load_config(None, env={k: v for k, v in env.items() if k != "KBRELEASE_CONFIG"})  # the variables as a pod reads them
    assert (pod.milvus.uri, pod.milvus.replica_number) == ("http://milvus-proxy.db:19530", 3)


def test_rendering_again_removes_objects_no_longer_wanted(rendered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    render_cli(tmp_path, CONFIG.replace("hpa: {enabled: true, min_replicas: 3, max_replicas: 12}", "hpa: {enabled: false}"), monkeypatch)

    assert not (rendered / "23-search-hpa.yaml").exists()
    assert by_kind(rendered, "Deployment")[0]["spec"]["replicas"] == 3


def test_without_approval_verify_leads_straight_to_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = render_cli(tmp_path, CONFIG.replace("approval: true", "approval: false"), monkeypatch)
    dag, _ = load(out)

    assert "approve" not in dag.tasks and "diff" not in dag.tasks
    assert dag.tasks["switch"].depends == ["verify"]


def test_render_refuses_the_embedded_milvus(tmp_path: Path) -> None:
    from kbrelease.cli import app

    cfg = tmp_path / "kbrelease.yaml"
    cfg.write_text(yaml.safe_dump({"sources": [{"name": "docs", "path": "s3://b/t", "modality": "text"}]}), encoding="utf-8")

    result = CliRunner().invoke(app, ["-c", str(cfg), "argo", "render", "-o", str(tmp_path / "k8s")])

    assert result.exit_code == 2
    assert "milvus.uri must name a Milvus server" in result.stderr
    assert not (tmp_path / "k8s").exists()
