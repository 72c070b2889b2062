package hook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// DefaultExecTimeout is the exec hook timeout when none is set.
	DefaultExecTimeout = 30 * time.Second
	// DefaultMaxOutput caps the captured output of an exec hook.
	DefaultMaxOutput = 64 << 10
	// defaultKillGrace is the time between SIGTERM and SIGKILL on timeout, and how
	// long processes a hook started may hold its output after it exited.
	defaultKillGrace = 5 * time.Second
	// drainAfterKill bounds the wait for the output of a hook killed on timeout.
	drainAfterKill = time.Second
	// MaxExecOverrun is how much longer than its timeout one exec hook run may take:
	// the kill grace, and the waits for the output of what was killed.
	MaxExecOverrun = defaultKillGrace + 2*drainAfterKill
	// tailSize is how much of the end of the output is kept for errors.
	tailSize = 1 << 10
	// maxLastLine caps the output line quoted in errors.
	maxLastLine = 200
)

// ExecOptions configures an exec hook.
type ExecOptions struct {
	// Command is the argv, run without a shell. Required. Command[0] is an
	// absolute path, or a bare program name looked up on PATH by NewExec (see
	// CheckCommand).
	Command []string
	// Timeout bounds one run; default DefaultExecTimeout (30 s). On timeout
	// the command's whole process group gets SIGTERM, then SIGKILL 5 s later.
	Timeout time.Duration
	// Env adds variables to the command's clean environment (see Run). Names
	// must be valid variable names; DBCERT_* names are the agent's and are
	// refused.
	Env map[string]string
	// Environ is the agent's environment that PATH, HOME, LANG, LC_* and TZ are
	// taken from; default os.Environ.
	Environ func() []string
	// Logger receives the captured output (stdout and stderr interleaved) as
	// one info record "hook output"; default slog.Default().
	Logger *slog.Logger
	// MaxOutput caps the captured output; default DefaultMaxOutput (64 KiB).
	// Output beyond it is counted and dropped, and the record says so.
	MaxOutput int
}

// Exec runs a command for each event. It is safe for concurrent use.
type Exec struct {
	argv      []string
	path      string // resolved Command[0]
	timeout   time.Duration
	grace     time.Duration
	env       []string // the clean base environment plus Env, without DBCERT_*
	logger    *slog.Logger
	maxOutput int
}

// CheckCommand checks an exec hook's program (Command[0]) and returns the path
// it runs: an absolute path is returned as it is and must be an executable
// file when it exists (it may be installed after the agent starts); a bare
// name must be found on PATH now; relative paths ("./x", "bin/x") are refused,
// since the agent's working directory is nobody's business. The config loader
// and NewExec both use it, so `validate` refuses what `once` and `run` refuse.
func CheckCommand(name string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("command is empty; give the program and its arguments, e.g. [\"/usr/bin/systemctl\", \"reload\", \"myapp\"]")
	case filepath.IsAbs(name):
		fi, err := os.Stat(name)
		if err != nil {
			return name, nil // not installed yet: running it fails and says so
		}
		if fi.IsDir() {
			return "", fmt.Errorf("command %q is a directory, not a program", name)
		}
		if fi.Mode().Perm()&0o111 == 0 {
			return "", fmt.Errorf("command %q is not executable (mode %04o); chmod +x it or name the program that runs it", name, fi.Mode().Perm())
		}
		return name, nil
	case strings.ContainsRune(name, '/'):
		return "", fmt.Errorf("command %q must be an absolute path or a program name found on PATH", name)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("command %q not found on PATH; use an absolute path: %w", name, err)
	}
	if !filepath.IsAbs(p) {
		if p, err = filepath.Abs(p); err != nil {
			return "", fmt.Errorf("command %q: %w", name, err)
		}
	}
	return p, nil
}

// CheckEnvName checks a name given in Env: a shell-style variable name that is
// not one of the agent's DBCERT_* variables.
func CheckEnvName(name string) error {
	if name == "" || strings.IndexFunc(name, func(r rune) bool {
		return !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) >= 0 || name[0] >= '0' && name[0] <= '9' {
		return fmt.Errorf("%q is not a valid variable name: use letters, digits and '_', not starting with a digit", name)
	}
	if strings.HasPrefix(name, "DBCERT_") {
		return fmt.Errorf("%s is set by the agent for every hook run (DBCERT_INSTANCE, DBCERT_CERT_FILE, ...) and cannot be overridden; pick another name", name)
	}
	return nil
}

// NewExec checks o (see CheckCommand) and resolves Command[0].
func NewExec(o ExecOptions) (*Exec, error) {
	if len(o.Command) == 0 {
		return nil, errors.New("exec hook: command is empty; give the program and its arguments, e.g. [\"/usr/bin/systemctl\", \"reload\", \"myapp\"]")
	}
	path, err := CheckCommand(o.Command[0])
	if err != nil {
		return nil, fmt.Errorf("exec hook: %w", err)
	}
	if o.Timeout < 0 {
		return nil, fmt.Errorf("exec hook: negative timeout %v", o.Timeout)
	}
	if o.MaxOutput < 0 {
		return nil, fmt.Errorf("exec hook: negative output limit %d", o.MaxOutput)
	}
	environ := o.Environ
	if environ == nil {
		environ = os.Environ
	}
	env := baseEnv(environ())
	names := make([]string, 0, len(o.Env))
	for k := range o.Env {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if err := CheckEnvName(k); err != nil {
			return nil, fmt.Errorf("exec hook: env: %w", err)
		}
		if strings.ContainsRune(o.Env[k], 0) {
			return nil, fmt.Errorf("exec hook: env: the value of %s holds a NUL character", k)
		}
		env = setEnv(env, k, o.Env[k])
	}
	h := &Exec{
		argv:      slices.Clone(o.Command),
		path:      path,
		timeout:   o.Timeout,
		grace:     defaultKillGrace,
		env:       env,
		logger:    o.Logger,
		maxOutput: o.MaxOutput,
	}
	if h.timeout == 0 {
		h.timeout = DefaultExecTimeout
	}
	if h.maxOutput == 0 {
		h.maxOutput = DefaultMaxOutput
	}
	if h.logger == nil {
		h.logger = slog.Default()
	}
	return h, nil
}

// defaultPath is the hook's PATH when the agent has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// baseEnv keeps PATH, HOME, LANG, LC_* and TZ of environ (PATH defaults to
// defaultPath); nothing else of the agent's environment reaches a hook.
func baseEnv(environ []string) []string {
	var env []string
	hasPath := false
	for _, kv := range environ {
		k, _, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch {
		case k == "PATH":
			hasPath = true
		case k == "HOME", k == "LANG", k == "TZ", strings.HasPrefix(k, "LC_"):
		default:
			continue
		}
		env = setEnv(env, k, kv[len(k)+1:])
	}
	if !hasPath {
		env = append(env, "PATH="+defaultPath)
	}
	return env
}

// setEnv sets k=v in env, replacing an earlier k.
func setEnv(env []string, k, v string) []string {
	for i, kv := range env {
		if strings.HasPrefix(kv, k+"=") {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}

// String names the hook briefly, "exec " and the program, e.g. `exec
// /usr/bin/systemctl`: arguments can be long and may carry things that do not
// belong in logs.
func (h *Exec) String() string {
	a := h.argv[0]
	if strings.ContainsAny(a, " \t\n\"'\\$`") {
		a = strconv.Quote(a)
	}
	return "exec " + a
}

// Run runs the command once, with a clean environment: PATH, HOME, LANG, LC_*
// and TZ of the agent's, the options' Env, and DBCERT_INSTANCE, DBCERT_EVENT,
// DBCERT_DIR, DBCERT_CERT_FILE, DBCERT_KEY_FILE, DBCERT_CA_FILE and
// DBCERT_NOT_AFTER (RFC 3339, UTC; empty when unknown) — nothing else of the
// agent's environment, so secrets given to the agent never reach a hook. Stdin
// is /dev/null, in a new process group. The captured output is logged (never the
// environment). A non-zero exit is an error naming the command, the exit
// status and the last output line; on timeout (or cancellation of ctx) the
// process group is terminated, then killed, and the error says so. The hook ends
// when its command exits: processes it started that still hold its output 5 s
// later are killed with its process group (a warning says so); the exit status
// decides the result.
func (h *Exec) Run(ctx context.Context, ev Event) error {
	rctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()

	// The output pipe is ours, not exec's: Wait returns when the command exits,
	// whoever else holds the pipe, and the reader below decides how long to wait
	// for them.
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("hook %s could not be started: %w", h, err)
	}
	defer pr.Close()
	out := &capture{max: h.maxOutput}
	cmd := exec.CommandContext(rctx, h.path)
	cmd.Args = slices.Clone(h.argv)
	cmd.Env = append(slices.Clone(h.env), ev.env()...)
	cmd.Stdout, cmd.Stderr = pw, pw
	setProcAttr(cmd)
	var stopped atomic.Bool // the command was still running when rctx ended
	cmd.Cancel = func() error {
		stopped.Store(true)
		return signalGroup(cmd, syscall.SIGTERM)
	}
	cmd.WaitDelay = h.grace

	start := time.Now()
	err = cmd.Start()
	pw.Close() // the command's processes hold the only write ends now
	if err != nil {
		return fmt.Errorf("hook %s could not be started: %w", h, err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, pr) // ends at EOF, or when pr is closed below
	}()
	err = cmd.Wait()
	elapsed := time.Since(start)
	drain := h.grace // for processes the command started that hold its output
	if stopped.Load() {
		// Whatever survived SIGTERM and the grace period (grandchildren
		// included) dies now, so what held the output is gone too.
		_ = signalGroup(cmd, syscall.SIGKILL)
		drain = min(drain, drainAfterKill)
	}
	lingered := false
	select {
	case <-copied:
	case <-ctx.Done():
	case <-time.After(drain):
		// Processes the command started still hold its output: the hook is over,
		// so what is left of its process group goes.
		lingered = !stopped.Load()
	}
	select {
	case <-copied:
	default:
		_ = signalGroup(cmd, syscall.SIGKILL)
		// Read what the killed processes wrote; a holder outside the group (it
		// called setsid) keeps the pipe open, so the wait is bounded.
		select {
		case <-copied:
		case <-time.After(drainAfterKill):
			pr.Close()
			<-copied
		}
	}
	h.logOutput(ev, out)
	if lingered {
		h.logger.Warn("hook exited but processes it started still held its output; killed what was left of its process group and closed the output",
			"hook", h.String(), "instance", ev.Instance, "after", h.grace)
	}

	last := out.lastLine()
	suffix := ""
	if last != "" {
		suffix = fmt.Sprintf(" (last output: %q)", last)
	}
	switch {
	case stopped.Load() && ctx.Err() != nil:
		return fmt.Errorf("hook %s was stopped after %v: %w%s", h, elapsed.Round(time.Millisecond), ctx.Err(), suffix)
	case stopped.Load():
		return fmt.Errorf("hook %s was killed after the %v timeout: %w%s", h, h.timeout, context.DeadlineExceeded, suffix)
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("hook %s failed: %w%s", h, err, suffix)
		}
		return fmt.Errorf("hook %s could not be started: %w", h, err)
	}
	return nil
}

func (h *Exec) logOutput(ev Event, out *capture) {
	text, total := out.result()
	if total == 0 {
		return
	}
	attrs := []slog.Attr{
		slog.String("hook", h.String()),
		slog.String("instance", ev.Instance),
		slog.String("output", text),
	}
	if total > int64(len(text)) {
		attrs = append(attrs, slog.Bool("truncated", true), slog.Int64("output_bytes", total))
	}
	h.logger.LogAttrs(context.Background(), slog.LevelInfo, "hook output", attrs...)
}

// capture keeps the first max bytes written and the last tailSize bytes.
// Write never fails, so the child never blocks on or dies of a full pipe.
type capture struct {
	mu    sync.Mutex
	max   int
	head  []byte
	tail  []byte
	total int64
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total += int64(len(p))
	if room := c.max - len(c.head); room > 0 {
		c.head = append(c.head, p[:min(room, len(p))]...)
	}
	if len(p) >= tailSize {
		c.tail = append(c.tail[:0], p[len(p)-tailSize:]...)
	} else {
		if keep := tailSize - len(p); len(c.tail) > keep {
			c.tail = append(c.tail[:0], c.tail[len(c.tail)-keep:]...)
		}
		c.tail = append(c.tail, p...)
	}
	return len(p), nil
}

func (c *capture) result() (string, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.ToValidUTF8(string(c.head), "\uFFFD"), c.total
}

// lastLine returns the last non-empty output line, at most maxLastLine bytes.
func (c *capture) lastLine() string {
	c.mu.Lock()
	t := bytes.TrimRight(c.tail, " \t\r\n")
	c.mu.Unlock()
	if i := bytes.LastIndexByte(t, '\n'); i >= 0 {
		t = t[i+1:]
	}
	s := strings.TrimSpace(string(t))
	if len(s) > maxLastLine {
		s = s[:maxLastLine] + "..."
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
