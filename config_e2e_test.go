package main

// End-to-end checks of configuration hardening: what hooks see, what a hostile config
// file does to the binary.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
)

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
