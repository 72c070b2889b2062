package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// listen opens a fake NOTIFY_SOCKET. name "" means a filesystem socket in a
// short temp dir (sun_path is limited to 108 bytes); otherwise name is used.
func listen(t *testing.T, name string) (string, *net.UnixConn) {
	t.Helper()
	if name == "" {
		dir, err := os.MkdirTemp("", "sdn")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		name = filepath.Join(dir, "notify.sock")
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return name, c
}

func recv(t *testing.T, c *net.UnixConn, timeout time.Duration) (string, bool) {
	t.Helper()
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	n, _, err := c.ReadFromUnix(buf)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return "", false
		}
		t.Fatalf("read: %v", err)
	}
	return string(buf[:n]), true
}

func mustRecv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	s, ok := recv(t, c, 2*time.Second)
	if !ok {
		t.Fatal("no datagram received")
	}
	return s
}

func setEnv(t *testing.T, sock, usec, pid string) {
	t.Helper()
	for k, v := range map[string]string{EnvSocket: sock, EnvWatchdogUsec: usec, EnvWatchdogPID: pid} {
		if v == "" {
			t.Setenv(k, "") // registers restore
			os.Unsetenv(k)
		} else {
			t.Setenv(k, v)
		}
	}
}

func TestMessages(t *testing.T) {
	for _, tc := range []struct{ name, addr string }{
		{"path", ""},
		{"abstract", fmt.Sprintf("@dbcert-agent-test-%d-%d", os.Getpid(), time.Now().UnixNano())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, srv := listen(t, tc.addr)
			setEnv(t, addr, "", "")
			n, err := FromEnv()
			if err != nil {
				t.Fatal(err)
			}
			if !n.Enabled() {
				t.Fatal("Enabled() = false with NOTIFY_SOCKET set")
			}
			if n.WatchdogInterval() != 0 {
				t.Fatalf("WatchdogInterval = %v without WATCHDOG_USEC", n.WatchdogInterval())
			}

			steps := []struct {
				send func() error
				want string
			}{
				{n.Ready, "READY=1"},
				{n.Stopping, "STOPPING=1"},
				{n.Watchdog, "WATCHDOG=1"},
				{func() error { return n.Status("renewing orders") }, "STATUS=renewing orders"},
				{func() error { return n.Status("a\nb\r\nc\rd") }, "STATUS=a b c d"},
				{func() error { return n.Send("READY=1\nSTATUS=x") }, "READY=1\nSTATUS=x"},
			}
			for i, s := range steps {
				if err := s.send(); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if got := mustRecv(t, srv); got != s.want {
					t.Fatalf("step %d: got %q, want %q", i, got, s.want)
				}
			}

			before, _ := monotonicUsec()
			if err := n.Reloading(); err != nil {
				t.Fatal(err)
			}
			after, _ := monotonicUsec()
			got := mustRecv(t, srv)
			rest, ok := strings.CutPrefix(got, "RELOADING=1\nMONOTONIC_USEC=")
			if !ok {
				t.Fatalf("Reloading sent %q", got)
			}
			us, err := strconv.ParseUint(rest, 10, 64)
			if err != nil || us < before || us > after {
				t.Fatalf("MONOTONIC_USEC=%q not within [%d, %d] (err %v)", rest, before, after, err)
			}
		})
	}
}

func TestUnsetIsNoop(t *testing.T) {
	setEnv(t, "", "200000", "")
	n, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if n == nil || n.Enabled() {
		t.Fatal("want a non-nil disabled Notifier")
	}
	check := func(n *Notifier) {
		for i, f := range []func() error{n.Ready, n.Reloading, n.Stopping, n.Watchdog,
			func() error { return n.Status("x") }, func() error { return n.Send("X=1") }} {
			if err := f(); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		if n.WatchdogInterval() != 0 {
			t.Fatal("WatchdogInterval != 0 on a disabled Notifier")
		}
		done := make(chan struct{})
		go func() { n.RunWatchdog(context.Background(), nil); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatal("RunWatchdog did not return at once")
		}
	}
	check(n)
	check(nil)
	check(&Notifier{})
}

func TestBadSocket(t *testing.T) {
	setEnv(t, "vsock:2:1234", "", "")
	n, err := FromEnv()
	if err == nil {
		t.Fatal("want an error for an unsupported address")
	}
	if n == nil || n.Enabled() {
		t.Fatal("want a non-nil disabled Notifier on error")
	}
}

func TestSendError(t *testing.T) {
	dir := t.TempDir()
	n, err := New(filepath.Join(dir, "missing.sock"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Ready(); err == nil {
		t.Fatal("want an error when nothing listens")
	}
}

func TestWatchdogEnv(t *testing.T) {
	addr, _ := listen(t, "")
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		wantErr   bool
	}{
		{"200000", "", 100 * time.Millisecond, false},
		{"200000", strconv.Itoa(os.Getpid()), 100 * time.Millisecond, false},
		{"200000", strconv.Itoa(os.Getpid() + 1), 0, false},
		{"30000000", "", 15 * time.Second, false},
		{"0", "", 0, false},
		{"", "", 0, false},
		{"abc", "", 0, true},
		{"200000", "self", 0, true},
	} {
		t.Run(tc.usec+"/"+tc.pid, func(t *testing.T) {
			setEnv(t, addr, tc.usec, tc.pid)
			n, err := FromEnv()
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !n.Enabled() {
				t.Fatal("not enabled")
			}
			if got := n.WatchdogInterval(); got != tc.want {
				t.Fatalf("WatchdogInterval = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRunWatchdog(t *testing.T) {
	addr, srv := listen(t, "")
	setEnv(t, addr, "200000", strconv.Itoa(os.Getpid()))
	n, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if n.WatchdogInterval() != 100*time.Millisecond {
		t.Fatalf("interval %v", n.WatchdogInterval())
	}

	var healthy atomic.Bool
	healthy.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.RunWatchdog(ctx, healthy.Load); close(done) }()

	for i := 0; i < 3; i++ {
		if got := mustRecv(t, srv); got != "WATCHDOG=1" {
			t.Fatalf("ping %d = %q", i, got)
		}
	}

	// Unhealthy: pings stop. Drain a ping that may already be in flight.
	healthy.Store(false)
	recv(t, srv, 150*time.Millisecond)
	if got, ok := recv(t, srv, 350*time.Millisecond); ok {
		t.Fatalf("got %q while unhealthy", got)
	}

	healthy.Store(true)
	if got := mustRecv(t, srv); got != "WATCHDOG=1" {
		t.Fatalf("after recovery: %q", got)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("RunWatchdog did not stop on cancel")
	}
}
