// Package agent keeps database credentials fresh on disk: it asks a Provider for fresh
// material, checks it, writes it to every Sink of an instance, and runs the instance's
// Hooks when anything changed.
//
// The contracts below are defined here, where they are consumed; providers, sinks and
// hooks live in their own packages and know nothing of each other or of timing.
package agent

import (
	"context"
	"crypto"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/hook"
	"github.com/dbcert-agent/dbcert-agent/config"
)

// Provider obtains fresh material for one instance. It must honour ctx, must not retry on
// its own (the agent owns retries), and returns errors that say whether a retry can help
// through a `Retryable() bool` method, and when the API asked for a pause through
// `RetryAfter() time.Duration`. key is nil for CA-only providers.
type Provider interface {
	Fetch(ctx context.Context, key crypto.Signer) (*bundle.Bundle, error)
}

// Sink stores a bundle so that every file it owns switches at once, and reads back what
// it stores (restart resume, status, self-healing).
type Sink interface {
	Write(ctx context.Context, b *bundle.Bundle) (changed bool, err error)
	Current() (*bundle.Bundle, error)
}

// Hook tells a consumer that an instance's files changed.
type Hook interface {
	// Run's error names the hook ("hook exec /usr/bin/systemctl failed: ...").
	Run(ctx context.Context, ev hook.Event) error
}

// Instance is the runtime form of one configured instance.
type Instance struct {
	Name     string
	Provider Provider
	// NeedsKey is false for CA-only providers (Fetch gets a nil key).
	NeedsKey bool
	Sinks    []Sink
	Hooks    []Hook
	// Event is the template of the hook event: file paths of the first sink.
	Event   hook.Event
	Renewal config.Renewal
	// Spec is the configuration the instance was built from (nil in tests that build
	// instances by hand); reloads compare it to decide what changed.
	Spec *config.Instance
	// HookTimeout is how long the hooks may take together, for the watchdog; default:
	// the sum of the exec hooks' timeouts (from Spec) and 10 s per signal hook, or 30 s
	// per hook without a Spec.
	HookTimeout time.Duration
	// Credentials names the identity the API counts the instance's requests against
	// (its credentials block), and APICalls how many requests one refresh makes
	// (default 1): instances of one identity share a pacer limiter (pacer.go).
	Credentials string
	APICalls    int
	// Err, when set, says why the instance could not be built (for example its
	// credentials could not be loaded); refreshing it fails with this error.
	Err error
}

// Agent runs instances. Build it with New (from a config) or NewWithInstances (tests).
type Agent struct {
	instances []*Instance
	log       *slog.Logger
	now       func() time.Time
	rand      func() float64
	sleep     func(ctx context.Context, d time.Duration) error
	after     func(time.Duration) <-chan time.Time
	// realTimers: after is time.After, so afterFunc can use runtime timers.
	realTimers bool
	// parallel bounds how many instances `once` refreshes at the same time.
	parallel int
	obs      Observer
	ready    *readiness
}

// Options tune an Agent. Zero values are defaults.
type Options struct {
	Logger *slog.Logger                               // default slog.Default()
	Now    func() time.Time                           // default time.Now
	Rand   func() float64                             // jitter source in [0,1); default math/rand/v2
	Sleep  func(context.Context, time.Duration) error // default: timer honouring ctx
	// After is the daemon's timer (renewals, retries, schedules, expiry); default
	// time.After. Tests pair it with Now to run the daemon on a fake clock.
	After func(time.Duration) <-chan time.Time
	// Parallel bounds concurrent refreshes in `once`; default 8.
	Parallel int
	// Observer receives what happens (metrics); nil records nothing.
	Observer Observer
}

// NewWithInstances makes an Agent from ready instances.
func NewWithInstances(instances []*Instance, o Options) *Agent {
	a := &Agent{instances: instances, log: o.Logger, now: o.Now, rand: o.Rand, sleep: o.Sleep, after: o.After, parallel: o.Parallel,
		obs: o.Observer, ready: newReadiness()}
	if a.obs == nil {
		a.obs = nopObserver{}
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.rand == nil {
		a.rand = rand.Float64
	}
	if a.sleep == nil {
		a.sleep = sleepCtx
	}
	if a.after == nil {
		a.after, a.realTimers = time.After, true
	}
	if a.parallel <= 0 {
		a.parallel = 8
	}
	for _, in := range instances {
		a.ready.add(in.Name) // not ready before a loop has looked at its files (/readyz may be served first)
	}
	return a
}

// Ready reports whether every instance of a running daemon has valid files at this
// moment (certificate and login token not expired, files complete and matching), and
// lists those that do not (for /readyz). Permanently failed instances are listed too.
func (a *Agent) Ready() (bool, []string) {
	missing := a.ready.notReady(a.now())
	return len(missing) == 0, missing
}

// Instances returns the agent's instances in config order.
func (a *Agent) Instances() []*Instance { return a.instances }

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retryable reports whether err says a retry can help, and how long the API asked us
// to wait.
func retryable(err error) (bool, time.Duration) {
	var r interface{ Retryable() bool }
	if !errors.As(err, &r) || !r.Retryable() {
		return false, 0
	}
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		return true, ra.RetryAfter()
	}
	return true, 0
}

// afterFunc calls f once d has passed on the agent's clock, unless the returned stop
// function is called first (it reports whether it stopped f). With the real clock it is
// a runtime timer, which costs no goroutine while it waits (an idle instance waits so);
// with an injected After (tests on a fake clock), a goroutine waits on it.
func (a *Agent) afterFunc(d time.Duration, f func()) (stop func() bool) {
	if a.realTimers {
		return time.AfterFunc(d, f).Stop
	}
	ch := a.after(d)
	quit := make(chan struct{})
	var state atomic.Int32 // 0 waiting, 1 fired, 2 stopped
	go func() {
		select {
		case <-ch:
			if state.CompareAndSwap(0, 1) {
				f() // may call stop: it then reports false
			}
		case <-quit:
		}
	}()
	return func() bool {
		if state.CompareAndSwap(0, 2) {
			close(quit)
			return true
		}
		return false
	}
}
