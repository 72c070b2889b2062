package packaging

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
)

// The ids of TestPodSecurityContext: the image's user, the pod's fsGroup, a client
// container's user in that group (pgbouncer), and a user outside it.
const (
	fsGroup     = 61000
	clientUID   = 61001
	outsiderUID = 61002
)

// TestPodSecurityContext runs the real binary the way the Kubernetes manifests do:
// as uid/gid 65532 with the pod's fsGroup as its only supplementary group, no
// capabilities, no_new_privs, HOME=/nonexistent, no TMPDIR, a working directory it
// cannot write, and - in a private mount namespace - the whole root file system
// read-only except the shared volume (an emptyDir: group fsGroup, setgid). "once"
// against the emulator must succeed, write the key with group fsGroup and mode 0640,
// and write nothing else anywhere. Then a client running as another uid in the group
// reads the key (and it matches the certificate), and a uid outside the group cannot,
// although it can read the certificate next to it.
func TestPodSecurityContext(t *testing.T) {
	if os.Geteuid() != 0 {
		skipOrFail(t, "running the agent under other uids needs root")
	}
	setpriv, unshare := lookPath(t, "setpriv"), lookPath(t, "unshare")
	built, err := agentBinary()
	if err != nil {
		t.Fatal(err)
	}

	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	emu.AddCloudSQLInstance("k8s-proj", "orders-pg", emulator.CloudSQLInstance{})
	sa, err := emu.ServiceAccountJSON("agent@k8s-proj.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}

	// The pod: t.TempDir's directories are 0700, so open the path for the other uids.
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p := func(rel string) string { return filepath.Join(base, rel) }
	for _, d := range []string{"image", "config", "secret", "work", "shared"} {
		if err := os.Mkdir(p(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(built)
	if err != nil {
		t.Fatal(err)
	}
	write := func(rel string, data []byte, mode os.FileMode, gid int) {
		t.Helper()
		if err := os.WriteFile(p(rel), data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p(rel), 0, gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p(rel), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("image/dbcert-agent", data, 0o755, 0)
	// A Secret volume under fsGroup: root-owned, group fsGroup, 0640.
	write("secret/sa.json", sa, 0o640, fsGroup)
	// The emptyDir under fsGroup: group fsGroup, setgid, group-writable.
	if err := os.Chown(p("shared"), 0, fsGroup); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p("shared"), 0o775|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	sinkDir := p("shared/orders")
	agentHCL := func(agentBlock, dir string) []byte {
		return []byte(fmt.Sprintf(`%s
credentials "google" "default" {
  credentials_file = %q
}
instance "cloudsql" "orders" {
  project      = "k8s-proj"
  instance     = "orders-pg"
  api_endpoint = %q
  sink "file" {
    dir   = %q
    group = "%d"
    mode  = "0640"
  }
}
`, agentBlock, p("secret/sa.json"), emu.URL(), dir, fsGroup))
	}
	write("config/agent.hcl", agentHCL("", sinkDir), 0o644, 0)
	port := freePort(t)
	write("config/daemon.hcl", agentHCL(fmt.Sprintf("agent {\n  listen = \"127.0.0.1:%d\"\n}", port), p("shared/daemon")), 0o644, 0)

	// jailed runs the agent with args: everything read-only but the shared volume,
	// /dev/shm too (the pod has none).
	jailed := func(config string, args ...string) *exec.Cmd {
		script := `set -e
mount --bind "$SHARED" "$SHARED"
mount -o remount,bind,ro /
if mountpoint -q /dev/shm; then mount -o remount,bind,ro /dev/shm; fi
cd "$WORK"
exec "$@"`
		cmd := exec.Command(unshare, append([]string{"--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh",
			setpriv, "--reuid", strconv.Itoa(imageUID), "--regid", strconv.Itoa(imageUID), "--groups", strconv.Itoa(fsGroup),
			"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
			p("image/dbcert-agent")}, args...)...)
		cmd.Env = []string{
			"SHARED=" + p("shared"), "WORK=" + p("work"), "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
			"HOME=/nonexistent", "DBCERT_AGENT_CONFIG=" + p(config),
		}
		return cmd
	}
	cmd := jailed("config/agent.hcl", "once", "-timeout", "1m")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dbcert-agent once as uid %d: %v\nstdout:\n%s\nstderr:\n%s", imageUID, err, stdout.String(), stderr.String())
	}
	t.Logf("dbcert-agent once:\n%s", stderr.String())
	if strings.Contains(strings.ToLower(stderr.String()), "read-only file system") {
		t.Errorf("the agent tried to write outside its sink directory:\n%s", stderr.String())
	}

	// The agent wrote only its sink directory, and left nothing in the others.
	for _, d := range []string{"image", "config", "secret", "work"} {
		if entries, _ := os.ReadDir(p(d)); len(entries) != map[string]int{"image": 1, "config": 2, "secret": 1}[d] {
			t.Errorf("%s holds %d entries after the run, want only what the test put there", d, len(entries))
		}
	}
	if entries, _ := os.ReadDir(p("shared")); len(entries) != 1 || entries[0].Name() != "orders" {
		t.Errorf("the shared volume holds %v, want only the sink directory orders", entries)
	}
	for name, want := range map[string]string{"key.pem": "-rw-r----- 65532:61000", "cert.pem": "-rw-r--r-- 65532:61000", "ca.pem": "-rw-r--r-- 65532:61000"} {
		if got := fileOwner(t, filepath.Join(sinkDir, name)); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}

	// The daemon under the same conditions: "run" writes its own sink, serves /readyz,
	// and stops cleanly on SIGTERM, with nothing written anywhere else either.
	t.Run("run", func(t *testing.T) {
		daemon := jailed("config/daemon.hcl", "run")
		var out lockedBuffer
		daemon.Stdout, daemon.Stderr = &out, &out
		if err := daemon.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- daemon.Wait() }()
		ready := false
		for deadline := time.Now().Add(time.Minute); !ready && time.Now().Before(deadline); {
			select {
			case err := <-done:
				t.Fatalf("dbcert-agent run exited before it was ready: %v\n%s", err, out.String())
			case <-time.After(100 * time.Millisecond):
			}
			if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port)); err == nil {
				ready = resp.StatusCode == http.StatusOK
				resp.Body.Close()
			}
		}
		// unshare, sh and setpriv exec: the process started is the agent.
		daemon.Process.Signal(syscall.SIGTERM)
		err := <-done
		if !ready {
			t.Fatalf("dbcert-agent run: /readyz never answered 200 within a minute:\n%s", out.String())
		}
		if err != nil {
			t.Errorf("dbcert-agent run did not stop cleanly on SIGTERM: %v\n%s", err, out.String())
		}
		if strings.Contains(strings.ToLower(out.String()), "read-only file system") {
			t.Errorf("the daemon tried to write outside its sink directory:\n%s", out.String())
		}
		var names []string
		entries, _ := os.ReadDir(p("shared"))
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if strings.Join(names, " ") != "daemon orders" {
			t.Errorf("the shared volume holds %v, want the sink directories daemon and orders", names)
		}
		for _, d := range []string{"image", "config", "secret", "work"} {
			if entries, _ := os.ReadDir(p(d)); len(entries) != map[string]int{"image": 1, "config": 2, "secret": 1}[d] {
				t.Errorf("%s holds %d entries after the daemon ran, want only what the test put there", d, len(entries))
			}
		}
		if got := fileOwner(t, p("shared/daemon/key.pem")); got != "-rw-r----- 65532:61000" {
			t.Errorf("the daemon's key.pem: %s, want -rw-r----- 65532:61000", got)
		}
	})

	// The clients: setpriv'd cat, as pgbouncer's container user would read the files.
	read := func(uid int, groups string, name string) ([]byte, error) {
		args := []string{"--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(uid)}
		if groups == "" {
			args = append(args, "--clear-groups")
		} else {
			args = append(args, "--groups", groups)
		}
		c := exec.Command(setpriv, append(args, "--", "cat", filepath.Join(sinkDir, name))...)
		var errb bytes.Buffer
		c.Stderr = &errb
		out, err := c.Output()
		if err != nil {
			return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(errb.String()))
		}
		return out, nil
	}
	keyPEM, err := read(clientUID, strconv.Itoa(fsGroup), "key.pem")
	if err != nil {
		t.Fatalf("uid %d in group %d cannot read key.pem: %v", clientUID, fsGroup, err)
	}
	certPEM, err := read(clientUID, strconv.Itoa(fsGroup), "cert.pem")
	if err != nil {
		t.Fatalf("uid %d in group %d cannot read cert.pem: %v", clientUID, fsGroup, err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Errorf("the key the client read does not match the certificate: %v", err)
	}
	if _, err := read(outsiderUID, "", "cert.pem"); err != nil {
		t.Errorf("uid %d outside the group cannot read cert.pem (0644): %v", outsiderUID, err)
	}
	if _, err := read(outsiderUID, "", "key.pem"); err == nil {
		t.Errorf("uid %d outside group %d read key.pem; mode 0640 must keep it out", outsiderUID, fsGroup)
	} else if !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("uid %d reading key.pem failed for another reason than permissions: %v", outsiderUID, err)
	}
}

// lockedBuffer is a bytes.Buffer safe for a process's output and a reader at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// fileOwner is "mode uid:gid" of the file path points at.
func fileOwner(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%v %d:%d", fi.Mode().Perm(), st.Uid, st.Gid)
}
