package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
	"github.com/dbcert-agent/dbcert-agent/config"
	"github.com/dbcert-agent/dbcert-agent/sinks"
)

// world is an emulator plus a directory with a service-account key for it.
type world struct {
	t   *testing.T
	emu *emulator.Emulator
	dir string
	sa  string
	log *slog.Logger
	buf *syncBuffer
	// extra attributes added to every generated instance block (e.g. a schedule).
	extra string
	added map[string]bool // emulator instances created
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newWorld(t *testing.T, lifetime time.Duration) *world {
	t.Helper()
	emu, err := emulator.New(emulator.Options{CertLifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	dir := t.TempDir()
	sa, err := emu.ServiceAccountJSON("agent@p.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	saPath := filepath.Join(dir, "sa.json")
	if err := os.WriteFile(saPath, sa, 0o600); err != nil {
		t.Fatal(err)
	}
	buf := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", buf.String())
		}
	})
	return &world{t: t, emu: emu, dir: dir, sa: saPath, log: log, buf: buf}
}

// instances builds instances named names, each a Cloud SQL instance "<name>-pg" of
// project "p" with a pem sink in dir/out/<name> and an exec hook appending to
// dir/hooks-<name>.
func (w *world) instances(names ...string) []*Instance {
	w.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "credentials \"google\" \"default\" { credentials_file = %q }\n", w.sa)
	for _, n := range names {
		if w.added == nil {
			w.added = map[string]bool{}
		}
		if !w.added[n] {
			w.emu.AddCloudSQLInstance("p", n+"-pg", emulator.CloudSQLInstance{})
			w.added[n] = true
		}
		fmt.Fprintf(&b, `instance "cloudsql" %q {
  project = "p"
  instance = "%s-pg"
  api_endpoint = %q
  %s
  sink "file" { dir = %q }
  hook "exec" { command = ["/bin/sh", "-c", "echo $DBCERT_EVENT >> %s"] }
}
`, n, n, w.emu.URL(), w.extra, filepath.Join(w.dir, "out", n), filepath.Join(w.dir, "hooks-"+n))
	}
	cfg, err := config.Parse(filepath.Join(w.dir, "agent.hcl"), []byte(b.String()), config.Options{})
	if err != nil {
		w.t.Fatal(err)
	}
	ins, err := Build(context.Background(), cfg, BuildOptions{Logger: w.log})
	if err != nil {
		w.t.Fatal(err)
	}
	return ins
}

func (w *world) hookRuns(name string) int {
	data, _ := os.ReadFile(filepath.Join(w.dir, "hooks-"+name))
	return strings.Count(string(data), "\n")
}

func (w *world) current(name string) (*sinksCurrent, error) {
	s, err := sinks.NewFile(sinks.FileOptions{Dir: filepath.Join(w.dir, "out", name), UID: -1, GID: -1})
	if err != nil {
		return nil, err
	}
	b, err := s.Current()
	if err != nil {
		return nil, err
	}
	return &sinksCurrent{notAfter: b.NotAfter(), serial: b.Leaf().SerialNumber.String()}, nil
}

type sinksCurrent struct {
	notAfter time.Time
	serial   string
}

// runAgent runs the daemon in the background; the returned stop function cancels it
// and waits.
func (w *world) run(a *Agent, o RunOptions) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, o) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				w.t.Errorf("Run returned %v", err)
			}
		case <-time.After(10 * time.Second):
			w.t.Error("Run did not stop within 10s")
		}
	}
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", within, what)
}

func TestRunRenewsBeforeExpiry(t *testing.T) {
	w := newWorld(t, 3*time.Second)
	a := NewWithInstances(w.instances("a"), Options{Logger: w.log})
	stop := w.run(a, RunOptions{})
	// Watch the files: they must never be expired while we look, and must rotate.
	serials := map[string]bool{}
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := w.current("a"); err == nil {
			if !time.Now().Before(c.notAfter) {
				t.Fatalf("files expired at %v and were not renewed", c.notAfter)
			}
			serials[c.serial] = true
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if len(serials) < 3 {
		t.Errorf("saw %d certificates in 8s of 3s certificates, want at least 3", len(serials))
	}
	if got := w.hookRuns("a"); got != w.emu.Issued() {
		t.Errorf("hook ran %d times for %d certificates", got, w.emu.Issued())
	}
}

func TestRunResumesFromDiskWithoutAPICall(t *testing.T) {
	w := newWorld(t, time.Hour)
	ins := w.instances("a")
	if err := NewWithInstances(ins, Options{Logger: w.log}).Once(context.Background(), OnceOptions{}); err != nil {
		t.Fatal(err)
	}
	issued := w.emu.Issued()
	ready := &fakeNotifier{}
	stop := w.run(NewWithInstances(w.instances("a"), Options{Logger: w.log}), RunOptions{Notifier: ready})
	eventually(t, 5*time.Second, "READY=1", func() bool { return ready.count("READY") > 0 })
	time.Sleep(300 * time.Millisecond)
	stop()
	if w.emu.Issued() != issued {
		t.Errorf("restart called the API (%d → %d certificates) although the files were valid", issued, w.emu.Issued())
	}
	if !strings.Contains(w.buf.String(), "resuming from files on disk") {
		t.Error("no resume log line")
	}
	if ready.count("STOPPING") != 1 {
		t.Errorf("STOPPING sent %d times", ready.count("STOPPING"))
	}
}

func TestRunReadyOnlyAfterFiles(t *testing.T) {
	w := newWorld(t, time.Hour)
	// a's first certificate request fails with 503 after 300 ms, so b has its files well
	// before a: READY must wait for a's. (Only a's, once: a fault on any instance's path
	// could land twice on a, whose second failure spends its burst of 2 and holds the
	// third attempt for 30 s.)
	w.emu.Inject(emulator.Fault{Match: "a-pg:generateEphemeralCert", Status: 503, Delay: 300 * time.Millisecond, Times: 1})
	n := &fakeNotifier{}
	n.onReady = func() {
		if _, err := w.current("a"); err != nil {
			t.Errorf("READY=1 sent before files existed: %v", err)
		}
	}
	stop := w.run(NewWithInstances(w.instances("a", "b"), Options{Logger: w.log}), RunOptions{Notifier: n})
	defer stop()
	eventually(t, 15*time.Second, "READY=1", func() bool { return n.count("READY") > 0 })
	for _, name := range []string{"a", "b"} {
		if _, err := w.current(name); err != nil {
			t.Errorf("READY=1 but %s has no valid files: %v", name, err)
		}
	}
	if n := len(certRequests(w.emu)); n < 3 {
		t.Errorf("%d certificate requests; the injected 503 did not reach a", n)
	}
}

// runWatched runs the daemon on instance name and waits until its files are written and
// watched: the hook runs after the daemon watches the new directory (a change before
// that has no event; the loop finds it at its next renewal). It returns stop.
func (w *world) runWatched(t *testing.T, name string) (stop func()) {
	t.Helper()
	stop = w.run(NewWithInstances(w.instances(name), Options{Logger: w.log}), RunOptions{})
	eventually(t, 5*time.Second, "files and the hook", func() bool {
		_, err := w.current(name)
		return err == nil && strings.Contains(w.buf.String(), "hook ran")
	})
	return stop
}

func TestRunRestoresDeletedFiles(t *testing.T) {
	w := newWorld(t, time.Hour)
	defer w.runWatched(t, "a")()
	issued := w.emu.Issued()
	cert := filepath.Join(w.dir, "out", "a", "cert.pem")
	if err := os.Remove(cert); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "cert.pem restored", func() bool { _, err := os.Stat(cert); return err == nil })
	if w.emu.Issued() != issued {
		t.Error("restoring a deleted file called the API")
	}
}

// TestRunRestoresDeletedDirectoryEveryTime: the sink directory removed (or renamed
// away) again and again is restored every time, from memory: a removed directory's
// watch is gone, and the restored directory must be watched anew.
func TestRunRestoresDeletedDirectoryEveryTime(t *testing.T) {
	w := newWorld(t, time.Hour)
	defer w.runWatched(t, "a")()
	issued := w.emu.Issued()
	dir := filepath.Join(w.dir, "out", "a")
	for round, remove := range []func() error{
		func() error { return os.RemoveAll(dir) },
		func() error { return os.Rename(dir, dir+".moved") },
		func() error { return os.RemoveAll(dir) },
	} {
		if err := remove(); err != nil {
			t.Fatal(err)
		}
		// The repair watches the directory before it logs the restore.
		eventually(t, 5*time.Second, fmt.Sprintf("round %d: files restored", round+1), func() bool {
			_, err := w.current("a")
			return err == nil && strings.Count(w.buf.String(), "restored them") == round+1
		})
	}
	if w.emu.Issued() != issued {
		t.Error("restoring a deleted directory called the API")
	}
}

// deleteAfterFirstWrite removes cert.pem right after the first write: a change that
// comes before the daemon watches the new directory, so no event reports it.
type deleteAfterFirstWrite struct {
	Sink
	dir  string
	done atomic.Bool
}

func (s *deleteAfterFirstWrite) Dir() string { return s.dir }

func (s *deleteAfterFirstWrite) Present(b *bundle.Bundle) error {
	return s.Sink.(presentSink).Present(b)
}

func (s *deleteAfterFirstWrite) Write(ctx context.Context, b *bundle.Bundle) (bool, error) {
	changed, err := s.Sink.Write(ctx, b)
	if err == nil && s.done.CompareAndSwap(false, true) {
		if rerr := os.Remove(filepath.Join(s.dir, "cert.pem")); rerr != nil {
			return changed, rerr
		}
	}
	return changed, err
}

// TestRunRepairsAChangeBeforeTheWatch: files removed between the first write and the
// moment their new directory is watched are noticed (the daemon checks they are there
// when it starts watching) and restored from memory.
func TestRunRepairsAChangeBeforeTheWatch(t *testing.T) {
	w := newWorld(t, time.Hour)
	ins := w.instances("a")
	sink := &deleteAfterFirstWrite{Sink: ins[0].Sinks[0], dir: filepath.Join(w.dir, "out", "a")}
	ins[0].Sinks = []Sink{sink}
	stop := w.run(NewWithInstances(ins, Options{Logger: w.log}), RunOptions{})
	defer stop()
	eventually(t, 5*time.Second, "files restored after the early change", func() bool {
		_, err := w.current("a")
		return sink.done.Load() && err == nil
	})
	if n := w.emu.Issued(); n != 1 {
		t.Errorf("%d certificates issued; the restore must not call the API", n)
	}
}

func certRequests(e *emulator.Emulator) []time.Time {
	var out []time.Time
	for _, r := range e.Requests() {
		if strings.Contains(r.Path, "generateEphemeralCert") {
			out = append(out, r.Time)
		}
	}
	return out
}

// TestRunHonoursRetryAfterAndRateLimit: a 429 with Retry-After: 2 delays the retry by at
// least 2 s; after that second attempt also fails, the burst of 2 is spent and the next
// attempt waits for the 30 s refill instead of hammering the API. On a fake clock.
func TestRunHonoursRetryAfterAndRateLimit(t *testing.T) {
	w := newWorld(t, time.Hour)
	w.emu.Inject(emulator.Fault{Match: "generateEphemeralCert", Status: 429, RetryAfter: "2", Times: 1})
	w.emu.Inject(emulator.Fault{Match: "generateEphemeralCert", Status: 503, Times: 1})
	clock := newFakeClock()
	clock.now = time.Now() // the emulator's certificates are valid in real time
	d, _ := fakeDaemon(t, clock, fakeRunOptions{}, w.instances("a")...)
	eventually(t, 10*time.Second, "the first attempt", func() bool { return len(certRequests(w.emu)) == 1 })
	settle(t, d)
	clock.Advance(1900 * time.Millisecond)
	settle(t, d)
	if n := len(certRequests(w.emu)); n != 1 {
		t.Fatalf("retried %d times within 1.9 s of a 429 with Retry-After: 2", n-1)
	}
	clock.Advance(100 * time.Millisecond)
	eventually(t, 5*time.Second, "the retry after Retry-After", func() bool { return len(certRequests(w.emu)) == 2 })
	settle(t, d)
	// The 503's backoff is at most 2 s; then the spent burst holds the third attempt
	// back until a token refills (30 s after the first).
	clock.Advance(2 * time.Second)
	settle(t, d)
	if n := len(certRequests(w.emu)); n != 2 {
		t.Fatalf("%d attempts; the third must wait for the rate limit", n)
	}
	clock.Advance(26 * time.Second) // 30 s after the first attempt
	eventually(t, 5*time.Second, "the third attempt once the rate limit allows", func() bool { return len(certRequests(w.emu)) == 3 })
}

func TestRunRecoversFromTransientErrors(t *testing.T) {
	w := newWorld(t, time.Hour)
	w.emu.Inject(emulator.Fault{Match: "connectSettings", Status: 503, Times: 1})
	stop := w.run(NewWithInstances(w.instances("a"), Options{Logger: w.log}), RunOptions{})
	defer stop()
	eventually(t, 10*time.Second, "files after a 503", func() bool { _, err := w.current("a"); return err == nil })
	if !strings.Contains(w.buf.String(), "will retry") {
		t.Error("no retry was logged")
	}
}

func TestRunPermanentErrorIsNotHammered(t *testing.T) {
	w := newWorld(t, time.Hour)
	w.emu.Inject(emulator.Fault{Match: "generateEphemeralCert", Status: 403})
	clock := newFakeClock()
	clock.now = time.Now()
	d, buf := fakeDaemon(t, clock, fakeRunOptions{}, w.instances("a")...)
	eventually(t, 10*time.Second, "the first attempt", func() bool { return len(certRequests(w.emu)) == 1 })
	settle(t, d) // the failure is handled at the clock's current time
	for range 4 {
		clock.Advance(time.Minute)
		settle(t, d)
	}
	if n := len(certRequests(w.emu)); n != 1 {
		t.Errorf("a permanent 403 was tried %d times in 4 minutes, want 1", n)
	}
	clock.Advance(time.Minute + time.Second) // the 5-minute backoff ceiling
	eventually(t, 5*time.Second, "one retry at the backoff ceiling", func() bool { return len(certRequests(w.emu)) == 2 })
	if !strings.Contains(buf.String(), "cloudsql.instances.connect") {
		t.Errorf("the log does not say what to fix:\n%s", buf.String())
	}
}

func TestReloadAppliesOnlyTheDifference(t *testing.T) {
	w := newWorld(t, time.Hour)
	first := w.instances("a", "b")
	hup := make(chan os.Signal, 1)
	var (
		mu   sync.Mutex
		next func() ([]*Instance, error)
	)
	reload := func(context.Context) ([]*Instance, error) {
		mu.Lock()
		defer mu.Unlock()
		return next()
	}
	a := NewWithInstances(first, Options{Logger: w.log})
	stop := w.run(a, RunOptions{Reload: reload, Hangup: hup})
	defer stop()
	eventually(t, 5*time.Second, "a and b", func() bool {
		_, ea := w.current("a")
		_, eb := w.current("b")
		return ea == nil && eb == nil
	})
	issued := w.emu.Issued()

	// A broken config: nothing changes.
	mu.Lock()
	next = func() ([]*Instance, error) { return nil, errors.New("agent.hcl:3:1: error: Unsupported argument") }
	mu.Unlock()
	hup <- os.Interrupt
	eventually(t, 5*time.Second, "the reload error to be logged", func() bool {
		return strings.Contains(w.buf.String(), "agent.hcl:3:1")
	})

	// Add c, keep a and b as they are (rebuilt from the same config).
	mu.Lock()
	next = func() ([]*Instance, error) { return w.instances("a", "b", "c"), nil }
	mu.Unlock()
	hup <- os.Interrupt
	eventually(t, 5*time.Second, "c", func() bool { _, err := w.current("c"); return err == nil })
	time.Sleep(200 * time.Millisecond)
	if got := w.emu.Issued() - issued; got != 1 {
		t.Errorf("adding one instance issued %d certificates, want 1", got)
	}
	if !strings.Contains(w.buf.String(), `started=[c] restarted=[] removed=[]`) {
		t.Errorf("reload did not report exactly c as started:\n%s", w.buf.String())
	}
}

// fakeNotifier records notify states.
type fakeNotifier struct {
	mu      sync.Mutex
	status  string
	states  []string
	onReady func()
}

func (f *fakeNotifier) add(s string) error {
	f.mu.Lock()
	f.states = append(f.states, s)
	cb := f.onReady
	f.mu.Unlock()
	if s == "READY" && cb != nil {
		cb()
	}
	return nil
}
func (f *fakeNotifier) Ready() error     { return f.add("READY") }
func (f *fakeNotifier) Reloading() error { return f.add("RELOADING") }
func (f *fakeNotifier) Stopping() error  { return f.add("STOPPING") }
func (f *fakeNotifier) Status(s string) error {
	f.mu.Lock()
	f.status = s
	f.mu.Unlock()
	return f.add("STATUS")
}

// lastStatus is the last STATUS= text.
func (f *fakeNotifier) lastStatus() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}
func (f *fakeNotifier) count(s string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, x := range f.states {
		if x == s {
			n++
		}
	}
	return n
}

// TestRunRenewsAtOnceAfterSuspend: timers run on the monotonic clock, which stops during
// suspend. When the wall clock has jumped past the renewal time, the clock watch notices
// at its next check (driven here by an injected tick and injected clock readings) and
// the loop re-checks and renews at once.
func TestRunRenewsAtOnceAfterSuspend(t *testing.T) {
	w := newWorld(t, time.Hour)
	var (
		mu     sync.Mutex
		offset time.Duration
	)
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return time.Now().Add(offset)
	}
	a := NewWithInstances(w.instances("a"), Options{Logger: w.log, Now: now})
	d, err := newDaemon(a, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tick := make(chan time.Time)
	base := time.Now()
	d.clockTick = tick
	d.clockRead = func() (time.Time, time.Duration) { return now().Round(0), time.Since(base) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, 5*time.Second, "files", func() bool { _, err := w.current("a"); return err == nil })
	// Let the loop settle: its own write wakes it once more through the directory watch,
	// and a wake-up re-reads the clock, which must still be the old one then.
	time.Sleep(500 * time.Millisecond)
	tick <- time.Now() // a check without a jump changes nothing
	time.Sleep(300 * time.Millisecond)
	issued := w.emu.Issued()
	if issued != 1 {
		t.Fatalf("%d certificates before the clock jump", issued)
	}

	mu.Lock()
	offset = 50 * time.Minute // the machine slept; renewal was due at about 40 minutes
	mu.Unlock()
	time.Sleep(300 * time.Millisecond)
	if w.emu.Issued() != issued {
		t.Fatal("renewed before the clock jump was noticed; the test does not test the watch")
	}
	tick <- time.Now() // the watch's next check
	eventually(t, 5*time.Second, "a renewal after the clock jump", func() bool { return w.emu.Issued() == issued+1 })
}

// TestClockWatch: the watch broadcasts when the wall clock moved differently from the
// monotonic clock between two checks by more than the slack, and only then.
func TestClockWatch(t *testing.T) {
	c := newClockWatch()
	tick := make(chan time.Time)
	var (
		mu   sync.Mutex
		wall = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		mono time.Duration
	)
	reads := make(chan struct{}, 1)
	read := func() (time.Time, time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		defer func() { reads <- struct{}{} }()
		return wall, mono
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.run(ctx, tick, read) }()
	defer func() { cancel(); <-done }()
	<-reads // the first reading
	steps := []struct {
		name       string
		wall, mono time.Duration // how far each clock moves before the check
		jump       bool
	}{
		{"both clocks advance together", time.Minute, time.Minute, false},
		{"drift within the slack", time.Minute + clockSlack, time.Minute, false},
		{"suspend: the wall clock ran on, the monotonic one stood", time.Hour, time.Minute, true},
		{"steady again", time.Minute, time.Minute, false},
		{"the clock was set back", -10 * time.Minute, time.Minute, true},
		{"set forward a little more than the slack", time.Minute + clockSlack + time.Second, time.Minute, true},
	}
	for _, s := range steps {
		ch := c.changed()
		mu.Lock()
		wall, mono = wall.Add(s.wall), mono+s.mono
		mu.Unlock()
		tick <- time.Time{}
		<-reads
		tick <- time.Time{} // accepted only after the first check is done
		<-reads             // the same readings: no movement
		select {
		case <-ch:
			if !s.jump {
				t.Errorf("%s: broadcast without a jump", s.name)
			}
		default:
			if s.jump {
				t.Errorf("%s: no broadcast", s.name)
			}
		}
	}
}

func TestBucket(t *testing.T) {
	t0 := time.Now()
	b := newBucket(t0)
	if b.take(t0) != 0 || b.take(t0) != 0 {
		t.Fatal("burst of 2 not available")
	}
	if w := b.take(t0); w != refreshInterval {
		t.Errorf("third take waits %v, want %v", w, refreshInterval)
	}
	if w := b.take(t0.Add(refreshInterval / 2)); w != refreshInterval/2 {
		t.Errorf("half refilled: wait %v", w)
	}
	if b.take(t0.Add(refreshInterval)) != 0 {
		t.Error("no token after a full interval")
	}
	b.setLifetime(20 * time.Second) // short certificates: one per 2 s
	if w := b.take(t0.Add(refreshInterval)); w != 2*time.Second {
		t.Errorf("short-lifetime interval: wait %v, want 2s", w)
	}
}

// TestRunScheduleTriggersRefresh: a schedule adds refreshes at its times although the
// certificate is far from due. On a fake clock.
func TestRunScheduleTriggersRefresh(t *testing.T) {
	w := newWorld(t, time.Hour)
	w.extra = `schedule = "*/10 * * * *"`
	clock := newFakeClock()
	clock.now = time.Now() // the emulator's certificates are valid in real time
	next := clock.now.Truncate(10 * time.Minute).Add(10 * time.Minute)
	d, _ := fakeDaemon(t, clock, fakeRunOptions{}, w.instances("a")...)
	eventually(t, 10*time.Second, "the first certificate and its hook", func() bool { return w.emu.Issued() == 1 && w.hookRuns("a") == 1 })
	settle(t, d)
	clock.Advance(next.Sub(clock.Now()) - time.Second)
	settle(t, d)
	if n := w.emu.Issued(); n != 1 {
		t.Fatalf("%d certificates before the scheduled time", n)
	}
	clock.Advance(time.Second)
	eventually(t, 5*time.Second, "a scheduled refresh and its hook", func() bool { return w.emu.Issued() == 2 && w.hookRuns("a") == 2 })
	settle(t, d)
	clock.Advance(10 * time.Minute)
	eventually(t, 5*time.Second, "the next scheduled refresh", func() bool { return w.emu.Issued() == 3 })
}

// TestRunOutageKeepsFilesAndRecovers: while the API fails, the files on disk stay as
// they are and valid; when it comes back, the agent renews before they expire. On a
// fake clock, with 1-hour certificates.
func TestRunOutageKeepsFilesAndRecovers(t *testing.T) {
	w := newWorld(t, time.Hour)
	clock := newFakeClock()
	clock.now = time.Now() // the emulator's certificates are valid in real time
	d, buf := fakeDaemon(t, clock, fakeRunOptions{}, w.instances("a")...)
	eventually(t, 5*time.Second, "files", func() bool { _, err := w.current("a"); return err == nil })
	settle(t, d)
	first, _ := w.current("a")
	w.emu.Inject(emulator.Fault{Match: "generateEphemeralCert", Status: 503})
	// Renewal is due at about 38.5 minutes; let it fail for 10 minutes.
	for range 48 {
		clock.Advance(time.Minute)
		settle(t, d)
	}
	if !strings.Contains(buf.String(), "will retry") {
		t.Fatal("no failed renewal during the outage")
	}
	if c, err := w.current("a"); err != nil || c.serial != first.serial {
		t.Fatalf("files changed during the outage: %+v, %v", c, err)
	}
	if ok, _ := d.a.Ready(); !ok {
		t.Error("not ready during the outage although the files are valid")
	}
	w.emu.ClearFaults()
	clock.Advance(3 * time.Minute) // the backoff is capped at a quarter of the 12 minutes left
	eventually(t, 5*time.Second, "a renewal before the old certificate expires", func() bool {
		c, err := w.current("a")
		return err == nil && c.serial != first.serial
	})
	if !clock.Now().Before(first.notAfter) {
		t.Error("renewed only after the old certificate expired")
	}
}

// TestRunAdoptsFilesFromResetSSL: reset-ssl (another process, here another Agent) writes
// new files while the daemon runs; the daemon adopts them without an API call of its
// own, instead of restoring its older copy.
func TestRunAdoptsFilesFromResetSSL(t *testing.T) {
	w := newWorld(t, time.Hour)
	stop := w.run(NewWithInstances(w.instances("a"), Options{Logger: w.log}), RunOptions{})
	defer stop()
	eventually(t, 5*time.Second, "files", func() bool { _, err := w.current("a"); return err == nil })
	before, _ := w.current("a")
	issued := w.emu.Issued()

	tool := NewWithInstances(w.instances("a"), Options{Logger: w.log, Sleep: func(context.Context, time.Duration) error { return nil }})
	var lines []string
	if err := tool.ResetSSL(context.Background(), "a", func(l string) { lines = append(lines, l) }); err != nil {
		t.Fatalf("ResetSSL: %v (progress %q)", err, lines)
	}
	after, _ := w.current("a")
	if after == nil || after.serial == before.serial {
		t.Fatal("reset-ssl wrote no new certificate")
	}
	eventually(t, 5*time.Second, "the daemon to adopt the new files", func() bool {
		return strings.Contains(w.buf.String(), "adopted newer files written by another process")
	})
	time.Sleep(300 * time.Millisecond)
	if got := w.emu.Issued() - issued; got != 1 {
		t.Errorf("%d certificates issued; want only reset-ssl's", got)
	}
	if c, _ := w.current("a"); c == nil || c.serial != after.serial {
		t.Error("the daemon replaced reset-ssl's files")
	}
}

// TestRunGeminiDBScheduleRedownloads: a CA-only instance is downloaded at start, then
// again on its schedule; the hook fires only when the CA really changed.
func TestRunGeminiDBScheduleRedownloads(t *testing.T) {
	w := newWorld(t, time.Hour)
	const projID, instID = "0123456789abcdef0123456789abcdef", "a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5din06"
	w.emu.AddGeminiDBInstance(projID, instID)
	ak, sk := w.emu.HuaweiAKSK()
	skFile := filepath.Join(w.dir, "sk")
	if err := os.WriteFile(skFile, []byte(sk), 0o600); err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf(`
credentials "huaweicloud" "default" {
  region          = "cn-north-4"
  access_key      = %q
  secret_key_file = %q
}
instance "geminidb" "cache" {
  project_id   = %q
  instance_id  = %q
  api_endpoint = %q
  schedule     = "@every 1s"
  sink "file" { dir = %q }
  hook "exec" { command = ["/bin/sh", "-c", "echo $DBCERT_EVENT >> %s"] }
}
`, ak, skFile, projID, instID, w.emu.URL(), filepath.Join(w.dir, "out", "cache"), filepath.Join(w.dir, "hooks-cache"))
	cfg, err := config.Parse(filepath.Join(w.dir, "agent.hcl"), []byte(src), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ins, err := Build(context.Background(), cfg, BuildOptions{Logger: w.log})
	if err != nil {
		t.Fatal(err)
	}
	downloads := func() int {
		n := 0
		for _, r := range w.emu.Requests() {
			if strings.HasSuffix(r.Path, "/ssl-cert/download-link") {
				n++
			}
		}
		return n
	}
	stop := w.run(NewWithInstances(ins, Options{Logger: w.log}), RunOptions{})
	defer stop()
	eventually(t, 5*time.Second, "the first download and its hook", func() bool { return w.hookRuns("cache") == 1 })
	w.emu.RotateGeminiDBCA(projID, instID)
	eventually(t, 5*time.Second, "a scheduled download of the new CA and its hook", func() bool { return w.hookRuns("cache") == 2 })
	data, _ := os.ReadFile(filepath.Join(w.dir, "hooks-cache"))
	if string(data) != "ca-changed\nca-changed\n" {
		t.Errorf("hook events = %q", data)
	}
	n := downloads()
	// The rate limit (burst 2, then one per 30 s) holds further scheduled downloads back;
	// none of the downloads so far changed anything else.
	time.Sleep(1500 * time.Millisecond)
	if downloads() > n+1 || w.hookRuns("cache") != 2 {
		t.Errorf("downloads %d → %d, hooks %d: unchanged CAs must not fire hooks", n, downloads(), w.hookRuns("cache"))
	}
}
