package agent

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// readiness tracks, per instance of a running daemon, until when its files on disk are
// valid and whether its last refresh failed permanently. Validity is judged at the
// moment asked (Ready, /readyz, STATUS=): files loaded once but expired since are not
// valid.
type readiness struct {
	mu      sync.Mutex
	inst    map[string]*instReady
	changed chan struct{} // closed and replaced at every update
	// announced is false until READY=1 was sent for the current configuration.
	announced bool
	// held keeps READY=1 back while a reload applies a new configuration (hold, rearm).
	held bool
}

type instReady struct {
	files bool      // complete, matching files are on disk
	until time.Time // end of their validity (zero with files: valid while present, CA-only)
	// failed is the last refresh's permanent error ("" when it did not fail permanently).
	failed string
}

func newReadiness() *readiness {
	return &readiness{inst: map[string]*instReady{}, changed: make(chan struct{})}
}

// update runs f under the lock and wakes the waiters of changedCh.
func (r *readiness) update(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *readiness) add(name string) {
	r.update(func() {
		if r.inst[name] == nil {
			r.inst[name] = &instReady{}
		}
	})
}

func (r *readiness) remove(name string) { r.update(func() { delete(r.inst, name) }) }

// set records the files an instance holds (nil: none valid) and its last permanent
// failure ("" none).
func (r *readiness) set(name string, b *bundle.Bundle, failed string) {
	r.update(func() {
		s := r.inst[name]
		if s == nil {
			return // removed meanwhile
		}
		s.files, s.until, s.failed = b != nil, time.Time{}, failed
		if b != nil && (b.HasClientCert() || !b.TokenExpiry.IsZero()) {
			s.until = b.NotAfter()
		}
	})
}

func (s *instReady) valid(now time.Time) bool {
	return s.files && (s.until.IsZero() || now.Before(s.until))
}

// changedCh returns a channel closed at the next update.
func (r *readiness) changedCh() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// notReady lists, sorted, the instances whose files are not valid at now.
func (r *readiness) notReady(now time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for name, s := range r.inst {
		if !s.valid(now) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// settled reports whether every instance has valid files at now or has failed
// permanently: the condition for READY=1.
func (r *readiness) settled(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.settledLocked(now)
}

func (r *readiness) settledLocked(now time.Time) bool {
	for _, s := range r.inst {
		if !s.valid(now) && s.failed == "" {
			return false
		}
	}
	return true
}

// rearm makes the next settled state send READY=1 again (after a reload).
func (r *readiness) rearm() { r.update(func() { r.announced, r.held = false, false }) }

// hold keeps READY=1 back until rearm: while a reload stops and starts loops, the
// instances of the old configuration may look settled before the new ones exist.
func (r *readiness) hold() { r.update(func() { r.held = true }) }

// reset makes name an instance that no loop has reported on yet (a restarted one).
func (r *readiness) reset(name string) { r.update(func() { r.inst[name] = &instReady{} }) }

// wasAnnounced reports whether READY=1 has been sent for the current configuration.
func (r *readiness) wasAnnounced() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.announced
}

// announce reports whether READY=1 is due at now (settled, and not yet sent for the
// current configuration) and marks it sent.
func (r *readiness) announce(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.announced || r.held || !r.settledLocked(now) {
		return false
	}
	r.announced = true
	return true
}

// statusLine is the STATUS= text at now: how many instances have valid files, and the
// names of those that do not, the permanently failed ones apart. Each list names at most
// statusNames instances (the first by name) and counts the rest, so the line stays short
// and cheap to build with thousands of instances: it is rebuilt after changes (at most
// once per announceQuantum).
func (r *readiness) statusLine(now time.Time) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var valid int
	var failed, waiting firstNames
	for name, s := range r.inst {
		switch {
		case s.valid(now):
			valid++
		case s.failed != "":
			failed.add(name)
		default:
			waiting.add(name)
		}
	}
	line := fmt.Sprintf("%d of %d instance(s) with valid files", valid, len(r.inst))
	if failed.n > 0 {
		line += "; failed permanently (see the log): " + failed.String()
	}
	if waiting.n > 0 {
		line += "; waiting for files: " + waiting.String()
	}
	return line
}

// statusNames is how many names a list of STATUS= shows.
const statusNames = 10

// firstNames keeps the statusNames smallest names added, in order, and counts all.
type firstNames struct {
	names []string
	n     int
}

func (f *firstNames) add(name string) {
	f.n++
	if len(f.names) == statusNames && name >= f.names[statusNames-1] {
		return
	}
	i, _ := slices.BinarySearch(f.names, name)
	if len(f.names) == statusNames {
		f.names = f.names[:statusNames-1]
	}
	f.names = slices.Insert(f.names, i, name)
}

// String is "a, b, c", or "a, …, j and 5 more" when more were added than it keeps.
func (f *firstNames) String() string {
	s := strings.Join(f.names, ", ")
	if more := f.n - len(f.names); more > 0 {
		s += fmt.Sprintf(" and %d more", more)
	}
	return s
}

// nextExpiry is the earliest end of validity after now among valid instances (zero:
// none), when the status changes without an update.
func (r *readiness) nextExpiry(now time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var t time.Time
	for _, s := range r.inst {
		if s.valid(now) && !s.until.IsZero() && (t.IsZero() || s.until.Before(t)) {
			t = s.until
		}
	}
	return t
}
