// Package kubernetes holds the Kubernetes manifests of dbcert-agent and the tests that
// decode them strictly into the official API types. It has no code of its own, and is
// its own module so that the agent's module does not depend on k8s.io/api:
//
//	serviceaccount.yaml  the service account, bound to a Google one by Workload Identity
//	configmap.yaml       agent.hcl for the sidecar and for the Job, and pgbouncer.ini
//	deployment.yaml      pgbouncer with the agent as a native sidecar (Kubernetes 1.29+)
//	job.yaml             a psql migration Job with the agent's "once" as an init container
//
// Run the tests with "cd packaging/kubernetes && go test ./..." (the root module's
// "go test ./..." does not descend into this one). Operator documentation:
// docs/kubernetes.md.
package kubernetes
