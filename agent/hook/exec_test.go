//go:build unix

package hook

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// recorder is a slog.Handler that keeps records.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// attrs returns the attributes of the records with message msg.
func (r *recorder) attrs(msg string) []map[string]slog.Value {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]slog.Value
	for _, rec := range r.recs {
		if rec.Message != msg {
			continue
		}
		m := map[string]slog.Value{}
		rec.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value; return true })
		out = append(out, m)
	}
	return out
}

func (r *recorder) dump() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, rec := range r.recs {
		b.WriteString(rec.Message)
		rec.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
		b.WriteByte('\n')
	}
	return b.String()
}

func newShExec(t *testing.T, script string, o ExecOptions) (*Exec, *recorder) {
	t.Helper()
	rec := &recorder{}
	o.Command = []string{"/bin/sh", "-c", script}
	o.Logger = slog.New(rec)
	h, err := NewExec(o)
	if err != nil {
		t.Fatal(err)
	}
	return h, rec
}

var testEvent = Event{
	Instance: "orders",
	Kind:     KindRenewed,
	Dir:      "/var/lib/dbcert-agent/orders",
	CertFile: "/var/lib/dbcert-agent/orders/cert.pem",
	KeyFile:  "/var/lib/dbcert-agent/orders/key.pem",
	CAFile:   "/var/lib/dbcert-agent/orders/ca.pem",
	NotAfter: time.Date(2026, 1, 2, 4, 5, 6, 0, time.FixedZone("X", 3600)),
}

// TestExecEnvironment: a hook gets PATH, HOME, LANG, LC_*, TZ, its env and the
// DBCERT_* variables, and nothing else of the agent's environment.
func TestExecEnvironment(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	t.Setenv("HOOK_TEST_SECRETISH", "agent-env-value-77")
	t.Setenv("DBCERT_INSTANCE", "stale-from-agent-env")
	t.Setenv("HOME", "/home/agent")
	t.Setenv("LANG", "C.UTF-8")
	t.Setenv("LC_TIME", "de_DE.UTF-8")
	t.Setenv("TZ", "Europe/Berlin")
	h, rec := newShExec(t, `env > "$HOOK_TEST_OUT"; echo done`, ExecOptions{Env: map[string]string{"HOOK_TEST_OUT": out, "APP_MODE": "reload"}})
	if err := h.Run(context.Background(), testEvent); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	want := map[string]string{
		"DBCERT_INSTANCE":  "orders",
		"DBCERT_EVENT":     "renewed",
		"DBCERT_DIR":       testEvent.Dir,
		"DBCERT_CERT_FILE": testEvent.CertFile,
		"DBCERT_KEY_FILE":  testEvent.KeyFile,
		"DBCERT_CA_FILE":   testEvent.CAFile,
		"DBCERT_NOT_AFTER": "2026-01-02T03:05:06Z",
		"PATH":             os.Getenv("PATH"),
		"HOME":             "/home/agent",
		"LANG":             "C.UTF-8",
		"LC_TIME":          "de_DE.UTF-8",
		"TZ":               "Europe/Berlin",
		"APP_MODE":         "reload",
		"HOOK_TEST_OUT":    out,
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	for k := range env {
		if _, ok := want[k]; !ok && k != "PWD" && k != "SHLVL" && k != "_" { // the shell's own
			t.Errorf("the hook got %s from the agent's environment", k)
		}
	}
	if strings.Contains(string(b), "agent-env-value-77") {
		t.Error("the agent's environment reached the hook")
	}
	if strings.Contains(rec.dump(), "agent-env-value-77") || strings.Contains(rec.dump(), "DBCERT_") {
		t.Errorf("environment leaked into the log:\n%s", rec.dump())
	}
	if got := rec.attrs("hook output"); len(got) != 1 || got[0]["output"].String() != "done\n" || got[0]["hook"].String() != "exec /bin/sh" {
		t.Errorf("output records = %v", got)
	}
}

func TestExecEnvOptions(t *testing.T) {
	for _, env := range []map[string]string{{"DBCERT_CERT_FILE": "/x"}, {"9X": "y"}, {"A-B": "y"}, {"": "y"}, {"OK": "a\x00b"}} {
		if _, err := NewExec(ExecOptions{Command: []string{"/bin/true"}, Env: env}); err == nil {
			t.Errorf("NewExec accepted env %q", env)
		}
	}
	// Without PATH in the agent's environment the hook still gets a usable one.
	h, err := NewExec(ExecOptions{Command: []string{"/bin/true"}, Environ: func() []string { return []string{"SECRET=x", "HOME=/h"} }})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(h.env, " "); got != "HOME=/h PATH="+defaultPath {
		t.Errorf("env = %q", got)
	}
}

func TestExecCAOnlyEvent(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	h, _ := newShExec(t, `printf '%s|%s|%s|%s' "$DBCERT_EVENT" "$DBCERT_CERT_FILE" "$DBCERT_CA_FILE" "$DBCERT_NOT_AFTER" > "$HOOK_TEST_OUT"`, ExecOptions{Env: map[string]string{"HOOK_TEST_OUT": out}})
	ev := Event{Instance: "cache", Kind: KindCAChanged, Dir: "/etc/ssl/c", CAFile: "/etc/ssl/c/ca.pem"}
	if err := h.Run(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	if string(b) != "ca-changed||/etc/ssl/c/ca.pem|" {
		t.Errorf("got %q", b)
	}
}

func TestExecFailure(t *testing.T) {
	h, rec := newShExec(t, `echo first; echo "boom: reload failed" >&2; exit 3`, ExecOptions{})
	err := h.Run(context.Background(), testEvent)
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"exit status 3", "boom: reload failed", "/bin/sh"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("error does not wrap *exec.ExitError with code 3: %v", err)
	}
	if got := rec.attrs("hook output"); len(got) != 1 || got[0]["output"].String() != "first\nboom: reload failed\n" {
		t.Errorf("output records = %v", got)
	}
}

func TestExecNotStartable(t *testing.T) {
	h, err := NewExec(ExecOptions{Command: []string{filepath.Join(t.TempDir(), "missing")}})
	if err != nil {
		t.Fatal(err)
	}
	err = h.Run(context.Background(), testEvent)
	if err == nil || !strings.Contains(err.Error(), "could not be started") {
		t.Errorf("err = %v", err)
	}
}

func TestExecOutputCapped(t *testing.T) {
	h, rec := newShExec(t, `head -c 204800 /dev/zero | tr '\0' a; echo; echo the-end`, ExecOptions{})
	if err := h.Run(context.Background(), testEvent); err != nil {
		t.Fatal(err)
	}
	got := rec.attrs("hook output")
	if len(got) != 1 {
		t.Fatalf("records: %v", len(got))
	}
	if n := len(got[0]["output"].String()); n != DefaultMaxOutput {
		t.Errorf("logged %d bytes, want %d", n, DefaultMaxOutput)
	}
	if !got[0]["truncated"].Bool() || got[0]["output_bytes"].Int64() != 204800+1+8 {
		t.Errorf("truncation not noted: %v %v", got[0]["truncated"], got[0]["output_bytes"])
	}

	// The last line still reaches the error of a failing hook.
	h, _ = newShExec(t, `head -c 204800 /dev/zero | tr '\0' a; echo; echo final words; exit 1`, ExecOptions{MaxOutput: 1024})
	err := h.Run(context.Background(), testEvent)
	if err == nil || !strings.Contains(err.Error(), `"final words"`) {
		t.Errorf("err = %v", err)
	}
}

// gone reports whether pid no longer runs (absent or a zombie).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] == 'Z' || b[i+2] == 'X'
	}
	return false
}

func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	tests := []struct {
		name   string
		script string
	}{
		{"children die on SIGTERM", `sleep 100 & echo $! > "$HOOK_TEST_PID"; sleep 100`},
		{"children ignore SIGTERM", `trap '' TERM; sleep 100 & echo $! > "$HOOK_TEST_PID"; wait`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			h, _ := newShExec(t, tt.script, ExecOptions{Timeout: 300 * time.Millisecond, Env: map[string]string{"HOOK_TEST_PID": pidFile}})
			h.grace = 300 * time.Millisecond
			start := time.Now()
			err := h.Run(context.Background(), testEvent)
			elapsed := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), "killed after the 300ms timeout") || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v", err)
			}
			if elapsed > 3*time.Second {
				t.Errorf("Run took %v", elapsed)
			}
			b, err := os.ReadFile(pidFile)
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(2 * time.Second)
			for !gone(pid) {
				if time.Now().After(deadline) {
					syscall.Kill(pid, syscall.SIGKILL)
					t.Fatalf("grandchild %d survived the hook's timeout", pid)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// readPID reads the pid a hook script wrote, and makes sure the process is gone at
// clean-up whatever the test found.
func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	return pid
}

// TestExecLeftoverProcesses: a hook ends when its command exits, and its exit status
// is the result, whatever the timeout. Processes it started that still hold its output
// after the grace period are killed (they would otherwise outlive the hook and the
// agent); one that let go of the output is left alone.
func TestExecLeftoverProcesses(t *testing.T) {
	tests := []struct {
		name     string
		script   string
		timeout  time.Duration
		wantErr  string // "" for success
		killed   bool   // the background process is killed
		lingered bool   // the warning is logged
	}{
		{"holds the output, long timeout", `( trap '' TERM; sleep 100 ) & echo $! > "$HOOK_TEST_PID"; echo hi; exit 0`, 30 * time.Second, "", true, true},
		{"holds the output, timeout shorter than the grace", `( trap '' TERM; sleep 100 ) & echo $! > "$HOOK_TEST_PID"; echo hi; exit 0`, 300 * time.Millisecond, "", true, true},
		{"holds the output, command fails", `sleep 100 & echo $! > "$HOOK_TEST_PID"; echo hi; exit 3`, 30 * time.Second, "exit status 3", true, true},
		{"let go of the output", `sleep 100 >/dev/null 2>&1 & echo $! > "$HOOK_TEST_PID"; echo hi; exit 0`, 30 * time.Second, "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			h, rec := newShExec(t, tt.script, ExecOptions{Timeout: tt.timeout, Env: map[string]string{"HOOK_TEST_PID": pidFile}})
			h.grace = 1 * time.Second
			err := h.Run(context.Background(), testEvent)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Run = %v, want success (the command exited 0)", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Run = %v, want %q", err, tt.wantErr)
			}
			pid := readPID(t, pidFile)
			deadline := time.Now().Add(2 * time.Second)
			for tt.killed && !gone(pid) {
				if time.Now().After(deadline) {
					t.Fatalf("process %d the hook left holding its output survived", pid)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if !tt.killed && gone(pid) {
				t.Errorf("process %d, which let go of the output, was killed", pid)
			}
			if got := len(rec.attrs("hook exited but processes it started still held its output; killed what was left of its process group and closed the output")); (got == 1) != tt.lingered {
				t.Errorf("%d warnings about leftover processes, want lingered=%v\n%s", got, tt.lingered, rec.dump())
			}
			if out := rec.attrs("hook output"); len(out) != 1 || out[0]["output"].String() != "hi\n" {
				t.Errorf("hook output records = %v, want one with %q", out, "hi\n")
			}
		})
	}
}

// TestExecCanceledWhileOutputHeld: a hook whose command exited, and whose leftover
// processes hold its output, does not hold its caller past a cancellation: what is left
// is killed at once.
func TestExecCanceledWhileOutputHeld(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	h, _ := newShExec(t, `sleep 100 & echo $! > "$HOOK_TEST_PID"; exit 0`, ExecOptions{Timeout: time.Minute, Env: map[string]string{"HOOK_TEST_PID": pidFile}})
	h.grace = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	if err := h.Run(ctx, testEvent); err != nil {
		t.Fatalf("Run = %v, want success (the command exited 0)", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %v after the cancellation, want it to return at once", d)
	}
	pid := readPID(t, pidFile)
	deadline := time.Now().Add(2 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("leftover process %d survived the cancellation", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExecParentCanceled(t *testing.T) {
	h, _ := newShExec(t, `sleep 100`, ExecOptions{Timeout: 10 * time.Second})
	h.grace = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := h.Run(ctx, testEvent)
	if err == nil || !strings.Contains(err.Error(), "was stopped after") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v", err)
	}
}

func TestNewExec(t *testing.T) {
	tests := []struct {
		name     string
		o        ExecOptions
		wantErr  string
		wantPath string
		wantStr  string
	}{
		{name: "empty", o: ExecOptions{}, wantErr: "command is empty"},
		{name: "empty name", o: ExecOptions{Command: []string{""}}, wantErr: "command is empty"},
		{name: "relative path", o: ExecOptions{Command: []string{"./reload.sh"}}, wantErr: "absolute path"},
		{name: "not executable", o: ExecOptions{Command: []string{"/etc/passwd"}}, wantErr: "not executable"},
		{name: "directory", o: ExecOptions{Command: []string{"/etc"}}, wantErr: "is a directory"},
		{name: "not on PATH", o: ExecOptions{Command: []string{"no-such-program-dbcert"}}, wantErr: "not found on PATH"},
		{name: "negative timeout", o: ExecOptions{Command: []string{"/bin/true"}, Timeout: -1}, wantErr: "negative timeout"},
		{name: "absolute", o: ExecOptions{Command: []string{"/usr/bin/systemctl", "reload", "myapp"}},
			wantPath: "/usr/bin/systemctl", wantStr: "exec /usr/bin/systemctl"},
		{name: "on PATH", o: ExecOptions{Command: []string{"sh", "-c", "echo 'hi there'"}},
			wantStr: `exec sh`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := NewExec(tt.o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !filepath.IsAbs(h.path) || (tt.wantPath != "" && h.path != tt.wantPath) {
				t.Errorf("path = %q", h.path)
			}
			if h.String() != tt.wantStr {
				t.Errorf("String() = %q, want %q", h.String(), tt.wantStr)
			}
			if h.timeout != DefaultExecTimeout || h.maxOutput != DefaultMaxOutput || h.logger == nil {
				t.Errorf("defaults not applied: %+v", h)
			}
		})
	}
}
