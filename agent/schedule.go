package agent

import (
	"math"
	"time"

	"github.com/dbcert-agent/dbcert-agent/config"
)

// Renewal timing and retry spacing: pure functions of their inputs, no clocks, no I/O.

// jitterFraction is the largest random jitter, as a fraction of the lifetime, by which a
// renewal is brought forward.
const jitterFraction = 0.05

// maxFloor is the latest a renewal may be left before expiry (5 minutes), unless a tenth
// of the lifetime is shorter.
const maxFloor = 5 * time.Minute

// RenewAt returns when a certificate valid from notBefore to notAfter (its effective
// lifetime: notAfter is already clamped to any token expiry) should be renewed.
//
// It renews when r's renew_before of the lifetime is left (default a third), brought
// forward by jitter×5% of the lifetime (jitter in [0,1)), and never later than the floor:
// 5 minutes before expiry, or a tenth of the lifetime when that is shorter. A
// renew_before duration that is not shorter than the lifetime would renew right after
// every fetch; the default fraction is used for such a certificate instead (see
// renewBeforeTooLong). A lifetime that is zero or negative means "renew now" (returns
// notBefore).
func RenewAt(notBefore, notAfter time.Time, r config.Renewal, jitter float64) time.Time {
	life := notAfter.Sub(notBefore)
	if life <= 0 {
		return notBefore
	}
	before := r.Before
	if renewBeforeTooLong(r, life) {
		before = 0
	}
	if before <= 0 {
		frac := r.BeforeFraction
		if frac <= 0 {
			frac = config.DefaultRenewFraction
		}
		before = time.Duration(frac * float64(life))
	}
	before += time.Duration(math.Max(0, math.Min(jitter, 1)) * jitterFraction * float64(life))
	if floor := min(maxFloor, life/10); before < floor {
		before = floor
	}
	if before > life {
		before = life
	}
	return notAfter.Add(-before)
}

// renewBeforeTooLong reports whether r's renew_before duration is not shorter than a
// certificate lifetime life, so that honouring it would renew at once.
func renewBeforeTooLong(r config.Renewal, life time.Duration) bool {
	return r.Before > 0 && r.Before >= life
}

// Backoff limits.
const (
	backoffBase = time.Second
	backoffCap  = 5 * time.Minute
)

// Backoff returns how long to wait before retry number attempt (0 for the first retry):
// exponential from 1 s with full jitter (rnd in [0,1)), capped at 5 minutes and at a
// quarter of timeLeft (the time until the current files expire; ≤0 means no files or
// already expired, and only the 5-minute cap applies). A retryAfter from the server is a
// floor on the result.
func Backoff(attempt int, rnd float64, timeLeft, retryAfter time.Duration) time.Duration {
	ceil := backoffCap
	if attempt < 20 {
		ceil = min(ceil, backoffBase<<attempt)
	}
	if timeLeft > 0 {
		ceil = min(ceil, timeLeft/4)
	}
	d := time.Duration(math.Max(0, math.Min(rnd, 1)) * float64(ceil))
	return max(d, retryAfter)
}
