package verify

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/config"
	"github.com/dbcert-agent/dbcert-agent/sinks"
)

// UsageError is a mistake in what verify was asked to do (exit 2): an instance name not
// in the config, or one without a connection block.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Planned is an instance verify checks: its Target, or why it cannot be checked (Err:
// no files yet, no address known, an engine verify does not speak).
type Planned struct {
	Target Target
	Err    error
}

// Targets lists what to check for the instances of cfg named in names (all instances with
// a connection block when names is empty), in config order, reading the files of each
// instance's first file sink (no API calls). The address is the connection block's
// host, else the one the agent stored with the files; the port the block's, else the
// engine's default. The engine comes from the stored API engine name (Cloud SQL
// databaseVersion), else from the port (3306: MySQL), else PostgreSQL.
//
// open opens a sink with the options the agent writes it with (agent.OpenFileSink); nil
// opens it with its directory and layout alone.
func Targets(cfg *config.Config, names []string, open OpenFunc) ([]Planned, error) {
	if open == nil {
		open = func(_ *config.Instance, cs config.FileSink) (Sink, error) {
			return sinks.NewFile(sinks.FileOptions{Dir: cs.Dir, Layout: cs.Layout})
		}
	}
	for _, n := range names {
		i := slices.IndexFunc(cfg.Instances, func(in *config.Instance) bool { return in.Name == n })
		if i < 0 {
			return nil, &UsageError{fmt.Sprintf("instance %q is not in the configuration", n)}
		}
		if cfg.Instances[i].Connection == nil {
			return nil, &UsageError{fmt.Sprintf("instance %q has no connection block, so verify does not know how to connect to it; add connection { user = ... } to it", n)}
		}
	}
	var out []Planned
	for _, in := range cfg.Instances {
		if in.Connection == nil || !in.IssuesClientCert() || len(in.Sinks) == 0 {
			continue
		}
		if len(names) > 0 && !slices.Contains(names, in.Name) {
			continue
		}
		out = append(out, plan(in, open))
	}
	if len(out) == 0 {
		return nil, &UsageError{ErrNoTargets.Error()}
	}
	return out, nil
}

// Sink is what verify reads of a file sink.
type Sink interface {
	Paths() sinks.Paths
	Current() (*bundle.Bundle, error)
	Dir() string
}

// OpenFunc opens the file sink cs of instance ci.
type OpenFunc func(ci *config.Instance, cs config.FileSink) (Sink, error)

func plan(in *config.Instance, open OpenFunc) Planned {
	fs, err := open(in, in.Sinks[0])
	t := Target{Instance: in.Name, Engine: EnginePostgres, User: in.Connection.User, Database: in.Connection.DBName}
	if err != nil {
		return Planned{Target: t, Err: fmt.Errorf("instance %q: %w", in.Name, err)}
	}
	p := fs.Paths()
	t.CertFile, t.KeyFile, t.CAFile = p.Cert, p.Key, p.CA
	b, err := fs.Current()
	if err != nil {
		return Planned{Target: t, Err: fmt.Errorf("instance %q: reading the files in %s: %w (run dbcert-agent once first)", in.Name, fs.Dir(), err)}
	}
	conn := in.Connection
	switch e := strings.ToUpper(b.Engine); {
	case strings.HasPrefix(e, "MYSQL"):
		t.Engine = EngineMySQL
	case strings.HasPrefix(e, "SQLSERVER"):
		return Planned{Target: t, Err: fmt.Errorf("instance %q is SQL Server (%s), which verify does not speak", in.Name, b.Engine)}
	case e == "" && conn.Port == 3306:
		t.Engine = EngineMySQL
	}
	host := conn.Host
	if host == "" {
		host = b.Host
	}
	if host == "" {
		return Planned{Target: t, Err: fmt.Errorf("instance %q: no address is known (none stored with the files, no host in its connection block); run dbcert-agent once, or set connection { host = ... }", in.Name)}
	}
	port := conn.Port
	if port == 0 {
		port = 5432
		if t.Engine == EngineMySQL {
			port = 3306
		}
	}
	t.Addr = net.JoinHostPort(host, strconv.Itoa(port))
	t.ServerName = host
	if in.Type == config.TypeCloudSQL && in.CloudSQL != nil {
		t.Identity = Identity{DNSName: b.DNSName, CN: in.CloudSQL.Project + ":" + in.CloudSQL.Instance}
	}
	return Planned{Target: t}
}

// FailedError is returned by Run when an instance did not pass; it names them.
type FailedError struct{ Instances []string }

func (e *FailedError) Error() string {
	return fmt.Sprintf("verify failed for instance(s) %s (see the lines above for the cause)", strings.Join(e.Instances, ", "))
}

// Run checks every planned instance of cfg (see Targets; open as there), each within timeout (default
// 10s), writing one line per instance to w. It returns a *UsageError for a bad request,
// a *FailedError when any instance did not pass, nil when all passed.
func Run(ctx context.Context, cfg *config.Config, names []string, open OpenFunc, timeout time.Duration, w io.Writer) error {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	plans, err := Targets(cfg, names, open)
	if err != nil {
		return err
	}
	var failed []string
	for _, p := range plans {
		var r Result
		if p.Err != nil {
			r = Result{Instance: p.Target.Instance, Engine: p.Target.Engine, Addr: p.Target.Addr, Err: p.Err}
		} else {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			r = Check(cctx, p.Target)
			cancel()
		}
		WriteLine(w, r)
		if !r.OK() {
			failed = append(failed, p.Target.Instance)
		}
	}
	if len(failed) > 0 {
		return &FailedError{Instances: failed}
	}
	return nil
}
