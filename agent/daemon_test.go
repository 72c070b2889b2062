package agent

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/hook"
	"github.com/dbcert-agent/dbcert-agent/agent/metrics"
	"github.com/dbcert-agent/dbcert-agent/agent/sdnotify"
	"github.com/dbcert-agent/dbcert-agent/config"
)

// fakeClock is the daemon's clock in timing tests: Now stands still until Advance, and
// After fires when Advance passes its deadline.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []clockWaiter
}

type clockWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, clockWaiter{c.now.Add(d), ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !c.now.Before(w.at) {
			w.ch <- c.now
			continue
		}
		kept = append(kept, w)
	}
	c.waiters = kept
}

// testCA issues client certificates for fake providers.
type testCA struct {
	key  *rsa.PrivateKey
	cert *x509.Certificate
}

var sharedTestCA = sync.OnceValues(func() (*testCA, error) {
	key, err := bundle.NewKey()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return &testCA{key: key, cert: cert}, err
})

var serials atomic.Int64

func (ca *testCA) issue(t testing.TB, key crypto.Signer, from time.Time, life time.Duration) *bundle.Bundle {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(100 + serials.Add(1)), Subject: pkix.Name{CommonName: "client"},
		NotBefore: from, NotAfter: from.Add(life)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &bundle.Bundle{Key: key, Chain: []*x509.Certificate{leaf}, CAs: []*x509.Certificate{ca.cert}}
}

func caOnly(t testing.TB) *bundle.Bundle {
	ca, err := sharedTestCA()
	if err != nil {
		t.Fatal(err)
	}
	return &bundle.Bundle{CAs: []*x509.Certificate{ca.cert}}
}

// fakeProvider issues certificates valid from the clock's now for life, or fails with
// the error fail returns (nil: succeed).
type fakeProvider struct {
	t     testing.TB
	clock func() time.Time
	life  time.Duration
	mu    sync.Mutex
	fail  error
	calls int
	block chan struct{} // when set, Fetch blocks on it, ignoring ctx
	host  string        // Bundle.Host of what it issues
}

func (p *fakeProvider) Fetch(ctx context.Context, key crypto.Signer) (*bundle.Bundle, error) {
	p.mu.Lock()
	p.calls++
	fail, block := p.fail, p.block
	p.mu.Unlock()
	if block != nil {
		<-block
	}
	if fail != nil {
		return nil, fail
	}
	if key == nil {
		return caOnly(p.t), nil
	}
	ca, err := sharedTestCA()
	if err != nil {
		return nil, err
	}
	b := ca.issue(p.t, key, p.clock(), p.life)
	b.Host = p.host
	return b, nil
}

func (p *fakeProvider) setFail(err error) {
	p.mu.Lock()
	p.fail = err
	p.mu.Unlock()
}

func (p *fakeProvider) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

// retryErr is an error a retry can help; permErr one it cannot.
type retryErr struct{ msg string }

func (e retryErr) Error() string   { return e.msg }
func (e retryErr) Retryable() bool { return true }

var permErr = errors.New("cloudsql: generateEphemeralCert: 403 Forbidden: the caller lacks cloudsql.instances.connect")

// memSink keeps one bundle in memory and reads it back with its metadata (Issued,
// TokenExpiry), as a file sink stores them in the generation.
type memSink struct {
	mu     sync.Mutex
	b      *bundle.Bundle
	writes int
	fail   error
}

// String names the sink in logs (fmt would otherwise read its fields, mutex and all,
// without the lock).
func (s *memSink) String() string { return "memory sink" }

func (s *memSink) Write(_ context.Context, b *bundle.Bundle) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return false, s.fail
	}
	s.writes++
	changed := !bundle.Equal(s.b, b)
	c := *b
	s.b = &c
	return changed, nil
}

func (s *memSink) Current() (*bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b == nil {
		return nil, errNotStored
	}
	c := *s.b
	return &c, nil
}

func (s *memSink) set(b *bundle.Bundle) {
	s.mu.Lock()
	s.b = b
	s.mu.Unlock()
}

// fakeDaemon runs a daemon of instances on clock (nil: the real one) in the background.
func fakeDaemon(t *testing.T, clock *fakeClock, o fakeRunOptions, ins ...*Instance) (*daemon, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", buf.String())
		}
	})
	opts := Options{Logger: log, Rand: func() float64 { return 0.5 }}
	if clock != nil {
		opts.Now, opts.After = clock.Now, clock.After
	}
	if o.Observer != nil {
		opts.Observer = o.Observer
	}
	a := NewWithInstances(ins, opts)
	d, err := newDaemon(a, o.RunOptions)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not stop within 10s")
		}
	})
	return d, buf
}

// settle waits until every loop of d waits for work (its timer, a trigger): what the
// fake clock's time asks for is done.
func settle(t *testing.T, d *daemon) {
	t.Helper()
	time.Sleep(20 * time.Millisecond) // let woken goroutines run
	quietFor := 0
	deadline := time.Now().Add(10 * time.Second)
	for quietFor < 5 {
		if time.Now().After(deadline) {
			t.Fatal("the daemon did not settle within 10s")
		}
		time.Sleep(10 * time.Millisecond)
		all := true
		d.mu.Lock()
		for _, l := range d.loops {
			all = all && l.hb.quiet()
		}
		d.mu.Unlock()
		if all {
			quietFor++
		} else {
			quietFor = 0
		}
	}
}

// RunOptions with an Observer, for fakeDaemon.
type fakeRunOptions struct {
	RunOptions
	Observer Observer
}

func TestReadinessFollowsExpiryNotHistory(t *testing.T) {
	clock := newFakeClock()
	p := &fakeProvider{t: t, clock: clock.Now, life: time.Hour}
	sink := &memSink{}
	n := &fakeNotifier{}
	reg := metrics.NewRegistry()
	m := NewMetrics(reg)
	m.now = clock.Now
	d, _ := fakeDaemon(t, clock, fakeRunOptions{RunOptions: RunOptions{Notifier: n}, Observer: m},
		&Instance{Name: "a", Provider: p, NeedsKey: true, Sinks: []Sink{sink}})
	eventually(t, 5*time.Second, "READY=1", func() bool { return n.count("READY") == 1 })
	if ok, _ := d.a.Ready(); !ok {
		t.Fatal("not ready with fresh files")
	}
	valid := func() float64 { var b strings.Builder; _ = reg.WriteText(&b); v, _ := m.valid.Value("a"); return v }
	if v := valid(); v != 1 {
		t.Fatalf("dbcert_files_valid = %v with fresh files", v)
	}
	// The API goes away for longer than the certificate lives.
	p.setFail(retryErr{"503 Service Unavailable"})
	for range 80 {
		clock.Advance(time.Minute)
		time.Sleep(5 * time.Millisecond)
	}
	settle(t, d)
	if ok, missing := d.a.Ready(); ok || len(missing) != 1 || missing[0] != "a" {
		t.Errorf("Ready() = %v, %v after the certificate expired; want false, [a]", ok, missing)
	}
	if v := valid(); v != 0 {
		t.Errorf("dbcert_files_valid = %v after the certificate expired", v)
	}
	eventually(t, 5*time.Second, "STATUS= to say so", func() bool {
		return strings.HasPrefix(n.lastStatus(), "0 of 1 instance(s) with valid files; waiting for files: a")
	})
}

func TestReadyWithPermanentlyFailedInstance(t *testing.T) {
	clock := newFakeClock()
	good := &fakeProvider{t: t, clock: clock.Now, life: time.Hour}
	bad := &fakeProvider{t: t, clock: clock.Now, life: time.Hour, fail: permErr}
	flaky := &fakeProvider{t: t, clock: clock.Now, life: time.Hour, fail: retryErr{"503"}}
	n := &fakeNotifier{}
	reg := metrics.NewRegistry()
	m := NewMetrics(reg)
	m.now = clock.Now
	d, _ := fakeDaemon(t, clock, fakeRunOptions{RunOptions: RunOptions{Notifier: n}, Observer: m},
		&Instance{Name: "good", Provider: good, NeedsKey: true, Sinks: []Sink{&memSink{}}},
		&Instance{Name: "bad", Provider: bad, NeedsKey: true, Sinks: []Sink{&memSink{}}},
		&Instance{Name: "flaky", Provider: flaky, NeedsKey: true, Sinks: []Sink{&memSink{}}})
	eventually(t, 5*time.Second, "three attempts", func() bool { return good.count() == 1 && bad.count() == 1 && flaky.count() >= 1 })
	settle(t, d)
	if n.count("READY") != 0 {
		t.Fatal("READY=1 while an instance still retries a transient error")
	}
	flaky.setFail(nil)
	clock.Advance(10 * time.Second) // past the first retry
	eventually(t, 5*time.Second, "READY=1 with one instance failed permanently", func() bool { return n.count("READY") == 1 })
	if s := n.lastStatus(); !strings.Contains(s, "2 of 3") || !strings.Contains(s, "failed permanently (see the log): bad") {
		t.Errorf("STATUS=%q does not name the failed instance", s)
	}
	if ok, missing := d.a.Ready(); ok || fmt.Sprint(missing) != "[bad]" {
		t.Errorf("Ready() = %v, %v; want false, [bad] (/readyz 503)", ok, missing)
	}
	var b strings.Builder
	_ = reg.WriteText(&b)
	if !strings.Contains(b.String(), `dbcert_failed_permanently{instance="bad"} 1`) || !strings.Contains(b.String(), `dbcert_files_valid{instance="bad"} 0`) {
		t.Errorf("metrics do not show the failed instance:\n%s", b.String())
	}
}

// TestRestartHonoursStoredTokenExpiry: files whose login token (stored with them) has
// expired are not valid, so a restarted daemon refreshes at once; a token that expires
// before the certificate drives the next renewal.
func TestRestartHonoursStoredTokenExpiry(t *testing.T) {
	for _, tc := range []struct {
		name        string
		tokenLeft   time.Duration
		wantAtStart bool
	}{
		{"token expired while the agent was down", -time.Minute, true},
		{"token expires before the certificate", 12 * time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			ca, _ := sharedTestCA()
			key, _ := bundle.NewKey()
			b := ca.issue(t, key, clock.Now().Add(-10*time.Minute), time.Hour)
			b.TokenExpiry = clock.Now().Add(tc.tokenLeft)
			b.Issued = clock.Now().Add(-10 * time.Minute)
			sink := &memSink{}
			sink.set(b)
			p := &fakeProvider{t: t, clock: clock.Now, life: time.Hour}
			d, _ := fakeDaemon(t, clock, fakeRunOptions{}, &Instance{Name: "a", Provider: p, NeedsKey: true, Sinks: []Sink{sink},
				Renewal: config.Renewal{BeforeFraction: config.DefaultRenewFraction}})
			settle(t, d)
			if got := p.count() == 1; got != tc.wantAtStart {
				t.Fatalf("refreshed at start: %v, want %v", got, tc.wantAtStart)
			}
			if tc.wantAtStart {
				return
			}
			if ok, _ := d.a.Ready(); !ok {
				t.Error("not ready with a valid token")
			}
			// Effective life 22 min (10 before now + 12 left): renewal a third (7m20s) plus
			// half the 5% jitter (33s) before the token's expiry, 4m07s from now; the
			// certificate alone would wait about 28 minutes.
			clock.Advance(4 * time.Minute)
			settle(t, d)
			if p.count() != 0 {
				t.Fatal("renewed too early")
			}
			clock.Advance(time.Minute)
			eventually(t, 5*time.Second, "a renewal before the token expires", func() bool { return p.count() == 1 })
		})
	}
}

// TestCAOnlyScheduleCountsFromLastDownload: a restarted CA-only instance downloads
// again when its schedule says so counted from the last download stored with the files,
// not from the start of the agent.
func TestCAOnlyScheduleCountsFromLastDownload(t *testing.T) {
	sched, err := cron.ParseStandard("@every 6h")
	if err != nil {
		t.Fatal(err)
	}
	spec := &config.Instance{Name: "cache", Type: config.TypeGeminiDB, Schedule: &config.Schedule{Spec: "@every 6h", Schedule: sched}}
	for _, tc := range []struct {
		name      string
		ago       time.Duration
		wantStart bool
	}{
		{"last download 7h ago: at once", 7 * time.Hour, true},
		{"last download 5h ago: in an hour", 5 * time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			b := caOnly(t)
			b.Issued = clock.Now().Add(-tc.ago)
			sink := &memSink{}
			sink.set(b)
			p := &fakeProvider{t: t, clock: clock.Now}
			d, _ := fakeDaemon(t, clock, fakeRunOptions{}, &Instance{Name: "cache", Provider: p, Sinks: []Sink{sink}, Spec: spec})
			settle(t, d)
			if got := p.count() == 1; got != tc.wantStart {
				t.Fatalf("downloaded at start: %v, want %v", got, tc.wantStart)
			}
			if tc.wantStart {
				// The next one is 6 h after this download.
				clock.Advance(5 * time.Hour)
				settle(t, d)
				if p.count() != 1 {
					t.Fatalf("%d downloads 5 h after the last; want none", p.count()-1)
				}
				clock.Advance(time.Hour + time.Second)
				eventually(t, 5*time.Second, "the scheduled download", func() bool { return p.count() == 2 })
				return
			}
			clock.Advance(59 * time.Minute)
			settle(t, d)
			if p.count() != 0 {
				t.Fatal("downloaded before the schedule")
			}
			clock.Advance(time.Minute + time.Second)
			eventually(t, 5*time.Second, "the download 6 h after the last one", func() bool { return p.count() == 1 })
		})
	}
}

// TestRenewBeforeLongerThanLifetime: renew_before = 2h with 1h certificates would renew
// right after every fetch; the daemon warns once and renews at the default fraction.
func TestRenewBeforeLongerThanLifetime(t *testing.T) {
	clock := newFakeClock()
	p := &fakeProvider{t: t, clock: clock.Now, life: time.Hour}
	d, buf := fakeDaemon(t, clock, fakeRunOptions{}, &Instance{Name: "a", Provider: p, NeedsKey: true, Sinks: []Sink{&memSink{}},
		Renewal: config.Renewal{Before: 2 * time.Hour}})
	eventually(t, 5*time.Second, "the first certificate", func() bool { return p.count() == 1 })
	settle(t, d)
	if p.count() != 1 {
		t.Fatalf("%d certificates right after the first", p.count())
	}
	for range 3 {
		clock.Advance(41 * time.Minute) // renewal at 38.5 min (a third of 1 h and jitter left)
		want := p.count() + 1
		eventually(t, 5*time.Second, "a renewal at two thirds of the lifetime", func() bool { return p.count() == want })
		settle(t, d)
		if p.count() != want {
			t.Fatalf("%d certificates right after a renewal", p.count()-want)
		}
	}
	if n := strings.Count(buf.String(), "renew_before is not shorter"); n != 1 {
		t.Errorf("the renew_before warning was logged %d times, want once", n)
	}
}

// blockingHook blocks until released, ignoring ctx (a wedged hook).
type blockingHook struct{ release chan struct{} }

func (h blockingHook) Run(context.Context, hook.Event) error { <-h.release; return nil }

// watchdogNotifier records WATCHDOG=1 pings.
type pingNotifier struct {
	fakeNotifier
	pings atomic.Int64
}

func (n *pingNotifier) Watchdog() error                 { n.pings.Add(1); return nil }
func (n *pingNotifier) WatchdogInterval() time.Duration { return 20 * time.Millisecond }

// TestWatchdogStopsWhenALoopIsStuck: the pings go on while every loop makes progress
// and stop when one is stuck past its limit: a provider that ignores its context, or a
// hook that never returns.
func TestWatchdogStopsWhenALoopIsStuck(t *testing.T) {
	for _, stall := range []string{"fetch", "hook"} {
		t.Run(stall, func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			healthy := &fakeProvider{t: t, clock: time.Now, life: time.Hour}
			stuck := &fakeProvider{t: t, clock: time.Now, life: time.Hour}
			var hooks []Hook
			if stall == "hook" {
				hooks = []Hook{blockingHook{release}}
			}
			n := &pingNotifier{}
			gate := make(chan struct{})
			stuck.block = gate
			_, buf := fakeDaemon(t, nil, fakeRunOptions{RunOptions: RunOptions{Notifier: n, FetchTimeout: 200 * time.Millisecond}},
				&Instance{Name: "healthy", Provider: healthy, NeedsKey: true, Sinks: []Sink{&memSink{}}},
				&Instance{Name: "stuck", Provider: stuck, NeedsKey: true, Sinks: []Sink{&memSink{}}, Hooks: hooks, HookTimeout: 200 * time.Millisecond})
			eventually(t, 5*time.Second, "pings", func() bool { return n.pings.Load() >= 3 })
			if stall == "hook" {
				close(gate) // the fetch returns; the hook hangs
			} else {
				defer close(gate)
			}
			eventually(t, 10*time.Second, "the pings to stop", func() bool {
				before := n.pings.Load()
				time.Sleep(200 * time.Millisecond)
				return n.pings.Load() == before
			})
			if !strings.Contains(buf.String(), "not pinging the systemd watchdog") || !strings.Contains(buf.String(), "instance=stuck") {
				t.Errorf("the stall was not logged with the instance")
			}
		})
	}
}

func TestWatchdogPingsWhileHealthy(t *testing.T) {
	p := &fakeProvider{t: t, clock: time.Now, life: time.Hour}
	n := &pingNotifier{}
	fakeDaemon(t, nil, fakeRunOptions{RunOptions: RunOptions{Notifier: n, FetchTimeout: 200 * time.Millisecond}},
		&Instance{Name: "a", Provider: p, NeedsKey: true, Sinks: []Sink{&memSink{}}})
	eventually(t, 5*time.Second, "files", func() bool { return p.count() == 1 })
	start := n.pings.Load()
	eventually(t, 5*time.Second, "pings to go on while idle for longer than every limit", func() bool { return n.pings.Load() >= start+30 })
}

// TestStatusTokenExpired: `status` judges the files now, login token included: a
// certificate still valid whose stored login token has expired is "expired".
func TestStatusTokenExpired(t *testing.T) {
	now := time.Now()
	ca, _ := sharedTestCA()
	key, _ := bundle.NewKey()
	b := ca.issue(t, key, now.Add(-10*time.Minute), time.Hour)
	b.TokenExpiry = now.Add(-time.Minute)
	sink := &memSink{}
	sink.set(b)
	var st InstanceStatus
	fillStatus(&st, &Instance{Name: "a", NeedsKey: true, Sinks: []Sink{sink}}, now)
	if st.State != StateExpired {
		t.Errorf("state %q with an expired login token, want %q", st.State, StateExpired)
	}
	b.TokenExpiry = now.Add(time.Minute)
	st = InstanceStatus{}
	fillStatus(&st, &Instance{Name: "a", NeedsKey: true, Sinks: []Sink{sink}}, now)
	if st.State == StateExpired || st.State == StateInvalid {
		t.Errorf("state %q with a valid login token", st.State)
	}
}

// lossySink is a sink that does not keep Host (as a file sink without .pgpass does not)
// and, when commitThenFail is set, stores a bundle but reports an error (a failure
// after the commit, say while pruning old generations on a full disk).
type lossySink struct {
	memSink
	commitThenFail atomic.Bool
}

func (s *lossySink) Write(ctx context.Context, b *bundle.Bundle) (bool, error) {
	c := *b
	c.Host = ""
	changed, err := s.memSink.Write(ctx, &c)
	if err == nil && s.commitThenFail.Load() {
		return changed, errors.New("pruning old generations: no space left on device")
	}
	return changed, err
}

// eventHook records the kinds of the events it ran for.
type eventHook struct {
	mu    sync.Mutex
	kinds []string
}

func (h *eventHook) Run(_ context.Context, ev hook.Event) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.kinds = append(h.kinds, string(ev.Kind))
	return nil
}

func (h *eventHook) String() string { return "event hook" }

func (h *eventHook) ran() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.kinds)
}

// TestOwnWritesAreNotAnotherProcess: a change in the sink directory made by the
// daemon's own write is never reported as files "written by another process"; when that
// write reported an error although its files reached the disk, taking them up runs the
// hooks that the failed write did not (once).
func TestOwnWritesAreNotAnotherProcess(t *testing.T) {
	clock := newFakeClock()
	p := &fakeProvider{t: t, clock: clock.Now, life: time.Hour, host: "10.0.0.5"}
	sink := &lossySink{}
	hk := &eventHook{}
	d, buf := fakeDaemon(t, clock, fakeRunOptions{}, &Instance{Name: "a", Provider: p, NeedsKey: true, Sinks: []Sink{sink}, Hooks: []Hook{hk}})
	eventually(t, 5*time.Second, "files", func() bool { return p.count() == 1 })
	settle(t, d)
	heal := func() {
		d.mu.Lock()
		l := d.loops["a"]
		d.mu.Unlock()
		d.wake(l, wakeHeal)
		time.Sleep(150 * time.Millisecond) // repair lets events settle for 100 ms
		settle(t, d)
	}
	heal() // the directory event of the daemon's own write
	if strings.Contains(buf.String(), "another process") || strings.Contains(buf.String(), "reported an error") {
		t.Fatal("the daemon's own successful write was reported as something else")
	}
	// A write that reaches the disk but reports an error.
	sink.commitThenFail.Store(true)
	clock.Advance(41 * time.Minute)
	eventually(t, 5*time.Second, "the renewal", func() bool { return p.count() == 2 })
	settle(t, d)
	heal()
	if strings.Contains(buf.String(), "another process") {
		t.Error("files of the daemon's own failed write were reported as another process's")
	}
	if !strings.Contains(buf.String(), "the files of the last write are on disk although writing reported an error") {
		t.Error("the daemon did not take up its own files")
	}
	if got := hk.ran(); !slices.Equal(got, []string{string(EventRenewed), string(EventRenewed)}) {
		t.Errorf("hooks ran for %v; want [renewed renewed] (the first files, then the renewal taken up)", got)
	}
	heal() // nothing new: no more hooks
	if got := hk.ran(); len(got) != 2 {
		t.Errorf("hooks ran %d times after a repair with nothing new, want 2", len(got))
	}
}

// TestOnceReportsEachFailureOnce: `once` does not log a failure that it returns; the
// error names the failed instances in one line and carries one error per instance.
func TestOnceReportsEachFailureOnce(t *testing.T) {
	buf := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(buf, nil))
	p := &fakeProvider{t: t, clock: time.Now, fail: permErr}
	ok := &fakeProvider{t: t, clock: time.Now, life: time.Hour}
	a := NewWithInstances([]*Instance{
		{Name: "bad", Provider: p, NeedsKey: true, Sinks: []Sink{&memSink{}}},
		{Name: "good", Provider: ok, NeedsKey: true, Sinks: []Sink{&memSink{}}},
	}, Options{Logger: log})
	err := a.Once(context.Background(), OnceOptions{})
	var re *RunError
	if !errors.As(err, &re) || len(re.Failed) != 1 || re.Failed[0].Instance != "bad" {
		t.Fatalf("Once = %v", err)
	}
	// The error's own words, not "403": hex digests in the log contain that too.
	if strings.Contains(buf.String(), "lacks cloudsql.instances.connect") || strings.Contains(buf.String(), "instance=bad") {
		t.Errorf("the failure was logged as well as returned:\n%s", buf.String())
	}
	if got := re.Error(); got != "1 of 2 instances failed: bad" {
		t.Errorf("RunError = %q", got)
	}
	if !strings.Contains(re.Failed[0].Error(), `instance "bad": `+permErr.Error()) {
		t.Errorf("the instance error = %q", re.Failed[0].Error())
	}
}

// TestSystemdNotifyEndToEnd: the daemon with the real sdnotify.Notifier on a unix
// socket: READY=1 although one instance failed permanently, STATUS= names it, and
// WATCHDOG=1 pings arrive while the loops are healthy and stop when one is stuck.
func TestSystemdNotifyEndToEnd(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var (
		mu   sync.Mutex
		msgs []string
	)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, string(buf[:n]))
			mu.Unlock()
		}
	}()
	count := func(prefix string) (n int, last string) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			if strings.HasPrefix(m, prefix) {
				n, last = n+1, m
			}
		}
		return n, last
	}
	notifier, err := sdnotify.New(sock, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	good := &fakeProvider{t: t, clock: time.Now, life: time.Hour}
	bad := &fakeProvider{t: t, clock: time.Now, fail: permErr}
	sched := &fakeProvider{t: t, clock: time.Now, life: time.Hour}
	gate := make(chan struct{})
	defer close(gate)
	trigger := &Instance{Name: "wedged", Provider: sched, NeedsKey: true, Sinks: []Sink{&memSink{}}}
	d, _ := fakeDaemon(t, nil, fakeRunOptions{RunOptions: RunOptions{Notifier: notifier, FetchTimeout: 200 * time.Millisecond}},
		&Instance{Name: "good", Provider: good, NeedsKey: true, Sinks: []Sink{&memSink{}}},
		&Instance{Name: "bad", Provider: bad, NeedsKey: true, Sinks: []Sink{&memSink{}}},
		trigger)
	eventually(t, 5*time.Second, "READY=1", func() bool { n, _ := count("READY=1"); return n == 1 })
	eventually(t, 5*time.Second, "STATUS= naming the failed instance", func() bool {
		_, s := count("STATUS=")
		return strings.Contains(s, "failed permanently (see the log): bad")
	})
	eventually(t, 5*time.Second, "watchdog pings", func() bool { n, _ := count("WATCHDOG=1"); return n >= 3 })
	// The next fetch of "wedged" never returns.
	sched.mu.Lock()
	sched.block = gate
	sched.mu.Unlock()
	d.mu.Lock()
	d.wake(d.loops["wedged"], wakeTrigger)
	d.mu.Unlock()
	eventually(t, 10*time.Second, "the pings to stop", func() bool {
		before, _ := count("WATCHDOG=1")
		time.Sleep(300 * time.Millisecond)
		after, _ := count("WATCHDOG=1")
		return before == after
	})
}

// TestGoneFilesAreNotReady: files deleted behind the daemon's back that it cannot
// restore make the instance not ready at once, not when the certificate would expire.
func TestGoneFilesAreNotReady(t *testing.T) {
	clock := newFakeClock()
	p := &fakeProvider{t: t, clock: clock.Now, life: time.Hour}
	sink := &memSink{}
	d, _ := fakeDaemon(t, clock, fakeRunOptions{}, &Instance{Name: "a", Provider: p, NeedsKey: true, Sinks: []Sink{sink}})
	eventually(t, 5*time.Second, "files", func() bool { return p.count() == 1 })
	settle(t, d)
	if ok, _ := d.a.Ready(); !ok {
		t.Fatal("not ready with files")
	}
	sink.mu.Lock()
	sink.b, sink.fail = nil, errors.New("read-only file system")
	sink.mu.Unlock()
	d.mu.Lock()
	d.wake(d.loops["a"], wakeHeal) // what the directory watch does
	d.mu.Unlock()
	time.Sleep(150 * time.Millisecond)
	settle(t, d)
	if ok, missing := d.a.Ready(); ok || fmt.Sprint(missing) != "[a]" {
		t.Errorf("Ready() = %v, %v with the files gone; want false, [a]", ok, missing)
	}
	sink.mu.Lock()
	sink.fail = nil
	sink.mu.Unlock()
	clock.Advance(5 * time.Minute) // past any backoff
	eventually(t, 5*time.Second, "new files", func() bool { ok, _ := d.a.Ready(); return ok })
}

// TestCurrentAcrossTokenAndPlainSinks: an instance whose first sink writes only the
// certificate files and whose second also writes the login token reads back as one
// valid set (the token comes from the sink that stores it), not as "different files".
func TestCurrentAcrossTokenAndPlainSinks(t *testing.T) {
	ca, err := sharedTestCA()
	if err != nil {
		t.Fatal(err)
	}
	key, err := bundle.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	b := ca.issue(t, key, now.Add(-time.Minute), time.Hour)
	withToken := *b
	withToken.LoginToken = "login-token"
	plain, tokened := &memSink{b: b}, &memSink{b: &withToken}
	in := &Instance{Name: "orders", NeedsKey: true, Sinks: []Sink{plain, tokened}}
	a := NewWithInstances([]*Instance{in}, Options{})
	got, err := a.current(in, now)
	if err != nil {
		t.Fatalf("current: %v", err)
	}
	if got.LoginToken.Reveal() != "login-token" {
		t.Errorf("login token not taken from the sink that stores it")
	}
	other := ca.issue(t, key, now.Add(-time.Minute), time.Hour)
	in.Sinks = []Sink{plain, &memSink{b: other}}
	if _, err := a.current(in, now); err == nil {
		t.Error("sinks with different certificates read as one set")
	}
}

// TestIdleInstancesHaveNoGoroutine: once every instance has its files, an idle
// instance is parked (a runtime timer, no goroutine), so a daemon of 300 instances
// runs a handful of goroutines, not one per instance; a wake-up (here a change in the
// sink, as the directory watch reports it) still reaches a parked loop.
func TestIdleInstancesHaveNoGoroutine(t *testing.T) {
	const n = 300
	var ins []*Instance
	sinks := make([]*memSink, n)
	for i := range n {
		sinks[i] = &memSink{}
		p := &fakeProvider{t: t, clock: time.Now, life: time.Hour}
		ins = append(ins, &Instance{Name: fmt.Sprintf("i%03d", i), Provider: p, NeedsKey: true, Sinks: []Sink{sinks[i]},
			Renewal: config.Renewal{KeyMaxAge: time.Hour}})
	}
	before := runtime.NumGoroutine()
	d, _ := fakeDaemon(t, nil, fakeRunOptions{RunOptions: RunOptions{ShareKeys: true}}, ins...)
	eventually(t, 30*time.Second, "files for every instance", func() bool {
		for _, s := range sinks {
			if b, _ := s.Current(); b == nil {
				return false
			}
		}
		return true
	})
	settle(t, d)
	if got := runtime.NumGoroutine() - before; got > 30 {
		t.Errorf("%d goroutines for %d idle instances", got, n)
	}
	d.mu.Lock()
	l := d.loops["i007"]
	d.mu.Unlock()
	sinks[7].set(nil) // the files are gone
	d.wake(l, wakeHeal)
	eventually(t, 10*time.Second, "the parked loop restores the files", func() bool { b, _ := sinks[7].Current(); return b != nil })
}

// countingSink is a memSink whose writes take a while and count how many run at once.
type countingSink struct {
	*memSink
	cur, max *atomic.Int32
}

func (s countingSink) Write(ctx context.Context, b *bundle.Bundle) (bool, error) {
	n := s.cur.Add(1)
	defer s.cur.Add(-1)
	for m := s.max.Load(); n > m && !s.max.CompareAndSwap(m, n); m = s.max.Load() {
	}
	time.Sleep(20 * time.Millisecond) // a slow disk: writes overlap
	return s.memSink.Write(ctx, b)
}

func TestWritesAreBounded(t *testing.T) {
	const n, limit = 40, 3
	var cur, max atomic.Int32
	var ins []*Instance
	sinks := make([]*memSink, n)
	for i := range n {
		sinks[i] = &memSink{}
		p := &fakeProvider{t: t, clock: time.Now, life: time.Hour}
		ins = append(ins, &Instance{Name: fmt.Sprintf("i%02d", i), Provider: p, NeedsKey: true,
			Sinks:   []Sink{countingSink{memSink: sinks[i], cur: &cur, max: &max}},
			Renewal: config.Renewal{KeyMaxAge: time.Hour}})
	}
	fakeDaemon(t, nil, fakeRunOptions{RunOptions: RunOptions{ShareKeys: true, MaxWriting: limit}}, ins...)
	eventually(t, 30*time.Second, "files for every instance", func() bool {
		for _, s := range sinks {
			if b, _ := s.Current(); b == nil {
				return false
			}
		}
		return true
	})
	if got := max.Load(); got > limit || got < 2 {
		t.Errorf("at most %d instances wrote at once, want 2..%d (MaxWriting %d)", got, limit, limit)
	}
}

// gateHook blocks while a gate is set (a slow reload of a consumer), passing otherwise.
type gateHook struct {
	mu      sync.Mutex
	gate    chan struct{}
	entered int
}

func (h *gateHook) Run(context.Context, hook.Event) error {
	h.mu.Lock()
	h.entered++
	g := h.gate
	h.mu.Unlock()
	if g != nil {
		<-g
	}
	return nil
}

func (h *gateHook) String() string { return "gate hook" }

func (h *gateHook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.entered
}

// hangOnRenewal sets a gate, advances clock past the renewal of the instance h belongs
// to (45 minutes of a 1-hour certificate) and waits until its hook hangs; release (safe
// to call more than once) lets it go.
func (h *gateHook) hangOnRenewal(t *testing.T, clock *fakeClock) (release func()) {
	t.Helper()
	gate := make(chan struct{})
	h.mu.Lock()
	h.gate = gate
	before := h.entered
	h.mu.Unlock()
	release = sync.OnceFunc(func() { close(gate) })
	t.Cleanup(release) // before the daemon's own clean-up, which waits for the hook
	clock.Advance(45 * time.Minute)
	eventually(t, 5*time.Second, "the hook hanging on the renewal", func() bool { return h.count() == before+1 })
	return release
}

// TestReloadReadyWaitsForTheNewConfiguration: after RELOADING=1, READY=1 comes only
// once the new configuration has settled — not while the reload waits for a stopped
// loop's hook (the new instance b not yet started), nor while b has no files.
func TestReloadReadyWaitsForTheNewConfiguration(t *testing.T) {
	sc := newReloadScenario(t, false)
	clock, hk, n, d, buf := sc.clock, sc.hk, sc.n, sc.d, sc.buf
	eventually(t, 5*time.Second, "READY=1", func() bool { return n.count("READY") == 1 })
	settle(t, d)
	release := hk.hangOnRenewal(t, clock)
	sc.hup <- syscall.SIGHUP
	eventually(t, 5*time.Second, "the reload waiting for h's loop", func() bool {
		return n.count("RELOADING") == 1 && strings.Contains(buf.String(), "reloading configuration")
	})
	time.Sleep(10 * announceQuantum) // announce passes run meanwhile
	if c := n.count("READY"); c != 1 {
		t.Fatalf("READY=1 sent again while the reload was still stopping h (b not started); status %q", n.lastStatus())
	}
	sc.finish(t, release, 1)
}

// reloadScenario is a daemon running x and h (h's hook can be made to hang) whose
// reload replaces them with x and b, b failing until told otherwise.
type reloadScenario struct {
	clock *fakeClock
	hk    *gateHook
	xp    *fakeProvider // x's
	bp    *fakeProvider // b's
	n     *fakeNotifier
	hup   chan os.Signal
	d     *daemon
	buf   *syncBuffer
}

// newReloadScenario starts the daemon; xFails makes x fail until told otherwise too.
func newReloadScenario(t *testing.T, xFails bool) *reloadScenario {
	sc := &reloadScenario{clock: newFakeClock(), hk: &gateHook{}, n: &fakeNotifier{}, hup: make(chan os.Signal, 1)}
	sc.xp = &fakeProvider{t: t, clock: sc.clock.Now, life: time.Hour}
	if xFails {
		sc.xp.fail = retryErr{"503 backendError"}
	}
	x := &Instance{Name: "x", Provider: sc.xp, NeedsKey: true, Sinks: []Sink{&memSink{}}}
	h := &Instance{Name: "h", Provider: &fakeProvider{t: t, clock: sc.clock.Now, life: time.Hour}, NeedsKey: true, Sinks: []Sink{&memSink{}}, Hooks: []Hook{sc.hk}}
	sc.bp = &fakeProvider{t: t, clock: sc.clock.Now, life: time.Hour, fail: retryErr{"503 backendError"}}
	b := &Instance{Name: "b", Provider: sc.bp, NeedsKey: true, Sinks: []Sink{&memSink{}}}
	sc.d, sc.buf = fakeDaemon(t, sc.clock, fakeRunOptions{RunOptions: RunOptions{Notifier: sc.n, Hangup: sc.hup,
		Reload: func(context.Context) ([]*Instance, error) { return []*Instance{x, b}, nil }}}, x, h)
	return sc
}

// finish releases the reload held on h's hook and checks that READY=1, sent ready
// times so far, is not sent again while b has no files, and is once b has them.
func (sc *reloadScenario) finish(t *testing.T, release func(), ready int) {
	t.Helper()
	release()
	eventually(t, 5*time.Second, "b's first attempt", func() bool { return sc.bp.count() == 1 })
	settle(t, sc.d)
	if c := sc.n.count("READY"); c != ready {
		t.Fatalf("READY=1 sent although b has no files (%d, want %d); status %q", c, ready, sc.n.lastStatus())
	}
	sc.bp.setFail(nil)
	sc.clock.Advance(10 * time.Minute) // past b's backoff
	eventually(t, 5*time.Second, "READY=1 once b has files", func() bool { return sc.n.count("READY") == ready+1 })
}

// TestFailedReloadAndReady: a configuration that fails to load during start-up does
// not send READY=1 before the instances have files; after start-up, it ends the reload
// with READY=1 at once (nothing changed).
func TestFailedReloadAndReady(t *testing.T) {
	clock := newFakeClock()
	p := &fakeProvider{t: t, clock: clock.Now, life: time.Hour, fail: retryErr{"503 backendError"}}
	n := &fakeNotifier{}
	hup := make(chan os.Signal, 1)
	d, buf := fakeDaemon(t, clock, fakeRunOptions{RunOptions: RunOptions{Notifier: n, Hangup: hup,
		Reload: func(context.Context) ([]*Instance, error) { return nil, errors.New("agent.hcl:3,1: bad config") }}},
		&Instance{Name: "a", Provider: p, NeedsKey: true, Sinks: []Sink{&memSink{}}})
	eventually(t, 5*time.Second, "the first attempt", func() bool { return p.count() == 1 })
	settle(t, d)
	hup <- syscall.SIGHUP
	eventually(t, 5*time.Second, "the reload refused", func() bool {
		return strings.Count(buf.String(), "the new configuration was not applied") == 1
	})
	time.Sleep(10 * announceQuantum)
	if c := n.count("READY"); c != 0 {
		t.Fatalf("READY=1 sent %d time(s) during start-up while a has no files", c)
	}
	p.setFail(nil)
	clock.Advance(10 * time.Minute)
	eventually(t, 5*time.Second, "READY=1 once a has files", func() bool { return n.count("READY") == 1 })
	hup <- syscall.SIGHUP
	eventually(t, 5*time.Second, "READY=1 ending the failed reload", func() bool { return n.count("READY") == 2 })
}

// gatedSink is a memSink whose Current waits while a gate is set.
type gatedSink struct {
	memSink
	gate chan struct{}
}

func (s *gatedSink) Current() (*bundle.Bundle, error) {
	<-s.gate
	return s.memSink.Current()
}

// TestReloadRestartedInstanceStartsNotReady: an instance restarted by a reload (its
// configuration changed) is not ready on what its old loop held: before the new loop
// has even read its files, readiness says it has none.
func TestReloadRestartedInstanceStartsNotReady(t *testing.T) {
	clock := newFakeClock()
	a1 := &Instance{Name: "a", Spec: &config.Instance{Name: "a", Type: "v1"}, Provider: &fakeProvider{t: t, clock: clock.Now, life: time.Hour}, NeedsKey: true, Sinks: []Sink{&memSink{}}}
	gate := make(chan struct{})
	defer close(gate)
	a2 := &Instance{Name: "a", Spec: &config.Instance{Name: "a", Type: "v2"}, Provider: &fakeProvider{t: t, clock: clock.Now, life: time.Hour}, NeedsKey: true, Sinks: []Sink{&gatedSink{gate: gate}}}
	hup := make(chan os.Signal, 1)
	d, buf := fakeDaemon(t, clock, fakeRunOptions{RunOptions: RunOptions{Hangup: hup,
		Reload: func(context.Context) ([]*Instance, error) { return []*Instance{a2}, nil }}}, a1)
	eventually(t, 5*time.Second, "a ready", func() bool { ok, _ := d.a.Ready(); return ok })
	settle(t, d)
	hup <- syscall.SIGHUP
	eventually(t, 5*time.Second, "a restarted", func() bool { return strings.Contains(buf.String(), "restarted=[a]") })
	if ok, missing := d.a.Ready(); ok || !slices.Equal(missing, []string{"a"}) {
		t.Errorf("Ready() = %v, %v while the restarted a has not read its files; want false, [a]", ok, missing)
	}
}

// TestReloadRebuildsAnInstanceThatFailedToBuild: an instance that could not be built
// (its credentials file was missing) is restarted by a reload of the same configuration,
// which now builds; SIGHUP is how an operator recovers it without a restart.
func TestReloadRebuildsAnInstanceThatFailedToBuild(t *testing.T) {
	clock := newFakeClock()
	spec := &config.Instance{Name: "a", Type: "v1"}
	broken := &Instance{Name: "a", Spec: spec, NeedsKey: true, Sinks: []Sink{&memSink{}},
		Err: errors.New(`credentials "default": open /etc/dbcert-agent/sa.json: no such file or directory`)}
	p := &fakeProvider{t: t, clock: clock.Now, life: time.Hour}
	fixed := &Instance{Name: "a", Spec: spec, Provider: p, NeedsKey: true, Sinks: []Sink{&memSink{}}}
	hup := make(chan os.Signal, 1)
	d, buf := fakeDaemon(t, clock, fakeRunOptions{RunOptions: RunOptions{Hangup: hup,
		Reload: func(context.Context) ([]*Instance, error) { return []*Instance{fixed}, nil }}}, broken)
	eventually(t, 5*time.Second, "the build error reported", func() bool { return strings.Contains(buf.String(), "sa.json") })
	settle(t, d)
	hup <- syscall.SIGHUP
	eventually(t, 5*time.Second, "a ready after the reload", func() bool { ok, _ := d.a.Ready(); return ok })
	if p.count() != 1 {
		t.Errorf("%d fetches, want 1", p.count())
	}
}

// TestReloadKeepsARunningInstanceWhoseRebuildFails: the same configuration that no
// longer builds (the credentials file went away) does not replace a working loop.
func TestReloadKeepsARunningInstanceWhoseRebuildFails(t *testing.T) {
	clock := newFakeClock()
	spec := &config.Instance{Name: "a", Type: "v1"}
	p := &fakeProvider{t: t, clock: clock.Now, life: time.Hour}
	working := &Instance{Name: "a", Spec: spec, Provider: p, NeedsKey: true, Sinks: []Sink{&memSink{}}}
	broken := &Instance{Name: "a", Spec: spec, NeedsKey: true, Sinks: []Sink{&memSink{}},
		Err: errors.New(`credentials "default": open /etc/dbcert-agent/sa.json: no such file or directory`)}
	hup := make(chan os.Signal, 1)
	d, buf := fakeDaemon(t, clock, fakeRunOptions{RunOptions: RunOptions{Hangup: hup,
		Reload: func(context.Context) ([]*Instance, error) { return []*Instance{broken}, nil }}}, working)
	eventually(t, 5*time.Second, "a ready", func() bool { ok, _ := d.a.Ready(); return ok })
	settle(t, d)
	hup <- syscall.SIGHUP
	eventually(t, 5*time.Second, "the reload", func() bool { return strings.Contains(buf.String(), "reloading configuration") })
	settle(t, d)
	clock.Advance(45 * time.Minute) // the renewal goes through the running loop
	eventually(t, 5*time.Second, "the renewal", func() bool { return p.count() == 2 })
	if strings.Contains(buf.String(), "restarted=[a]") {
		t.Error("a working instance was replaced by one that failed to build")
	}
}

// TestNotReadyBeforeRun: /readyz can be served before Run starts the loops; an agent
// whose instances no loop has looked at yet is not ready.
func TestNotReadyBeforeRun(t *testing.T) {
	a := NewWithInstances([]*Instance{{Name: "b"}, {Name: "a"}}, Options{})
	if ok, missing := a.Ready(); ok || !slices.Equal(missing, []string{"a", "b"}) {
		t.Errorf("Ready() = %v, %v before Run; want false, [a b]", ok, missing)
	}
	if ok, _ := NewWithInstances(nil, Options{}).Ready(); !ok {
		t.Error("an agent without instances is not ready")
	}
}

// TestReloadDuringStartupHoldsReady: a reload that arrives before the first READY=1 and
// waits for a stopped loop's hook does not let the first READY=1 out on the old
// instances alone (x getting its files meanwhile); it comes once the new instance b has
// files.
func TestReloadDuringStartupHoldsReady(t *testing.T) {
	sc := newReloadScenario(t, true)
	clock, hk, xp, n, d, buf := sc.clock, sc.hk, sc.xp, sc.n, sc.d, sc.buf
	eventually(t, 5*time.Second, "h's files and x's first attempt", func() bool { return hk.count() == 1 && xp.count() >= 1 })
	settle(t, d)
	release := hk.hangOnRenewal(t, clock)
	sc.hup <- syscall.SIGHUP
	eventually(t, 5*time.Second, "the reload waiting for h's loop", func() bool { return strings.Contains(buf.String(), "reloading configuration") })
	xp.setFail(nil)
	clock.Advance(10 * time.Minute) // x retries and gets its files
	eventually(t, 5*time.Second, "x's files", func() bool {
		ok, missing := d.a.Ready()
		return !ok && !slices.Contains(missing, "x")
	})
	time.Sleep(10 * announceQuantum) // announce passes run meanwhile
	if c := n.count("READY"); c != 0 {
		t.Fatalf("READY=1 sent while the reload was still applying (b not started); status %q", n.lastStatus())
	}
	sc.finish(t, release, 0)
}

// forgetfulSink writes like a memSink but, once forget is set, reads back nothing: files
// that are gone again as soon as they are restored.
type forgetfulSink struct {
	memSink
	forget atomic.Bool
}

func (s *forgetfulSink) Current() (*bundle.Bundle, error) {
	if s.forget.Load() {
		return nil, errNotStored
	}
	return s.memSink.Current()
}

// TestRepairRestoresAgainThenFetches: files gone again right after a restore are
// restored again from memory (their removal's events may still be on the way), at most
// maxReheal times in a row; then the loop fetches new ones.
func TestRepairRestoresAgainThenFetches(t *testing.T) {
	clock := newFakeClock()
	p := &fakeProvider{t: t, clock: clock.Now, life: time.Hour}
	sink := &forgetfulSink{}
	d, buf := fakeDaemon(t, clock, fakeRunOptions{}, &Instance{Name: "a", Provider: p, NeedsKey: true, Sinks: []Sink{sink}})
	eventually(t, 5*time.Second, "files", func() bool { return p.count() == 1 })
	settle(t, d)
	sink.forget.Store(true)
	d.mu.Lock()
	d.wake(d.loops["a"], wakeHeal)
	d.mu.Unlock()
	eventually(t, 10*time.Second, "a fetch after the restores", func() bool { return p.count() == 2 })
	if n := strings.Count(buf.String(), "restored them"); n != 1+maxReheal {
		t.Errorf("restored %d times before fetching, want %d", n, 1+maxReheal)
	}
	if n := strings.Count(buf.String(), "could not be restored; fetching new ones"); n != 1 {
		t.Errorf("gave up restoring %d times, want 1", n)
	}
}

// TestOnceUsesTheWholeTimeout: `once` retries a retryable failure until -timeout is
// nearly spent (spec §3: retried with backoff until -timeout runs out): when the next
// backoff would pass it, one more attempt goes halfway through what is left, and it
// gives up only when less than a second would be left for an attempt.
func TestOnceUsesTheWholeTimeout(t *testing.T) {
	var mu sync.Mutex
	start := time.Now()
	now := start
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var tries []time.Duration
	p := &fakeProvider{t: t, clock: clock, fail: retryableError{errors.New("503 from generateEphemeralCert: server error")}}
	counted := providerFunc(func(ctx context.Context, key crypto.Signer) (*bundle.Bundle, error) {
		tries = append(tries, clock().Sub(start))
		return p.Fetch(ctx, key)
	})
	a := NewWithInstances([]*Instance{{Name: "a", Provider: counted, NeedsKey: true, Sinks: []Sink{&memSink{}}}}, Options{
		Logger: slog.New(slog.DiscardHandler),
		Now:    clock,
		Rand:   func() float64 { return 0.999 }, // the longest backoffs: 1, 2, 4, 8, 16 s
		Sleep: func(ctx context.Context, d time.Duration) error {
			mu.Lock()
			now = now.Add(d)
			mu.Unlock()
			return nil
		},
	})
	err := a.Once(context.Background(), OnceOptions{Timeout: 20 * time.Second})
	var re *RunError
	if !errors.As(err, &re) || len(re.Failed) != 1 || !strings.Contains(re.Failed[0].Error(), "gave up") {
		t.Fatalf("Once = %v, want it to give up", err)
	}
	last := tries[len(tries)-1]
	if last < 18*time.Second || last > 20*time.Second {
		t.Errorf("last attempt at %v of a 20s timeout (attempts at %v): want it within the last 2s", last, tries)
	}
}

// providerFunc is a Provider made of a function.
type providerFunc func(ctx context.Context, key crypto.Signer) (*bundle.Bundle, error)

func (f providerFunc) Fetch(ctx context.Context, key crypto.Signer) (*bundle.Bundle, error) {
	return f(ctx, key)
}

// ctxHook runs until released, and records whether its context ended first.
type ctxHook struct {
	started  chan struct{}
	release  chan struct{}
	canceled atomic.Bool
}

func (h *ctxHook) Run(ctx context.Context, _ hook.Event) error {
	close(h.started)
	select {
	case <-ctx.Done():
		h.canceled.Store(true)
		return ctx.Err()
	case <-h.release:
		return nil
	}
}

// TestOnceLetsRunningHooksFinish: a stop signal (ctx canceled) while `once` runs a hook
// does not cut the hook short (its own timeout bounds it): the consumer it reloads is
// not left half done, as with `run`.
func TestOnceLetsRunningHooksFinish(t *testing.T) {
	hk := &ctxHook{started: make(chan struct{}), release: make(chan struct{})}
	a := NewWithInstances([]*Instance{{Name: "a", Provider: &fakeProvider{t: t, clock: time.Now, life: time.Hour}, NeedsKey: true,
		Sinks: []Sink{&memSink{}}, Hooks: []Hook{hk}}}, Options{Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Once(ctx, OnceOptions{Timeout: time.Minute}) }()
	<-hk.started
	cancel() // SIGTERM
	time.Sleep(50 * time.Millisecond)
	close(hk.release)
	if err := <-done; err != nil {
		t.Errorf("Once = %v, want success (the hook finished)", err)
	}
	if hk.canceled.Load() {
		t.Error("the stop signal cut the running hook short")
	}
}

// waitErr is a retryable error whose server asked for a wait (Retry-After).
type waitErr time.Duration

func (w waitErr) Error() string             { return "429 from generateEphemeralCert: quota exceeded (retryable)" }
func (w waitErr) Retryable() bool           { return true }
func (w waitErr) RetryAfter() time.Duration { return time.Duration(w) }

// TestOnceGivesUpWhenRetryAfterLeavesNoTime: when the wait the server asks for leaves
// under a second of -timeout, `once` gives up at once instead of waiting for an attempt
// that cannot finish (and, for AlloyDB, might be issued but never used).
func TestOnceGivesUpWhenRetryAfterLeavesNoTime(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	p := &fakeProvider{t: t, clock: clock, fail: waitErr(19500 * time.Millisecond)}
	a := NewWithInstances([]*Instance{{Name: "a", Provider: p, NeedsKey: true, Sinks: []Sink{&memSink{}}}}, Options{
		Logger: slog.New(slog.DiscardHandler),
		Now:    clock,
		Sleep: func(ctx context.Context, d time.Duration) error {
			mu.Lock()
			now = now.Add(d)
			mu.Unlock()
			return nil
		},
	})
	if err := a.Once(context.Background(), OnceOptions{Timeout: 20 * time.Second}); err == nil {
		t.Fatal("Once succeeded")
	}
	if n := p.count(); n != 1 {
		t.Errorf("%d attempts, want 1 (a Retry-After of 19.5s leaves no time in a 20s timeout)", n)
	}
}
