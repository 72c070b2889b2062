package main

// End-to-end checks of configuration hardening: what hooks see, what a hostile config
// file does to the binary.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
)

// TestHookGetsCleanEnvironment: a real hook prints its environment (into the agent's
// log, which captures hook output, and into a file) while the agent holds a secret in
// its environment that the config references through env(). The secret appears in
// neither; the hook gets its DBCERT_* variables, PATH and its configured env.
func TestHookGetsCleanEnvironment(t *testing.T) {
	const secret = "s3cret-keystore-pass-4e1f"
	e := newEnv(t, emulator.Options{})
	out := filepath.Join(e.dir, "out")
	envFile := filepath.Join(e.dir, "hook-env")
	cfg := e.config(fmt.Sprintf(`
instance "cloudsql" "orders" {
  project      = %q
  instance     = %q
  api_endpoint = %q
  sink "file" {
    dir = %q
    pkcs12 { password = env("E2E_KEYSTORE_PASSWORD") }
  }
  hook "exec" {
    command = ["/bin/sh", "-c", "env; env > \"$HOOK_ENV_FILE\""]
    env     = { HOOK_ENV_FILE = %q, APP_MODE = "reload" }
  }
}
`, project, instance, e.emu.URL(), out, envFile))
	r := runAgentEnv(t, []string{"E2E_KEYSTORE_PASSWORD=" + secret, "E2E_UNRELATED=agent-only-value"}, "once", "-config", cfg)
	if r.code != 0 {
		t.Fatalf("once exited %d\n%s", r.code, r.stderr)
	}
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatalf("the hook did not run: %v\n%s", err, r.stderr)
	}
	hookEnv := string(b)
	for _, want := range []string{"DBCERT_INSTANCE=orders", "DBCERT_EVENT=renewed", "DBCERT_CERT_FILE=" + filepath.Join(out, "cert.pem"), "APP_MODE=reload", "PATH="} {
		if !strings.Contains(hookEnv, want) {
			t.Errorf("the hook's environment lacks %q:\n%s", want, hookEnv)
		}
	}
	for where, text := range map[string]string{"the hook's environment": hookEnv, "the agent's output": r.stdout + r.stderr} {
		if strings.Contains(text, secret) {
			t.Errorf("the secret appears in %s:\n%s", where, text)
		}
		if strings.Contains(text, "E2E_KEYSTORE_PASSWORD") || strings.Contains(text, "agent-only-value") {
			t.Errorf("the agent's environment reached %s:\n%s", where, text)
		}
	}
	if !strings.Contains(r.stderr, "APP_MODE=reload") {
		t.Errorf("the hook's output was not logged (the check above would be vacuous):\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, `hook="exec /bin/sh"`) || strings.Contains(r.stderr, "HOOK_ENV_FILE\\\"") {
		t.Errorf("hook log lines do not name the hook briefly:\n%s", r.stderr)
	}
}

// TestStopSignalEndsEveryCommand: SIGTERM and SIGINT end every command promptly, also
// those that do not watch for cancellation. The config reads a FIFO through file(), so
// loading it blocks until the signal.
func TestStopSignalEndsEveryCommand(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "agent.hcl")
	src := fmt.Sprintf(`instance "cloudsql" "orders" {
  project  = file(%q)
  instance = "i"
  sink "file" { dir = %q }
}
`, fifo, filepath.Join(dir, "out"))
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"validate", "-config", cfg},
		{"status", "-config", cfg},
		{"once", "-config", cfg},
		{"reset-ssl", "-config", cfg, "-instance", "orders", "-yes"},
		{"run", "-config", cfg},
	} {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
			t.Run(args[0]+" "+sig.String(), func(t *testing.T) {
				cmd := exec.Command(binary, args...)
				var errb bytes.Buffer
				cmd.Stderr = &errb
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				done := make(chan error, 1)
				go func() { done <- cmd.Wait() }()
				// Wait until the command is blocked opening the FIFO.
				deadline := time.Now().Add(10 * time.Second)
				for !blockedOnFIFO(cmd.Process.Pid) {
					if time.Now().After(deadline) {
						cmd.Process.Kill()
						t.Fatalf("the command never opened the FIFO\n%s", errb.String())
					}
					time.Sleep(10 * time.Millisecond)
				}
				cmd.Process.Signal(sig)
				select {
				case err := <-done:
					var ee *exec.ExitError
					if !errors.As(err, &ee) || ee.ExitCode() == 0 {
						t.Errorf("exit = %v, want a failure", err)
					}
					if strings.Contains(errb.String(), "goroutine ") {
						t.Errorf("crashed:\n%s", errb.String())
					}
				case <-time.After(10 * time.Second): // a hang detector; the grace is 1 s
					cmd.Process.Kill()
					<-done
					t.Fatalf("%v did not end after %v\n%s", args, sig, errb.String())
				}
			})
		}
	}
}

// blockedOnFIFO reports whether pid sleeps in the kernel's FIFO open.
func blockedOnFIFO(pid int) bool {
	// Any thread of the process waiting in fifo_open.
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/wchan", pid))
	for _, w := range tasks {
		if b, _ := os.ReadFile(w); strings.Contains(string(b), "wait_for_partner") || strings.Contains(string(b), "fifo") {
			return true
		}
	}
	return false
}

// TestValidateHostileConfigs: files that would crash HCL's parser or flood the
// terminal end validate with exit 2 and a short report naming file:line:col.
func TestValidateHostileConfigs(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"parens.hcl":  "a = " + strings.Repeat("(", 6<<20),
		"interp.hcl":  "instance \"cloudsql\" \"x\" {\n  project = \"" + strings.Repeat("${", 32<<10) + "\"\n}\n" + strings.Repeat("# filler\n", 300),
		"bangs.hcl":   "a = " + strings.Repeat("!", 1<<20-10) + "true\n",
		"invalid.hcl": "b = \"x\"\nc = " + strings.Repeat("\x01", 64<<10) + "\n",
		"percent.hcl": "a = \"" + strings.Repeat("%", 512<<10) + "\"\n",
	}
	for name, src := range files {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			r := runAgent(t, "validate", "-config", p)
			if r.code != 2 {
				t.Errorf("exit %d, want 2", r.code)
			}
			for _, bad := range []string{"goroutine ", "panic:", "fatal error", "stack overflow"} {
				if strings.Contains(r.stderr, bad) {
					t.Fatalf("validate crashed (%q):\n%.2000s", bad, r.stderr)
				}
			}
			if !strings.Contains(r.stderr, p+":") {
				t.Errorf("no file:line:col in:\n%.2000s", r.stderr)
			}
			if len(r.stderr) > 16<<10 {
				t.Errorf("%d bytes of diagnostics:\n%.2000s", len(r.stderr), r.stderr)
			}
		})
	}
}

// TestRunKeepsConfigOnHostileReload: replacing the config of a running daemon with a
// file that would crash HCL's parser (deep nesting) or flood the log is reported once,
// briefly, and the daemon keeps running the previous configuration.
func TestRunKeepsConfigOnHostileReload(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	out := filepath.Join(e.dir, "orders")
	cfg := e.config(e.instanceBlock("orders", out, "pem", filepath.Join(e.dir, "hook")))
	agent := startRun(t, nil, "-config", cfg)
	logs := &agent.logs
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if err, ok := agent.exited(); ok {
				t.Fatalf("the agent exited (%v) while waiting for %s", err, what)
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("the first files", func() bool { _, err := os.Stat(filepath.Join(out, "key.pem")); return err == nil })
	for i, bad := range []string{
		"a = " + strings.Repeat("(", 1<<20-10),
		"a = \"" + strings.Repeat("${", 64<<10) + "\"\n",
		"b = " + strings.Repeat("\x01", 64<<10) + "\n",
	} {
		before := strings.Count(logs.String(), "still running the previous one")
		tmp := cfg + ".new"
		if err := os.WriteFile(tmp, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfg); err != nil {
			t.Fatal(err)
		}
		waitFor(fmt.Sprintf("the reload error %d", i), func() bool {
			return strings.Count(logs.String(), "still running the previous one") > before
		})
	}
	if l := logs.String(); strings.Contains(l, "goroutine ") || len(l) > 256<<10 {
		t.Errorf("the log is %d bytes or shows a crash", len(l))
	}
	if err, ok := agent.exited(); ok {
		t.Fatalf("the agent exited: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "key.pem")); err != nil {
		t.Errorf("the files are gone: %v", err)
	}
}

// TestOnceStopsOnSignalWhileRetrying: after loading its config, once stops on its own
// when signalled in the middle of retrying a failing API.
func TestOnceStopsOnSignalWhileRetrying(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	e.emu.Inject(emulator.Fault{Match: "generateEphemeralCert", Status: 503})
	cfg := e.config(e.instanceBlock("orders", filepath.Join(e.dir, "out"), "pem", filepath.Join(e.dir, "hook")))
	cmd := exec.Command(binary, "once", "-config", cfg, "-timeout", "5m")
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "will retry") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			t.Fatalf("no retry logged:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("exit = %v, want 1", err)
		}
	case <-time.After(10 * time.Second): // a hang detector
		cmd.Process.Kill()
		<-done
		t.Fatalf("once did not stop on SIGTERM:\n%s", logs.String())
	}
}
