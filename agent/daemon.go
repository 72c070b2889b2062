package agent

import (
	"context"
	"crypto"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/config"
)

// daemon supervises the instance loops of Run: it starts and stops them (also on
// reload), owns the sink-directory watcher and the clock
// watcher, and tracks readiness.
type daemon struct {
	a        *Agent
	o        RunOptions
	inflight chan struct{}
	writing  chan struct{} // bounds instances writing files (MaxWriting)
	keygen   chan struct{} // bounds concurrent RSA key generation
	newKey   func() (crypto.Signer, error)
	shared   *sharedKeys // share_keys; nil when off
	pace     *pacer
	cas      *caIntern
	clock    *clockWatch
	// clockTick and clockRead drive the clock watch (tests inject them); default a
	// ticker of clockPeriod and the system's clocks.
	clockTick <-chan time.Time
	clockRead clockReader
	watcher   *fsnotify.Watcher
	ready     *readiness // the Agent's
	hb        heartbeat  // the supervisor's (run's select loop)

	mu    sync.Mutex
	loops map[string]*loop
	dirs  map[string]*loop // watched sink directory → loop
	wg    sync.WaitGroup
}

func newDaemon(a *Agent, o RunOptions) (*daemon, error) {
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 16
	}
	if o.MaxWriting <= 0 {
		o.MaxWriting = 32
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching sink directories: %w", err)
	}
	keygen := make(chan struct{}, runtime.GOMAXPROCS(0))
	po, _ := a.obs.(paceObserver)
	newKey := o.FirstKey.wrap(newRSAKey)
	var shared *sharedKeys
	if o.ShareKeys {
		shared = newSharedKeys(newKey, keygen)
	}
	return &daemon{
		newKey: newKey, shared: shared, pace: newPacer(o.APIRate, a.now, po), cas: newCAIntern(),
		a: a, o: o,
		inflight: make(chan struct{}, o.MaxInFlight),
		writing:  make(chan struct{}, o.MaxWriting),
		keygen:   keygen,
		clock:    newClockWatch(),
		watcher:  w,
		ready:    a.ready,
		loops:    map[string]*loop{},
		dirs:     map[string]*loop{},
	}, nil
}

func (d *daemon) notify(f func(Notifier) error) {
	if d.o.Notifier == nil {
		return
	}
	if err := f(d.o.Notifier); err != nil {
		d.a.log.Warn("systemd notify failed", "err", err)
	}
}

func (d *daemon) run(ctx context.Context) error {
	defer d.watcher.Close()
	defer d.pace.close()
	defer d.shared.close()
	var aux sync.WaitGroup
	auxCtx, stopAux := context.WithCancel(ctx)
	defer func() { stopAux(); aux.Wait() }()
	aux.Add(3)
	if d.clockTick == nil {
		t := time.NewTicker(clockPeriod)
		defer t.Stop()
		d.clockTick = t.C
	}
	if d.clockRead == nil {
		d.clockRead = systemClocks()
	}
	go func() { defer aux.Done(); d.clock.run(auxCtx, d.clockTick, d.clockRead) }()
	go func() { defer aux.Done(); d.watchEvents(auxCtx) }()
	go func() { defer aux.Done(); d.wakeOnClockJumps(auxCtx) }()

	reloads := make(chan struct{}, 1)
	if d.o.Reload != nil && d.o.ConfigPath != "" {
		if err := watchConfig(auxCtx, d.o.ConfigPath, reloads, &aux); err != nil {
			d.a.log.Warn("config file changes will not be noticed; use SIGHUP to reload", "err", err)
		}
	}
	d.apply(ctx, d.a.instances)
	d.a.log.Info("running", "instances", len(d.a.instances))
	aux.Add(1)
	go func() { defer aux.Done(); d.announce(auxCtx) }()

	// The watchdog pings only while this loop and every instance loop make progress:
	// this loop re-arms its heartbeat at every tick, a reload is a step with a limit.
	var tick <-chan time.Time
	supervisorLimit := time.Duration(0)
	if wn, ok := d.o.Notifier.(watchdogNotifier); ok && wn.WatchdogInterval() > 0 {
		iv := wn.WatchdogInterval()
		supervisorLimit = 3 * iv
		t := time.NewTicker(iv)
		defer t.Stop()
		tick = t.C
		d.hb.busy("waiting for signals", supervisorLimit)
		aux.Add(1)
		go func() { defer aux.Done(); d.runWatchdog(auxCtx, wn, iv) }()
	}
	rearm := func() {
		if supervisorLimit > 0 {
			d.hb.busy("waiting for signals", supervisorLimit)
		}
	}

	for {
		select {
		case <-tick:
			rearm()
		case <-ctx.Done():
			d.notify(Notifier.Stopping)
			d.a.log.Info("stopping: finishing writes and hooks in progress")
			d.stopAll()
			d.a.log.Info("stopped")
			return nil
		case <-d.o.Hangup:
			d.hb.busy("reload", d.reloadLimit())
			d.reload(ctx, "SIGHUP")
			rearm()
		case <-reloads:
			d.hb.busy("reload", d.reloadLimit())
			d.reload(ctx, "config file changed")
			rearm()
		}
	}
}

// announce sends READY=1 once every instance has valid files or has failed
// permanently (at start and after a reload), and keeps STATUS= current: it is recomputed
// at every change a loop reports and when files expire.
func (d *daemon) announce(ctx context.Context) {
	last := ""
	for {
		changed := d.ready.changedCh()
		now := d.a.now()
		// STATUS= first, so it is current when READY=1 arrives.
		line := d.ready.statusLine(now)
		if line != last {
			last = line
			d.notify(func(n Notifier) error { return n.Status(line) })
		}
		if d.ready.announce(now) {
			d.notify(Notifier.Ready)
			if strings.Contains(line, "failed permanently") {
				d.a.log.Warn("ready, but some instances failed permanently and have no valid files", "status", line)
			} else {
				d.a.log.Info("ready: every instance has valid files")
			}
			releaseMemory()
		}
		var expiry <-chan time.Time
		if t := d.ready.nextExpiry(now); !t.IsZero() {
			expiry = d.a.after(t.Sub(now))
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
			// Each pass looks at every instance: coalesce a burst of changes (1,000
			// instances starting) into one pass per announceQuantum instead of one per
			// change. Real time, not the agent's clock: this bounds CPU, and nothing
			// is due at its end.
			t := time.NewTimer(announceQuantum)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		case <-expiry:
		}
	}
}

// announceQuantum is the least time between two passes of announce over the instances.
const announceQuantum = 20 * time.Millisecond

// reload builds the new configuration's instances and applies the difference.
func (d *daemon) reload(ctx context.Context, why string) {
	if d.o.Reload == nil {
		d.a.log.Info("reload requested but no configuration to reload from", "trigger", why)
		return
	}
	d.notify(Notifier.Reloading)
	d.a.log.Info("reloading configuration", "trigger", why)
	instances, err := d.o.Reload(ctx)
	if err != nil {
		d.a.log.Error("the new configuration was not applied; still running the previous one", "err", err)
		// The reload is over and nothing changed: say so, unless still starting
		// (READY=1 then comes once the instances have settled).
		if d.ready.wasAnnounced() {
			d.notify(Notifier.Ready)
		}
		return
	}
	// READY=1 again once the new configuration has settled, and not during apply: while
	// it waits for a stopped loop's hooks, the instances not yet started would not count
	// (also during start-up, before the first READY=1).
	d.ready.hold()
	d.apply(ctx, instances)
	d.ready.rearm()
}

// apply starts new instances, stops removed ones, restarts changed ones, and leaves
// unchanged ones running untouched.
func (d *daemon) apply(ctx context.Context, instances []*Instance) {
	d.mu.Lock()
	want := map[string]*Instance{}
	for _, in := range instances {
		want[in.Name] = in
	}
	var stop []*loop
	var started, restarted, removed []string
	for name, l := range d.loops {
		in, ok := want[name]
		switch {
		case !ok:
			stop = append(stop, l)
			removed = append(removed, name)
		case !sameSpec(l.in.Spec, in.Spec), l.in.Err != nil:
			// Also restart an instance that could not be built (say, its credentials
			// file was missing): the same configuration may build now. A running one
			// whose rebuild fails keeps its loop and the credentials it has.
			stop = append(stop, l)
			restarted = append(restarted, name)
		default:
			delete(want, name) // unchanged: keep the running loop
		}
	}
	d.mu.Unlock()
	for name := range want {
		if !contains(restarted, name) {
			d.ready.add(name) // new: not ready from now on, before loops are stopped
		}
	}
	for _, l := range stop {
		d.stop(l)
	}
	for _, name := range removed {
		d.ready.remove(name)
		d.a.obs.Removed(name)
	}
	for _, name := range restarted {
		d.ready.reset(name) // what the old loop held says nothing of the new configuration
	}
	for _, in := range instances {
		if _, ok := want[in.Name]; ok {
			d.start(ctx, in)
			if !contains(restarted, in.Name) {
				started = append(started, in.Name)
			}
		}
	}
	if len(started)+len(restarted)+len(removed) > 0 {
		sort.Strings(started)
		sort.Strings(restarted)
		sort.Strings(removed)
		d.a.log.Info("instances changed", "started", started, "restarted", restarted, "removed", removed)
	}
	running := make([]*Instance, 0, len(instances))
	d.mu.Lock()
	for _, in := range instances {
		if l, ok := d.loops[in.Name]; ok {
			running = append(running, l.in)
		}
	}
	d.a.instances = running
	d.mu.Unlock()
	d.ready.update(func() {}) // an empty configuration is ready at once
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// sameSpec reports whether two instance configurations are the same. Schedules are
// compared by their text (parsed schedules hold time zone pointers).
func sameSpec(a, b *config.Instance) bool {
	if a == nil || b == nil {
		return a == b
	}
	ac, bc := *a, *b
	as, bs := "", ""
	if ac.Schedule != nil {
		as = ac.Schedule.Spec
	}
	if bc.Schedule != nil {
		bs = bc.Schedule.Spec
	}
	ac.Schedule, bc.Schedule = nil, nil
	return as == bs && reflect.DeepEqual(ac, bc)
}

func (d *daemon) start(ctx context.Context, in *Instance) {
	lctx, cancel := context.WithCancel(ctx)
	l := &loop{in: in, hb: &heartbeat{}, ctx: lctx, cancel: cancel, done: make(chan struct{}), running: true}
	d.mu.Lock()
	d.loops[in.Name] = l
	d.mu.Unlock()
	d.ready.add(in.Name)
	d.wg.Add(1) // done when the loop ends
	context.AfterFunc(lctx, func() { d.wake(l, wakeDone) })
	go d.run1(l)
}

// stop cancels a loop and waits for it: a write or hook in progress finishes first.
func (d *daemon) stop(l *loop) {
	l.cancel()
	<-l.done
	d.mu.Lock()
	defer d.mu.Unlock()
	for dir, owner := range d.dirs {
		if owner == l {
			_ = d.watcher.Remove(dir)
			delete(d.dirs, dir)
		}
	}
	if d.loops[l.in.Name] == l {
		delete(d.loops, l.in.Name)
	}
}

func (d *daemon) stopAll() {
	d.mu.Lock()
	loops := make([]*loop, 0, len(d.loops))
	for _, l := range d.loops {
		loops = append(loops, l)
	}
	d.mu.Unlock()
	for _, l := range loops {
		l.cancel()
	}
	for _, l := range loops {
		d.stop(l)
	}
	d.wg.Wait()
}

// wakeOnClockJumps wakes every loop when the wall clock jumps, so each checks its
// timer against it (see clockWatch).
func (d *daemon) wakeOnClockJumps(ctx context.Context) {
	ch := d.clock.changed()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		ch = d.clock.changed() // before waking: a jump meanwhile is not missed
		d.mu.Lock()
		for _, l := range d.loops {
			d.wake(l, wakeClock)
		}
		d.mu.Unlock()
	}
}

// poke sends on a buffered(1) channel without blocking.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// dirSink is implemented by sinks that own a directory (sinks.File).
type dirSink interface{ Dir() string }

// presentSink is implemented by sinks that tell cheaply (a stat per file, nothing
// read) whether the files they wrote for b are all still there (sinks.File).
type presentSink interface{ Present(b *bundle.Bundle) error }

// watchSinks adds the loop's sink directories to the watcher (idempotent). When it
// starts watching one, it checks that the files of cur (what the loop holds, nil for
// none) are still there and wakes the loop to repair them if not: a removal between
// the loop's write (or read) and the new watch has no event.
func (d *daemon) watchSinks(l *loop, cur *held) {
	for _, s := range l.in.Sinks {
		ds, ok := s.(dirSink)
		if !ok {
			continue
		}
		dir := filepath.Clean(ds.Dir())
		d.mu.Lock()
		_, known := d.dirs[dir]
		d.mu.Unlock()
		if known {
			continue
		}
		if err := d.watcher.Add(dir); err != nil {
			d.a.log.Debug("not watching sink directory", "instance", l.in.Name, "dir", dir, "err", err)
			continue
		}
		d.mu.Lock()
		d.dirs[dir] = l
		d.mu.Unlock()
		if ps, ok := s.(presentSink); ok && cur != nil {
			if err := ps.Present(cur.times()); err != nil {
				d.a.log.Debug("sink files changed before the watch began", "instance", l.in.Name, "err", err)
				d.wake(l, wakeHeal)
			}
		}
	}
}

// watchEvents routes sink-directory events to their loops.
func (d *daemon) watchEvents(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-d.watcher.Events:
			if !ok {
				return
			}
			base := filepath.Base(ev.Name)
			if base == "..lock" || (len(base) > 2 && base[:2] == ".." && base != "..data") {
				continue // our own generation directories and lock file
			}
			d.mu.Lock()
			l := d.dirs[filepath.Dir(ev.Name)]
			if l == nil {
				// The directory itself was removed or renamed: the watcher has dropped
				// its watch, so forget it; the repair this wakes watches the directory
				// made at that path again.
				if l = d.dirs[ev.Name]; l != nil && ev.Has(fsnotify.Remove|fsnotify.Rename) {
					delete(d.dirs, ev.Name)
				}
			}
			d.mu.Unlock()
			if l != nil {
				d.wake(l, wakeHeal)
			}
		case err, ok := <-d.watcher.Errors:
			if !ok {
				return
			}
			// Overflow or similar: check every loop's files.
			d.a.log.Warn("sink directory watch error; re-checking all files", "err", err)
			d.mu.Lock()
			for _, l := range d.loops {
				d.wake(l, wakeHeal)
			}
			d.mu.Unlock()
		}
	}
}

// watchConfig watches the config file's directory (editors replace files by rename)
// and sends on reloads, debounced, when the file changes.
func watchConfig(ctx context.Context, path string, reloads chan struct{}, wg *sync.WaitGroup) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	if err := w.Add(filepath.Dir(abs)); err != nil {
		w.Close()
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer w.Close()
		const debounce = 300 * time.Millisecond
		var timer <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if filepath.Clean(ev.Name) == abs || isLinkHead(abs, ev.Name) {
					timer = time.After(debounce)
				}
			case <-w.Errors:
				timer = time.After(debounce)
			case <-timer:
				timer = nil
				poke(reloads)
			}
		}
	}()
	return nil
}

// isLinkHead reports whether name, in the config file's directory, is the first step of
// the config file's relative symlink: a Kubernetes ConfigMap volume updates agent.hcl
// (a link to ..data/agent.hcl) by swapping the ..data link, and no event names
// agent.hcl itself.
func isLinkHead(config, name string) bool {
	target, err := os.Readlink(config)
	if err != nil || filepath.IsAbs(target) || filepath.Dir(filepath.Clean(name)) != filepath.Dir(config) {
		return false
	}
	head, _, _ := strings.Cut(filepath.ToSlash(filepath.Clean(target)), "/")
	return head != "." && head != ".." && filepath.Base(name) == head
}

type nopObserver struct{}

func (nopObserver) Files(string, *bundle.Bundle, time.Time) {}
func (nopObserver) Refreshed(string, string)                {}
func (nopObserver) HookRan(string, bool)                    {}
func (nopObserver) Removed(string)                          {}

// reloadLimit is how long a reload may take: building the new instances, and stopping
// changed loops, which finish the fetch, write and hooks they are in.
func (d *daemon) reloadLimit() time.Duration {
	limit := d.fetchLimit() + writeAllowance
	d.mu.Lock()
	defer d.mu.Unlock()
	longest := time.Duration(0)
	for _, l := range d.loops {
		longest = max(longest, l.in.hookLimit())
	}
	return limit + longest
}

// releaseMemory gives back what the start-up burst of refreshes (keys, TLS, JSON) used,
// once every instance has files: the garbage is collected and its pages returned.
func releaseMemory() { debug.FreeOSMemory() }
