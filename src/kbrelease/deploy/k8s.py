"""Typed Kubernetes core objects: the workspace PVC, ConfigMaps, RBAC of the workflow, and the search service.

hera ships the Kubernetes models that Argo embeds (Container, Probe,
Volume, ObjectMeta, PersistentVolumeClaim, ...); the top-level objects it
lacks (Deployment, Service, HPA, ConfigMap, RBAC) are small pydantic models
here, built from those parts, with unknown keys forbidden. Nothing is
written as YAML text: every object is a model dumped by alias.
"""

from __future__ import annotations

from typing import Any, Literal

from hera.workflows import models as m
from hera.workflows.models.io.k8s.api.policy.v1 import PodDisruptionBudgetSpec
from hera.workflows.models.io.k8s.apimachinery.pkg.util.intstr import IntOrString
from pydantic import BaseModel, ConfigDict, Field

from kbrelease.config import Config, ResourcesConfig
from kbrelease.config.secrets import keys_for
from kbrelease.deploy.settings import (
    CONFIG_FILE,
    CONFIG_MOUNT,
    MONITOR_STATE_DIR,
    RUN_AS_USER,
    TMP_MOUNT,
    WORKSPACE_MOUNT,
    cluster_config_yaml,
    image,
    labels,
    names,
    pod_env,
    selector,
    service_port,
)


class _K8s(BaseModel):
    # Built by field name in code; serialized by the Kubernetes (camelCase) name.
    model_config = ConfigDict(extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Namespace(_K8s):
    api_version: Literal["v1"] = Field(default="v1", serialization_alias="apiVersion")
    kind: Literal["Namespace"] = "Namespace"
    metadata: m.ObjectMeta


class ConfigMap(_K8s):
    api_version: Literal["v1"] = Field(default="v1", serialization_alias="apiVersion")
    kind: Literal["ConfigMap"] = "ConfigMap"
    metadata: m.ObjectMeta
    data: dict[str, str]


class PersistentVolumeClaim(_K8s):
    api_version: Literal["v1"] = Field(default="v1", serialization_alias="apiVersion")
    kind: Literal["PersistentVolumeClaim"] = "PersistentVolumeClaim"
    metadata: m.ObjectMeta
    spec: m.PersistentVolumeClaimSpec


class ServiceAccount(_K8s):
    api_version: Literal["v1"] = Field(default="v1", serialization_alias="apiVersion")
    kind: Literal["ServiceAccount"] = "ServiceAccount"
    metadata: m.ObjectMeta
    automount_service_account_token: bool | None = Field(default=None, serialization_alias="automountServiceAccountToken")


class PolicyRule(_K8s):
    api_groups: list[str] = Field(serialization_alias="apiGroups")
    resources: list[str]
    verbs: list[str]


class Role(_K8s):
    api_version: Literal["rbac.authorization.k8s.io/v1"] = Field(default="rbac.authorization.k8s.io/v1", serialization_alias="apiVersion")
    kind: Literal["Role"] = "Role"
    metadata: m.ObjectMeta
    rules: list[PolicyRule]


class RoleRef(_K8s):
    api_group: str = Field(default="rbac.authorization.k8s.io", serialization_alias="apiGroup")
    kind: str = "Role"
    name: str


class Subject(_K8s):
    kind: str = "ServiceAccount"
    name: str
    namespace: str


class RoleBinding(_K8s):
    api_version: Literal["rbac.authorization.k8s.io/v1"] = Field(default="rbac.authorization.k8s.io/v1", serialization_alias="apiVersion")
    kind: Literal["RoleBinding"] = "RoleBinding"
    metadata: m.ObjectMeta
    role_ref: RoleRef = Field(serialization_alias="roleRef")
    subjects: list[Subject]


class PodSpec(_K8s):
    containers: list[m.Container]
    volumes: list[m.Volume] | None = None
    security_context: m.PodSecurityContext | None = Field(default=None, serialization_alias="securityContext")
    service_account_name: str | None = Field(default=None, serialization_alias="serviceAccountName")
    automount_service_account_token: bool | None = Field(default=None, serialization_alias="automountServiceAccountToken")
    image_pull_secrets: list[m.LocalObjectReference] | None = Field(default=None, serialization_alias="imagePullSecrets")
    termination_grace_period_seconds: int | None = Field(default=None, serialization_alias="terminationGracePeriodSeconds")
    affinity: m.Affinity | None = None


class PodTemplateSpec(_K8s):
    metadata: m.ObjectMeta
    spec: PodSpec


class RollingUpdate(_K8s):
    max_unavailable: int | str = Field(serialization_alias="maxUnavailable")
    max_surge: int | str = Field(serialization_alias="maxSurge")


class DeploymentStrategy(_K8s):
    type: Literal["RollingUpdate"] = "RollingUpdate"
    rolling_update: RollingUpdate = Field(serialization_alias="rollingUpdate")


class DeploymentSpec(_K8s):
    replicas: int | None = None
    selector: m.LabelSelector
    template: PodTemplateSpec
    strategy: DeploymentStrategy | None = None
    revision_history_limit: int | None = Field(default=None, serialization_alias="revisionHistoryLimit")


class Deployment(_K8s):
    api_version: Literal["apps/v1"] = Field(default="apps/v1", serialization_alias="apiVersion")
    kind: Literal["Deployment"] = "Deployment"
    metadata: m.ObjectMeta
    spec: DeploymentSpec


class ServiceSpec(_K8s):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    selector: dict[str, str]
    ports: list[m.ServicePort]


class Service(_K8s):
    api_version: Literal["v1"] = Field(default="v1", serialization_alias="apiVersion")
    kind: Literal["Service"] = "Service"
    metadata: m.ObjectMeta
    spec: ServiceSpec


class PodDisruptionBudget(_K8s):
    api_version: Literal["policy/v1"] = Field(default="policy/v1", serialization_alias="apiVersion")
    kind: Literal["PodDisruptionBudget"] = "PodDisruptionBudget"
    metadata: m.ObjectMeta
    spec: PodDisruptionBudgetSpec


class ScaleTargetRef(_K8s):
    api_version: str = Field(default="apps/v1", serialization_alias="apiVersion")
    kind: str = "Deployment"
    name: str


class MetricTarget(_K8s):
    type: Literal["Utilization"] = "Utilization"
    average_utilization: int = Field(serialization_alias="averageUtilization")


class ResourceMetricSource(_K8s):
    name: Literal["cpu", "memory"]
    target: MetricTarget


class MetricSpec(_K8s):
    type: Literal["Resource"] = "Resource"
    resource: ResourceMetricSource


class HpaSpec(_K8s):
    scale_target_ref: ScaleTargetRef = Field(serialization_alias="scaleTargetRef")
    min_replicas: int = Field(serialization_alias="minReplicas")
    max_replicas: int = Field(serialization_alias="maxReplicas")
    metrics: list[MetricSpec]


class HorizontalPodAutoscaler(_K8s):
    api_version: Literal["autoscaling/v2"] = Field(default="autoscaling/v2", serialization_alias="apiVersion")
    kind: Literal["HorizontalPodAutoscaler"] = "HorizontalPodAutoscaler"
    metadata: m.ObjectMeta
    spec: HpaSpec


# --- parts shared with the workflow ------------------------------------------
def meta(cfg: Config, name: str, component: str) -> m.ObjectMeta:
    return m.ObjectMeta(name=name, namespace=cfg.deploy.namespace, labels=labels(cfg, component))


def resources(spec: ResourcesConfig, extra: dict[str, str] | None = None) -> m.ResourceRequirements:
    requests: dict[str, Any] = {"cpu": spec.cpu, "memory": spec.memory}
    limits: dict[str, Any] = {"memory": spec.memory_limit or spec.memory}
    if spec.cpu_limit:
        limits["cpu"] = spec.cpu_limit
    for key, value in (extra or {}).items():
        # Extended resources (GPUs) must be requested and limited alike.
        requests[key] = value
        limits[key] = value
    return m.ResourceRequirements(requests=requests, limits=limits)


def secret_env(cfg: Config, keys: tuple[str, ...]) -> list[m.EnvVar]:
    """References into the Secret: the value never passes through kbrelease."""
    secret = cfg.deploy.secret_name
    return [m.EnvVar(name=k, value_from=m.EnvVarSource(secret_key_ref=m.SecretKeySelector(name=secret, key=k, optional=True))) for k in keys]


def config_env_from(cfg: Config) -> list[m.EnvFromSource]:
    return [m.EnvFromSource(config_map_ref=m.ConfigMapEnvSource(name=names(cfg).config_env))]


def container_security() -> m.SecurityContext:
    return m.SecurityContext(
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        capabilities=m.Capabilities(drop=["ALL"]),
    )


def pod_security() -> m.PodSecurityContext:
    return m.PodSecurityContext(
        run_as_non_root=True,
        run_as_user=RUN_AS_USER,
        run_as_group=RUN_AS_USER,
        fs_group=RUN_AS_USER,
        seccomp_profile=m.SeccompProfile(type="RuntimeDefault"),
    )


def volumes(cfg: Config, workspace_read_only: bool = False) -> list[m.Volume]:
    n = names(cfg)
    return [
        m.Volume(name="workspace", persistent_volume_claim=m.PersistentVolumeClaimVolumeSource(claim_name=n.pvc, read_only=workspace_read_only or None)),
        m.Volume(name="config", config_map=m.ConfigMapVolumeSource(name=n.config_file)),
        m.Volume(name="tmp", empty_dir=m.EmptyDirVolumeSource()),
    ]


def volume_mounts(workspace_read_only: bool = False) -> list[m.VolumeMount]:
    return [
        m.VolumeMount(name="workspace", mount_path=WORKSPACE_MOUNT, read_only=workspace_read_only or None),
        m.VolumeMount(name="config", mount_path=CONFIG_MOUNT, read_only=True),
        m.VolumeMount(name="tmp", mount_path=TMP_MOUNT),
    ]


def pull_secrets(cfg: Config) -> list[m.LocalObjectReference] | None:
    return [m.LocalObjectReference(name=s) for s in cfg.deploy.image_pull_secrets] or None


# --- the objects -------------------------------------------------------------
def namespace(cfg: Config) -> Namespace:
    return Namespace(metadata=m.ObjectMeta(name=cfg.deploy.namespace, labels=labels(cfg, "namespace")))


def config_maps(cfg: Config) -> list[ConfigMap]:
    n = names(cfg)
    return [
        ConfigMap(metadata=meta(cfg, n.config_env, "config"), data=pod_env(cfg)),
        ConfigMap(metadata=meta(cfg, n.config_file, "config"), data={CONFIG_FILE: cluster_config_yaml(cfg)}),
    ]


def workspace_pvc(cfg: Config) -> PersistentVolumeClaim:
    # ReadWriteMany: the parallel steps of the workflow run on several nodes.
    spec = m.PersistentVolumeClaimSpec(
        access_modes=["ReadWriteMany"],
        resources=m.VolumeResourceRequirements(requests={"storage": m.Quantity(cfg.deploy.pvc_size)}),
        storage_class_name=cfg.deploy.storage_class,
    )
    return PersistentVolumeClaim(metadata=meta(cfg, names(cfg).pvc, "workspace"), spec=spec)


def workflow_rbac(cfg: Config) -> list[ServiceAccount | Role | RoleBinding]:
    """The least an Argo (>= 3.4, emissary executor) step pod needs: report its results."""
    n = names(cfg)
    account = n.workflow_account
    return [
        ServiceAccount(metadata=meta(cfg, account, "workflow")),
        Role(
            metadata=meta(cfg, account, "workflow"),
            rules=[PolicyRule(api_groups=["argoproj.io"], resources=["workflowtaskresults"], verbs=["create", "patch"])],
        ),
        RoleBinding(
            metadata=meta(cfg, account, "workflow"),
            role_ref=RoleRef(name=account),
            subjects=[Subject(name=account, namespace=cfg.deploy.namespace)],
        ),
    ]


def _probe(path: str, port: int, period: int, failures: int) -> m.Probe:
    return m.Probe(http_get=m.HTTPGetAction(path=path, port=port), period_seconds=period, timeout_seconds=3, failure_threshold=failures)


def service_deployment(cfg: Config) -> Deployment:
    n = names(cfg)
    port = service_port(cfg)
    env = [m.EnvVar(name="KBRELEASE_SERVICE_HOST", value="0.0.0.0"), m.EnvVar(name="KBRELEASE_SERVICE_PORT", value=str(port))]  # noqa: S104 - inside the pod
    # The workspace is mounted read-only here: the in-service monitor keeps its incidents (and their lock) in the tmp emptyDir.
    env.append(m.EnvVar(name="KBRELEASE_MONITOR_STATE_DIR", value=MONITOR_STATE_DIR))
    container = m.Container(
        name="search",
        image=image(cfg),
        image_pull_policy=cfg.deploy.image_pull_policy,
        command=["kbrelease"],
        args=["serve"],
        ports=[m.ContainerPort(name="http", container_port=port)],
        env_from=config_env_from(cfg),
        env=env + secret_env(cfg, keys_for("service")),
        resources=resources(cfg.deploy.service_resources),
        # Models load before /readyz answers: give the first start a minute or two.
        startup_probe=_probe("/healthz", port, period=5, failures=36),
        readiness_probe=_probe("/readyz", port, period=5, failures=3),
        liveness_probe=_probe("/healthz", port, period=10, failures=3),
        volume_mounts=volume_mounts(workspace_read_only=True),
        security_context=container_security(),
    )
    match = selector(cfg, "search")
    spread = m.Affinity(
        pod_anti_affinity=m.PodAntiAffinity(
            preferred_during_scheduling_ignored_during_execution=[
                m.WeightedPodAffinityTerm(
                    weight=100, pod_affinity_term=m.PodAffinityTerm(label_selector=m.LabelSelector(match_labels=match), topology_key="kubernetes.io/hostname")
                )
            ]
        )
    )
    pod = PodSpec(
        containers=[container],
        volumes=volumes(cfg, workspace_read_only=True),
        security_context=pod_security(),
        automount_service_account_token=False,
        image_pull_secrets=pull_secrets(cfg),
        termination_grace_period_seconds=30,
        affinity=spread,
    )
    spec = DeploymentSpec(
        replicas=None if cfg.deploy.hpa.enabled else cfg.deploy.replicas,  # the HPA owns the count when enabled
        selector=m.LabelSelector(match_labels=match),
        template=PodTemplateSpec(metadata=m.ObjectMeta(labels=labels(cfg, "search")), spec=pod),
        strategy=DeploymentStrategy(rolling_update=RollingUpdate(max_unavailable=0, max_surge=1)),
        revision_history_limit=5,
    )
    return Deployment(metadata=meta(cfg, n.service, "search"), spec=spec)


def service(cfg: Config) -> Service:
    port = service_port(cfg)
    return Service(
        metadata=meta(cfg, names(cfg).service, "search"),
        spec=ServiceSpec(selector=selector(cfg, "search"), ports=[m.ServicePort(name="http", port=port, target_port=IntOrString(port), protocol="TCP")]),
    )


def disruption_budget(cfg: Config) -> PodDisruptionBudget:
    return PodDisruptionBudget(
        metadata=meta(cfg, names(cfg).service, "search"),
        spec=PodDisruptionBudgetSpec(max_unavailable=IntOrString(1), selector=m.LabelSelector(match_labels=selector(cfg, "search"))),
    )


def autoscaler(cfg: Config) -> HorizontalPodAutoscaler:
    hpa = cfg.deploy.hpa
    return HorizontalPodAutoscaler(
        metadata=meta(cfg, names(cfg).service, "search"),
        spec=HpaSpec(
            scale_target_ref=ScaleTargetRef(name=names(cfg).service),
            min_replicas=hpa.min_replicas,
            max_replicas=max(hpa.max_replicas, hpa.min_replicas),
            metrics=[MetricSpec(resource=ResourceMetricSource(name="cpu", target=MetricTarget(average_utilization=hpa.cpu_utilization)))],
        ),
    )
