// Command dbcert-agent keeps database TLS credentials fresh on disk.
//
// This file is wiring only: flags and subcommands, building things, mapping errors to
// exit codes (0 success, 1 runtime failure, 2 usage or configuration error).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent"
	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
	"github.com/dbcert-agent/dbcert-agent/agent/gcpauth"
	"github.com/dbcert-agent/dbcert-agent/agent/metrics"
	"github.com/dbcert-agent/dbcert-agent/agent/sdnotify"
	"github.com/dbcert-agent/dbcert-agent/agent/verify"
	"github.com/dbcert-agent/dbcert-agent/config"
)

// Set at build time: -ldflags "-X main.version=1.2.3 -X main.commit=abc123".
var (
	version = "dev"
	commit  = ""
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const usage = `dbcert-agent keeps database TLS credentials fresh on disk.

Usage:
  dbcert-agent run      [-config PATH]
  dbcert-agent once     [-config PATH] [-instance NAME]... [-force] [-timeout 1m]
  dbcert-agent validate [-config PATH]
  dbcert-agent status   [-config PATH] [-json]
  dbcert-agent reset-ssl -instance NAME [-config PATH] -yes
  dbcert-agent verify   [-config PATH] [-instance NAME]... [-timeout 10s]
  dbcert-agent dev      [-dir DIR]
  dbcert-agent version

The config path defaults to $DBCERT_AGENT_CONFIG, else /etc/dbcert-agent/agent.hcl.
Run "dbcert-agent COMMAND -h" for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is a command-line mistake (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	finished := make(chan struct{})
	defer close(finished)
	guard := &stopGuard{}
	ctx = context.WithValue(ctx, stopGuardKey{}, guard)
	go exitAfterStopSignal(ctx, guard, finished, stderr)
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "once":
		err = cmdOnce(ctx, rest, stderr)
	case "validate":
		err = cmdValidate(rest, stdout, stderr)
	case "dev":
		err = cmdDev(ctx, rest, stdout, stderr)
	case "version", "-version", "--version":
		printVersion(stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	case "run":
		err = cmdRun(ctx, rest, stderr)
	case "status":
		err = cmdStatus(rest, stdout, stderr)
	case "reset-ssl":
		err = cmdResetSSL(ctx, rest, stdout, stderr)
	case "verify":
		err = cmdVerify(ctx, rest, stdout, stderr)
	default:
		err = &usageError{fmt.Sprintf("unknown command %q\n\n%s", cmd, usage)}
	}
	return report(err, stderr)
}

// stopGrace is how long a command may take to return after SIGINT or SIGTERM.
const stopGrace = time.Second

// stopGuard tells exitAfterStopSignal that a command has its own clean stop.
type stopGuard struct{ clean atomic.Bool }

type stopGuardKey struct{}

// cleanStopFrom marks the command of ctx as stopping cleanly on its own from now on:
// once, run and reset-ssl call it after loading the configuration, since from there on
// they watch ctx and let writes and hooks already running finish (bounded by the hooks'
// timeouts), as the README promises.
func cleanStopFrom(ctx context.Context) {
	if g, ok := ctx.Value(stopGuardKey{}).(*stopGuard); ok {
		g.clean.Store(true)
	}
}

// exitAfterStopSignal ends the process when the command has not returned (finished
// closed) within stopGrace of SIGINT/SIGTERM (ctx done) and has not declared a clean
// stop of its own. Without it, commands that do not watch ctx (validate, status, and
// every command while it loads the configuration, which may block on a file) would
// ignore the signal, since signal.NotifyContext turns off the default action.
func exitAfterStopSignal(ctx context.Context, guard *stopGuard, finished <-chan struct{}, stderr io.Writer) {
	select {
	case <-finished:
		return
	case <-ctx.Done():
	}
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-finished:
	case <-t.C:
		if guard.clean.Load() {
			return // the command finishes its writes and hooks, then returns
		}
		fmt.Fprintf(stderr, "dbcert-agent: stopped by signal; the command did not finish within %v\n", stopGrace)
		os.Exit(exitFailure)
	}
}

// report prints err and maps it to an exit code.
func report(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var (
		diag    *config.DiagError
		use     *usageError
		unknown *agent.UnknownInstanceError
		vUse    *verify.UsageError
		cfgErr  *configError
		runErr  *agent.RunError
	)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &runErr):
		// One sentence per failed instance, nothing else (the log did not repeat them).
		for _, f := range runErr.Failed {
			fmt.Fprintf(stderr, "dbcert-agent: %v\n", f)
		}
		return exitFailure
	case errors.As(err, &diag):
		_ = diag.Render(stderr, 100)
		fmt.Fprintf(stderr, "dbcert-agent: the configuration has %d error(s); nothing was done\n", diag.ErrorCount())
		return exitUsage
	case errors.As(err, &use), errors.As(err, &unknown), errors.As(err, &cfgErr), errors.As(err, &vUse):
		fmt.Fprintf(stderr, "dbcert-agent: %v\n", err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "dbcert-agent: %v\n", err)
		return exitFailure
	}
}

// configError is a configuration problem found after parsing (exit 2).
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// newFlags makes a FlagSet that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}

// loadConfig reads the configuration and sets up logging from it.
func loadConfig(path string, stderr io.Writer) (*config.Config, *slog.Logger, error) {
	cfg, err := config.Load(config.ResolvePath(path), config.Options{})
	if err != nil {
		var diag *config.DiagError
		if errors.As(err, &diag) {
			return nil, nil, err
		}
		return nil, nil, &configError{err}
	}
	return cfg, newLogger(cfg.Agent, stderr), nil
}

func newLogger(a config.Agent, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: a.LogLevel}
	if a.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// stringsFlag collects a repeatable flag.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

func cmdOnce(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("once", stderr)
	path := fs.String("config", "", "config file (default $DBCERT_AGENT_CONFIG or "+config.DefaultPath+")")
	var names stringsFlag
	fs.Var(&names, "instance", "refresh only this instance (repeatable)")
	force := fs.Bool("force", false, "refresh even when the files on disk are valid and not yet due")
	timeout := fs.Duration("timeout", time.Minute, "give up retrying transient errors after this long")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *timeout <= 0 {
		return &usageError{"once: -timeout must be positive"}
	}
	cfg, log, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	cleanStopFrom(ctx)
	a, err := agent.New(ctx, cfg, agent.Options{Logger: log})
	if err != nil {
		return &configError{err}
	}
	return a.Once(ctx, agent.OnceOptions{Instances: names, Force: *force, Timeout: *timeout})
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	flagPath := fs.String("config", "", "config file (default $DBCERT_AGENT_CONFIG or "+config.DefaultPath+")")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// SIGHUP means "reload" from the start: its default action would end the agent
	// while it starts (ADC lookup, listen). One that arrives before Run reloads at once.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	path := config.ResolvePath(*flagPath)
	firstKey := agent.StartFirstKey() // made while the config is parsed
	cfg, log, err := loadConfig(path, stderr)
	if err != nil {
		return err
	}
	cleanStopFrom(ctx)
	if os.Getenv("GOGC") == "" {
		// Live data is small (about 8 MB for 1,000 instances) and the start-up burst
		// leaves it scattered among garbage: halve the GC headroom so RSS settles
		// lower (a headroom of 200 started about 10% faster but settled about 6 MB
		// higher). GOGC in the environment overrides this.
		debug.SetGCPercent(50)
	}
	reg := metrics.NewRegistry()
	obs := agent.NewMetrics(reg)
	build := agent.BuildOptions{Logger: log, Transport: obs.Transport(gcpauth.DefaultTransport())}
	instances, err := agent.Build(ctx, cfg, build)
	if err != nil {
		return &configError{err}
	}
	a := agent.NewWithInstances(instances, agent.Options{Logger: log, Observer: obs})

	notifier, err := sdnotify.FromEnv()
	if err != nil {
		log.Warn("systemd notification is misconfigured", "err", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var aux sync.WaitGroup
	defer aux.Wait()
	defer cancel()
	// Run pings the watchdog itself, only while every loop makes progress.
	if cfg.Agent.Listen != "" {
		addr, done, err := metrics.Serve(runCtx, cfg.Agent.Listen, metrics.Handler(reg, a.Ready))
		if err != nil {
			// The address was validated: a port in use or an address not (yet) on
			// this host is a run-time failure (exit 1), which systemd retries.
			return fmt.Errorf("listen %s: %w", cfg.Agent.Listen, err)
		}
		log.Info("serving /metrics, /livez and /readyz", "addr", addr)
		aux.Add(1)
		go func() {
			defer aux.Done()
			if err := <-done; err != nil {
				log.Error("metrics server stopped", "err", err)
			}
		}()
	}

	return a.Run(runCtx, agent.RunOptions{
		APIRate:    cfg.Agent.APIRate,
		ShareKeys:  cfg.Agent.ShareKeys,
		FirstKey:   firstKey,
		ConfigPath: path,
		Hangup:     hup,
		Notifier:   notifier,
		Reload: func(ctx context.Context) ([]*agent.Instance, error) {
			c, err := config.Load(path, config.Options{})
			if err != nil {
				return nil, err
			}
			if changed := cfg.Agent.Changed(c.Agent); len(changed) > 0 {
				log.Warn("the agent block changed; it takes effect at the next restart (systemctl restart dbcert-agent), instances are reloaded now",
					"changed", strings.Join(changed, ","))
			}
			return agent.Build(ctx, c, build)
		},
	})
}

func cmdResetSSL(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reset-ssl", stderr)
	path := fs.String("config", "", "config file (default $DBCERT_AGENT_CONFIG or "+config.DefaultPath+")")
	name := fs.String("instance", "", "the cloudsql instance (config name) to reset")
	yes := fs.Bool("yes", false, "confirm: this breaks every open connection and deletes all client certificates of the instance")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *name == "" {
		return &usageError{"reset-ssl: -instance NAME is required"}
	}
	if !*yes {
		return &usageError{fmt.Sprintf("reset-ssl resets the SSL configuration of instance %q: it breaks every open connection and deletes all client certificates of the instance. Nothing was done; add -yes to proceed", *name)}
	}
	cfg, log, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	cleanStopFrom(ctx)
	a, err := agent.New(ctx, cfg, agent.Options{Logger: log})
	if err != nil {
		return &configError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	err = a.ResetSSL(ctx, *name, func(line string) { fmt.Fprintf(stdout, "reset-ssl %s: %s\n", *name, line) })
	var nr *agent.NotResettableError
	if errors.As(err, &nr) {
		return &usageError{err.Error()}
	}
	return err
}

// errNotAllValid makes status exit 1 when an instance lacks valid files.
var errNotAllValid = errors.New("some instances have no valid files")

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	path := fs.String("config", "", "config file (default $DBCERT_AGENT_CONFIG or "+config.DefaultPath+")")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, _, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	now := time.Now()
	sts, err := agent.Status(cfg, now)
	if err != nil {
		return &configError{err}
	}
	if *asJSON {
		err = agent.WriteStatusJSON(stdout, sts)
	} else {
		err = agent.WriteStatusTable(stdout, sts, now)
	}
	if err != nil {
		return err
	}
	for _, s := range sts {
		if s.State != agent.StateOK && s.State != agent.StateDue {
			return errNotAllValid
		}
	}
	return nil
}

// cmdVerify connects to each instance with a connection block using the files on disk
// (spec §2 verify); no API calls.
func cmdVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("verify", stderr)
	path := fs.String("config", "", "config file (default $DBCERT_AGENT_CONFIG or "+config.DefaultPath+")")
	var names stringsFlag
	fs.Var(&names, "instance", "check only this instance (repeatable; default: every instance with a connection block)")
	timeout := fs.Duration("timeout", 10*time.Second, "time limit for each instance's check")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *timeout <= 0 {
		return &usageError{"-timeout must be positive"}
	}
	cfg, _, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	open := func(ci *config.Instance, cs config.FileSink) (verify.Sink, error) {
		f, err := agent.OpenFileSink(ci, cs)
		if err != nil {
			return nil, err
		}
		return f, nil
	}
	return verify.Run(ctx, cfg, names, open, *timeout, stdout)
}

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("validate", stderr)
	path := fs.String("config", "", "config file (default $DBCERT_AGENT_CONFIG or "+config.DefaultPath+")")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, _, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: OK (%d instance(s): %s)\n", cfg.Path, len(cfg.Instances), strings.Join(cfg.InstanceNames(), ", "))
	return nil
}

func cmdDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dev", stderr)
	dir := fs.String("dir", "dbcert-dev", "directory for the generated config, credentials and output files")
	lifetime := fs.Duration("cert-lifetime", time.Minute, "lifetime of the emulator's client certificates")
	instances := fs.Int("instances", 2, "how many Cloud SQL instances to emulate and configure")
	emulatorOnly := fs.Bool("emulator-only", false, "serve the emulator and write the config, but do not run the agent")
	quotaMin := fs.Int("quota-per-minute", 0, "emulate an admin API quota: requests per minute per identity (429 with Retry-After beyond it)")
	quotaSec := fs.Int("quota-per-second", 0, "emulate an admin API quota: requests per second per identity")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log := newLogger(config.Agent{LogLevel: slog.LevelInfo, LogFormat: "text"}, stderr)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return agent.Dev(ctx, agent.DevOptions{Dir: *dir, CertLifetime: *lifetime, Logger: log, Out: stdout, Hangup: hup,
		Instances: *instances, EmulatorOnly: *emulatorOnly, Quota: emulator.Quota{PerMinute: *quotaMin, PerSecond: *quotaSec}})
}

func printVersion(w io.Writer) {
	c := commit
	if bi, ok := debug.ReadBuildInfo(); ok && c == "" {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				c = s.Value
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	fmt.Fprintf(w, "dbcert-agent %s (commit %s, %s, %s/%s)\n", version, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
