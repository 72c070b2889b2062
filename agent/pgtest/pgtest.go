// Package pgtest is TEST SUPPORT ONLY: it starts a real, throwaway PostgreSQL server that
// requires verified TLS client certificates, and runs the real psql binary against it, so
// end-to-end tests can check that the files dbcert-agent writes (client certificate, key,
// server CA) actually work with libpq.
//
// It is an ordinary (non-_test) package so that the tests of any package in the module
// can import it. The only production user is `dbcert-agent dev` (Launch), which starts a
// throwaway local server for trying the agent out; nothing else may import it.
//
// Start skips the calling test when PostgreSQL's server binaries or psql are not
// available, unless the environment variable DBCERT_E2E=require is set, in which case it
// fails the test and says what is missing. Lookup of the binaries:
//
//   - server binaries (initdb, postgres): $DBCERT_PG_BINDIR if set (and nothing else);
//     else the directory of an initdb found on $PATH; else /usr/lib/postgresql/15/bin,
//     then the newest /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, /usr/local/pgsql/bin.
//   - psql: $DBCERT_PSQL if set (and nothing else); else psql on $PATH; else psql in the
//     server binary directory.
//
// When the test runs as root, the server runs as the "postgres" OS user (PostgreSQL
// refuses to run as root); its files are chowned to that user. psql always runs as the
// current user: it is the client, and client key files obey libpq's rule (mode 0600 or
// stricter, or, for a root-owned key, up to 0640).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment variables understood by the harness.
const (
	// EnvE2E set to "require" turns "PostgreSQL not available" from a skip into a failure.
	EnvE2E = "DBCERT_E2E"
	// EnvBinDir names the directory holding initdb and postgres.
	EnvBinDir = "DBCERT_PG_BINDIR"
	// EnvPsql names the psql binary to run.
	EnvPsql = "DBCERT_PSQL"
)

// Options for a throwaway PostgreSQL server requiring TLS client certificates.
type Options struct {
	// ServerCertPEM is the server certificate (leaf first, optionally followed by
	// intermediates) for 127.0.0.1/localhost; ServerKeyPEM is its private key. Required.
	ServerCertPEM, ServerKeyPEM []byte
	// ClientCAPEM becomes ssl_ca_file: the CA(s) client certificates must chain to.
	// Required unless HBA is given (the default HBA demands verified client certificates).
	ClientCAPEM []byte
	// HBA is the pg_hba.conf contents. Default (see DefaultHBA): TLS connections over
	// loopback with a client certificate verified against ClientCAPEM, trusted as any
	// user; nothing else (no non-TLS access, no Unix-socket access).
	HBA string
}

// DefaultHBA is the pg_hba.conf used when Options.HBA is empty.
const DefaultHBA = `# pgtest default: TLS with a verified client certificate, loopback only.
# TYPE  DATABASE USER ADDRESS      METHOD
hostssl all      all  127.0.0.1/32 trust clientcert=verify-ca
hostssl all      all  ::1/128      trust clientcert=verify-ca
`

// Server is a running throwaway PostgreSQL server. It is stopped and its files removed by
// a cleanup registered with the testing.TB given to Start.
type Server struct {
	tools tools
	root  string // temp directory holding everything below
	data  string // data directory
	tls   string // directory of the server's certificate, key and client CA files
	conf  string // pgtest.conf, included from postgresql.conf
	log   string // server log file (postgres' stderr)
	port  int

	mu       sync.Mutex // serialises ReplaceServerCert and stop
	cert     []byte     // current ssl_cert_file contents
	key      []byte     // current ssl_key_file contents
	clientCA []byte     // current ssl_ca_file contents (nil: no ssl_ca_file)
	stopped  bool

	proc *process // platform-specific process state; nil before the server started
}

// Port is the TCP port the server listens on (on 127.0.0.1).
func (s *Server) Port() int { return s.port }

// Host is the address the server listens on: "127.0.0.1".
func (s *Server) Host() string { return "127.0.0.1" }

// Logs returns the server log (postgres' stderr; log_connections is on), for failure
// messages. It returns a note instead when the log cannot be read (e.g. after cleanup).
func (s *Server) Logs() string {
	b, err := os.ReadFile(s.log)
	if err != nil {
		return fmt.Sprintf("(pgtest: server log unavailable: %v)", err)
	}
	return string(b)
}

// Psql runs the real psql binary against the server and returns its combined stdout and
// stderr; the error is non-nil when psql fails (e.g. the connection is refused).
//
// connString is a libpq connection string (keyword=value pairs or a postgresql:// URI);
// host, port, user (postgres), dbname (postgres) and connect_timeout (5) are supplied
// through PGHOST, PGPORT, PGUSER, PGDATABASE and PGCONNECT_TIMEOUT, so they apply only
// where connString does not set them. sql is run with -c; psql runs with -X (no psqlrc),
// -w (never prompt), -A -t (unaligned, tuples only: `select 1` prints "1") and
// ON_ERROR_STOP=1.
//
// The environment is isolated: every PG* and PSQL* variable of the test process is
// dropped (so PGSSLMODE, PGSSLCERT, PGPASSFILE, PGSERVICE... do not leak in), PGSYSCONFDIR
// points to an empty directory, LC_ALL=C, and HOME is homeDir — libpq then looks for
// ~/.postgresql/postgresql.crt, postgresql.key and root.crt there — or, when homeDir is
// empty, a fresh empty temporary directory. If ctx has no deadline, a 60 s limit applies.
func (s *Server) Psql(ctx context.Context, connString, sql string, homeDir string) (string, error) {
	if homeDir == "" {
		tmp, err := os.MkdirTemp("", "pgtest-home-")
		if err != nil {
			return "", fmt.Errorf("pgtest: psql home: %w", err)
		}
		defer os.RemoveAll(tmp)
		homeDir = tmp
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
	}
	args := []string{"-X", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1"}
	if connString != "" {
		args = append(args, "-d", connString)
	}
	args = append(args, "-c", sql)
	cmd := exec.CommandContext(ctx, s.tools.psql, args...)
	cmd.Dir = homeDir
	cmd.Env = append(cleanEnv(),
		"HOME="+homeDir,
		"PGHOST="+s.Host(),
		"PGPORT="+strconv.Itoa(s.port),
		"PGUSER=postgres",
		"PGDATABASE=postgres",
		"PGCONNECT_TIMEOUT=5",
		"PGSYSCONFDIR="+filepath.Join(s.root, "sysconf"),
	)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("pgtest: psql %q: %w", connString, err)
	}
	return string(out), nil
}

// cleanEnv is the test process' environment without anything that steers libpq, psql,
// the Debian pg_wrapper or the locale; LC_ALL=C keeps messages in English.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "PG"), strings.HasPrefix(k, "PSQL"),
			strings.HasPrefix(k, "LC_"), k == "LANG", k == "LANGUAGE", k == "HOME":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// unavailable skips t, or fails it when DBCERT_E2E=require.
func unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(EnvE2E) == "require" {
		t.Fatalf("pgtest: PostgreSQL end-to-end environment unavailable (%s=require): %s", EnvE2E, why)
	}
	t.Skipf("pgtest: skipping, PostgreSQL end-to-end environment unavailable: %s (set %s=require to fail instead)", why, EnvE2E)
}

// tools are the binaries the harness runs.
type tools struct {
	initdb, postgres, psql string
}

// findTools locates initdb, postgres and psql; the error lists what is missing.
func findTools() (tools, error) {
	var t tools
	var missing []string

	bindir, explicit := os.LookupEnv(EnvBinDir)
	if !explicit || bindir == "" {
		bindir = findBinDir()
	}
	switch {
	case bindir == "":
		missing = append(missing, fmt.Sprintf("PostgreSQL server binaries (initdb, postgres) not found on $PATH or in the usual directories; set %s", EnvBinDir))
	default:
		t.initdb = filepath.Join(bindir, "initdb")
		t.postgres = filepath.Join(bindir, "postgres")
		for _, p := range []string{t.initdb, t.postgres} {
			if !isExecutable(p) {
				missing = append(missing, fmt.Sprintf("%s not found (%s=%q)", p, EnvBinDir, os.Getenv(EnvBinDir)))
			}
		}
	}

	if p, ok := os.LookupEnv(EnvPsql); ok && p != "" {
		if !isExecutable(p) {
			missing = append(missing, fmt.Sprintf("psql %s (from %s) not found", p, EnvPsql))
		}
		t.psql = p
	} else if p, err := exec.LookPath("psql"); err == nil {
		t.psql = p
	} else if bindir != "" && isExecutable(filepath.Join(bindir, "psql")) {
		t.psql = filepath.Join(bindir, "psql")
	} else {
		missing = append(missing, fmt.Sprintf("psql not found on $PATH or in the server binary directory; set %s", EnvPsql))
	}

	if len(missing) > 0 {
		return tools{}, errors.New(strings.Join(missing, "; "))
	}
	return t, nil
}

// findBinDir returns the first directory holding both initdb and postgres, or "".
func findBinDir() string {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dirs = append(dirs, filepath.Dir(p))
	}
	dirs = append(dirs, "/usr/lib/postgresql/15/bin")
	for _, pattern := range []string{"/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"} {
		dirs = append(dirs, newestFirst(pattern)...)
	}
	dirs = append(dirs, "/usr/local/pgsql/bin")
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "postgres")) {
			return d
		}
	}
	return ""
}

// newestFirst globs pattern (one * standing for a version) and orders the matches by
// descending numeric version.
func newestFirst(pattern string) []string {
	m, _ := filepath.Glob(pattern)
	version := func(p string) float64 {
		for _, part := range strings.Split(p, "/") {
			part = strings.TrimPrefix(part, "pgsql-")
			if v, err := strconv.ParseFloat(part, 64); err == nil {
				return v
			}
		}
		return -1
	}
	sort.SliceStable(m, func(i, j int) bool { return version(m[i]) > version(m[j]) })
	return m
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
