// Package sdnotify speaks systemd's service notification protocol (sd_notify(3)):
// readiness, reload and stop announcements, free-form status text and watchdog
// keep-alives, sent as datagrams to the Unix socket named by NOTIFY_SOCKET.
//
// Everything is a no-op when the agent was not started by systemd with
// Type=notify (NOTIFY_SOCKET unset), so callers never need to check first.
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Environment variables read by FromEnv.
const (
	EnvSocket       = "NOTIFY_SOCKET"
	EnvWatchdogUsec = "WATCHDOG_USEC"
	EnvWatchdogPID  = "WATCHDOG_PID"
)

// writeTimeout bounds one datagram write, so a stuck receiver cannot wedge the
// caller (systemd's socket is normally never full).
const writeTimeout = 2 * time.Second

// Notifier sends sd_notify messages. The zero value and a nil *Notifier are
// no-ops: every method returns nil (or 0) without doing anything. It is safe
// for concurrent use; each message is one datagram on a freshly dialed socket,
// so a restarted or re-executed systemd is picked up without any state.
type Notifier struct {
	addr     *net.UnixAddr // nil: disabled
	watchdog time.Duration // full WATCHDOG_USEC, 0 when no watchdog applies to us

	mu sync.Mutex // serialises writes so messages arrive in call order
}

// New returns a Notifier that sends to the socket at path (a filesystem path,
// or an abstract socket name starting with "@") with the given full watchdog
// timeout (0 for none). An empty path returns a disabled Notifier. It is meant
// for tests and callers that do not take the settings from the environment.
func New(path string, watchdog time.Duration) (*Notifier, error) {
	if path == "" {
		return &Notifier{}, nil
	}
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
		return &Notifier{}, fmt.Errorf("sdnotify: unsupported notify socket address %q (want an absolute path or an abstract \"@name\")", path)
	}
	if len(path) < 2 {
		return &Notifier{}, fmt.Errorf("sdnotify: notify socket address %q is too short", path)
	}
	if watchdog < 0 {
		watchdog = 0
	}
	return &Notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}, watchdog: watchdog}, nil
}

// FromEnv builds a Notifier from NOTIFY_SOCKET (an absolute path, or an
// abstract socket "@name") and WATCHDOG_USEC / WATCHDOG_PID. It unsets nothing,
// so child processes (hooks) see the same environment unless the caller
// filters it.
//
//   - NOTIFY_SOCKET unset or empty: a disabled Notifier (Enabled()==false), nil error.
//   - NOTIFY_SOCKET of another form (e.g. "vsock:…"): a disabled Notifier and an error.
//   - WATCHDOG_USEC unset, "0", or WATCHDOG_PID set to a pid other than ours:
//     no watchdog (WatchdogInterval()==0).
//   - WATCHDOG_USEC or WATCHDOG_PID unparsable: an enabled Notifier without a
//     watchdog, and an error describing the bad variable.
//
// The returned *Notifier is never nil, so it can be used even when err != nil.
func FromEnv() (*Notifier, error) {
	sock := os.Getenv(EnvSocket)
	if sock == "" {
		return &Notifier{}, nil
	}
	n, err := New(sock, 0)
	if err != nil {
		return n, err
	}
	wd, err := watchdogFromEnv()
	n.watchdog = wd
	return n, err
}

func watchdogFromEnv() (time.Duration, error) {
	us := os.Getenv(EnvWatchdogUsec)
	if us == "" {
		return 0, nil
	}
	usec, err := strconv.ParseUint(us, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("sdnotify: %s=%q is not a number of microseconds; the watchdog is disabled", EnvWatchdogUsec, us)
	}
	if p := os.Getenv(EnvWatchdogPID); p != "" {
		pid, err := strconv.Atoi(p)
		if err != nil {
			return 0, fmt.Errorf("sdnotify: %s=%q is not a pid; the watchdog is disabled", EnvWatchdogPID, p)
		}
		if pid != os.Getpid() {
			return 0, nil // the watchdog is meant for another process
		}
	}
	const maxUsec = uint64(1<<63-1) / uint64(time.Microsecond)
	if usec > maxUsec {
		usec = maxUsec
	}
	return time.Duration(usec) * time.Microsecond, nil
}

// Enabled reports whether messages are actually sent (NOTIFY_SOCKET was set).
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// Send sends state verbatim as one datagram, e.g. "READY=1\nSTATUS=ok".
// It returns nil without sending when the Notifier is disabled.
func (n *Notifier) Send(state string) error {
	if !n.Enabled() {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sdnotify: connect to %s: %w", n.addr.Name, err)
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sdnotify: send to %s: %w", n.addr.Name, err)
	}
	return nil
}

// Ready sends "READY=1": start-up (or a reload) is complete.
func (n *Notifier) Ready() error { return n.Send("READY=1") }

// Reloading sends "RELOADING=1\nMONOTONIC_USEC=<CLOCK_MONOTONIC µs>", as
// Type=notify-reload (systemd ≥ 253) requires; follow it with Ready when the
// reload is done. Where CLOCK_MONOTONIC is unavailable only "RELOADING=1" is sent.
func (n *Notifier) Reloading() error {
	if !n.Enabled() {
		return nil
	}
	if us, ok := monotonicUsec(); ok {
		return n.Send("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatUint(us, 10))
	}
	return n.Send("RELOADING=1")
}

// Stopping sends "STOPPING=1": shutdown has begun.
func (n *Notifier) Stopping() error { return n.Send("STOPPING=1") }

// Status sends "STATUS=<s>", shown by systemctl status. The text is kept to
// one line: CR and LF are replaced by spaces.
func (n *Notifier) Status(s string) error {
	if !n.Enabled() {
		return nil
	}
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
	}
	return n.Send("STATUS=" + s)
}

// Watchdog sends one "WATCHDOG=1" keep-alive.
func (n *Notifier) Watchdog() error { return n.Send("WATCHDOG=1") }

// WatchdogInterval returns how often to ping the watchdog: half of
// WATCHDOG_USEC. It is 0 when the Notifier is disabled, no watchdog was
// requested, or WATCHDOG_PID names another process.
func (n *Notifier) WatchdogInterval() time.Duration {
	if !n.Enabled() {
		return 0
	}
	return n.watchdog / 2
}

// RunWatchdog sends "WATCHDOG=1" every WatchdogInterval until ctx is done. A
// ping is skipped when healthy returns false, so systemd restarts an agent
// whose main loop is wedged; a nil healthy counts as always healthy. Send
// errors are ignored (the next tick retries). It returns immediately when
// there is no watchdog, and otherwise blocks, so run it in its own goroutine.
func (n *Notifier) RunWatchdog(ctx context.Context, healthy func() bool) {
	iv := n.WatchdogInterval()
	if iv <= 0 {
		return
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if ctx.Err() != nil {
				return
			}
			if healthy == nil || healthy() {
				_ = n.Watchdog()
			}
		}
	}
}
