"""Deployment beyond one machine: the service image (deploy/image/), the Kubernetes manifests
(deploy/k8s/) and the tools that build them and check them for real (docs/deploy.md)."""
