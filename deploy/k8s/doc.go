// Package k8s holds the Kubernetes manifests of Amarula (kustomize layout):
// the node StatefulSet with its Services, PodDisruptionBudget, ConfigMap and
// Secret in this directory, and example backing services (etcd, Redis, S3)
// under examples/. The package has no code; its tests parse every manifest
// strictly into the Kubernetes API types and check the cross-references
// (selectors, ports, probes, env names the node reads, ConfigMap/Secret keys,
// kustomization resources) and that the node accepts the configuration.
package k8s
