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

// clockReader reads the wall clock and the monotonic clock (time since some fixed
// point) at one instant.
type clockReader func() (wall time.Time, mono time.Duration)

// systemClocks reads the system's clocks: time.Now's wall reading, and its monotonic
// reading relative to the moment systemClocks was called.
func systemClocks() clockReader {
	base := time.Now()
	return func() (time.Time, time.Duration) {
		now := time.Now()
		return now.Round(0), now.Sub(base) // Round(0) drops the monotonic reading
	}
}

// run checks the clocks at every tick until ctx is done, and broadcasts when the wall
// clock moved more than clockSlack further (or less far) than the monotonic clock since
// the previous check.
func (c *clockWatch) run(ctx context.Context, tick <-chan time.Time, read clockReader) {
	lastWall, lastMono := read()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		wall, mono := read()
		if jumped(wall.Sub(lastWall), mono-lastMono) {
			c.broadcast()
		}
		lastWall, lastMono = wall, mono
	}
}

// jumped reports whether the wall clock's movement differs from the monotonic clock's
// by more than clockSlack.
func jumped(wall, mono time.Duration) bool {
	d := wall - mono
	return d > clockSlack || d < -clockSlack
}
