package agent

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/config"
)

// Notifier is told about the daemon's lifecycle (systemd's notify protocol). A nil
// Notifier is allowed.
type Notifier interface {
	Ready() error
	Reloading() error
	Stopping() error
	Status(string) error
}

// RunOptions configure Run. Zero values are defaults.
type RunOptions struct {
	// Reload, when set, builds the instances of a new configuration; it is called on
	// every value from Hangup and on changes of ConfigPath. A failed reload is logged
	// and the running instances are left alone.
	Reload func(ctx context.Context) ([]*Instance, error)
	Hangup <-chan os.Signal // SIGHUP

	ConfigPath string // watched for changes when Reload is set
	Notifier   Notifier
	// MaxInFlight bounds the API refreshes running at once across all instances;
	// default 16.
	MaxInFlight int
	// MaxWriting bounds the instances writing their files at once; default 32. Every
	// fsync blocks an OS thread, so 1,000 instances writing together on a disk would
	// start hundreds of threads (each kept for the life of the process) and queue
	// thousands of flushes; 32 keep the disk busy.
	MaxWriting int
	// FetchTimeout bounds one provider Fetch (all its API and token requests); default
	// DefaultFetchTimeout. With a systemd watchdog, a loop that stays in a fetch longer
	// than this plus a margin, in its hooks longer than their timeouts plus a margin,
	// or in a write longer than a minute, stops the pings (see README, watchdog).
	FetchTimeout time.Duration
	// APIRate is a known API quota per credentials block (api_rate); the zero value
	// starts unpaced (see pacer.go). ShareKeys makes instances with a key_rotation
	// duration share one key (share_keys; see sharedkeys.go).
	APIRate   config.Rate
	ShareKeys bool
	// FirstKey, when set, is the first RSA key the daemon uses (see FirstKey).
	FirstKey *FirstKey
}

// Observer is told what the daemon does, for metrics and readiness. Methods must be
// cheap and safe for concurrent use.
type Observer interface {
	// Files reports the material now on disk for an instance (nil: none valid) and when
	// it is next due.
	Files(instance string, b *bundle.Bundle, next time.Time)
	// Refreshed reports the outcome of one refresh attempt; reason is "" on success.
	Refreshed(instance string, reason string)
	// HookRan reports one hook run; ok false means it failed.
	HookRan(instance string, ok bool)
	// Removed says an instance left the configuration.
	Removed(instance string)
}

// Run keeps every instance's files valid until ctx is done: each instance has a loop
// that renews before expiry (RenewAt), retries failures with Backoff, honours its cron
// schedule, repairs its sink directories when someone deletes the visible files, and
// obeys the refresh rate limits. Files on disk are the state: an instance whose files
// are complete and not yet due makes no API call at start. On shutdown, writes and
// hooks already started are finished; Run returns nil.
func (a *Agent) Run(ctx context.Context, o RunOptions) error {
	d, err := newDaemon(a, o)
	if err != nil {
		return err
	}
	return d.run(ctx)
}

// Fetch failure reasons for metrics.
const (
	reasonRetryable = "retryable"
	reasonPermanent = "permanent"
	reasonWrite     = "write"
	reasonHook      = "hook"
)

// loop is one running instance. It has a goroutine only while it works: an idle loop
// is parked (its state in st, a runtime timer for when it is due), and wake starts a
// goroutine for it again. With thousands of instances that saves a stack each.
type loop struct {
	in     *Instance
	hb     *heartbeat // progress, for the watchdog
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the loop has ended

	// Set by the loop's first goroutine; used only by the goroutine that runs it.
	st  *loopState
	log *slog.Logger

	mu        sync.Mutex
	running   bool        // a goroutine runs the loop (else it is parked or ended)
	ended     bool        // it has ended: wakes are ignored
	woken     wake        // why it was woken while it ran (bits), handled before it parks
	stopTimer func() bool // stops the parked loop's timer (nil: none)
}

// loopState is what one loop remembers between iterations. Used only by the goroutine
// that runs the loop at the time (one at a time: see wake).
type loopState struct {
	cur     *held     // what is on disk and valid (nil: nothing valid)
	jitter  float64   // drawn once per certificate
	retryAt time.Time // set after a failure
	attempt int
	hold    time.Time // rate limit: no refresh before this
	forced  bool      // a trigger (the schedule) asked for a refresh
	// schedAt is the next extra refresh of a certificate instance's schedule (zero:
	// none); CA-only instances count theirs from the last download (nextDownload).
	schedAt time.Time
	keyAt   time.Time // when to generate the next key ahead of time (zero: not planned)
	keys    *keySource
	bucket  *bucket
	hb      *heartbeat // the loop's
	// failed is the last attempt's permanent error ("" when it succeeded or can be
	// retried), for readiness and STATUS=.
	failed string
	// wrote is the last bundle this loop wrote (or tried to), to tell its own files
	// from another process's.
	wrote *held
	// warnedRenew: the renew_before warning was logged for this instance.
	warnedRenew bool
	// reheal counts the repairs in a row whose restored files were gone again at once.
	reheal int
}

// run1 runs the loop from its start (reading the files on disk) in the calling
// goroutine, until it parks or ends.
func (d *daemon) run1(l *loop) {
	l.st, l.log = d.resume(l)
	d.cycle(l, 0)
}

// cycle handles the wake-ups w, does what is due (work), and parks the loop when nothing
// else woke it meanwhile; it returns once the loop is parked or has ended. The loop's
// goroutine holds no stack while parked; wake starts a new one.
func (d *daemon) cycle(l *loop, w wake) {
	st, log := l.st, l.log
	for {
		l.hb.busy("handling a wake-up", writeAllowance)
		if w&wakeDone != 0 || l.ctx.Err() != nil {
			d.end(l)
			return
		}
		if w&wakeHeal != 0 {
			d.repair(l.ctx, l, st, log)
		}
		if w&wakeTrigger != 0 {
			st.forced = true
		}
		due := d.work(l.ctx, l, st, log)
		l.hb.idle()
		var more bool
		if w, more = d.park(l, due); !more {
			return
		}
	}
}

// park takes the wake-ups that arrived while the loop worked (more: there were some, go
// on), or parks the loop with a timer for due (zero: none).
func (d *daemon) park(l *loop, due time.Time) (w wake, more bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.woken != 0 {
		w, l.woken = l.woken, 0
		return w, true
	}
	l.running = false
	if !due.IsZero() {
		l.stopTimer = d.a.afterFunc(due.Sub(d.a.now()), func() { d.wake(l, wakeTimer) })
	}
	return 0, false
}

// wake tells the loop why it should look again: a parked loop gets a goroutine, a
// running one handles w before it parks. Safe for concurrent use; ignored once the
// loop has ended.
func (d *daemon) wake(l *loop, w wake) {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	if l.running {
		l.woken |= w
		l.mu.Unlock()
		return
	}
	l.running = true
	if l.stopTimer != nil {
		l.stopTimer()
		l.stopTimer = nil
	}
	l.mu.Unlock()
	go d.cycle(l, w)
}

// end finishes the loop: nothing runs for it any more. It runs in the loop's goroutine,
// so no timer is armed (wake disarmed it when it started the goroutine).
func (d *daemon) end(l *loop) {
	l.mu.Lock()
	l.ended, l.running = true, false
	l.mu.Unlock()
	if l.st != nil {
		l.st.keys.close()
	}
	close(l.done)
	d.wg.Done()
}

// resume sets up a loop's state from the files on disk (valid ones are adopted and
// their renewal planned; others are replaced by the first refresh) and its logger.
func (d *daemon) resume(l *loop) (*loopState, *slog.Logger) {
	in, a := l.in, d.a
	log := a.log.With("instance", in.Name)
	now := a.now()
	st := &loopState{jitter: a.rand(), bucket: newBucket(now), keys: newKeySource(in.Renewal.KeyMaxAge, d.keygen), hb: l.hb}
	st.keys.gen = d.newKey
	if d.shared != nil && in.Renewal.KeyMaxAge > 0 {
		st.keys.shared = d.shared
	}
	l.hb.busy("reading files on disk", writeAllowance)
	if cur, err := a.current(in, now); err == nil {
		d.cas.intern(cur)
		st.keys.adopt(cur.Key, cur.Start())
		st.cur = hold(cur, st.keys.cur)
		d.checkRenewBefore(in, st, cur, log)
		st.bucket.setLifetime(cur.Lifetime())
		if at := in.renewAt(cur, st.jitter); at.After(now) {
			st.keyAt = now.Add(at.Sub(now) / 2)
		}
		log.Info("resuming from files on disk", "not_after", fmtTime(cur.NotAfter()), "renew_at", fmtTime(in.renewAt(cur, st.jitter)))
		d.watchSinks(l, st.cur)
	} else if !errors.Is(err, fs.ErrNotExist) {
		log.Info("files on disk need replacing", "reason", err)
	}
	if in.NeedsKey && in.Spec != nil && in.Spec.Schedule != nil {
		st.schedAt = in.Spec.Schedule.Next(now) // extra refreshes at the schedule's times
	}
	d.report(in, st)
	return st, log
}

// work does what is due (refreshes within the rate limit, preparing the next key)
// until nothing is, and returns when something is due next (zero: only on a wake-up).
// It returns at once when ctx is done.
func (d *daemon) work(ctx context.Context, l *loop, st *loopState, log *slog.Logger) time.Time {
	in := l.in
	for ctx.Err() == nil {
		now := d.a.now()
		due := d.due(in, st, now)
		if !due.IsZero() && !now.Before(due) {
			if w := st.bucket.take(now); w > 0 {
				st.hold = now.Add(w)
				log.Debug("refresh rate limited", "wait", w)
				continue
			}
			st.forced = false
			if !st.schedAt.IsZero() && !now.Before(st.schedAt) {
				st.schedAt = in.Spec.Schedule.Next(now)
			}
			d.refresh(ctx, l, st, log)
			d.report(in, st)
			continue
		}
		if !st.keyAt.IsZero() && !now.Before(st.keyAt) {
			st.keyAt = time.Time{}
			st.keys.prepare(now)
			continue
		}
		wake := due
		if !st.keyAt.IsZero() && (wake.IsZero() || st.keyAt.Before(wake)) {
			wake = st.keyAt
		}
		return wake
	}
	return time.Time{}
}

// due is when the loop should refresh next; the zero time means "only on a trigger".
func (d *daemon) due(in *Instance, st *loopState, now time.Time) time.Time {
	var t time.Time
	switch {
	case st.forced:
		t = now
	case !st.retryAt.IsZero():
		t = st.retryAt
	case st.cur == nil:
		t = now
	case !in.NeedsKey:
		t = in.nextDownload(st.cur.times(), now) // zero without a schedule
	default:
		t = in.renewAt(st.cur.times(), st.jitter)
	}
	if st.retryAt.IsZero() && !st.schedAt.IsZero() && (t.IsZero() || st.schedAt.Before(t)) {
		t = st.schedAt
	}
	if !t.IsZero() && t.Before(st.hold) {
		t = st.hold
	}
	return t
}

// wake is a set of reasons to look again (bits).
type wake int

const (
	wakeTimer   wake = 1 << iota // something is due
	wakeDone                     // the loop's context is done
	wakeTrigger                  // refresh now (a schedule)
	wakeHeal                     // a sink directory changed
	wakeClock                    // the wall clock jumped
)

// refresh makes one attempt: fetch (bounded by the in-flight limit), verify, write,
// run hooks. Failures set st.retryAt; files that are valid are never touched by one.
func (d *daemon) refresh(ctx context.Context, l *loop, st *loopState, log *slog.Logger) {
	in, a := l.in, d.a
	b, err := d.fetch(ctx, in, st)
	if ctx.Err() != nil {
		return // shutting down: nothing was written
	}
	if err != nil {
		d.failed(in, st, err, reasonFor(err), log)
		return
	}
	// Writes and hooks are not cut short by shutdown.
	wctx := context.WithoutCancel(ctx)
	st.wrote = hold(b, st.keys.cur)
	release := d.writeSlot(st.hb)
	changed, err := a.write(wctx, in, b)
	release()
	if err != nil {
		d.failed(in, st, err, reasonWrite, log)
		return
	}
	prev := st.cur.times()
	st.cur, st.retryAt, st.attempt, st.jitter, st.failed = st.wrote, time.Time{}, 0, a.rand(), ""
	d.checkRenewBefore(in, st, b, log)
	st.bucket.setLifetime(b.Lifetime())
	if in.NeedsKey {
		// Make the next key halfway to the renewal: ahead of time, but not all at once
		// with the first round's keys.
		st.keyAt = a.now().Add(in.renewAt(b, st.jitter).Sub(a.now()) / 2)
	}
	d.a.obs.Refreshed(in.Name, "")
	d.watchSinks(l, st.cur)
	if !changed {
		log.Info("files unchanged", "next_renewal", fmtTime(d.due(in, st, a.now())))
		return
	}
	logFiles(log, b)
	log.Info("next renewal", "at", fmtTime(d.due(in, st, a.now())))
	st.hb.busy("running hooks", in.hookLimit())
	if err := a.notify(wctx, in, b, prev, log); err != nil {
		log.Error("files were renewed but a hook failed", "err", err)
		d.a.obs.Refreshed(in.Name, reasonHook)
	}
}

// fetch gets a key (pre-generated, or reused under key_rotation) and the material.
func (d *daemon) fetch(ctx context.Context, in *Instance, st *loopState) (*bundle.Bundle, error) {
	if in.Err != nil {
		return nil, in.Err
	}
	if err := preflight(in); err != nil {
		return nil, err
	}
	// Waiting for a key or a slot is waiting for others, not a step of ours.
	st.hb.waiting("waiting for a key or an API slot")
	var key crypto.Signer
	var der []byte
	if in.NeedsKey {
		k, kd, err := st.keys.get(ctx, d.a.now())
		if err != nil {
			return nil, fmt.Errorf("generating a private key: %w", err)
		}
		key, der = k, kd
	}
	b, err := d.fetchPaced(ctx, in, st, key)
	if b != nil && der != nil && sameKey(b.Key, key) {
		b.KeyPKCS8 = der // the files need it encoded; it is
	}
	return b, err
}

// fetchPaced makes one request paced by the identity's limiter and bounded by the
// in-flight limit.
func (d *daemon) fetchPaced(ctx context.Context, in *Instance, st *loopState, key crypto.Signer) (*bundle.Bundle, error) {
	ticket, err := d.pace.acquire(ctx, in.Credentials, in.APICalls, urgent(st, d.a.now()))
	for err == nil {
		select {
		case d.inflight <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if !d.pace.stale(ticket) {
			break
		}
		<-d.inflight // the identity was slowed down while this waited: queue again
		ticket, err = d.pace.acquire(ctx, in.Credentials, in.APICalls, urgent(st, d.a.now()))
	}
	if err != nil {
		return nil, err
	}
	defer func() { <-d.inflight }()
	st.hb.busy("fetching from the API", d.fetchLimit())
	fctx, cancel := context.WithTimeoutCause(ctx, d.o.FetchTimeout, fmt.Errorf("the API did not answer within %s", d.o.FetchTimeout))
	defer cancel()
	fctx, calls := withCallCount(fctx)
	b, err := d.a.fetchWith(fctx, in, key)
	d.pace.answer(ticket, err, calls.admittedOrUnknown())
	if err != nil && fctx.Err() != nil && ctx.Err() == nil {
		return nil, retryableError{fmt.Errorf("%w (%w)", context.Cause(fctx), err)}
	}
	if err == nil {
		d.cas.intern(b) // instances with the same CA share one parsed copy
	}
	return b, err
}

// failed schedules the next attempt after err: exponential backoff with full jitter for
// errors a retry can help, the backoff ceiling for permanent ones (they are logged once
// per attempt, with what to fix, and not hammered).
func (d *daemon) failed(in *Instance, st *loopState, err error, reason string, log *slog.Logger) {
	a := d.a
	now := a.now()
	var left time.Duration
	cur := st.cur.times()
	if cur != nil {
		left = cur.NotAfter().Sub(now)
		if left <= 0 {
			// The files have expired (say the disk stayed full): keep retrying at least
			// every quarter of their lifetime, so short lifetimes recover quickly too.
			left = cur.Lifetime()
		}
	}
	ok, after := retryable(err)
	var wait time.Duration
	if ok || reason == reasonWrite {
		wait = Backoff(st.attempt, a.rand(), left, after)
	} else {
		wait = Backoff(64, 1, left, after) // the ceiling: 5 min or a quarter of the time left
	}
	st.attempt++
	st.retryAt = now.Add(wait)
	st.failed = ""
	if !ok && reason != reasonWrite {
		st.failed = err.Error()
	}
	d.a.obs.Refreshed(in.Name, reason)
	attrs := []any{"err", err, "retry_in", wait.Round(time.Millisecond), "attempt", st.attempt}
	if cur != nil {
		attrs = append(attrs, "files_valid_until", fmtTime(cur.NotAfter()))
	}
	if ok {
		log.Warn("refresh failed; will retry", attrs...)
	} else {
		log.Error("refresh failed", attrs...)
	}
}

func reasonFor(err error) string {
	if ok, _ := retryable(err); ok {
		return reasonRetryable
	}
	return reasonPermanent
}

// writeSlot waits for one of the MaxWriting slots and marks the loop busy writing; the
// returned func gives the slot back. The wait has no deadline of its own (a slot frees
// when a write ends; a write that hangs trips the watchdog itself) and, like writes,
// is not cut short by shutdown.
func (d *daemon) writeSlot(hb *heartbeat) (release func()) {
	hb.waiting("waiting for a write slot")
	d.writing <- struct{}{}
	hb.busy("writing files", writeAllowance)
	return func() { <-d.writing }
}

// repair handles a change in a sink directory. Files someone deleted or replaced are
// restored from the material the loop holds, without an API call. Newer valid files
// that another process wrote (reset-ssl, once) are adopted instead, so the loop never
// puts older material back.
func (d *daemon) repair(ctx context.Context, l *loop, st *loopState, log *slog.Logger) {
	// Let a burst of events settle (a deleted directory produces several).
	timer := time.NewTimer(100 * time.Millisecond)
	select {
	case <-ctx.Done():
		timer.Stop()
		return
	case <-timer.C:
	}
	l.mu.Lock()
	l.woken &^= wakeHeal // the events of the burst are handled by this repair
	l.mu.Unlock()
	wctx := context.WithoutCancel(ctx)
	before := st.cur // adoptNewer replaces st.cur; the view is built only if hooks run
	if adopted, own := d.adoptNewer(l.in, st, log); adopted || st.cur == nil {
		if adopted {
			d.watchSinks(l, st.cur) // a directory made anew (its old watch is gone)
		}
		d.report(l.in, st)
		if own != nil {
			// That write reported an error, so its hooks did not run: run them now,
			// or whatever reads the files would keep the old certificate.
			st.hb.busy("running hooks", l.in.hookLimit())
			if err := d.a.notify(wctx, l.in, own, before.times(), log); err != nil {
				log.Error("files were renewed but a hook failed", "err", err)
				d.a.obs.Refreshed(l.in.Name, reasonHook)
			}
		}
		return
	}
	var cur *bundle.Bundle // parsed from what the loop holds when a sink needs it
	restored, failed := false, false
	for _, s := range l.in.Sinks {
		if _, err := s.Current(); err == nil {
			continue
		}
		if cur == nil {
			var err error
			if cur, err = st.cur.bundle(); err != nil {
				log.Error("sink files were changed by someone else and the material held in memory is unusable; fetching new files", "err", err)
				st.cur = nil
				d.report(l.in, st)
				return
			}
		}
		release := d.writeSlot(st.hb)
		_, err := s.Write(wctx, cur)
		release()
		if err != nil {
			log.Error("sink files were changed by someone else and could not be restored", "sink", fmt.Sprint(s), "err", err)
			failed = true
			continue
		}
		restored = true
		d.watchSinks(l, st.cur) // at once: the directory may be new, and unwatched until now
		log.Warn("sink files were changed by someone else; restored them", "sink", fmt.Sprint(s))
	}
	d.watchSinks(l, st.cur)
	if _, err := d.a.current(l.in, d.a.now()); err != nil {
		if restored && !failed && st.reheal < maxReheal {
			// Changed again since the restore (its events may still be on their way):
			// restore again from memory rather than ask the API.
			st.reheal++
			d.wake(l, wakeHeal)
			return
		}
		st.reheal = 0
		// Not ready while the files are not there; fetch new ones (with backoff).
		log.Error("the files on disk are not valid and could not be restored; fetching new ones", "err", err)
		st.cur = nil
	} else {
		st.reheal = 0
	}
	d.report(l.in, st)
}

// maxReheal bounds the repairs in a row that restore files which are gone again at
// once; then the loop fetches new ones instead.
const maxReheal = 3

// adoptNewer takes over valid files on disk that differ from what the loop holds and
// were issued later (written by another process, which ran its own hooks); it reports
// whether it did, and when they are the loop's own last write, which reported an error,
// returns them as own (hooks have not run for them).
func (d *daemon) adoptNewer(in *Instance, st *loopState, log *slog.Logger) (adopted bool, own *bundle.Bundle) {
	disk, err := d.a.current(in, d.a.now())
	if err != nil || st.cur.same(disk) {
		return false, nil
	}
	ours := st.wrote.same(disk)
	if !ours && st.cur != nil && !disk.Start().After(st.cur.times().Start()) {
		return false, nil
	}
	d.cas.intern(disk)
	st.keys.adopt(disk.Key, disk.Start())
	st.cur, st.retryAt, st.attempt, st.jitter, st.failed = hold(disk, st.keys.cur), time.Time{}, 0, d.a.rand(), ""
	st.bucket.setLifetime(disk.Lifetime())
	msg := "adopted newer files written by another process"
	if ours {
		// Our own write reached the disk although it reported an error (say, after
		// the commit, while repairing links or pruning old generations).
		msg = "the files of the last write are on disk although writing reported an error; using them"
		own = disk
	}
	log.Info(msg, "not_after", fmtTime(disk.NotAfter()), "next_renewal", fmtTime(d.due(in, st, d.a.now())))
	return true, own
}

// report tells the observer what the loop holds.
func (d *daemon) report(in *Instance, st *loopState) {
	var next time.Time
	if st.cur != nil {
		next = d.due(in, st, d.a.now())
	}
	if !st.retryAt.IsZero() {
		next = st.retryAt
	}
	cur := st.cur.times()
	d.a.obs.Files(in.Name, cur, next)
	d.ready.set(in.Name, cur, st.failed)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// keySource hands out private keys. The loop asks it to prepare the next key ahead of
// time (prepare), so a renewal does not wait for RSA key generation; without a prepared
// key, get generates one. With a KeyMaxAge (key_rotation = "24h") it hands out the same
// key until that key is that old. Key generation runs under the agent-wide semaphore sem
// (bounding CPU and memory when many instances start at once). Owned by one loop; close
// waits for a background generation.
type keySource struct {
	maxAge  time.Duration
	sem     chan struct{}
	ch      chan keyResult
	pending bool
	wg      sync.WaitGroup
	cur     crypto.Signer // the key in use, kept only when it can be reused (maxAge, shared)
	curDER  []byte        // cur as PKCS#8 when known
	born    time.Time
	gen     func() (crypto.Signer, error) // default bundle.NewKey
	shared  *sharedKeys                   // share_keys: the agent-wide key instead
}

// keyResult is a key made ahead of time. It waits encoded (compactKey): with many
// instances, each holds one from halfway to its renewal on.
type keyResult struct {
	key compactKey
	err error
}

func newKeySource(maxAge time.Duration, sem chan struct{}) *keySource {
	return &keySource{maxAge: maxAge, sem: sem, ch: make(chan keyResult, 1)}
}

// reusable reports whether the current key may serve another certificate at now.
func (k *keySource) reusable(now time.Time) bool {
	return k.maxAge > 0 && k.cur != nil && now.Sub(k.born) < k.maxAge
}

// prepare starts generating the next key in the background, unless one is already
// pending or the current key will be reused.
func (k *keySource) prepare(now time.Time) {
	if k.pending || k.reusable(now) || k.shared != nil {
		return
	}
	gen := k.gen
	if gen == nil {
		gen = newRSAKey
	}
	k.pending = true
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		k.sem <- struct{}{}
		key, err := gen()
		<-k.sem
		k.ch <- keyResult{compact(key), err}
	}()
}

// adopt records the key found on disk and when it was (at the latest) made, when it
// can be reused.
func (k *keySource) adopt(key crypto.Signer, born time.Time) {
	k.cur, k.curDER, k.born = nil, nil, born
	if k.maxAge > 0 {
		k.cur = key
	}
}

// get returns the key for the next certificate and, when at hand, its PKCS#8 encoding
// (else nil).
func (k *keySource) get(ctx context.Context, now time.Time) (crypto.Signer, []byte, error) {
	if k.shared != nil {
		key, der, born, err := k.shared.get(ctx, now, k.maxAge)
		if err == nil {
			k.cur, k.curDER, k.born = key, der, born
		}
		return key, der, err
	}
	if k.reusable(now) {
		return k.cur, k.curDER, nil
	}
	k.prepare(now)
	select {
	case r := <-k.ch:
		k.pending = false
		if r.err != nil {
			return nil, nil, r.err
		}
		key, err := r.key.signer("the key made ahead of time")
		if err != nil {
			return nil, nil, err
		}
		k.born = now
		if k.maxAge > 0 {
			k.cur, k.curDER = key, r.key.der
		}
		return key, r.key.der, nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// close waits for a background generation (its result fits the buffered channel).
func (k *keySource) close() { k.wg.Wait() }

// checkRenewBefore warns, once per instance, when renew_before is not shorter than the
// lifetime of the certificate b: RenewAt then uses the default fraction for it instead
// of renewing right after every fetch.
func (d *daemon) checkRenewBefore(in *Instance, st *loopState, b *bundle.Bundle, log *slog.Logger) {
	if st.warnedRenew || !b.HasClientCert() || !renewBeforeTooLong(in.Renewal, b.Lifetime()) {
		return
	}
	st.warnedRenew = true
	log.Warn("renew_before is not shorter than the certificate's lifetime; renewing at the default fraction of its lifetime instead", "default_fraction", config.DefaultRenewFraction,
		"renew_before", in.Renewal.Before, "lifetime", b.Lifetime().Round(time.Second))
}

// retryableError marks an error a retry can help (a fetch that timed out).
type retryableError struct{ err error }

func (e retryableError) Error() string   { return e.err.Error() }
func (e retryableError) Unwrap() error   { return e.err }
func (e retryableError) Retryable() bool { return true }

// sameMaterial reports whether a and b hold the same key, certificate chain and CAs:
// the same files, whatever else a sink reads back differently (a host only a .pgpass
// file stores, metadata).
func sameMaterial(a, b *bundle.Bundle) bool {
	if a == nil || b == nil {
		return false
	}
	if !bundle.CAsEqual(a, b) || len(a.Chain) != len(b.Chain) || (a.Key == nil) != (b.Key == nil) {
		return false
	}
	for i := range a.Chain {
		if !a.Chain[i].Equal(b.Chain[i]) {
			return false
		}
	}
	return a.Key == nil || bundle.PublicKeysEqual(a.Key.Public(), b.Key.Public())
}
