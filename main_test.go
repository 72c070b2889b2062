package main

// End-to-end tests: the built binary against the in-process emulator, a real
// PostgreSQL server and the real psql.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
	"github.com/dbcert-agent/dbcert-agent/agent/pgtest"
)

var binary string // built once in TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dbcert-agent-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "dbcert-agent")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building dbcert-agent:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	project  = "e2e-proj"
	instance = "orders-pg"
)

// env is one test's world: an emulator on loopback, a service-account key for it, and a
// directory for config and output.
type env struct {
	t    *testing.T
	emu  *emulator.Emulator
	dir  string
	sa   string
	home string
}

func newEnv(t *testing.T, opts emulator.Options) *env {
	t.Helper()
	emu, err := emulator.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	emu.AddCloudSQLInstance(project, instance, emulator.CloudSQLInstance{})
	dir := t.TempDir()
	saJSON, err := emu.ServiceAccountJSON("agent@e2e-proj.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	sa := filepath.Join(dir, "sa.json")
	if err := os.WriteFile(sa, saJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, emu: emu, dir: dir, sa: sa, home: home}
}

// config writes agent.hcl with the given instance blocks after a credentials block.
func (e *env) config(instances string) string {
	e.t.Helper()
	src := fmt.Sprintf("agent {\n  log_level = \"debug\"\n}\ncredentials \"google\" \"default\" {\n  credentials_file = %q\n}\n%s", e.sa, instances)
	p := filepath.Join(e.dir, "agent.hcl")
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) instanceBlock(name, sinkDir, layout, hookOut string) string {
	return fmt.Sprintf(`
instance "cloudsql" %q {
  project      = %q
  instance     = %q
  api_endpoint = %q
  sink "file" {
    dir    = %q
    layout = %q
  }
  hook "exec" {
    command = ["/bin/sh", "-c", "env | grep ^DBCERT_ | sort > %s.$(date +%%s%%N)"]
  }
}
`, name, project, instance, e.emu.URL(), sinkDir, layout, hookOut)
}

type result struct {
	code           int
	stdout, stderr string
}

func runAgent(t *testing.T, args ...string) result {
	t.Helper()
	return runAgentEnv(t, nil, args...)
}

// runAgentEnv runs the binary with extra environment variables.
func runAgentEnv(t *testing.T, extraEnv []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(append(os.Environ(), "DBCERT_AGENT_CONFIG="), extraEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

func hookRuns(t *testing.T, prefix string) []string {
	t.Helper()
	m, err := filepath.Glob(prefix + ".*")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestOnceWithPsql: `once` writes files psql can use against a PostgreSQL that requires
// a client certificate from the emulator's CA and presents a server certificate from the
// instance's server CA.
func TestOnceWithPsql(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	srvCert, srvKey, err := e.emu.ServerCert(project, instance, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	pg := pgtest.Start(t, pgtest.Options{ServerCertPEM: srvCert, ServerKeyPEM: srvKey, ClientCAPEM: e.emu.ClientCAPEM()})

	pemDir := filepath.Join(e.dir, "out", "orders")
	pgDir := filepath.Join(e.home, ".postgresql")
	hooksA, hooksB := filepath.Join(e.dir, "hook-orders"), filepath.Join(e.dir, "hook-libpq")
	cfg := e.config(e.instanceBlock("orders", pemDir, "pem", hooksA) + e.instanceBlock("orders-libpq", pgDir, "libpq", hooksB))

	r := runAgent(t, "once", "-config", cfg)
	if r.code != 0 {
		t.Fatalf("once exited %d:\n%s", r.code, r.stderr)
	}
	ctx := context.Background()
	conn := fmt.Sprintf("sslmode=verify-ca sslcert=%s sslkey=%s sslrootcert=%s",
		filepath.Join(pemDir, "cert.pem"), filepath.Join(pemDir, "key.pem"), filepath.Join(pemDir, "ca.pem"))
	if out, err := pg.Psql(ctx, conn, "select 'e2e-ok'", ""); err != nil || !strings.Contains(out, "e2e-ok") {
		t.Fatalf("psql with the pem sink failed: %v\n%s\nserver log:\n%s", err, out, pg.Logs())
	}
	t.Run("libpq layout as ~/.postgresql", func(t *testing.T) {
		if out, err := pg.Psql(ctx, "sslmode=verify-ca", "select 'home-ok'", e.home); err != nil || !strings.Contains(out, "home-ok") {
			t.Fatalf("psql with HOME/.postgresql failed: %v\n%s", err, out)
		}
	})
	t.Run("a different key is refused", func(t *testing.T) {
		other := filepath.Join(e.dir, "otherkey.pem")
		writeECKey(t, other)
		bad := strings.Replace(conn, filepath.Join(pemDir, "key.pem"), other, 1)
		if out, err := pg.Psql(ctx, bad, "select 1", ""); err == nil {
			t.Fatalf("psql succeeded with a key that does not match the certificate:\n%s", out)
		} else if !strings.Contains(out, "does not match") {
			t.Logf("psql failed as expected, output: %s", out)
		}
	})
	t.Run("hooks got the files", func(t *testing.T) {
		runs := hookRuns(t, hooksA)
		if len(runs) != 1 {
			t.Fatalf("orders hook ran %d times, want 1", len(runs))
		}
		data, _ := os.ReadFile(runs[0])
		for _, want := range []string{
			"DBCERT_INSTANCE=orders\n", "DBCERT_EVENT=renewed\n", "DBCERT_DIR=" + pemDir + "\n",
			"DBCERT_CERT_FILE=" + filepath.Join(pemDir, "cert.pem") + "\n",
			"DBCERT_KEY_FILE=" + filepath.Join(pemDir, "key.pem") + "\n",
			"DBCERT_CA_FILE=" + filepath.Join(pemDir, "ca.pem") + "\n",
		} {
			if !strings.Contains(string(data), want) {
				t.Errorf("hook env lacks %q:\n%s", want, data)
			}
		}
		if !regexp.MustCompile(`DBCERT_NOT_AFTER=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`).Match(data) {
			t.Errorf("DBCERT_NOT_AFTER missing or not RFC 3339:\n%s", data)
		}
	})
	t.Run("status reads the files", func(t *testing.T) {
		r := runAgent(t, "status", "-json", "-config", cfg)
		if r.code != 0 {
			t.Fatalf("status exited %d:\n%s%s", r.code, r.stdout, r.stderr)
		}
		var doc struct {
			Instances []struct {
				Instance, State, Serial, CertFile string
				SecondsLeft                       int64 `json:"seconds_left"`
			}
		}
		if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
			t.Fatalf("status -json: %v\n%s", err, r.stdout)
		}
		if len(doc.Instances) != 2 || doc.Instances[0].State != "ok" || doc.Instances[0].Serial == "" || doc.Instances[0].SecondsLeft < 3000 {
			t.Errorf("status = %+v", doc.Instances)
		}
		table := runAgent(t, "status", "-config", cfg)
		if table.code != 0 || !strings.Contains(table.stdout, "orders-libpq  ok") {
			t.Errorf("status table (exit %d):\n%s", table.code, table.stdout)
		}
	})
	t.Run("second run skips valid files and runs no hook", func(t *testing.T) {
		issued := e.emu.Issued()
		r := runAgent(t, "once", "-config", cfg)
		if r.code != 0 {
			t.Fatalf("once exited %d:\n%s", r.code, r.stderr)
		}
		if e.emu.Issued() != issued {
			t.Errorf("second once called generateEphemeralCert (%d → %d certs)", issued, e.emu.Issued())
		}
		if n := len(hookRuns(t, hooksA)); n != 1 {
			t.Errorf("hook ran %d times after an up-to-date run, want 1", n)
		}
		if !strings.Contains(r.stderr, "up to date") {
			t.Errorf("no 'up to date' log line:\n%s", r.stderr)
		}
	})
	t.Run("-force -instance renews only that instance", func(t *testing.T) {
		issued := e.emu.Issued()
		r := runAgent(t, "once", "-config", cfg, "-force", "-instance", "orders")
		if r.code != 0 {
			t.Fatalf("once exited %d:\n%s", r.code, r.stderr)
		}
		if got := e.emu.Issued() - issued; got != 1 {
			t.Errorf("issued %d certificates, want 1", got)
		}
		if a, b := len(hookRuns(t, hooksA)), len(hookRuns(t, hooksB)); a != 2 || b != 1 {
			t.Errorf("hook runs orders=%d libpq=%d, want 2 and 1", a, b)
		}
		if out, err := pg.Psql(ctx, conn, "select 'renewed-ok'", ""); err != nil || !strings.Contains(out, "renewed-ok") {
			t.Fatalf("psql after renewal failed: %v\n%s", err, out)
		}
	})
	t.Run("no secrets in logs", func(t *testing.T) {
		// Every log so far ran at debug level. Collect the secrets the emulator saw.
		all := r.stderr + runAgent(t, "once", "-config", cfg, "-force").stderr
		assertNoSecrets(t, e, all, pemDir)
	})
}

// assertNoSecrets fails if logs contain a bearer token the emulator handed out, PEM
// private key material, the service-account key, or the written private key.
func assertNoSecrets(t *testing.T, e *env, logs, sinkDir string) {
	t.Helper()
	if strings.Contains(logs, "PRIVATE KEY") {
		t.Error("logs contain PRIVATE KEY")
	}
	tokens := 0
	for _, req := range e.emu.Requests() {
		auth := req.Header.Get("Authorization")
		if tok, ok := strings.CutPrefix(auth, "Bearer "); ok && tok != "" {
			tokens++
			if strings.Contains(logs, tok) {
				t.Error("logs contain an access token")
			}
		}
		if v := req.Query.Get("assertion"); v != "" && strings.Contains(logs, v) {
			t.Error("logs contain the signed JWT assertion")
		}
	}
	if tokens == 0 {
		t.Error("the emulator saw no bearer token; the secret check checked nothing")
	}
	sa, _ := os.ReadFile(e.sa)
	if m := regexp.MustCompile(`MII[A-Za-z0-9+/]{40}`).Find(sa); m == nil || strings.Contains(logs, string(m)) {
		t.Error("logs contain service-account key material (or the key was not found)")
	}
	key, _ := os.ReadFile(filepath.Join(sinkDir, "key.pem"))
	if lines := strings.Split(string(key), "\n"); len(lines) < 3 || strings.Contains(logs, lines[1]) {
		t.Error("logs contain the written private key (or it was not found)")
	}
}

func writeECKey(t *testing.T, path string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestOnceFailures(t *testing.T) {
	tests := []struct {
		name      string
		fault     emulator.Fault
		args      []string
		wantCode  int
		wantInErr []string
		wantFiles bool
	}{
		{
			name:      "403 is permanent and explained",
			fault:     emulator.Fault{Match: "generateEphemeralCert", Status: 403},
			wantCode:  1,
			wantInErr: []string{`instance "orders"`, "403", "generateEphemeralCert", "e2e-proj/orders-pg"},
		},
		{
			name:      "503 twice is retried until it works",
			fault:     emulator.Fault{Match: "generateEphemeralCert", Status: 503, Times: 2},
			wantCode:  0,
			wantInErr: []string{"will retry"},
			wantFiles: true,
		},
		{
			name:      "503 forever gives up at -timeout",
			fault:     emulator.Fault{Match: "generateEphemeralCert", Status: 503},
			args:      []string{"-timeout", "3s"},
			wantCode:  1,
			wantInErr: []string{"503", "gave up"},
		},
		{
			name:      "garbage 200 body is an error, no files",
			fault:     emulator.Fault{Match: "connectSettings", Garbage: true},
			wantCode:  1,
			wantInErr: []string{"connectSettings"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, emulator.Options{})
			e.emu.Inject(tt.fault)
			out := filepath.Join(e.dir, "out")
			cfg := e.config(e.instanceBlock("orders", out, "pem", filepath.Join(e.dir, "hook")))
			r := runAgent(t, append([]string{"once", "-config", cfg}, tt.args...)...)
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d\n%s", r.code, tt.wantCode, r.stderr)
			}
			for _, s := range tt.wantInErr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
				}
			}
			_, err := os.Stat(filepath.Join(out, "cert.pem"))
			if got := err == nil; got != tt.wantFiles {
				t.Errorf("cert.pem exists = %v, want %v", got, tt.wantFiles)
			}
		})
	}
}

// TestFailedFetchKeepsValidFiles: with valid files on disk, a forced refresh that fails
// leaves them byte for byte as they were.
func TestFailedFetchKeepsValidFiles(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	out := filepath.Join(e.dir, "out")
	cfg := e.config(e.instanceBlock("orders", out, "libpq", filepath.Join(e.dir, "hook")))
	if r := runAgent(t, "once", "-config", cfg); r.code != 0 {
		t.Fatalf("first once: %d\n%s", r.code, r.stderr)
	}
	before := readAll(t, out, "postgresql.crt", "postgresql.key", "root.crt")
	e.emu.Inject(emulator.Fault{Match: "generateEphemeralCert", Status: 500})
	if r := runAgent(t, "once", "-config", cfg, "-force", "-timeout", "2s"); r.code != 1 {
		t.Fatalf("failing once exited %d, want 1\n%s", r.code, r.stderr)
	}
	if after := readAll(t, out, "postgresql.crt", "postgresql.key", "root.crt"); after != before {
		t.Error("a failed refresh changed the files on disk")
	}
	if n := len(hookRuns(t, filepath.Join(e.dir, "hook"))); n != 1 {
		t.Errorf("hook ran %d times, want 1 (not for the failed refresh)", n)
	}
}

func readAll(t *testing.T, dir string, names ...string) string {
	t.Helper()
	var b strings.Builder
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.hcl")
	os.WriteFile(good, []byte(`instance "cloudsql" "orders" {
  project = "p"
  instance = "i"
  sink "file" { dir = "/tmp/never-written" }
}
`), 0o644)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"no command", nil, 2, "Usage"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"bad flag", []string{"once", "-nope"}, 2, "flag provided but not defined"},
		{"missing config", []string{"validate", "-config", filepath.Join(dir, "missing.hcl")}, 2, "missing.hcl"},
		{"broken config", []string{"validate", "-config", "config/testdata/invalid/unknown_attribute.hcl"}, 2,
			"config/testdata/invalid/unknown_attribute.hcl:4:3: error: Unsupported argument"},
		{"valid config", []string{"validate", "-config", good}, 0, ""},
		{"example config", []string{"validate", "-config", "agent.hcl.example"}, 0, ""},
		{"unknown -instance", []string{"once", "-config", good, "-instance", "nope"}, 2, `no instance named "nope"`},
		{"version", []string{"version"}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runAgent(t, tt.args...)
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stdout+r.stderr, tt.want) {
				t.Errorf("output lacks %q:\nstdout: %s\nstderr: %s", tt.want, r.stdout, r.stderr)
			}
		})
	}
}

func TestDefaultConfigFromEnv(t *testing.T) {
	r := func() result {
		cmd := exec.Command(binary, "validate")
		cmd.Env = append(os.Environ(), "DBCERT_AGENT_CONFIG=agent.hcl.example")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return result{code, out.String(), errb.String()}
	}()
	if r.code != 0 || !strings.Contains(r.stdout, "agent.hcl.example: OK") {
		t.Fatalf("validate with DBCERT_AGENT_CONFIG: %d %s %s", r.code, r.stdout, r.stderr)
	}
}

// lockedBuffer is a bytes.Buffer safe to read while an exec.Cmd copies into it.
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

// runningAgent is `dbcert-agent run` started by a test, with its combined output in
// logs. At clean-up it is stopped if it still runs (SIGTERM, so hooks in progress
// finish before the test's temporary directory goes; SIGKILL after 15 s), and its log
// is printed when the test failed.
type runningAgent struct {
	cmd  *exec.Cmd
	logs lockedBuffer
	done chan struct{} // closed when it has exited; err is then Wait's result
	err  error
}

// startRun starts `run` with args, env added to the test's environment.
func startRun(t *testing.T, env []string, args ...string) *runningAgent {
	t.Helper()
	r := &runningAgent{cmd: exec.Command(binary, append([]string{"run"}, args...)...), done: make(chan struct{})}
	r.cmd.Env = append(os.Environ(), env...)
	r.cmd.Stdout, r.cmd.Stderr = &r.logs, &r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		_ = r.cmd.Process.Signal(syscall.SIGTERM) // ErrProcessDone once it exited
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("agent log:\n%.20000s", r.logs.String())
		}
	})
	return r
}

// exited reports whether the agent has exited, and how.
func (r *runningAgent) exited() (err error, ok bool) {
	select {
	case <-r.done:
		return r.err, true
	default:
		return nil, false
	}
}

// signal sends sig to the agent.
func (r *runningAgent) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling the agent: %v", err)
	}
}

// wait waits up to 15 s for the agent to exit and wants exit status 0.
func (r *runningAgent) wait(t *testing.T) {
	t.Helper()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("run exited with %v, want 0", r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not exit within 15s")
	}
}

// stop sends SIGTERM and waits for exit status 0.
func (r *runningAgent) stop(t *testing.T) {
	t.Helper()
	r.signal(t, syscall.SIGTERM)
	r.wait(t)
}

// TestDev runs `dbcert-agent dev` and waits for files and a hook run to appear.
func TestDev(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(binary, "dev", "-dir", dir, "-cert-lifetime", "3s")
	var out, errb lockedBuffer // read while the child writes
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
	}()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		hooks, _ := os.ReadFile(filepath.Join(dir, "hooks.log"))
		// Two certificates for "orders" prove the daemon renews as certificates age.
		if strings.Count(string(hooks), "renewed orders ") >= 2 {
			for _, f := range []string{"out/orders/cert.pem", "out/orders/key.pem", "out/orders/ca.pem",
				"out/billing/postgresql.crt", "out/billing/postgresql.key", "out/billing/root.crt",
				"out/analytics/cert.pem", "out/analytics/key.pem", "out/analytics/ca.pem", "out/cache/ca.pem"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("dev did not write %s: %v", f, err)
				}
			}
			if !strings.Contains(out.String(), "emulator") {
				t.Errorf("dev printed no banner:\n%s", out.String())
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("dev did not rotate twice within 30s\nstdout:\n%s\nstderr:\n%s", out.String(), errb.String())
}

// TestRunRotatesUnderPsqlLoad: `run` against the emulator issuing 20-second
// certificates, for 70 seconds, while psql connects with the files every 200 ms. Every
// connection must succeed (one that straddles a swap, README's documented window between
// libpq's two opens, must succeed when retried at once), at least three rotations must
// happen, and the exec hook must run once per certificate.
func TestRunRotatesUnderPsqlLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("70-second soak; skipped with -short")
	}
	e := newEnv(t, emulator.Options{CertLifetime: 20 * time.Second})
	srvCert, srvKey, err := e.emu.ServerCert(project, instance, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	pg := pgtest.Start(t, pgtest.Options{ServerCertPEM: srvCert, ServerKeyPEM: srvKey, ClientCAPEM: e.emu.ClientCAPEM()})
	out := filepath.Join(e.dir, "out")
	hooks := filepath.Join(e.dir, "hook")
	cfg := e.config(e.instanceBlock("orders", out, "libpq", hooks))

	agent := startRun(t, nil, "-config", cfg)
	conn := fmt.Sprintf("sslmode=verify-ca sslcert=%s sslkey=%s sslrootcert=%s",
		filepath.Join(out, "postgresql.crt"), filepath.Join(out, "postgresql.key"), filepath.Join(out, "root.crt"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(out, "postgresql.key")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("run wrote no files within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var ok, failed, straddled int
	end := time.Now().Add(70 * time.Second)
	ctx := context.Background()
	for time.Now().Before(end) {
		outp, err := pg.Psql(ctx, conn, "select 1", "")
		// psql's message is in its output; the error only carries the exit status.
		if err != nil && strings.Contains(outp, "key values mismatch") {
			// libpq read the certificate before a swap and the key after it: the
			// documented window between its two opens (README, Files on disk), which a
			// retry fixes. The retry must succeed.
			straddled++
			t.Logf("psql straddled a swap at %s (%v); retrying", time.Now().Format(time.RFC3339Nano), err)
			outp, err = pg.Psql(ctx, conn, "select 1", "")
		}
		if err != nil {
			failed++
			t.Errorf("psql failed at %s: %v\n%s", time.Now().Format(time.RFC3339Nano), err, outp)
		} else {
			ok++
		}
		time.Sleep(200 * time.Millisecond)
	}
	agent.stop(t)
	issued := e.emu.Issued()
	t.Logf("psql connections ok=%d failed=%d (straddled a swap and retried: %d); certificates issued=%d", ok, failed, straddled, issued)
	if straddled > issued {
		t.Errorf("%d connections straddled a swap in %d rotations: more than the window between libpq's two opens explains", straddled, issued)
	}
	if issued < 4 {
		t.Errorf("issued %d certificates in 70s of 20s certificates, want at least 4 (three rotations)", issued)
	}
	if n := len(hookRuns(t, hooks)); n != issued {
		t.Errorf("hook ran %d times for %d certificates", n, issued)
	}
	// Not a speed check (the machine is shared): enough connections that several fell
	// within each certificate's life, so every rotation happened under load.
	if ok < 5*issued {
		t.Errorf("only %d psql connections for %d certificates; the load did not span the rotations", ok, issued)
	}
}

// TestRunSIGHUPWhileStarting: a SIGHUP that arrives while `run` is still starting (here:
// reading its config) does not end it (the default action of SIGHUP); the agent starts,
// reloads, and keeps running. The reload reports the agent block change it cannot apply.
func TestRunSIGHUPWhileStarting(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	out := filepath.Join(e.dir, "out")
	cfg := e.config(e.instanceBlock("orders", out, "pem", filepath.Join(e.dir, "hook")))
	src, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The config is first a FIFO: the agent blocks reading it, so the signal surely
	// arrives during start-up.
	fifo := filepath.Join(e.dir, "starting.hcl")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	agent := startRun(t, nil, "-config", fifo)
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0) // returns once the agent opened it
	if err != nil {
		t.Fatal(err)
	}
	agent.signal(t, syscall.SIGHUP)
	// Later reads (the reload) get a regular file with the same instances and a changed
	// agent block, which waits for a restart (the reload says so).
	regular := filepath.Join(e.dir, "agent.hcl.new")
	if err := os.WriteFile(regular, []byte(strings.Replace(string(src), "agent {", "agent {\n  share_keys = true", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(regular, fifo); err != nil {
		t.Fatal(err)
	}
	w.Write(src)
	w.Close()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(agent.logs.String(), "files written") {
		if err, ok := agent.exited(); ok {
			t.Fatalf("run ended during start-up after SIGHUP: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no files within 15s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for !strings.Contains(agent.logs.String(), "the agent block changed") {
		if time.Now().After(deadline) {
			t.Fatal("the reload of the SIGHUP sent during start-up did not happen, or did not report the agent block change")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(agent.logs.String(), "changed=share_keys") {
		t.Error("the reload does not name the agent attribute that waits for a restart")
	}
	agent.stop(t)
}

// unitEnvironment returns the Environment= assignments of the shipped systemd unit.
func unitEnvironment(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("packaging", "systemd", "dbcert-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Environment="); ok {
			env = append(env, strings.Fields(v)...)
		}
	}
	return env
}

// TestAbortIsRestarted: under the shipped unit's environment, the SIGABRT systemd sends
// when the watchdog fires ends the agent by that signal, which Restart=on-failure
// restarts; without it the Go runtime exits with status 2, the configuration-error
// status that RestartPreventExitStatus=2 never restarts.
func TestAbortIsRestarted(t *testing.T) {
	env := unitEnvironment(t)
	if !slices.Contains(env, "GOTRACEBACK=crash") {
		t.Fatalf("the unit's environment %q does not set GOTRACEBACK=crash", env)
	}
	for _, tt := range []struct {
		name     string
		env      []string
		signaled bool
	}{
		{"the unit's environment", env, true},
		{"the Go default, which the unit overrides", []string{"GOTRACEBACK=single"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, emulator.Options{})
			out := filepath.Join(e.dir, "out")
			cfg := e.config(e.instanceBlock("orders", out, "pem", filepath.Join(e.dir, "hook")))
			agent := startRun(t, tt.env, "-config", cfg)
			// No core file (as LimitCORE=0 in the unit).
			if err := unix.Prlimit(agent.cmd.Process.Pid, unix.RLIMIT_CORE, &unix.Rlimit{}, nil); err != nil {
				t.Fatal(err)
			}
			// Once the hook has run: the abort must not leave it writing into the
			// test's directory after the agent is gone.
			for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				if strings.Contains(agent.logs.String(), "hook ran") {
					break
				}
				if time.Now().After(deadline) {
					err, ok := agent.exited()
					t.Fatalf("no hook run within 15s (exited %v: %v)", ok, err)
				}
			}
			agent.signal(t, syscall.SIGABRT)
			select {
			case <-agent.done:
			case <-time.After(15 * time.Second):
				t.Fatal("the agent did not end after SIGABRT")
			}
			var ee *exec.ExitError
			if !errors.As(agent.err, &ee) {
				t.Fatalf("exit = %v", agent.err)
			}
			ws := ee.Sys().(syscall.WaitStatus)
			if got := ws.Signaled() && ws.Signal() == syscall.SIGABRT; got != tt.signaled {
				t.Errorf("ended by SIGABRT = %v (exit status %d), want %v", got, ws.ExitStatus(), tt.signaled)
			}
			if !tt.signaled && ws.ExitStatus() != 2 {
				t.Errorf("exit status %d, want the Go runtime's 2", ws.ExitStatus())
			}
		})
	}
}

// TestRunListenInUse: a listen address that is busy is a run-time failure (exit 1,
// which the unit's Restart=on-failure retries), not a configuration error (exit 2,
// which RestartPreventExitStatus= never retries).
func TestRunListenInUse(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	cfg := e.config(e.instanceBlock("orders", filepath.Join(e.dir, "out"), "pem", filepath.Join(e.dir, "hook")))
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	src, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(src), "agent {", fmt.Sprintf("agent {\n  listen = %q", busy.Addr().String()), 1)), 0o644)
	r := runAgent(t, "run", "-config", cfg)
	if r.code != 1 || !strings.Contains(r.stderr, "listen "+busy.Addr().String()) || !strings.Contains(r.stderr, "address already in use") {
		t.Fatalf("run with a busy listen address: exit %d, want 1 naming the address\nstderr:\n%s", r.code, r.stderr)
	}
}

// TestRunSystemdAndMetrics: `run` under a fake NOTIFY_SOCKET sends READY=1 only once
// the files exist, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM, and serves
// /metrics, /livez and /readyz on listen.
func TestRunSystemdAndMetrics(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	// The first certificate request fails, so READY must wait for the retry.
	e.emu.Inject(emulator.Fault{Match: "generateEphemeralCert", Status: 503, Times: 1})
	out := filepath.Join(e.dir, "out")
	cfg := e.config(e.instanceBlock("orders", out, "pem", filepath.Join(e.dir, "hook")))
	port := freePort(t)
	src, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(src), "agent {", fmt.Sprintf("agent {\n  listen = \"127.0.0.1:%d\"", port), 1)), 0o644)

	sock := filepath.Join(e.dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	type msg struct {
		text     string
		filesNow bool
	}
	msgs := make(chan msg, 32)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			_, ferr := os.Stat(filepath.Join(out, "key.pem"))
			msgs <- msg{string(buf[:n]), ferr == nil}
		}
	}()
	next := func(prefix string) msg {
		t.Helper()
		timeout := time.After(15 * time.Second)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("notify socket closed waiting for %s", prefix)
				}
				if strings.HasPrefix(m.text, prefix) {
					return m
				}
			case <-timeout:
				t.Fatalf("no %s within 15s", prefix)
			}
		}
	}

	agent := startRun(t, []string{"NOTIFY_SOCKET=" + sock}, "-config", cfg)
	if m := next("READY=1"); !m.filesNow {
		t.Fatal("READY=1 arrived before the files existed")
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	body := httpGet(t, base+"/metrics", 200)
	for _, want := range []string{
		`dbcert_files_valid{instance="orders"} 1`,
		`dbcert_refreshes_total{instance="orders",result="ok"} 1`,
		`dbcert_refreshes_total{instance="orders",result="retryable"} 1`,
		`dbcert_hook_runs_total{instance="orders",result="ok"} 1`,
		`dbcert_api_requests_total{endpoint="generateEphemeralCert",code="503"} 1`,
		`dbcert_certificate_not_after_seconds{instance="orders"}`,
		`dbcert_next_renewal_seconds{instance="orders"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
	httpGet(t, base+"/livez", 200)
	if got := httpGet(t, base+"/readyz", 200); !strings.Contains(got, `"ready"`) {
		t.Errorf("/readyz = %s", got)
	}
	agent.signal(t, syscall.SIGHUP)
	next("RELOADING=1")
	next("READY=1")
	agent.signal(t, syscall.SIGTERM)
	next("STOPPING=1")
	agent.wait(t)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func httpGet(t *testing.T, url string, want int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Errorf("GET %s = %d, want %d: %s", url, resp.StatusCode, want, b)
	}
	return string(b)
}

// TestRunReloadsChangedConfigFile: editing the config file (written the way editors do:
// a new file renamed over the old) adds exactly the new instance; a broken edit is
// reported with file:line and leaves the running instances alone.
func TestRunReloadsChangedConfigFile(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	e.emu.AddCloudSQLInstance(project, "billing-pg", emulator.CloudSQLInstance{})
	ordersDir, billingDir := filepath.Join(e.dir, "orders"), filepath.Join(e.dir, "billing")
	orders := e.instanceBlock("orders", ordersDir, "pem", filepath.Join(e.dir, "hook-orders"))
	cfg := e.config(orders)
	agent := startRun(t, nil, "-config", cfg)
	logs := &agent.logs
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	waitFor("orders files", func() bool { return exists(filepath.Join(ordersDir, "key.pem")) })
	issued := e.emu.Issued()

	replace := func(content string) {
		t.Helper()
		tmp := cfg + ".swp"
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfg); err != nil {
			t.Fatal(err)
		}
	}
	src, _ := os.ReadFile(cfg)
	billing := strings.ReplaceAll(strings.ReplaceAll(
		e.instanceBlock("billing", billingDir, "libpq", filepath.Join(e.dir, "hook-billing")),
		`instance     = "orders-pg"`, `instance     = "billing-pg"`), `"orders-pg"`, `"billing-pg"`)
	replace(string(src) + billing)
	waitFor("billing files", func() bool { return exists(filepath.Join(billingDir, "postgresql.key")) })
	waitFor("the reload log line", func() bool {
		return strings.Contains(logs.String(), "started=[billing] restarted=[] removed=[]")
	})
	if got := e.emu.Issued() - issued; got != 1 {
		t.Errorf("adding one instance issued %d certificates, want 1", got)
	}

	good, _ := os.ReadFile(cfg)
	replace(string(good) + "\ninstance \"cloudsql\" \"broken\" {\n  projec = \"x\"\n}\n")
	waitFor("the diagnostic", func() bool {
		return strings.Contains(logs.String(), "agent.hcl:") && strings.Contains(logs.String(), "still running the previous one")
	})
	if !regexp.MustCompile(`agent\.hcl:\d+:\d+: `).MatchString(logs.String()) {
		t.Errorf("the reload error does not name file:line:col:\n%s", logs.String())
	}
	before := e.emu.Issued()
	time.Sleep(500 * time.Millisecond)
	if e.emu.Issued() != before || !exists(filepath.Join(ordersDir, "key.pem")) || !exists(filepath.Join(billingDir, "root.crt")) {
		t.Error("a broken config disturbed the running instances")
	}
}

// TestResetSSL: reset-ssl refuses without -yes; with it, the instance's server CA is
// rotated, the old root.crt no longer verifies the server, the agent's new files do,
// and the hook ran once. A failed operation exits 1 with its code and message.
func TestResetSSL(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	srvCert, srvKey, err := e.emu.ServerCert(project, instance, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	pg := pgtest.Start(t, pgtest.Options{ServerCertPEM: srvCert, ServerKeyPEM: srvKey, ClientCAPEM: e.emu.ClientCAPEM()})
	out := filepath.Join(e.dir, "out")
	hooks := filepath.Join(e.dir, "hook")
	cfg := e.config(e.instanceBlock("orders", out, "libpq", hooks))
	if r := runAgent(t, "once", "-config", cfg); r.code != 0 {
		t.Fatalf("once: %d\n%s", r.code, r.stderr)
	}
	old := map[string]string{}
	for _, name := range []string{"root.crt", "postgresql.crt", "postgresql.key"} {
		data, _ := os.ReadFile(filepath.Join(out, name))
		old[name] = filepath.Join(e.dir, "old-"+name)
		os.WriteFile(old[name], data, 0o600)
	}
	oldRoot := old["root.crt"]
	resets := func() int {
		n := 0
		for _, r := range e.emu.Requests() {
			if strings.HasSuffix(r.Path, "/resetSslConfig") {
				n++
			}
		}
		return n
	}

	t.Run("refuses without -yes", func(t *testing.T) {
		r := runAgent(t, "reset-ssl", "-config", cfg, "-instance", "orders")
		if r.code != 2 || !strings.Contains(r.stderr, "add -yes") {
			t.Fatalf("exit %d, want 2 with a hint:\n%s", r.code, r.stderr)
		}
		if resets() != 0 {
			t.Error("reset-ssl without -yes called the API")
		}
	})
	t.Run("failed operation", func(t *testing.T) {
		e.emu.FailNextOperation(emulator.OpFailure{Code: "INTERNAL_ERROR", Message: "An internal error occurred."})
		r := runAgent(t, "reset-ssl", "-config", cfg, "-instance", "orders", "-yes")
		if r.code != 1 || !strings.Contains(r.stderr, "INTERNAL_ERROR") || !strings.Contains(r.stderr, "An internal error occurred.") {
			t.Fatalf("exit %d, want 1 naming the operation error:\n%s", r.code, r.stderr)
		}
		if n := len(hookRuns(t, hooks)); n != 1 {
			t.Errorf("hook ran %d times after a failed reset, want 1 (from once)", n)
		}
	})
	t.Run("rotates the CA", func(t *testing.T) {
		r := runAgent(t, "reset-ssl", "-config", cfg, "-instance", "orders", "-yes")
		if r.code != 0 {
			t.Fatalf("reset-ssl exited %d:\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		for _, want := range []string{"waiting for operation", "DONE", "wrote new files"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("progress lacks %q:\n%s", want, r.stdout)
			}
		}
		// The server now presents a certificate from the new CA and accepts only client
		// certificates issued after the reset, as Cloud SQL would.
		newCert, newKey, err := e.emu.ServerCert(project, instance, []string{"127.0.0.1", "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		if err := pg.ReplaceServerCert(newCert, newKey, e.emu.ClientCAPEM()); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		files := fmt.Sprintf("sslmode=verify-ca sslcert=%s sslkey=%s", filepath.Join(out, "postgresql.crt"), filepath.Join(out, "postgresql.key"))
		if o, err := pg.Psql(ctx, files+" sslrootcert="+oldRoot, "select 1", ""); err == nil {
			t.Errorf("psql with the old root.crt verified the server after reset-ssl:\n%s", o)
		}
		if o, err := pg.Psql(ctx, files+" sslrootcert="+filepath.Join(out, "root.crt"), "select 'reset-ok'", ""); err != nil || !strings.Contains(o, "reset-ok") {
			t.Errorf("psql with the new files failed: %v\n%s", err, o)
		}
		oldClient := fmt.Sprintf("sslmode=verify-ca sslcert=%s sslkey=%s sslrootcert=%s", old["postgresql.crt"], old["postgresql.key"], filepath.Join(out, "root.crt"))
		if o, err := pg.Psql(ctx, oldClient, "select 1", ""); err == nil {
			t.Errorf("the client certificate from before the reset still works:\n%s", o)
		}
		if n := len(hookRuns(t, hooks)); n != 2 {
			t.Errorf("hook ran %d times in all, want 2 (once, then reset-ssl)", n)
		}
	})
	t.Run("not a cloudsql instance name", func(t *testing.T) {
		r := runAgent(t, "reset-ssl", "-config", cfg, "-instance", "nope", "-yes")
		if r.code != 2 || !strings.Contains(r.stderr, `no instance named "nope"`) {
			t.Errorf("exit %d:\n%s", r.code, r.stderr)
		}
	})
}

// TestAlloyDBWithPsql: PostgreSQL trusting only the emulator's AlloyDB client root CA
// accepts psql with the agent's cert.pem (leaf + intermediate, in that order) and key,
// and psql verifies the server with the agent's ca.pem.
func TestAlloyDBWithPsql(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	const loc, cluster = "us-central1", "analytics"
	e.emu.AddAlloyDBCluster(project, loc, cluster)
	srvCert, srvKey, err := e.emu.AlloyDBServerCert(project, loc, cluster, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	pg := pgtest.Start(t, pgtest.Options{ServerCertPEM: srvCert, ServerKeyPEM: srvKey,
		ClientCAPEM: e.emu.AlloyDBClientRootPEM(project, loc, cluster)})
	out := filepath.Join(e.dir, "out")
	cfg := e.config(fmt.Sprintf(`
instance "alloydb" "analytics" {
  project       = %q
  location      = %q
  cluster       = %q
  cert_duration = "1h"
  api_endpoint  = %q
  sink "file" { dir = %q }
}
`, project, loc, cluster, e.emu.URL(), out))
	if r := runAgent(t, "once", "-config", cfg); r.code != 0 {
		t.Fatalf("once exited %d:\n%s", r.code, r.stderr)
	}
	chain, _ := os.ReadFile(filepath.Join(out, "cert.pem"))
	if n := strings.Count(string(chain), "BEGIN CERTIFICATE"); n != 2 {
		t.Errorf("cert.pem holds %d certificates, want leaf + intermediate", n)
	}
	conn := fmt.Sprintf("sslmode=verify-ca sslcert=%s sslkey=%s sslrootcert=%s",
		filepath.Join(out, "cert.pem"), filepath.Join(out, "key.pem"), filepath.Join(out, "ca.pem"))
	if o, err := pg.Psql(context.Background(), conn, "select 'alloydb-ok'", ""); err != nil || !strings.Contains(o, "alloydb-ok") {
		t.Fatalf("psql failed: %v\n%s\nserver log:\n%s", err, o, pg.Logs())
	}
	// Without the intermediate the server cannot build the chain to the root it trusts.
	leafOnly := filepath.Join(e.dir, "leaf.pem")
	end := strings.Index(string(chain), "-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----\n")
	os.WriteFile(leafOnly, chain[:end], 0o644)
	if o, err := pg.Psql(context.Background(), strings.Replace(conn, filepath.Join(out, "cert.pem"), leafOnly, 1), "select 1", ""); err == nil {
		t.Errorf("psql with the leaf alone succeeded; the test does not prove chain order:\n%s", o)
	}
}

// startRedisTLS starts a throwaway redis-server with TLS on a free loopback port, using
// the given server certificate; it skips when redis-server is missing (fails under
// DBCERT_E2E=require).
func startRedisTLS(t *testing.T, certPEM, keyPEM, caPEM []byte) int {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("DBCERT_E2E") == "require" {
			t.Fatal("redis-server is not installed (DBCERT_E2E=require)")
		}
		t.Skip("redis-server is not installed")
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatal("redis-server without redis-cli")
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"server.crt": certPEM, "server.key": keyPEM, "ca.crt": caPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	cmd := exec.Command(bin, "--port", "0", "--tls-port", fmt.Sprint(port), "--bind", "127.0.0.1",
		"--tls-cert-file", filepath.Join(dir, "server.crt"), "--tls-key-file", filepath.Join(dir, "server.key"),
		"--tls-ca-cert-file", filepath.Join(dir, "ca.crt"), "--tls-auth-clients", "no",
		"--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no")
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return port
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not listen within 10s:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func redisPing(port int, caFile string) (string, error) {
	out, err := exec.Command("redis-cli", "--tls", "--cacert", caFile, "-h", "127.0.0.1", "-p", fmt.Sprint(port), "ping").CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestGeminiDBWithRedis: the agent downloads a GeminiDB CA (IAM password token from the
// emulator's IAM; the download link on a separate host, without auth headers) and a
// real redis-server with a certificate from that CA accepts redis-cli verifying with the
// agent's ca.pem. The hook fires when the CA rotates, not when it is unchanged.
func TestGeminiDBWithRedis(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	const projID, instID = "0123456789abcdef0123456789abcdef", "a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5din06"
	e.emu.AddGeminiDBInstance(projID, instID)
	e.emu.AddHuaweiUser("acct", "ops", "correct horse")
	pw := filepath.Join(e.dir, "hw-password")
	os.WriteFile(pw, []byte("correct horse\n"), 0o600)
	srvCert, srvKey, err := e.emu.GeminiDBServerCert(projID, instID, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	port := startRedisTLS(t, srvCert, srvKey, e.emu.GeminiDBCAPEM(projID, instID))
	out := filepath.Join(e.dir, "geminidb")
	hooks := filepath.Join(e.dir, "hook")
	cfg := e.config(fmt.Sprintf(`
credentials "huaweicloud" "default" {
  region        = "cn-north-4"
  iam_endpoint  = %q
  user_name     = "ops"
  password_file = %q
  domain_name   = "acct"
  project_id    = %q
}

instance "geminidb" "cache" {
  project_id   = %q
  instance_id  = %q
  api_endpoint = %q
  sink "file" { dir = %q }
  hook "exec" {
    command = ["/bin/sh", "-c", "env | grep ^DBCERT_ | sort > %s.$(date +%%s%%N)"]
  }
}
`, e.emu.URL(), pw, projID, projID, instID, e.emu.URL(), out, hooks))
	if r := runAgent(t, "once", "-config", cfg); r.code != 0 {
		t.Fatalf("once exited %d:\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "cert.pem")); err == nil {
		t.Error("a CA-only instance wrote cert.pem")
	}
	if o, err := redisPing(port, filepath.Join(out, "ca.pem")); err != nil || o != "PONG" {
		t.Fatalf("redis-cli with the agent's ca.pem: %v %s", err, o)
	}
	runs := hookRuns(t, hooks)
	if len(runs) != 1 {
		t.Fatalf("hook ran %d times, want 1", len(runs))
	}
	if data, _ := os.ReadFile(runs[0]); !strings.Contains(string(data), "DBCERT_EVENT=ca-changed") || !strings.Contains(string(data), "DBCERT_CA_FILE="+filepath.Join(out, "ca.pem")) ||
		!strings.Contains(string(data), "DBCERT_CERT_FILE=\n") || !strings.Contains(string(data), "DBCERT_KEY_FILE=\n") {
		t.Errorf("hook env:\n%s", data)
	}
	for _, r := range e.emu.Requests() {
		if strings.HasPrefix(r.Path, "/nosql-certs/") {
			for _, h := range []string{"Authorization", "X-Auth-Token", "X-Sdk-Date"} {
				if r.Header.Get(h) != "" {
					t.Errorf("the CA download carried %s", h)
				}
			}
		}
	}

	// Unchanged CA: downloaded again, but no hook.
	if r := runAgent(t, "once", "-config", cfg, "-force"); r.code != 0 {
		t.Fatalf("once -force exited %d:\n%s", r.code, r.stderr)
	}
	if n := len(hookRuns(t, hooks)); n != 1 {
		t.Errorf("hook ran %d times after an unchanged download, want 1", n)
	}
	// Rotated CA: the hook fires, ca.pem holds the new CA.
	e.emu.RotateGeminiDBCA(projID, instID)
	if r := runAgent(t, "once", "-config", cfg, "-force"); r.code != 0 {
		t.Fatalf("once -force exited %d:\n%s", r.code, r.stderr)
	}
	if n := len(hookRuns(t, hooks)); n != 2 {
		t.Errorf("hook ran %d times after a CA rotation, want 2", n)
	}
	got, _ := os.ReadFile(filepath.Join(out, "ca.pem"))
	if !strings.Contains(string(got), strings.TrimSpace(string(e.emu.GeminiDBCAPEM(projID, instID)))) {
		t.Error("ca.pem does not hold the rotated CA")
	}

	t.Run("no Huawei secrets in logs", func(t *testing.T) {
		// Debug logs of a password run and of an AK/SK run, each also failing once (a
		// 401 makes the agent log the API's answer).
		e.emu.Inject(emulator.Fault{Match: "download-link", Status: http.StatusUnauthorized, Times: 1})
		logs := runAgent(t, "once", "-config", cfg, "-force").stderr
		ak, sk := e.emu.HuaweiAKSK()
		skFile := filepath.Join(e.dir, "hw-sk")
		os.WriteFile(skFile, []byte(sk+"\n"), 0o600)
		src, _ := os.ReadFile(cfg)
		aksk := strings.Replace(string(src), `user_name     = "ops"
  password_file = `+fmt.Sprintf("%q", pw)+`
  domain_name   = "acct"`, fmt.Sprintf("access_key = %q\n  secret_key_file = %q", ak, skFile), 1)
		if aksk == string(src) {
			t.Fatal("could not switch the config to AK/SK")
		}
		akCfg := filepath.Join(e.dir, "aksk.hcl")
		os.WriteFile(akCfg, []byte(aksk), 0o644)
		e.emu.Inject(emulator.Fault{Match: "download-link", Status: http.StatusUnauthorized, Times: 1})
		logs += runAgent(t, "once", "-config", akCfg, "-force").stderr
		if r := runAgent(t, "once", "-config", akCfg, "-force"); r.code != 0 {
			t.Fatalf("AK/SK once exited %d:\n%s", r.code, r.stderr)
		} else {
			logs += r.stderr
		}
		if !strings.Contains(string(src), `log_level = "debug"`) {
			t.Error("the config does not log at debug level: the check would miss what only debug logs print")
		}
		secrets := map[string]string{"the IAM password": "correct horse", "the secret key": sk}
		signed := 0
		for _, r := range e.emu.Requests() {
			if v := r.Header.Get("X-Auth-Token"); v != "" {
				secrets["an IAM token"] = v
			}
			if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "SDK-HMAC-SHA256 ") {
				signed++
				if _, sig, ok := strings.Cut(a, "Signature="); ok {
					secrets["a request signature"] = sig
				}
			}
			if r.Path == "/v3/auth/tokens" && !strings.Contains(string(r.Body), "correct horse") {
				t.Error("an IAM token request without the password: the password check checks nothing")
			}
		}
		if signed == 0 || secrets["an IAM token"] == "" {
			t.Fatalf("signed requests %d, token seen %v: the check would check nothing", signed, secrets["an IAM token"] != "")
		}
		for what, v := range secrets {
			if strings.Contains(logs, v) {
				t.Errorf("logs contain %s", what)
			}
		}
	})
}

// TestManualIAMPgpass: a libpq sink with token = true and pgpass = true writes the IAM
// login token and a .pgpass line (host from connectSettings) that switch with the other
// files; psql logs in with the .pgpass (here a PostgreSQL role whose password is the
// token, standing in for Cloud SQL's IAM check) over TLS verified with root.crt.
func TestManualIAMPgpass(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	srvCert, srvKey, err := e.emu.ServerCert(project, instance, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	const user = "agent@e2e-proj.iam"
	pg := pgtest.Start(t, pgtest.Options{ServerCertPEM: srvCert, ServerKeyPEM: srvKey, ClientCAPEM: e.emu.ClientCAPEM(),
		HBA: "hostssl all postgres 127.0.0.1/32 trust clientcert=verify-ca\nhostssl all all 127.0.0.1/32 scram-sha-256\n"})
	out := filepath.Join(e.dir, "out")
	block := strings.Replace(e.instanceBlock("orders", out, "libpq", filepath.Join(e.dir, "hook")),
		`layout = "libpq"`, `layout = "libpq"
    token  = true
    pgpass = true
    user   = "`+user+`"`, 1)
	cfg := e.config(block)
	if r := runAgent(t, "once", "-config", cfg); r.code != 0 {
		t.Fatalf("once exited %d:\n%s", r.code, r.stderr)
	}
	tok, err := os.ReadFile(filepath.Join(out, "token"))
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"token": 0o600, ".pgpass": 0o600} {
		if fi, err := os.Stat(filepath.Join(out, name)); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v %v", name, fi, err)
		}
	}
	ctx := context.Background()
	admin := fmt.Sprintf("sslmode=verify-ca sslcert=%s sslkey=%s sslrootcert=%s",
		filepath.Join(out, "postgresql.crt"), filepath.Join(out, "postgresql.key"), filepath.Join(out, "root.crt"))
	create := fmt.Sprintf(`CREATE ROLE %q LOGIN PASSWORD '%s'`, user, strings.TrimSpace(string(tok)))
	if o, err := pg.Psql(ctx, admin, create, ""); err != nil {
		t.Fatalf("creating the role: %v\n%s", err, o)
	}
	login := fmt.Sprintf("host=127.0.0.1 user=%s dbname=postgres sslmode=verify-ca sslrootcert=%s passfile=%s",
		user, filepath.Join(out, "root.crt"), filepath.Join(out, ".pgpass"))
	if o, err := pg.Psql(ctx, login, "select current_user", ""); err != nil || !strings.Contains(o, user) {
		t.Fatalf("psql with the agent's .pgpass failed: %v\n%s", err, o)
	}
	if o, err := pg.Psql(ctx, strings.Replace(login, filepath.Join(out, ".pgpass"), "/dev/null", 1), "select 1", ""); err == nil {
		t.Errorf("psql logged in without the password; the test proves nothing:\n%s", o)
	}
	logs := runAgent(t, "once", "-config", cfg, "-force").stderr
	if strings.Contains(logs, strings.TrimSpace(string(tok))) {
		t.Error("the login token appears in the logs")
	}
}
