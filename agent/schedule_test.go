package agent

import (
	"crypto"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/config"
)

func TestRenewAt(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	third := config.Renewal{BeforeFraction: 1.0 / 3}
	tests := []struct {
		name     string
		life     time.Duration
		r        config.Renewal
		jitter   float64
		wantLeft time.Duration // time before notAfter at which renewal is due
	}{
		{"1h cert, default third", time.Hour, third, 0, 20 * time.Minute},
		{"1h cert, full jitter adds 5% (3m)", time.Hour, third, 0.999999999, 23 * time.Minute},
		{"1h cert, half jitter", time.Hour, third, 0.5, 21*time.Minute + 30*time.Second},
		{"zero renewal config means default third", time.Hour, config.Renewal{}, 0, 20 * time.Minute},
		{"24h cert, 33%", 24 * time.Hour, config.Renewal{BeforeFraction: 0.33}, 0, time.Duration(0.33 * float64(24*time.Hour))},
		{"duration renew_before", time.Hour, config.Renewal{Before: 15 * time.Minute}, 0, 15 * time.Minute},
		{"tiny fraction hits 5m floor", time.Hour, config.Renewal{BeforeFraction: 0.01}, 0, 5 * time.Minute},
		{"tiny duration hits 5m floor", time.Hour, config.Renewal{Before: time.Minute}, 0, 5 * time.Minute},
		{"short life: floor is a tenth", 20 * time.Second, config.Renewal{Before: time.Second}, 0, 2 * time.Second},
		{"short life default third scales down", 30 * time.Second, third, 0, 10 * time.Second},
		{"renew_before longer than life falls back to the default third", 10 * time.Minute, config.Renewal{Before: time.Hour}, 0, 10 * time.Minute / 3},
		{"renew_before equal to life falls back too", time.Hour, config.Renewal{Before: time.Hour}, 0, 20 * time.Minute},
		{"renew_before just under life is honoured", time.Hour, config.Renewal{Before: 50 * time.Minute}, 0, 50 * time.Minute},
		{"jitter is clamped to [0,1]", time.Hour, third, 7, 23 * time.Minute},
		{"negative jitter is none", time.Hour, third, -1, 20 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			notAfter := t0.Add(tt.life)
			got := RenewAt(t0, notAfter, tt.r, tt.jitter)
			if left := notAfter.Sub(got); (left - tt.wantLeft).Abs() > time.Millisecond {
				t.Errorf("renews %v before expiry, want %v", left, tt.wantLeft)
			}
		})
	}
	t.Run("token clamp: effective lifetime ends at token expiry", func(t *testing.T) {
		// A 1h certificate whose login token expires after 12 minutes: the caller passes
		// the clamped not-after, so renewal is a third of 12 minutes before it (floor 1m12s).
		tokenExpiry := t0.Add(12 * time.Minute)
		got := RenewAt(t0, tokenExpiry, third, 0)
		if want := tokenExpiry.Add(-4 * time.Minute); !got.Equal(want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("expired or empty lifetime renews now", func(t *testing.T) {
		if got := RenewAt(t0, t0, third, 0); !got.Equal(t0) {
			t.Errorf("got %v", got)
		}
	})
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name       string
		attempt    int
		rnd        float64
		timeLeft   time.Duration
		retryAfter time.Duration
		want       time.Duration
	}{
		{"first retry, max jitter", 0, 1, 0, 0, time.Second},
		{"first retry, no jitter draw", 0, 0, 0, 0, 0},
		{"third retry doubles", 2, 1, 0, 0, 4 * time.Second},
		{"half jitter", 3, 0.5, 0, 0, 4 * time.Second},
		{"capped at 5 minutes", 12, 1, 0, 0, 5 * time.Minute},
		{"huge attempt does not overflow", 500, 1, 0, 0, 5 * time.Minute},
		{"capped at a quarter of time left", 10, 1, 2 * time.Minute, 0, 30 * time.Second},
		{"retry-after is a floor", 0, 0.1, 0, 7 * time.Second, 7 * time.Second},
		{"retry-after beats the time-left cap", 10, 1, 40 * time.Second, 30 * time.Second, 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Backoff(tt.attempt, tt.rnd, tt.timeLeft, tt.retryAfter); got != tt.want {
				t.Errorf("Backoff = %v, want %v", got, tt.want)
			}
		})
	}
}

// keyForTest makes a key as the agent would for a certificate.
func (in *Instance) keyForTest() (crypto.Signer, error) { return bundle.NewKey() }
