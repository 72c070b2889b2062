package hook

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	// DefaultWaitMissing is how long a missing or empty pid file is waited for.
	DefaultWaitMissing = 5 * time.Second
	// pidPoll is the pid file polling interval while waiting.
	pidPoll = 100 * time.Millisecond
	// maxPIDFileSize is the most a pid file may hold.
	maxPIDFileSize = 32
	// maxPID is the kernel's upper bound for pid_max (2^22).
	maxPID = 1 << 22
)

// SignalOptions configures a signal hook.
type SignalOptions struct {
	// PIDFile is the absolute path of a file holding the target's pid. It is
	// read at every run. Required.
	PIDFile string
	// Signal to send; default SIGHUP.
	Signal syscall.Signal
	// WaitMissing is how long a missing or empty pid file is retried,
	// polling every 100 ms; default DefaultWaitMissing (5 s).
	WaitMissing time.Duration
}

// Signal sends a signal to the process named by a pid file. It is safe for
// concurrent use.
type Signal struct {
	pidFile string
	sig     syscall.Signal
	wait    time.Duration
	poll    time.Duration
}

// NewSignal checks o and applies defaults.
func NewSignal(o SignalOptions) (*Signal, error) {
	if o.PIDFile == "" {
		return nil, errors.New("signal hook: pid_file is required")
	}
	if !filepath.IsAbs(o.PIDFile) {
		return nil, fmt.Errorf("signal hook: pid_file %q must be an absolute path", o.PIDFile)
	}
	if o.Signal < 0 {
		return nil, fmt.Errorf("signal hook: invalid signal %d", int(o.Signal))
	}
	if o.WaitMissing < 0 {
		return nil, fmt.Errorf("signal hook: negative wait %v", o.WaitMissing)
	}
	h := &Signal{pidFile: filepath.Clean(o.PIDFile), sig: o.Signal, wait: o.WaitMissing, poll: pidPoll}
	if h.sig == 0 {
		h.sig = syscall.SIGHUP
	}
	if h.wait == 0 {
		h.wait = DefaultWaitMissing
	}
	return h, nil
}

// String returns e.g. "signal SIGHUP to the pid in /run/app.pid".
func (h *Signal) String() string {
	return fmt.Sprintf("signal %s to the pid in %s", signalName(h.sig), h.pidFile)
}

// errNotYet marks a pid file that is missing or empty, which is retried.
var errNotYet = errors.New("not there yet")

// Run reads the pid file and signals that process. The file must be a
// regular file (not a symbolic link) that is not group- or world-writable
// and holds one decimal pid > 1 (trailing white space allowed, at most 32
// bytes). On Linux, a pid file owned by someone other than root or the agent
// must name a process of that owner. A missing or empty file is retried until
// WaitMissing has passed. The process is signalled through a pidfd where the
// OS has them, so a recycled pid is never hit.
func (h *Signal) Run(ctx context.Context, _ Event) error {
	deadline := time.Now().Add(h.wait)
	var (
		pid   int
		owner int
		err   error
	)
	for {
		pid, owner, err = readPIDFile(h.pidFile)
		if err == nil {
			break
		}
		if !errors.Is(err, errNotYet) {
			return fmt.Errorf("hook %s: %w", h, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hook %s: %w (waited %v; is the service running?)", h, err, h.wait)
		}
		t := time.NewTimer(h.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("hook %s: %w while waiting for the pid file", h, ctx.Err())
		case <-t.C:
		}
	}
	if pid == os.Getpid() {
		return fmt.Errorf("hook %s: pid %d from %s is the agent itself; refusing", h, pid, h.pidFile)
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return fmt.Errorf("hook %s: pid %d from %s: %w", h, pid, h.pidFile, err)
	}
	defer p.Release()
	if err := checkOwner(pid, owner); err != nil {
		return fmt.Errorf("hook %s: %w", h, err)
	}
	if err := p.Signal(h.sig); err != nil {
		switch {
		case errors.Is(err, os.ErrProcessDone), errors.Is(err, syscall.ESRCH):
			return fmt.Errorf("hook %s: pid %d from %s is not running (stale pid file?)", h, pid, h.pidFile)
		case errors.Is(err, syscall.EPERM):
			return fmt.Errorf("hook %s: not permitted to signal pid %d from %s (the agent needs to run as that process's user or root): %w", h, pid, h.pidFile, err)
		}
		return fmt.Errorf("hook %s: signalling pid %d from %s: %w", h, pid, h.pidFile, err)
	}
	return nil
}

// parsePID parses a pid file's content strictly.
func parsePID(path string, b []byte) (int, error) {
	s := strings.TrimRight(string(b), " \t\r\n")
	if s == "" {
		return 0, fmt.Errorf("pid file %s is empty: %w", path, errNotYet)
	}
	if len(s) > 7 { // maxPID has 7 digits
		return 0, fmt.Errorf("pid file %s does not hold a single pid", path)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("pid file %s does not hold a single decimal pid", path)
		}
		n = n*10 + int(c-'0')
	}
	if n <= 1 || n > maxPID {
		return 0, fmt.Errorf("pid file %s holds pid %d, which is not a valid target", path, n)
	}
	return n, nil
}

var signalNames = []struct {
	name string
	sig  syscall.Signal
}{
	{"HUP", syscall.SIGHUP},
	{"INT", syscall.SIGINT},
	{"QUIT", syscall.SIGQUIT},
	{"KILL", syscall.SIGKILL},
	{"USR1", sigUSR1},
	{"USR2", sigUSR2},
	{"TERM", syscall.SIGTERM},
	{"ALRM", syscall.SIGALRM},
	{"CONT", sigCONT},
	{"STOP", sigSTOP},
	{"TSTP", sigTSTP},
	{"WINCH", sigWINCH},
	{"TTIN", sigTTIN},
	{"TTOU", sigTTOU},
}

// ParseSignal accepts a signal name with or without the SIG prefix, in any
// case: "SIGHUP", "HUP", "sigusr1". Numbers are refused.
func ParseSignal(name string) (syscall.Signal, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	n = strings.TrimPrefix(n, "SIG")
	for _, s := range signalNames {
		if s.name == n && s.sig != 0 {
			return s.sig, nil
		}
	}
	return 0, fmt.Errorf("unknown signal %q; use a name such as SIGHUP, SIGUSR1, SIGUSR2, SIGTERM or SIGINT", name)
}

func signalName(sig syscall.Signal) string {
	for _, s := range signalNames {
		if s.sig == sig && s.sig != 0 {
			return "SIG" + s.name
		}
	}
	return fmt.Sprintf("signal %d", int(sig))
}
