package agent

import (
	"context"
	"sync"
	"time"
)

// clockWatch tells instance loops to re-check their timers against the wall clock when
// the machine was suspended or its clock was set. Go timers run on the monotonic clock,
// which stops during suspend: a VM resumed after an hour would otherwise sleep on past
// certificates that expired meanwhile. One goroutine for the whole agent compares the
// wall clock with the monotonic clock once a minute (the only periodic wake-up of an
// idle daemon); a difference above clockSlack closes the current channel.
type clockWatch struct {
	mu sync.Mutex
	ch chan struct{}
}

const (
	clockPeriod = time.Minute
	clockSlack  = 2 * time.Second
)

func newClockWatch() *clockWatch { return &clockWatch{ch: make(chan struct{})} }

// changed returns a channel closed at the next detected jump.
func (c *clockWatch) changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ch
}

func (c *clockWatch) broadcast() {
	c.mu.Lock()
	close(c.ch)
	c.ch = make(chan struct{})
	c.mu.Unlock()
}

// run watches until ctx is done.
func (c *clockWatch) run(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		mono := now.Sub(last)                   // monotonic readings
		wall := now.Round(0).Sub(last.Round(0)) // wall-clock readings
		if d := wall - mono; d > clockSlack || d < -clockSlack {
			c.broadcast()
		}
		last = now
	}
}
