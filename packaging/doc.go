// Package packaging holds what installs dbcert-agent on a VM, and the tests that check it.
// It has no code of its own:
//
//	systemd/dbcert-agent.service       the hardened daemon unit (Type=notify)
//	systemd/dbcert-agent-once.service  one fetch at boot, before the services that read the files
//	systemd/dbcert-agent.sysusers      the dbcert-agent system user (sysusers.d)
//	systemd/dbcert-agent.tmpfiles      /var/lib/dbcert-agent (tmpfiles.d)
//	scripts/                           package maintainer scripts, shared by deb and rpm
//	nfpm.yaml                          the .deb and .rpm contents
//	build.sh                           builds the binary and both packages with only Go;
//	                                   "build.sh image" the container image
//	container/                         the image's Containerfile, passwd and group
//	kubernetes/                        the Kubernetes manifests (their own Go module)
//
// The tests assert the units' hardening, run systemd-analyze verify and security on
// them, build both packages, inspect them, and install the .deb into throwaway roots;
// they build the image with podman and inspect and export it, and run the agent as the
// image's uid under a pod's security context (read-only root, fsGroup, no capabilities).
// Tools that are missing (systemd-analyze, dpkg, rpm, podman, setpriv, root, network for
// nfpm) make a test skip, or fail when DBCERT_E2E=require. Operator documentation:
// docs/install.md and docs/kubernetes.md.
package packaging
