package agent

import (
	"context"
	"sync"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/hook"
)

// watchdogNotifier is implemented by notifiers that speak systemd's watchdog protocol
// (sdnotify.Notifier). WatchdogInterval is how often to ping; 0 disables the watchdog.
type watchdogNotifier interface {
	Watchdog() error
	WatchdogInterval() time.Duration
}

// Step limits of the watchdog: how long one step of a loop may legitimately take.
const (
	// DefaultFetchTimeout bounds one provider Fetch: every API and token request of
	// one refresh (each HTTP request has its own 60 s timeout).
	DefaultFetchTimeout = 3 * time.Minute
	// writeAllowance is what writing every sink of an instance may take (fsyncs on a
	// slow disk).
	writeAllowance = time.Minute
	// signalHookAllowance is what a signal hook may take (it waits up to 5 s for a
	// missing pid file).
	signalHookAllowance = 10 * time.Second
)

// stallMargin is added to a step's own timeout before the step counts as stuck: half
// the timeout, at most 30 s.
func stallMargin(t time.Duration) time.Duration { return min(t/2, 30*time.Second) }

// heartbeat tells the watchdog whether a goroutine makes progress. A goroutine waiting
// for work (a timer, a trigger) is idle, which may last forever; one working on a step
// is busy until a deadline, past which it is stuck. Times are monotonic (time.Now), not
// the agent's injected clock: stalls are real.
type heartbeat struct {
	mu       sync.Mutex
	step     string
	deadline time.Time // zero: idle
}

// busy starts a step that must end within limit.
func (h *heartbeat) busy(step string, limit time.Duration) {
	h.mu.Lock()
	h.step, h.deadline = step, time.Now().Add(limit)
	h.mu.Unlock()
}

// idle says the goroutine waits for work.
func (h *heartbeat) idle() { h.waiting("") }

// waiting says the goroutine waits for others (a key being generated, a free slot for
// an API request) in the middle of a step: no deadline of its own.
func (h *heartbeat) waiting(step string) {
	h.mu.Lock()
	h.step, h.deadline = step, time.Time{}
	h.mu.Unlock()
}

// quiet reports whether the goroutine waits for work (tests).
func (h *heartbeat) quiet() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.step == "" && h.deadline.IsZero()
}

// stuck reports the step that overran its deadline at now, if any.
func (h *heartbeat) stuck(now time.Time) (step string, over time.Duration, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.deadline.IsZero() || now.Before(h.deadline) {
		return "", 0, false
	}
	return h.step, now.Sub(h.deadline), true
}

// hookLimit is how long the hooks of in may take together, plus the margin: an exec
// hook its timeout and what a run may take past it (a command that ignores SIGTERM
// gets SIGKILL 5 s later).
func (in *Instance) hookLimit() time.Duration {
	t := in.HookTimeout
	if t <= 0 {
		switch {
		case in.Spec != nil:
			for _, h := range in.Spec.Hooks {
				if h.Exec != nil {
					t += execTimeoutOrDefault(h.Exec.Timeout) + hook.MaxExecOverrun
				} else {
					t += signalHookAllowance
				}
			}
		default:
			t = time.Duration(len(in.Hooks)) * (hook.DefaultExecTimeout + hook.MaxExecOverrun)
		}
	}
	return t + stallMargin(t)
}

func execTimeoutOrDefault(t time.Duration) time.Duration {
	if t <= 0 {
		return hook.DefaultExecTimeout
	}
	return t
}

// fetchLimit is how long one fetch may take before its loop counts as stuck.
func (d *daemon) fetchLimit() time.Duration {
	return d.o.FetchTimeout + stallMargin(d.o.FetchTimeout)
}

// healthy reports whether the supervisor and every instance loop make progress; when
// not, it names what is stuck.
func (d *daemon) healthy(now time.Time) (ok bool, who, step string, over time.Duration) {
	if step, over, stuck := d.hb.stuck(now); stuck {
		return false, "supervisor", step, over
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, l := range d.loops {
		if step, over, stuck := l.hb.stuck(now); stuck {
			return false, name, step, over
		}
	}
	return true, "", "", 0
}

// runWatchdog pings systemd's watchdog every interval while the daemon is healthy, and
// stops pinging while something is stuck, so that systemd restarts the agent.
func (d *daemon) runWatchdog(ctx context.Context, n watchdogNotifier, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	reported := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, who, step, over := d.healthy(time.Now())
		if !ok {
			if !reported {
				d.a.log.Error("stuck: not pinging the systemd watchdog, so systemd restarts the agent",
					"instance", who, "step", step, "overdue", over.Round(time.Millisecond))
				reported = true
			}
			continue
		}
		reported = false
		if err := n.Watchdog(); err != nil {
			d.a.log.Warn("systemd watchdog ping failed", "err", err)
		}
	}
}
