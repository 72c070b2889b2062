package agent

import "time"

// Refresh rate limits (spec §5): one refresh per instance per 30 s on average, burst 2,
// or one per tenth of the certificate lifetime when that is shorter.
const (
	refreshInterval = 30 * time.Second
	refreshBurst    = 2
)

// bucket is a token bucket: it holds up to burst tokens and gains one per interval.
// It is owned by one instance loop and is not safe for concurrent use.
type bucket struct {
	interval time.Duration
	tokens   float64
	last     time.Time
}

func newBucket(now time.Time) *bucket {
	return &bucket{interval: refreshInterval, tokens: refreshBurst, last: now}
}

// setLifetime scales the interval down for short-lived certificates.
func (b *bucket) setLifetime(life time.Duration) {
	b.interval = refreshInterval
	if life > 0 && life/10 < b.interval {
		b.interval = max(life/10, time.Millisecond)
	}
}

func (b *bucket) refill(now time.Time) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(refreshBurst, b.tokens+float64(el)/float64(b.interval))
	}
	b.last = now
}

// take spends a token when one is available and returns 0; otherwise it spends nothing
// and returns how long until a token is available.
func (b *bucket) take(now time.Time) time.Duration {
	b.refill(now)
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) * float64(b.interval))
}
