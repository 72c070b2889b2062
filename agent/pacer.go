package agent

import (
	"context"
	"errors"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/gapi"
	"github.com/dbcert-agent/dbcert-agent/agent/huaweiauth"
	"github.com/dbcert-agent/dbcert-agent/config"
)

// API quotas count per identity ("queries per minute per user"), so the daemon paces
// per credentials block: every instance that uses a block shares one limiter, and a
// 429 seen by one of them slows all of them down.
//
// Each limiter is AIMD. Without api_rate it starts unpaced; with api_rate it starts at
// that rate and never goes above it. A throttling answer (429, or 503 with Retry-After)
// holds the whole identity for the Retry-After and cuts the rate to paceBeta of the
// throughput that was being answered well when it came (multiplicative decrease); good
// answers raise it again, quickly back to that throughput and then slowly past it
// (additive increase). Answers to requests sent before the last cut do not move the
// rate again: one burst of 429s is one signal. A 429 without Retry-After (Google's quota
// answer has none) holds the identity for paceBarePause, so that the requests at the new
// pace are not refused by a quota that has not refilled yet (each such refusal would cut
// again: to the floor within milliseconds). The throughput is measured in the API calls
// the API admitted (see callCount). Requests of instances without valid files go before
// renewals that can wait.

// AIMD constants.
const (
	// paceBeta is the multiplicative decrease: the new rate is this fraction of the
	// throughput at the throttling answer.
	paceBeta = 0.9
	// paceRecover is how much the rate rises per second of good answers while below the
	// throughput of the last cut, as a fraction of it; paceProbe above it.
	paceRecover = 0.05
	paceProbe   = 0.002
	// paceWindow is how far back the throughput at a throttling answer is measured.
	paceWindow = 10 * time.Second
	// paceMinMeasured is the least throughput a throttling answer is taken to mean (a
	// 429 after a quiet spell says the quota is shared, not that it is tiny).
	paceMinMeasured = 0.5
	// paceMin is the lowest rate: one request a minute.
	paceMin = 1.0 / 60
	// paceMinStep is the least additive increase, requests per second per second.
	paceMinStep = 0.02
	// paceBarePause holds the identity after a throttling answer that names no wait:
	// long enough for a per-second quota to refill.
	paceBarePause = time.Second
	// paceForget: after this long without a throttling answer the limiter forgets what
	// it learned and starts again from api_rate (or unpaced); quotas are per minute.
	paceForget = 10 * time.Minute
)

// paceState is the limiter of one identity: a pure function of the times it is given,
// not safe for concurrent use. Rates are in requests per second; +Inf is unpaced.
type paceState struct {
	ceil   float64   // api_rate; 0 when none is known
	rate   float64   // the current pace
	peak   float64   // throughput at the last cut; 0 before any
	next   time.Time // the earliest start of the next request
	pause  time.Time // Retry-After: nothing starts before this
	cutAt  time.Time // last decrease
	preCut float64   // the pace before it
	start  time.Time // when the limiter was made (bounds the first window)
	ok     secRing   // API calls the API admitted over the last paceWindow
	sent   secRing   // API calls sent (in requests admitted by the limiter)
	// counted: answers come with the number of calls the API admitted (see
	// callCount); until then a good request counts all its calls, a refused one none.
	counted bool
}

// secRing counts events in one-second slots over the last paceWindow.
type secRing struct {
	n   [10]float64
	sec [10]int64
}

// add counts v events at at, which may lie in the past (calls are counted at their
// request's admission, when their answer comes); one older than its slot's second has
// left the window and is dropped.
func (r *secRing) add(at time.Time, v float64) {
	sec := at.Unix()
	i := int(sec % int64(len(r.n)))
	switch {
	case r.sec[i] < sec:
		r.sec[i], r.n[i] = sec, 0
	case r.sec[i] > sec:
		return
	}
	r.n[i] += v
}

// sum counts the events from from's second to to's, of the slots still in the window
// that ends at now.
func (r *secRing) sum(from, to, now time.Time) float64 {
	var v float64
	sec := now.Unix()
	for i, at := range r.sec {
		if at > sec-int64(len(r.n)) && at >= from.Unix() && at <= to.Unix() {
			v += r.n[i]
		}
	}
	return v
}

func newPaceState(r config.Rate, now time.Time) *paceState {
	s := &paceState{rate: math.Inf(1), start: now}
	if r.N > 0 && r.Per > 0 {
		s.ceil = float64(r.N) / r.Per.Seconds()
		s.rate = s.ceil
	}
	return s
}

// wait is how long from now until a request may start (0: now).
func (s *paceState) wait(now time.Time) time.Duration {
	t := now
	if s.pause.After(t) {
		t = s.pause
	}
	if s.next.After(t) {
		t = s.next
	}
	return t.Sub(now)
}

// spend records a request of cost API calls starting at now (after wait returned 0):
// the next may start cost/rate later.
func (s *paceState) spend(now time.Time, cost int) {
	s.sent.add(now, float64(cost))
	if math.IsInf(s.rate, 1) {
		return
	}
	start := now
	if s.next.After(start) {
		start = s.next
	}
	s.next = start.Add(time.Duration(float64(cost) / s.rate * float64(time.Second)))
}

// good records a good answer at now to a request admitted at admitted, of which the API
// admitted calls calls (-1: unknown; then cost, the calls the request makes).
func (s *paceState) good(now, admitted time.Time, calls, cost int) {
	s.count(admitted, calls, cost)
	if admitted.Before(s.cutAt) {
		s.remeasure(now)
		return
	}
	if s.peak == 0 || math.IsInf(s.rate, 1) {
		return
	}
	if now.Sub(s.cutAt) > paceForget {
		s.peak, s.rate = 0, math.Inf(1)
		if s.ceil > 0 {
			s.rate = s.ceil
		}
		return
	}
	step := paceProbe
	if s.rate < s.peak {
		step = paceRecover
	}
	s.rate += math.Max(step*s.peak, paceMinStep) * float64(cost) / s.rate
	if s.ceil > 0 && s.rate > s.ceil {
		s.rate = s.ceil
	}
}

// remeasure handles an answer to a request sent before the last cut that arrives after
// it: the cut was measured without the calls it got through, so the throughput up to
// the cut is measured again and the pace raised to match (never above the pace before
// the cut). Calls count at their admission, so slow answers do not dilute it.
func (s *paceState) remeasure(now time.Time) {
	if m := math.Min(s.throughput(now, s.cutAt), s.preCut); m > s.peak && now.Sub(s.cutAt) < paceWindow {
		s.peak = m
		s.rate = math.Max(s.rate, paceBeta*m)
	}
}

// count records calls of a request admitted by the limiter at admitted that the API
// admitted (-1: unknown, then def of them).
func (s *paceState) count(admitted time.Time, calls, def int) {
	if calls >= 0 {
		s.counted = true
	} else {
		calls = def
	}
	s.ok.add(admitted, float64(calls))
}

// throughput estimates what the identity's quota admits, in calls per second over the
// paceWindow that ends at upTo (or since the limiter was made, at least one second):
// the calls the API admitted, by when they were sent, as answered by now. Without
// counted calls, half of what was sent when that is more (a refresh of two calls fails
// as a whole when one is refused, so a burst can end with no good answer at all).
func (s *paceState) throughput(now, upTo time.Time) float64 {
	from := upTo.Add(-paceWindow)
	if s.start.After(from) {
		from = s.start
	}
	el := math.Max(1, upTo.Sub(from).Seconds())
	if s.counted {
		return s.ok.sum(from, upTo, now) / el
	}
	return math.Max(s.ok.sum(from, upTo, now), s.sent.sum(from, upTo, now)/2) / el
}

// throttled records a throttling answer at now to a request admitted at admitted, with
// the server's Retry-After (0 when none), of which the API admitted calls calls (-1:
// unknown, taken as none). It reports whether it cut the rate.
func (s *paceState) throttled(now, admitted time.Time, retryAfter time.Duration, calls int) bool {
	s.count(admitted, calls, 0)
	if retryAfter <= 0 {
		retryAfter = paceBarePause
	}
	if t := now.Add(retryAfter); t.After(s.pause) {
		s.pause = t
	}
	if admitted.Before(s.cutAt) {
		// Sent before the last cut: that cut already answered for it (but calls of it
		// that got through count).
		s.remeasure(now)
		return false
	}
	measured := math.Max(s.throughput(now, now), paceMinMeasured)
	s.preCut = s.rate
	s.peak = math.Min(s.rate, measured)
	s.rate = math.Max(paceMin, paceBeta*s.peak)
	s.cutAt = now
	s.next = now // re-space from now at the new rate
	return true
}

// throttleOf reports whether err is the API saying "too many requests" (429, or 503
// with a Retry-After), and the wait it asked for. It reads the error types the providers
// return: an error may also say so itself with a Throttled() bool method.
func throttleOf(err error) (bool, time.Duration) {
	if err == nil {
		return false, 0
	}
	_, after := retryable(err)
	var t interface{ Throttled() bool }
	if errors.As(err, &t) {
		return t.Throttled(), after
	}
	code := 0
	var ge *gapi.Error
	var he *huaweiauth.Error
	switch {
	case errors.As(err, &ge):
		code = ge.Code
	case errors.As(err, &he):
		code = he.Status
	}
	return code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable && after > 0, after
}

// paceObserver is told about pacing (implemented by *Metrics).
type paceObserver interface {
	Throttled(credentials string)
	Pace(credentials string, perSecond float64)
}

// pacer holds the limiters of every identity and queues the requests waiting for them.
// Safe for concurrent use; close stops its timers.
type pacer struct {
	mu   sync.Mutex
	now  func() time.Time
	ceil config.Rate
	obs  paceObserver // may be nil
	ids  map[string]*paceLimiter
}

type paceLimiter struct {
	id             string
	st             *paceState
	urgent, normal []*paceWaiter
	timer          *time.Timer
}

type paceWaiter struct {
	ch   chan time.Time // receives the admission time
	cost int
}

// paceTicket is one admitted request, handed back with its answer.
type paceTicket struct {
	id   string
	at   time.Time
	cost int
}

// newPacer makes a pacer whose limiters start at ceil (the zero Rate: unpaced). now is
// the clock (default time.Now); obs may be nil.
func newPacer(ceil config.Rate, now func() time.Time, obs paceObserver) *pacer {
	if now == nil {
		now = time.Now
	}
	return &pacer{now: now, ceil: ceil, obs: obs, ids: map[string]*paceLimiter{}}
}

func (p *pacer) limiter(id string, now time.Time) *paceLimiter {
	l := p.ids[id]
	if l == nil {
		l = &paceLimiter{id: id, st: newPaceState(p.ceil, now)}
		p.ids[id] = l
	}
	return l
}

// acquire waits until identity id may send a request of cost API calls; urgent
// requests (an instance without valid files) go before all others. It fails only when
// ctx ends.
func (p *pacer) acquire(ctx context.Context, id string, cost int, urgent bool) (paceTicket, error) {
	cost = max(cost, 1)
	p.mu.Lock()
	now := p.now()
	l := p.limiter(id, now)
	if len(l.urgent) == 0 && (urgent || len(l.normal) == 0) && l.st.wait(now) == 0 {
		l.st.spend(now, cost)
		p.mu.Unlock()
		return paceTicket{id, now, cost}, nil
	}
	w := &paceWaiter{ch: make(chan time.Time, 1), cost: cost}
	if urgent {
		l.urgent = append(l.urgent, w)
	} else {
		l.normal = append(l.normal, w)
	}
	p.arm(l, now)
	p.mu.Unlock()
	select {
	case at := <-w.ch:
		return paceTicket{id, at, cost}, nil
	case <-ctx.Done():
		p.mu.Lock()
		l.urgent = slices.DeleteFunc(l.urgent, func(x *paceWaiter) bool { return x == w })
		l.normal = slices.DeleteFunc(l.normal, func(x *paceWaiter) bool { return x == w })
		p.mu.Unlock()
		return paceTicket{}, ctx.Err()
	}
}

// arm (re)starts l's timer for its first waiter. Called with p.mu held.
func (p *pacer) arm(l *paceLimiter, now time.Time) {
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	if len(l.urgent)+len(l.normal) == 0 {
		return
	}
	l.timer = time.AfterFunc(l.st.wait(now), func() { p.grant(l) })
}

// grant admits waiters while the limiter allows, urgent ones first.
func (p *pacer) grant(l *paceLimiter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for l.st.wait(now) == 0 {
		var w *paceWaiter
		switch {
		case len(l.urgent) > 0:
			w, l.urgent = l.urgent[0], l.urgent[1:]
		case len(l.normal) > 0:
			w, l.normal = l.normal[0], l.normal[1:]
		default:
			l.timer = nil
			return
		}
		l.st.spend(now, w.cost)
		w.ch <- now
	}
	p.arm(l, now)
}

// answer tells the pacer how the API answered an admitted request: err nil is a good
// answer, a throttling error slows the identity down, other errors change nothing.
// calls is how many of its API calls the API admitted (answered other than 429/503),
// -1 when unknown.
func (p *pacer) answer(t paceTicket, err error, calls int) {
	if t.at.IsZero() {
		return
	}
	thr, after := throttleOf(err)
	if err != nil && !thr {
		if calls > 0 { // refused for another reason, but what got through counts
			p.mu.Lock()
			p.limiter(t.id, p.now()).st.count(t.at, calls, 0)
			p.mu.Unlock()
		}
		return
	}
	p.mu.Lock()
	now := p.now()
	l := p.limiter(t.id, now)
	before := l.st.rate
	cut := false
	if thr {
		cut = l.st.throttled(now, t.at, after, calls)
	} else {
		l.st.good(now, t.at, calls, t.cost)
	}
	rate := l.st.rate
	if thr {
		p.arm(l, now) // the pause or the new pace re-times the waiters
	}
	p.mu.Unlock()
	if p.obs == nil {
		return
	}
	if thr {
		p.obs.Throttled(t.id)
	}
	if cut || rate != before {
		p.obs.Pace(t.id, rate)
	}
}

// stale reports whether the identity was slowed down after t was admitted (a 429 to
// another request): a request still waiting to be sent must then queue again.
func (p *pacer) stale(t paceTicket) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.ids[t.id]
	return l != nil && t.at.Before(l.st.cutAt)
}

// close stops the timers (waiters end with their contexts).
func (p *pacer) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.ids {
		if l.timer != nil {
			l.timer.Stop()
			l.timer = nil
		}
	}
}

// Throttled implements paceObserver: dbcert_api_throttled_total{credentials}.
func (m *Metrics) Throttled(credentials string) {
	m.reg.Counter("dbcert_api_throttled_total", "API answers that asked us to slow down (429, or 503 with Retry-After), by credentials block.", "credentials").Inc(credentials)
}

// Pace implements paceObserver: dbcert_api_pace_requests_per_second{credentials}, +Inf
// while unpaced.
func (m *Metrics) Pace(credentials string, perSecond float64) {
	m.reg.Gauge("dbcert_api_pace_requests_per_second", "The API request pace of a credentials block, requests per second (+Inf: unpaced).", "credentials").Set(perSecond, credentials)
}

// urgent reports whether a loop's request must not wait behind renewals that can: it
// has no valid files, or less than a sixth of their lifetime left.
func urgent(st *loopState, now time.Time) bool {
	cur := st.cur.times()
	return cur == nil || cur.NotAfter().Sub(now) < cur.Lifetime()/6
}
