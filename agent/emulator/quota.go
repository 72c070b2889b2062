package emulator

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Quota limits the Google admin API requests (Cloud SQL and AlloyDB, not the token
// endpoint) of each identity — the subject of the bearer token, as Google counts
// "per minute per user" — like the Admin API quota does. Each limit is a token bucket
// that holds up to its number of requests and refills evenly over its period: PerMinute
// 600 admits a burst of 600 and then 10 per second; PerSecond 10 admits at most 10 at
// once and 10 per second. A request over either limit is answered 429
// RESOURCE_EXHAUSTED with Google's rateLimitExceeded body (cloud-apis.md §7.3) and a
// Retry-After header: the whole seconds until the request would have been admitted,
// at least 1 (none with NoRetryAfter). Zero limits are off; the zero Quota enforces
// nothing.
type Quota struct {
	PerMinute int
	PerSecond int
	// NoRetryAfter leaves the Retry-After header out, as the 429 that cloud-apis.md
	// §7.3 shows has none: clients must find the pace on their own.
	NoRetryAfter bool
}

func (q Quota) off() bool { return q.PerMinute <= 0 && q.PerSecond <= 0 }

// quotaState is the buckets of every identity; it has its own lock so that quota checks
// do not contend with the rest of the emulator.
type quotaState struct {
	mu        sync.Mutex
	q         Quota
	buckets   map[string]*quotaBuckets
	admitted  int
	throttled int
}

type quotaBuckets struct {
	minute, second quotaBucket
}

// quotaBucket is one token bucket: tokens left at last.
type quotaBucket struct {
	tokens float64
	last   time.Time
}

// take refills the bucket (capacity n, n per period) to now and spends a token; when
// none is available it spends nothing and returns how long until one is.
func (b *quotaBucket) take(n int, per time.Duration, now time.Time) time.Duration {
	if n <= 0 {
		return 0
	}
	rate := float64(n) / per.Seconds()
	if b.last.IsZero() {
		b.tokens = float64(n)
	} else if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(float64(n), b.tokens+el*rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

// SetQuota enforces q from now on (the zero Quota turns it off); identities start with
// full buckets.
func (e *Emulator) SetQuota(q Quota) {
	e.quota.mu.Lock()
	defer e.quota.mu.Unlock()
	e.quota.q = q
	e.quota.buckets = map[string]*quotaBuckets{}
}

// QuotaCounts returns how many admin API requests the quota has admitted and answered
// 429 since the emulator started.
func (e *Emulator) QuotaCounts() (admitted, throttled int) {
	e.quota.mu.Lock()
	defer e.quota.mu.Unlock()
	return e.quota.admitted, e.quota.throttled
}

// quotaCounted reports whether a path is a Google admin API (Cloud SQL or AlloyDB).
func quotaCounted(path string) bool {
	for _, p := range []string{"/sql/v1beta4/", "/v1/", "/v1beta/", "/v1alpha/"} {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// checkQuota answers 429 and returns true when r's identity is over its quota. Requests
// without a live bearer token are left to the method (it answers 401).
func (e *Emulator) checkQuota(w http.ResponseWriter, r *http.Request) bool {
	e.quota.mu.Lock()
	q := e.quota.q
	e.quota.mu.Unlock()
	if q.off() || !quotaCounted(r.URL.Path) {
		return false
	}
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	t := e.lookupToken(strings.TrimSpace(tok))
	if t == nil {
		return false
	}
	now := e.now()
	e.quota.mu.Lock()
	b := e.quota.buckets[t.subject]
	if b == nil {
		b = &quotaBuckets{}
		e.quota.buckets[t.subject] = b
	}
	// Check both before spending, so a refused request costs nothing.
	saveM, saveS := b.minute, b.second
	wait := max(b.minute.take(q.PerMinute, time.Minute, now), b.second.take(q.PerSecond, time.Second, now))
	if wait > 0 {
		b.minute, b.second = saveM, saveS
		e.quota.throttled++
	} else {
		e.quota.admitted++
	}
	e.quota.mu.Unlock()
	if wait <= 0 {
		return false
	}
	if !q.NoRetryAfter {
		secs := max(1, int(math.Ceil(wait.Seconds())))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	writeDefaultError(w, http.StatusTooManyRequests)
	return true
}
