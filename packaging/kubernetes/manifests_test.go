package kubernetes

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

const (
	agentUID      = 65532 // the image's user
	agentPort     = 9464  // listen in the sidecar's agent.hcl
	agentName     = "dbcert-agent"
	agentConfig   = "/etc/dbcert-agent/agent.hcl"
	workloadIDKey = "iam.gke.io/gcp-service-account"
)

// manifests is every object of every *.yaml file here, decoded strictly.
type manifests struct {
	serviceAccounts map[string]*corev1.ServiceAccount
	configMaps      map[string]*corev1.ConfigMap
	deployments     map[string]*appsv1.Deployment
	jobs            map[string]*batchv1.Job
}

// load decodes every document of every *.yaml file with sigs.k8s.io/yaml's
// UnmarshalStrict into the API type its apiVersion and kind name: an unknown or
// misspelt field, a duplicate key or a wrong type is an error.
func load(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests here: %v", err)
	}
	m := manifests{map[string]*corev1.ServiceAccount{}, map[string]*corev1.ConfigMap{}, map[string]*appsv1.Deployment{}, map[string]*batchv1.Job{}}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitDocs(data) {
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s document %d: %v", f, i+1, err)
			}
			var obj any
			var name func() string
			switch tm.APIVersion + " " + tm.Kind {
			case "v1 ServiceAccount":
				o := &corev1.ServiceAccount{}
				obj, name = o, func() string { m.serviceAccounts[o.Name] = o; return o.Name }
			case "v1 ConfigMap":
				o := &corev1.ConfigMap{}
				obj, name = o, func() string { m.configMaps[o.Name] = o; return o.Name }
			case "apps/v1 Deployment":
				o := &appsv1.Deployment{}
				obj, name = o, func() string { m.deployments[o.Name] = o; return o.Name }
			case "batch/v1 Job":
				o := &batchv1.Job{}
				obj, name = o, func() string { m.jobs[o.Name] = o; return o.Name }
			default:
				t.Fatalf("%s document %d: unexpected %q %q", f, i+1, tm.APIVersion, tm.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s document %d (%s): %v", f, i+1, tm.Kind, err)
			}
			if name() == "" {
				t.Errorf("%s document %d (%s) has no metadata.name", f, i+1, tm.Kind)
			}
		}
	}
	return m
}

// splitDocs splits a YAML stream at its "---" lines, dropping empty documents.
func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(d, "")) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// TestStrictDecoding proves the decoding is strict: a misspelt field is an error.
func TestStrictDecoding(t *testing.T) {
	m := load(t)
	if len(m.serviceAccounts) != 1 || len(m.configMaps) != 3 || len(m.deployments) != 1 || len(m.jobs) != 1 {
		t.Errorf("objects: %d service accounts, %d config maps, %d deployments, %d jobs; want 1, 3, 1, 1",
			len(m.serviceAccounts), len(m.configMaps), len(m.deployments), len(m.jobs))
	}
	data, err := os.ReadFile("deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := regexp.MustCompile(`(?m)^(\s+)restartPolicy: Always$`).ReplaceAll(data, []byte("${1}restartPolicies: Always"))
	if bytes.Equal(bad, data) {
		t.Fatal("deployment.yaml has no restartPolicy: Always")
	}
	if err := yaml.UnmarshalStrict(bad, &appsv1.Deployment{}); err == nil || !strings.Contains(err.Error(), "restartPolicies") {
		t.Errorf("a misspelt field decoded without the error naming it: %v", err)
	}
}

// checkSecurityContext: the restricted Pod Security Standard and then some.
func checkSecurityContext(t *testing.T, where string, pod *corev1.PodSecurityContext, c corev1.Container, uid int64) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: container %s has no securityContext", where, c.Name)
		return
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("%s: container %s: runAsNonRoot is not true", where, c.Name)
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != uid {
		t.Errorf("%s: container %s: runAsUser %v, want %d", where, c.Name, sc.RunAsUser, uid)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: container %s: readOnlyRootFilesystem is not true", where, c.Name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: container %s: allowPrivilegeEscalation is not false", where, c.Name)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: container %s is privileged", where, c.Name)
	}
	if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 {
		t.Errorf("%s: container %s: capabilities %+v, want drop [ALL] and nothing added", where, c.Name, sc.Capabilities)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: container %s: seccompProfile %+v, want RuntimeDefault", where, c.Name, sc.SeccompProfile)
	}
	if pod == nil || pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot || pod.SeccompProfile == nil || pod.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: the pod's securityContext must set runAsNonRoot and seccompProfile RuntimeDefault: %+v", where, pod)
	}
}

// hclString returns the value of `key = "value"` in an HCL text (first match).
func hclString(t *testing.T, hcl, key string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(key) + `\s*=\s*"([^"]*)"`).FindStringSubmatch(hcl)
	if m == nil {
		t.Fatalf("agent.hcl has no %s:\n%s", key, hcl)
	}
	return m[1]
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

// mountOf returns the volume mount of c at the longest mount path holding p.
func mountOf(c corev1.Container, p string) (corev1.VolumeMount, bool) {
	var best corev1.VolumeMount
	found := false
	for _, vm := range c.VolumeMounts {
		if (p == vm.MountPath || strings.HasPrefix(p, strings.TrimSuffix(vm.MountPath, "/")+"/")) && len(vm.MountPath) >= len(best.MountPath) {
			best, found = vm, true
		}
	}
	return best, found
}

// samePath: p as seen by container a is the file q as seen by container b (one volume).
func samePath(a corev1.Container, p string, b corev1.Container, q string) bool {
	ma, ok1 := mountOf(a, p)
	mb, ok2 := mountOf(b, q)
	return ok1 && ok2 && ma.Name == mb.Name && ma.SubPath == "" && mb.SubPath == "" &&
		strings.TrimPrefix(p, ma.MountPath) == strings.TrimPrefix(q, mb.MountPath)
}

func volume(t *testing.T, spec corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %s", name)
	return corev1.Volume{}
}

// checkAgentContainer: the agent's container, its config from the ConfigMap mounted
// read-only, the sink directory on a shared emptyDir, the workload identity.
func checkAgentContainer(t *testing.T, m manifests, where string, spec corev1.PodSpec, c corev1.Container, configMap string) string {
	t.Helper()
	checkSecurityContext(t, where, spec.SecurityContext, c, agentUID)
	if !strings.Contains(c.Image, "dbcert-agent") {
		t.Errorf("%s: agent image %q", where, c.Image)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["DBCERT_AGENT_CONFIG"] != agentConfig {
		t.Errorf("%s: DBCERT_AGENT_CONFIG=%q, want %s", where, env["DBCERT_AGENT_CONFIG"], agentConfig)
	}
	vm, ok := mountOf(c, agentConfig)
	if !ok || !vm.ReadOnly || vm.SubPath != "" {
		t.Fatalf("%s: %s is not on a read-only volume mount (a subPath mount would never see updates): %+v", where, agentConfig, vm)
	}
	if v := volume(t, spec, vm.Name); v.ConfigMap == nil || v.ConfigMap.Name != configMap {
		t.Errorf("%s: volume %s is not the ConfigMap %s: %+v", where, vm.Name, configMap, v.VolumeSource)
	}
	cm := m.configMaps[configMap]
	if cm == nil {
		t.Fatalf("%s: no ConfigMap %s", where, configMap)
	}
	hcl := cm.Data[path.Base(agentConfig)]
	dir := hclString(t, hcl, "dir")
	sink, ok := mountOf(c, dir)
	if !ok || sink.ReadOnly {
		t.Errorf("%s: the sink directory %s is not on a writable volume mount of the agent", where, dir)
	} else if v := volume(t, spec, sink.Name); v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
		t.Errorf("%s: the sink volume %s is not an in-memory emptyDir: %+v", where, sink.Name, v.VolumeSource)
	}
	// The files' group is the pod's fsGroup, the key readable by that group only.
	if fsGroup := spec.SecurityContext.FSGroup; fsGroup == nil {
		t.Errorf("%s: the pod sets no fsGroup", where)
	} else if group := hclString(t, hcl, "group"); group != strconv.FormatInt(*fsGroup, 10) {
		t.Errorf("%s: the sink's group %q is not the pod's fsGroup %d", where, group, *fsGroup)
	}
	// libpq refuses a key with group bits that root does not own: the Job's psql reads
	// a 0600 key as its owner; pgbouncer (OpenSSL) reads a 0640 one.
	if mode, want := hclString(t, hcl, "mode"), map[string]string{"job": "0600"}[where]; mode != cmp.Or(want, "0640") {
		t.Errorf("%s: the sink's key mode %s, want %s", where, mode, cmp.Or(want, "0640"))
	}
	sa := m.serviceAccounts[spec.ServiceAccountName]
	if sa == nil {
		t.Fatalf("%s: no ServiceAccount %q", where, spec.ServiceAccountName)
	}
	if !regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z][a-z0-9-]+\.iam\.gserviceaccount\.com$`).MatchString(sa.Annotations[workloadIDKey]) {
		t.Errorf("%s: service account %s: annotation %s = %q, want a Google service account email", where, sa.Name, workloadIDKey, sa.Annotations[workloadIDKey])
	}
	if strings.Contains(hcl, "credentials \"google\"") {
		t.Errorf("%s: agent.hcl has a google credentials block; Workload Identity needs none (ADC)", where)
	}
	return hcl
}

func TestSidecarDeployment(t *testing.T) {
	m := load(t)
	d := m.deployments["pgbouncer"]
	if d == nil {
		t.Fatal("no Deployment pgbouncer")
	}
	spec := d.Spec.Template.Spec
	if len(spec.InitContainers) != 1 {
		t.Fatalf("%d init containers, want the agent alone", len(spec.InitContainers))
	}
	agent := spec.InitContainers[0]
	if agent.Name != agentName {
		t.Fatalf("init container %q, want %s", agent.Name, agentName)
	}
	if agent.RestartPolicy == nil || *agent.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("the agent's restartPolicy is %v, want Always (a native sidecar)", agent.RestartPolicy)
	}
	if strings.Join(agent.Command, " ") != "" || strings.Join(agent.Args, " ") != "run" {
		t.Errorf("the agent runs %q %q, want the image's entrypoint with args [run]", agent.Command, agent.Args)
	}
	hcl := checkAgentContainer(t, m, "deployment", spec, agent, "dbcert-agent")

	// Probes on the listen port: startup and readiness on /readyz, liveness on /livez.
	if listen := hclString(t, hcl, "listen"); listen != ":"+strconv.Itoa(agentPort) && listen != "0.0.0.0:"+strconv.Itoa(agentPort) {
		t.Errorf("agent.hcl listen = %q, want :%d on every address (the kubelet probes the pod IP)", listen, agentPort)
	}
	ports := map[string]int32{}
	for _, p := range agent.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for name, probe := range map[string]struct {
		p    *corev1.Probe
		path string
	}{"startupProbe": {agent.StartupProbe, "/readyz"}, "readinessProbe": {agent.ReadinessProbe, "/readyz"}, "livenessProbe": {agent.LivenessProbe, "/livez"}} {
		if probe.p == nil || probe.p.HTTPGet == nil {
			t.Errorf("the agent has no HTTP %s", name)
			continue
		}
		port := probe.p.HTTPGet.Port.IntValue()
		if probe.p.HTTPGet.Port.StrVal != "" {
			port = int(ports[probe.p.HTTPGet.Port.StrVal])
		}
		if probe.p.HTTPGet.Path != probe.path || port != agentPort {
			t.Errorf("%s: GET %s on port %d, want %s on %d", name, probe.p.HTTPGet.Path, port, probe.path, agentPort)
		}
	}

	// pgbouncer reads the agent's files from the same volume, read-only, and is the
	// process the signal hook reloads.
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want pgbouncer alone", len(spec.Containers))
	}
	pgb := container(t, spec.Containers, "pgbouncer")
	checkSecurityContext(t, "deployment", spec.SecurityContext, pgb, agentUID)
	ini := m.configMaps["pgbouncer"].Data["pgbouncer.ini"]
	iniPath := pgb.Command[len(pgb.Command)-1]
	if vm, ok := mountOf(pgb, iniPath); !ok || volume(t, spec, vm.Name).ConfigMap == nil || volume(t, spec, vm.Name).ConfigMap.Name != "pgbouncer" || path.Base(iniPath) != "pgbouncer.ini" {
		t.Errorf("pgbouncer's %s is not the ConfigMap pgbouncer's pgbouncer.ini", iniPath)
	}
	settings := iniSettings(ini)
	dir := hclString(t, hcl, "dir")
	for key, file := range map[string]string{"server_tls_cert_file": "cert.pem", "server_tls_key_file": "key.pem", "server_tls_ca_file": "ca.pem"} {
		if !samePath(agent, path.Join(dir, file), pgb, settings[key]) {
			t.Errorf("pgbouncer's %s = %q is not the agent's %s", key, settings[key], path.Join(dir, file))
		}
		if vm, _ := mountOf(pgb, settings[key]); !vm.ReadOnly {
			t.Errorf("pgbouncer mounts %s writable", vm.MountPath)
		}
	}
	if settings["server_tls_sslmode"] != "verify-ca" && settings["server_tls_sslmode"] != "verify-full" {
		t.Errorf("pgbouncer server_tls_sslmode = %q, want verify-ca or verify-full", settings["server_tls_sslmode"])
	}
	// signal: one pid namespace, the pid file on a shared volume, the same uid.
	if spec.ShareProcessNamespace == nil || !*spec.ShareProcessNamespace {
		t.Error("shareProcessNamespace is not true: the signal hook cannot see pgbouncer")
	}
	if pid := hclString(t, hcl, "pid_file"); !samePath(agent, pid, pgb, settings["pidfile"]) {
		t.Errorf("the signal hook's pid_file %s is not pgbouncer's pidfile %q", pid, settings["pidfile"])
	}
	if sig := hclString(t, hcl, "signal"); sig != "SIGHUP" {
		t.Errorf("the signal hook sends %s, want SIGHUP (pgbouncer's reload)", sig)
	}
}

// iniSettings returns the key = value lines of a pgbouncer.ini.
func iniSettings(ini string) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(ini))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, ";") {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

func TestOnceJob(t *testing.T) {
	m := load(t)
	j := m.jobs["orders-migrate"]
	if j == nil {
		t.Fatal("no Job orders-migrate")
	}
	spec := j.Spec.Template.Spec
	if spec.RestartPolicy != corev1.RestartPolicyNever && spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		t.Errorf("the Job's restartPolicy is %q", spec.RestartPolicy)
	}
	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != agentName {
		t.Fatalf("init containers %+v, want the agent alone", spec.InitContainers)
	}
	agent := spec.InitContainers[0]
	if agent.RestartPolicy != nil {
		t.Errorf("the agent's restartPolicy is %v: a plain init container must run to completion", *agent.RestartPolicy)
	}
	if len(agent.Args) == 0 || agent.Args[0] != "once" || len(agent.Command) != 0 {
		t.Errorf("the agent runs %q %q, want the image's entrypoint with args [once ...]", agent.Command, agent.Args)
	}
	hcl := checkAgentContainer(t, m, "job", spec, agent, "dbcert-agent-once")
	if strings.Contains(hcl, "hook ") || strings.Contains(hcl, "listen") {
		t.Errorf("the Job's agent.hcl has a hook or listen: nothing runs beside \"once\" to use them:\n%s", hcl)
	}
	psql := container(t, spec.Containers, "migrate")
	if psql.SecurityContext == nil || psql.SecurityContext.RunAsUser == nil || *psql.SecurityContext.RunAsUser != agentUID {
		t.Fatal("the psql container must run as the agent's uid: libpq takes the 0600 key only from its owner")
	}
	checkSecurityContext(t, "job", spec.SecurityContext, psql, *psql.SecurityContext.RunAsUser)
	env := map[string]string{}
	for _, e := range psql.Env {
		env[e.Name] = e.Value
	}
	dir := hclString(t, hcl, "dir")
	if hclString(t, hcl, "layout") != "libpq" {
		t.Fatal("the Job's sink must use the libpq layout")
	}
	for key, file := range map[string]string{"PGSSLCERT": "postgresql.crt", "PGSSLKEY": "postgresql.key", "PGSSLROOTCERT": "root.crt"} {
		if !samePath(agent, path.Join(dir, file), psql, env[key]) {
			t.Errorf("psql's %s=%q is not the agent's %s", key, env[key], path.Join(dir, file))
		}
	}
	if env["PGSSLMODE"] != "verify-ca" && env["PGSSLMODE"] != "verify-full" {
		t.Errorf("PGSSLMODE=%q, want verify-ca or verify-full", env["PGSSLMODE"])
	}
}

// agentBinary builds the agent from the parent module once.
var agentBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "dbcert-k8s-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "dbcert-agent")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", errors.New("go build of the agent: " + err.Error() + "\n" + string(out))
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := agentBinary(); err == nil {
		os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

// TestConfigMapsValidate runs "dbcert-agent validate" on every agent.hcl of the
// ConfigMaps, and on a broken copy of each to show validate is not a no-op.
func TestConfigMapsValidate(t *testing.T) {
	m := load(t)
	bin, err := agentBinary()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name, cm := range m.configMaps {
		if _, ok := cm.Data["agent.hcl"]; ok {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if len(names) != 2 {
		t.Errorf("ConfigMaps with agent.hcl: %v, want the sidecar's and the Job's", names)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			hcl := m.configMaps[name].Data["agent.hcl"]
			for _, tc := range []struct {
				name, hcl string
				ok        bool
			}{
				{"as shipped", hcl, true},
				{"world-readable key", regexp.MustCompile(`(mode\s*=\s*)"06[04]0"`).ReplaceAllString(hcl, `${1}"0644"`), false},
			} {
				if !tc.ok && tc.hcl == hcl {
					t.Fatalf("%s: could not break the config", tc.name)
				}
				p := filepath.Join(t.TempDir(), "agent.hcl")
				if err := os.WriteFile(p, []byte(tc.hcl), 0o644); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(bin, "validate", "-config", p)
				cmd.Env = append(os.Environ(), "DBCERT_AGENT_CONFIG=")
				out, err := cmd.CombinedOutput()
				if ok := err == nil; ok != tc.ok {
					t.Errorf("%s: validate ok=%v, want %v: %v\n%s", tc.name, ok, tc.ok, err, out)
				}
			}
		})
	}
}
