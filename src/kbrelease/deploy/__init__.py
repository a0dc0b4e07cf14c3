"""Deployment: Kubernetes and Argo Workflows objects rendered from the same ``kbrelease.yaml``.

- :mod:`kbrelease.deploy.settings` — names, labels, the pods' environment and config file.
- :mod:`kbrelease.deploy.k8s` — typed core objects (ConfigMap, PVC, Deployment, Service, HPA, RBAC).
- :mod:`kbrelease.deploy.workflow` — the WorkflowTemplate, built with hera.
- :mod:`kbrelease.deploy.render` — writes them all to a folder for ``kubectl apply -f``.
- :mod:`kbrelease.deploy.dag` — reads a rendered WorkflowTemplate back as a graph of steps.
- :mod:`kbrelease.deploy.local_run` — runs that graph on this machine, step by step, as local processes.
- :mod:`kbrelease.deploy.diagram` — a Mermaid diagram of the graph, for the docs.
- :mod:`kbrelease.deploy.github` — the GitHub Actions workflow that keeps the data index in git.
"""
