package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
	"github.com/dbcert-agent/dbcert-agent/agent/gapi"
	"github.com/dbcert-agent/dbcert-agent/agent/huaweiauth"
	"github.com/dbcert-agent/dbcert-agent/agent/metrics"
	"github.com/dbcert-agent/dbcert-agent/config"
)

var paceT0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// paceStep is one event on a paceState: at (from paceT0) a request is admitted
// ("spend"), answered well ("good"), or throttled; then wait/rate are checked.
type paceStep struct {
	at       time.Duration
	op       string        // spend | good | throttle
	admitted time.Duration // good/throttle: when the request was admitted
	cost     int
	after    time.Duration // throttle: Retry-After
	wantWait time.Duration // -1: not checked
	wantRate float64       // 0: not checked; math.Inf(1) allowed
	wantCut  bool          // throttle: whether it cut
	counted  bool          // good/throttle: the answer says how many calls the API admitted
	calls    int           // good/throttle: that number, when counted
}

// admittedCalls is what a step tells the limiter of the calls the API admitted.
func (st paceStep) admittedCalls() int {
	if !st.counted {
		return -1
	}
	return st.calls
}

func TestPaceState(t *testing.T) {
	goods := func(n int, from, every time.Duration) []paceStep {
		var s []paceStep
		for i := range n {
			at := from + time.Duration(i)*every
			s = append(s, paceStep{at: at, op: "good", admitted: at, cost: 1, wantWait: -1})
		}
		return s
	}
	cat := func(parts ...[]paceStep) []paceStep {
		var s []paceStep
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	tests := []struct {
		name  string
		ceil  config.Rate
		steps []paceStep
	}{
		{"unpaced without api_rate: no waiting", config.Rate{}, []paceStep{
			{at: 0, op: "spend", cost: 2, wantWait: 0, wantRate: math.Inf(1)},
			{at: 0, op: "spend", cost: 2, wantWait: 0},
		}},
		{"api_rate spaces requests by their cost", config.Rate{N: 60, Per: time.Minute}, []paceStep{
			{at: 0, op: "spend", cost: 2, wantWait: 2 * time.Second, wantRate: 1},
			{at: ms(500), op: "spend", cost: 1, wantWait: 2500 * time.Millisecond}, // queued behind the first
			{at: 10 * time.Second, op: "spend", cost: 1, wantWait: time.Second},    // idle time is not banked
		}},
		{"429: pause for Retry-After, cut to 0.9 of the throughput answered well", config.Rate{}, cat(
			goods(10, 0, ms(50)),
			[]paceStep{
				{at: ms(600), op: "throttle", admitted: ms(590), after: 2 * time.Second, wantCut: true,
					wantWait: 2 * time.Second, wantRate: 9}, // 10 good answers within the first second
				// Answers to requests sent before the cut are one signal, not many.
				{at: ms(610), op: "throttle", admitted: ms(595), after: time.Second, wantCut: false,
					wantWait: 1990 * time.Millisecond, wantRate: 9},
			},
		)},
		{"a 429 after a quiet spell cuts to 0.9 of the 0.5/s floor, not to nothing", config.Rate{N: 600, Per: time.Minute}, []paceStep{
			{at: time.Hour, op: "throttle", admitted: time.Hour, wantCut: true, wantRate: 0.45, wantWait: time.Second},
		}},
		{"bare 429s: a pause of a second, the cut measured in the calls the API admitted", config.Rate{}, []paceStep{
			// A burst of two-call refreshes: 5 got through, then the quota ran out.
			{at: 0, op: "spend", cost: 80, wantWait: 0},
			{at: 0, op: "good", admitted: 0, cost: 2, counted: true, calls: 2},
			{at: ms(50), op: "good", admitted: 0, cost: 2, counted: true, calls: 2},
			{at: ms(100), op: "good", admitted: 0, cost: 2, counted: true, calls: 2},
			{at: ms(150), op: "good", admitted: 0, cost: 2, counted: true, calls: 2},
			{at: ms(200), op: "good", admitted: 0, cost: 2, counted: true, calls: 2},
			// One of this refresh's calls got through: 11 calls in the first second, not
			// the 40 that half of what was sent would say.
			{at: ms(300), op: "throttle", admitted: ms(10), cost: 2, counted: true, calls: 1,
				wantCut: true, wantWait: time.Second, wantRate: 0.9 * 11},
			// Sent before the cut: no second cut, but the pause runs from this answer.
			{at: ms(310), op: "throttle", admitted: ms(20), cost: 2, counted: true, calls: 0,
				wantCut: false, wantWait: time.Second, wantRate: 0.9 * 11},
			// Refused at the new pace once the pause is over: the pace is judged again.
			{at: ms(1400), op: "throttle", admitted: ms(1320), cost: 2, counted: true, calls: 0,
				wantCut: true, wantWait: time.Second, wantRate: 0.9 * 11 / 1.4},
		}},
		{"additive increase: back to the throughput quickly, then slowly past it", config.Rate{}, cat(
			goods(10, 0, ms(100)),
			[]paceStep{{at: ms(950), op: "throttle", admitted: ms(950), wantCut: true, wantWait: -1, wantRate: 9}},
			goods(9, ms(1000), ms(111)), // one second of good answers at 9/s: +0.05×10
			[]paceStep{{at: ms(2000), op: "spend", cost: 1, wantWait: -1, wantRate: 9.5}},
			goods(100, ms(2100), ms(100)), // ten seconds more: up to 10, then +0.002×10 (at least 0.02) per second
			[]paceStep{{at: ms(12100), op: "spend", cost: 1, wantWait: -1, wantRate: 10.18}},
		)},
		{"the pace never rises above api_rate", config.Rate{N: 10, Per: time.Second}, cat(
			goods(10, 0, ms(100)),
			[]paceStep{{at: ms(999), op: "throttle", admitted: ms(999), wantCut: true, wantWait: -1, wantRate: 9}},
			goods(200, ms(1000), ms(100)),
			[]paceStep{{at: ms(21000), op: "spend", cost: 1, wantWait: -1, wantRate: 10}},
		)},
		{"stale good answers re-measure the cut, they do not add to the pace", config.Rate{}, cat(
			goods(10, 0, ms(100)),
			[]paceStep{{at: ms(999), op: "throttle", admitted: ms(999), wantCut: true, wantWait: -1, wantRate: 9},
				// Sent in the first second: 11 calls got through then, not 10.
				{at: ms(1100), op: "good", admitted: ms(900), cost: 1, wantWait: -1, wantRate: 0.9 * 11},
				// Sent in it too, but the same throughput again: no change.
				{at: ms(1200), op: "good", admitted: ms(990), cost: 0, wantWait: -1, wantRate: 0.9 * 11}},
		)},
		{"slow successes after fast 429s: the cut is re-measured by when calls were sent", config.Rate{}, []paceStep{
			// A start burst of 16 two-call refreshes; the quota refuses fast (30 ms)...
			{at: 0, op: "spend", cost: 32, wantWait: 0},
			{at: ms(30), op: "throttle", admitted: 0, cost: 2, counted: true, calls: 0,
				wantCut: true, wantWait: time.Second, wantRate: 0.9 * paceMinMeasured},
			// ... and answers the 5 refreshes it admitted 1.5 s later: 10 calls were
			// admitted in the first second, a pace of 10/s, not 10 in 1.5 s.
			{at: ms(1500), op: "good", admitted: 0, cost: 2, counted: true, calls: 2},
			{at: ms(1510), op: "good", admitted: 0, cost: 2, counted: true, calls: 2},
			{at: ms(1520), op: "good", admitted: 0, cost: 2, counted: true, calls: 2},
			{at: ms(1530), op: "good", admitted: 0, cost: 2, counted: true, calls: 2},
			{at: ms(1540), op: "good", admitted: 0, cost: 2, counted: true, calls: 2, wantWait: -1, wantRate: 9},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newPaceState(tt.ceil, paceT0)
			for i, st := range tt.steps {
				now := paceT0.Add(st.at)
				switch st.op {
				case "spend":
					s.spend(now, st.cost)
				case "good":
					s.good(now, paceT0.Add(st.admitted), st.admittedCalls(), st.cost)
				case "throttle":
					if cut := s.throttled(now, paceT0.Add(st.admitted), st.after, st.admittedCalls()); cut != st.wantCut {
						t.Errorf("step %d: cut = %v, want %v", i, cut, st.wantCut)
					}
				}
				if st.wantWait >= 0 {
					if got := s.wait(now); got != st.wantWait {
						t.Errorf("step %d (%s at %v): wait = %v, want %v", i, st.op, st.at, got, st.wantWait)
					}
				}
				if st.wantRate != 0 && !(math.Abs(s.rate-st.wantRate) < 0.02 || s.rate == st.wantRate) {
					t.Errorf("step %d (%s at %v): rate = %.3f, want %.3f", i, st.op, st.at, s.rate, st.wantRate)
				}
			}
		})
	}
}

func TestThrottleOf(t *testing.T) {
	ra := http.Header{"Retry-After": {"7"}}
	tests := []struct {
		name      string
		err       error
		want      bool
		wantAfter time.Duration
	}{
		{"nil", nil, false, 0},
		{"429 from a Google API", gapi.ParseError(429, http.Header{}, []byte(`{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}`)), true, 0},
		{"429 with Retry-After, wrapped", fmt.Errorf("refresh: %w", gapi.ParseError(429, ra, nil)), true, 7 * time.Second},
		{"503 with Retry-After", gapi.ParseError(503, ra, nil), true, 7 * time.Second},
		{"503 without Retry-After is an outage, not a quota", gapi.ParseError(503, http.Header{}, nil), false, 0},
		{"500", gapi.ParseError(500, http.Header{}, nil), false, 0},
		{"403", gapi.ParseError(403, http.Header{}, nil), false, 0},
		{"429 from Huawei", &huaweiauth.Error{Status: 429}, true, 0},
		{"an error that says so itself", selfThrottled{}, true, 0},
		{"other", errors.New("boom"), false, 0},
	}
	for _, tt := range tests {
		got, after := throttleOf(tt.err)
		if got != tt.want || (tt.want && after != tt.wantAfter) {
			t.Errorf("%s: throttleOf = %v, %v; want %v, %v", tt.name, got, after, tt.want, tt.wantAfter)
		}
	}
}

type selfThrottled struct{}

func (selfThrottled) Error() string   { return "slow down" }
func (selfThrottled) Throttled() bool { return true }
func (selfThrottled) Retryable() bool { return true }

// paceClock is a settable clock for the pacer.
type paceClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *paceClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *paceClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type paceEvents struct {
	mu        sync.Mutex
	throttled map[string]int
	pace      map[string]float64
}

func (p *paceEvents) Throttled(c string) { p.mu.Lock(); defer p.mu.Unlock(); p.throttled[c]++ }
func (p *paceEvents) Pace(c string, r float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pace[c] = r
}

// TestPacerPriorityAndIdentities: waiters without valid files go first; a 429 of one
// identity slows only that identity, for every instance using it.
func TestPacerPriorityAndIdentities(t *testing.T) {
	clk := &paceClock{t: paceT0}
	ev := &paceEvents{throttled: map[string]int{}, pace: map[string]float64{}}
	p := newPacer(config.Rate{N: 60, Per: time.Minute}, clk.now, ev)
	defer p.close()
	ctx := context.Background()
	first, err := p.acquire(ctx, "google:a", 1, false)
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 4)
	var wg sync.WaitGroup
	queued := func(n int) func() bool {
		return func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			l := p.ids["google:a"]
			return len(l.urgent)+len(l.normal) == n
		}
	}
	for i, name := range []string{"renew-1", "renew-2", "new-1"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.acquire(ctx, "google:a", 1, name == "new-1"); err != nil {
				t.Error(err)
			}
			order <- name
		}()
		eventually(t, 5*time.Second, "queued", queued(i+1))
	}
	// Another identity is not held up by google:a's queue.
	if _, err := p.acquire(ctx, "google:b", 1, false); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 3 {
		clk.add(time.Second)
		p.mu.Lock()
		l := p.ids["google:a"]
		p.mu.Unlock()
		p.grant(l) // one slot per second: one waiter
		got = append(got, <-order)
	}
	wg.Wait()
	if fmt.Sprint(got) != "[new-1 renew-1 renew-2]" {
		t.Errorf("admission order %v, want [new-1 renew-1 renew-2]", got)
	}
	// A 429 on google:a pauses google:a for its Retry-After, not google:b.
	p.answer(first, gapi.ParseError(429, http.Header{"Retry-After": {"30"}}, nil), -1)
	p.mu.Lock()
	waitA, waitB := p.ids["google:a"].st.wait(clk.now()), p.ids["google:b"].st.wait(clk.now())
	p.mu.Unlock()
	if waitA < 29*time.Second || waitB > time.Second {
		t.Errorf("after a 429 on a: wait a = %v (want ≥29s), b = %v (want ≤1s)", waitA, waitB)
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if ev.throttled["google:a"] != 1 || ev.throttled["google:b"] != 0 || ev.pace["google:a"] >= 1 {
		t.Errorf("observer: throttled %v, pace %v", ev.throttled, ev.pace)
	}
	// A waiter whose context ends leaves the queue.
	cctx, cancel := context.WithCancel(ctx)
	go cancel()
	if _, err := p.acquire(cctx, "google:a", 1, false); !errors.Is(err, context.Canceled) {
		t.Errorf("acquire with a cancelled context: %v", err)
	}
	if !queued(0)() {
		t.Error("the cancelled waiter is still queued")
	}
}

func TestPaceStateForgets(t *testing.T) {
	s := newPaceState(config.Rate{}, paceT0)
	s.throttled(paceT0, paceT0, 0, -1)
	if s.rate > 1 {
		t.Fatalf("rate %v after a 429", s.rate)
	}
	s.good(paceT0.Add(paceForget/2), paceT0.Add(paceForget/2), -1, 1)
	if math.IsInf(s.rate, 1) {
		t.Fatal("forgot too early")
	}
	s.good(paceT0.Add(paceForget+time.Second), paceT0.Add(paceForget), -1, 1)
	if !math.IsInf(s.rate, 1) {
		t.Errorf("rate %v %v after the quiet period, want unpaced again", s.rate, paceForget)
	}
}

// TestRunPacesUnderQuota: 40 instances of one credentials block start against an
// emulator that allows 10 admin API requests per second per identity. Every instance
// gets its files, with fewer 429s than instances; the metrics count the 429s for the
// credentials block and show the pace learned.
func TestRunPacesUnderQuota(t *testing.T) {
	t.Run("429 with Retry-After", func(t *testing.T) { runPacedUnderQuota(t, emulator.Quota{PerSecond: 10}) })
	// Google's quota 429 (cloud-apis.md §7.3) carries no Retry-After: the pace is
	// learned from the refusals alone.
	t.Run("429 without Retry-After", func(t *testing.T) { runPacedUnderQuota(t, emulator.Quota{PerSecond: 10, NoRetryAfter: true}) })
}

func runPacedUnderQuota(t *testing.T, q emulator.Quota) {
	w := newWorld(t, time.Hour)
	w.emu.SetQuota(q)
	w.extra = `key_rotation = "24h"` // with share_keys: one key, so the API is the bottleneck
	var names []string
	for i := range 40 {
		names = append(names, fmt.Sprintf("q%02d", i))
	}
	reg := metrics.NewRegistry()
	obs := NewMetrics(reg)
	stop := w.run(NewWithInstances(w.instances(names...), Options{Logger: w.log, Observer: obs}), RunOptions{ShareKeys: true})
	eventually(t, 60*time.Second, "files for every instance", func() bool {
		for _, n := range names {
			if _, err := w.current(n); err != nil {
				return false
			}
		}
		return true
	})
	stop()
	admitted, throttled := w.emu.QuotaCounts()
	counted, _ := reg.Counter("dbcert_api_throttled_total", "", "credentials").Value("google:default")
	pace, ok := reg.Gauge("dbcert_api_pace_requests_per_second", "", "credentials").Value("google:default")
	t.Logf("admitted %d, throttled %d, pace %.2f/s", admitted, throttled, pace)
	// A refresh is two calls: both may be refused, and the agent sees one error.
	if counted < 1 || int(counted) > throttled {
		t.Errorf("dbcert_api_throttled_total = %v, emulator sent %d 429s", counted, throttled)
	}
	if throttled == 0 || !ok || math.IsInf(pace, 1) {
		t.Errorf("pace %v after %d 429s: the quota was not met or not learned", pace, throttled)
	}
	// Unpaced, each of 40 instances meets the quota at least once (and again on its
	// retries); paced, only the first burst (the in-flight limit, 16) and a few probes do.
	if throttled >= len(names) {
		t.Errorf("%d of %d requests answered 429", throttled, admitted+throttled)
	}
}
