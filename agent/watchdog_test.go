package agent

import (
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/hook"
	"github.com/dbcert-agent/dbcert-agent/config"
)

// TestHookLimit: a loop running hooks counts as stuck only after every hook could have
// used its whole run: an exec hook its timeout plus what a run may take past it (the
// SIGKILL grace for a command that ignores SIGTERM, and processes holding its output),
// a signal hook its allowance; then the stall margin (half, at most 30 s).
func TestHookLimit(t *testing.T) {
	exec := func(timeout time.Duration) config.Hook {
		return config.Hook{Kind: config.HookExec, Exec: &config.ExecHook{Command: []string{"/bin/true"}, Timeout: timeout}}
	}
	signal := config.Hook{Kind: config.HookSignal, Signal: &config.SignalHook{PIDFile: "/run/x.pid"}}
	with := func(hs ...config.Hook) *Instance {
		return &Instance{Name: "a", Spec: &config.Instance{Name: "a", Hooks: hs}}
	}
	over := hook.MaxExecOverrun
	tests := []struct {
		name string
		in   *Instance
		want time.Duration
	}{
		{"no hooks", with(), 0},
		{"one short exec hook", with(exec(time.Second)), (time.Second + over) * 3 / 2},
		{"exec hook with the default timeout", with(exec(0)), (hook.DefaultExecTimeout + over) * 3 / 2},
		{"exec and signal hooks", with(exec(2*time.Second), signal), 2*time.Second + over + signalHookAllowance + (2*time.Second+over+signalHookAllowance)/2},
		{"set by the caller", &Instance{Name: "a", HookTimeout: 4 * time.Second}, 6 * time.Second},
		{"hooks without a spec", &Instance{Name: "a", Hooks: []Hook{nil, nil}}, 2*(hook.DefaultExecTimeout+over) + 30*time.Second},
	}
	for _, tt := range tests {
		if got := tt.in.hookLimit(); got != tt.want {
			t.Errorf("%s: hookLimit = %v, want %v", tt.name, got, tt.want)
		}
	}
	// A hook that ignores SIGTERM takes its timeout plus the kill grace: never stuck.
	if h := with(exec(time.Second)); h.hookLimit() < time.Second+5*time.Second {
		t.Errorf("hookLimit %v is shorter than a 1s hook that ignores SIGTERM may take", h.hookLimit())
	}
}
