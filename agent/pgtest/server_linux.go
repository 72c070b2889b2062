//go:build linux

package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	readyTimeout = 30 * time.Second // startup, and reloads in ReplaceServerCert
	portAttempts = 5                // tries with a fresh port when the chosen one is taken
)

// process is the running postmaster.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returned
	err    error         // cmd.Wait's result; read only after exited is closed
}

// owner is the OS user the server runs as.
type owner struct {
	switchUser bool // running as root: the server runs as postgres
	uid, gid   int
	groups     []uint32
}

// Start initdb's a cluster in a fresh temporary directory, configures it (ssl=on,
// listen_addresses=127.0.0.1 on a free port, unix_socket_directories inside the temporary
// directory, ssl_cert_file/ssl_key_file/ssl_ca_file from o, pg_hba.conf from o.HBA or
// DefaultHBA, log_connections=on, fsync=off), starts postgres and waits (at most 30 s)
// until it accepts TLS connections presenting o.ServerCertPEM. A cleanup registered on t
// stops the server (fast shutdown, escalating to immediate and then SIGKILL) and removes
// its files; when t failed, the server log is logged first.
//
// When PostgreSQL or psql is not available, Start skips t (fails it with
// DBCERT_E2E=require). Any other problem fails t (and the cleanup logs the server log).
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if err := Available(); err != nil {
		unavailable(t, err.Error())
	}
	s, err := Launch(o)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		failed := t.Failed()
		logs := s.Logs()
		if err := s.Close(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
		if failed {
			t.Logf("pgtest: PostgreSQL server log (%s):\n%s", s.log, logs)
		}
	})
	return s
}

// Available reports why a server cannot be launched here (nil when it can): missing
// PostgreSQL binaries or psql, or running as root without a postgres OS user.
func Available() error {
	if _, err := findTools(); err != nil {
		return err
	}
	_, err := serverOwner()
	return err
}

// Launch is Start without a testing.TB, for `dbcert-agent dev`: the caller must Close
// the server. On error nothing is left running or on disk, and the error carries the
// server log.
func Launch(o Options) (*Server, error) {
	tl, err := findTools()
	if err != nil {
		return nil, err
	}
	own, err := serverOwner()
	if err != nil {
		return nil, err
	}
	if len(o.ServerCertPEM) == 0 || len(o.ServerKeyPEM) == 0 {
		return nil, errors.New("Options.ServerCertPEM and ServerKeyPEM are required")
	}
	if len(o.ClientCAPEM) == 0 && o.HBA == "" {
		return nil, errors.New("Options.ClientCAPEM is required with the default HBA (clientcert=verify-ca)")
	}
	hba := o.HBA
	if hba == "" {
		hba = DefaultHBA
	}

	root, err := makeRoot(own)
	if err != nil {
		return nil, err
	}
	s := &Server{
		tools:    tl,
		root:     root,
		data:     filepath.Join(root, "data"),
		tls:      filepath.Join(root, "tls"),
		log:      filepath.Join(root, "server.log"),
		cert:     o.ServerCertPEM,
		key:      o.ServerKeyPEM,
		clientCA: o.ClientCAPEM,
	}
	s.conf = filepath.Join(s.data, "pgtest.conf")
	fail := func(err error) (*Server, error) {
		logs := s.Logs()
		_ = s.Close()
		return nil, fmt.Errorf("%w\nserver log (%s):\n%s", err, s.log, logs)
	}

	for _, d := range []string{s.data, s.tls, filepath.Join(root, "sock")} {
		if err := mkdirOwned(d, own); err != nil {
			return fail(err)
		}
	}
	// Empty PGSYSCONFDIR for psql (no pg_service.conf, no system psqlrc).
	if err := os.Mkdir(filepath.Join(root, "sysconf"), 0o755); err != nil {
		return fail(err)
	}

	initdb := exec.Command(tl.initdb, "-D", s.data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions")
	initdb.Dir = root
	initdb.Env = cleanEnv()
	initdb.SysProcAttr = own.sysProcAttr()
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %v\n%s", err, out))
	}

	if err := writeOwned(filepath.Join(s.data, "pg_hba.conf"), []byte(hba), own); err != nil {
		return fail(err)
	}
	if err := s.writeTLSFiles(o.ServerCertPEM, o.ServerKeyPEM, o.ClientCAPEM, own); err != nil {
		return fail(err)
	}
	if err := s.writeConf(own); err != nil {
		return fail(err)
	}
	f, err := os.OpenFile(filepath.Join(s.data, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = f.WriteString("\n# Added by pgtest.\ninclude 'pgtest.conf'\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fail(fmt.Errorf("postgresql.conf: %w", err))
	}

	want, _ := expectedView(o.ServerCertPEM, o.ClientCAPEM)
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return fail(err)
		}
		logStart := fileSize(s.log)
		if err := s.launch(port, own); err != nil {
			return fail(fmt.Errorf("starting postgres: %w", err))
		}
		err = s.waitReady(want)
		if err == nil {
			return s, nil
		}
		s.stop()
		logs := s.Logs()
		if attempt < portAttempts && strings.Contains(logs[min(logStart, int64(len(logs))):], "could not bind") {
			s.stopped = false // retry with another port
			continue
		}
		return fail(fmt.Errorf("PostgreSQL did not become ready: %v", err))
	}
}

// Close stops the server and removes its files. It is safe to call more than once.
func (s *Server) Close() error {
	s.stop()
	if err := os.RemoveAll(s.root); err != nil {
		return fmt.Errorf("removing %s: %w", s.root, err)
	}
	return nil
}

// launch starts the postmaster on port.
func (s *Server) launch(port int, own owner) error {
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child keeps its own descriptor
	cmd := exec.Command(s.tools.postgres, "-D", s.data, "-p", strconv.Itoa(port))
	cmd.Dir = s.root
	cmd.Env = cleanEnv()
	cmd.Stdout = logf
	cmd.Stderr = logf
	attr := own.sysProcAttr()
	attr.Setpgid = true // own process group: no terminal signals, killable as a group
	// If the test binary dies without running cleanups (e.g. killed on timeout), the
	// kernel sends the postmaster SIGQUIT (immediate shutdown): no stray server.
	attr.Pdeathsig = syscall.SIGQUIT
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	s.port = port
	s.proc = p
	return nil
}

// waitReady waits until postmaster.pid says "ready" and TLS connections show want.
func (s *Server) waitReady(want tlsView) error {
	deadline := time.Now().Add(readyTimeout)
	addr := net.JoinHostPort(s.Host(), strconv.Itoa(s.port))
	var last error = errors.New("postmaster.pid not ready")
	for {
		select {
		case <-s.proc.exited:
			return fmt.Errorf("postgres exited: %v", s.proc.err)
		default:
		}
		if pidFileReady(filepath.Join(s.data, "postmaster.pid")) {
			v, err := probeTLS(context.Background(), addr)
			switch {
			case err != nil:
				last = err
			case want.leaf != nil && !v.matches(want):
				last = errors.New("server does not present the configured certificate / client CAs")
			default:
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %v", readyTimeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pidFileReady reports whether postmaster.pid's status line (the 8th) says "ready".
func pidFileReady(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	lines := strings.Split(string(b), "\n")
	return len(lines) >= 8 && strings.TrimSpace(lines[7]) == "ready"
}

// ReplaceServerCert writes a new server certificate and key — and, when clientCAPEM is
// non-nil, a new ssl_ca_file (nil keeps the current one) — and reloads the server
// configuration (SIGHUP to the postmaster, as pg_ctl reload does). It returns once new
// TLS connections are served with certPEM's leaf certificate and request client
// certificates from clientCAPEM's CAs (at most 30 s; checked with a TLS handshake). It
// returns an error when the server rejected the new files (e.g. a key that does not match
// the certificate): PostgreSQL then keeps serving the old ones, and the old files are
// written back.
func (s *Server) ReplaceServerCert(certPEM, keyPEM, clientCAPEM []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.proc == nil {
		return errors.New("pgtest: server is not running")
	}
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return errors.New("pgtest: ReplaceServerCert: certificate and key are required")
	}
	own, err := serverOwner()
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	ca := s.clientCA
	if clientCAPEM != nil {
		ca = clientCAPEM
	}
	oldCert, oldKey, oldCA := s.cert, s.key, s.clientCA
	if err := s.writeTLSFiles(certPEM, keyPEM, ca, own); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	s.cert, s.key, s.clientCA = certPEM, keyPEM, ca
	if len(oldCA) > 0 != (len(ca) > 0) {
		if err := s.writeConf(own); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
	}
	// restore puts back the files the server still uses after it rejected the new ones,
	// so that the files on disk and a later reload match what it serves.
	restore := func() {
		s.cert, s.key, s.clientCA = oldCert, oldKey, oldCA
		_ = s.writeTLSFiles(oldCert, oldKey, oldCA, own)
		_ = s.writeConf(own)
	}

	logStart := fileSize(s.log)
	if err := s.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("pgtest: reloading: %w", err)
	}
	want, comparable := expectedView(certPEM, ca)
	addr := net.JoinHostPort(s.Host(), strconv.Itoa(s.port))
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		if b, err := os.ReadFile(s.log); err == nil && int64(len(b)) >= logStart {
			newLog := string(b[logStart:])
			// "SSL configuration was not reloaded", "pg_hba.conf was not reloaded".
			if strings.Contains(newLog, "was not reloaded") {
				restore()
				return fmt.Errorf("pgtest: server rejected the new TLS files (it keeps serving the old ones, which were put back):\n%s", newLog)
			}
			if !comparable && strings.Contains(newLog, "reloading configuration files") {
				// Nothing to compare with: settle for the reload having begun.
				time.Sleep(200 * time.Millisecond)
				return nil
			}
		}
		select {
		case <-s.proc.exited:
			return fmt.Errorf("pgtest: postgres exited: %v", s.proc.err)
		default:
		}
		v, err := probeTLS(context.Background(), addr)
		switch {
		case err != nil:
			last = err
		case comparable && v.matches(want):
			return nil
		default:
			last = errors.New("server still presents the old certificate / client CAs")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: reload not effective after %v: %v", readyTimeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop shuts the server down: fast shutdown (SIGINT), then immediate (SIGQUIT), then
// SIGKILL to its process group. It returns once the postmaster has exited.
func (s *Server) stop() {
	s.mu.Lock()
	s.stopped = true
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return
	}
	steps := []struct {
		sig  syscall.Signal
		wait time.Duration
	}{
		{syscall.SIGINT, 10 * time.Second},
		{syscall.SIGQUIT, 5 * time.Second},
	}
	for _, st := range steps {
		select {
		case <-p.exited:
			return
		default:
		}
		_ = p.cmd.Process.Signal(st.sig)
		select {
		case <-p.exited:
			return
		case <-time.After(st.wait):
		}
	}
	select {
	case <-p.exited:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// writeConf writes pgtest.conf, the settings the harness owns.
func (s *Server) writeConf(own owner) error {
	q := func(v string) string { return "'" + strings.ReplaceAll(v, "'", "''") + "'" }
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by pgtest; included from postgresql.conf. The port is given with -p.\n")
	fmt.Fprintf(&b, "listen_addresses = '127.0.0.1'\n")
	fmt.Fprintf(&b, "unix_socket_directories = %s\n", q(filepath.Join(s.root, "sock")))
	fmt.Fprintf(&b, "ssl = on\n")
	fmt.Fprintf(&b, "ssl_cert_file = %s\n", q(filepath.Join(s.tls, "server.crt")))
	fmt.Fprintf(&b, "ssl_key_file = %s\n", q(filepath.Join(s.tls, "server.key")))
	if len(s.clientCA) > 0 {
		fmt.Fprintf(&b, "ssl_ca_file = %s\n", q(filepath.Join(s.tls, "client-ca.crt")))
	} else {
		fmt.Fprintf(&b, "ssl_ca_file = ''\n")
	}
	fmt.Fprintf(&b, "log_connections = on\n")
	fmt.Fprintf(&b, "max_connections = 20\n")
	fmt.Fprintf(&b, "shared_buffers = 16MB\n")
	fmt.Fprintf(&b, "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
	return writeOwned(s.conf, b.Bytes(), own)
}

// writeTLSFiles writes the server certificate, key (0600, owned by the server user, as
// PostgreSQL demands) and client CA file.
func (s *Server) writeTLSFiles(certPEM, keyPEM, clientCAPEM []byte, own owner) error {
	files := []struct {
		name string
		data []byte
	}{
		{"server.crt", certPEM},
		{"server.key", keyPEM},
		{"client-ca.crt", clientCAPEM},
	}
	for _, f := range files {
		if err := writeOwned(filepath.Join(s.tls, f.name), f.data, own); err != nil {
			return err
		}
	}
	return nil
}

// writeOwned atomically replaces path with data, mode 0600, owned by own.
func writeOwned(path string, data []byte, own owner) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o600)
	}
	if err == nil && own.switchUser {
		err = os.Chown(tmp.Name(), own.uid, own.gid)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// mkdirOwned creates dir with mode 0700, owned by own.
func mkdirOwned(dir string, own owner) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if own.switchUser {
		return os.Chown(dir, own.uid, own.gid)
	}
	return nil
}

// makeRoot creates the server's temporary directory. When the server runs as another
// user, the directory is 0755 and lies where that user can reach it: under $TMPDIR if
// every ancestor is traversable by others, else under /tmp. Its path is kept short
// enough for the Unix socket path limit (107 bytes).
func makeRoot(own owner) (string, error) {
	base := os.TempDir()
	if len(base) > 60 || (own.switchUser && !traversable(base)) {
		base = "/tmp"
	}
	root, err := os.MkdirTemp(base, "pgtest-")
	if err != nil {
		return "", err
	}
	if own.switchUser {
		if err := os.Chmod(root, 0o755); err != nil {
			os.RemoveAll(root)
			return "", err
		}
	}
	return root, nil
}

// traversable reports whether dir and all its ancestors are searchable by others.
func traversable(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

// serverOwner is the user the server runs as: the current one, or postgres when root.
func serverOwner() (owner, error) {
	if os.Geteuid() != 0 {
		return owner{}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return owner{}, fmt.Errorf("running as root and there is no postgres OS user to run the server as: %v", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return owner{}, fmt.Errorf("postgres OS user has non-numeric uid/gid %q/%q", u.Uid, u.Gid)
	}
	o := owner{switchUser: true, uid: uid, gid: gid}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				o.groups = append(o.groups, uint32(n))
			}
		}
	}
	return o, nil
}

// sysProcAttr runs a child as own.
func (own owner) sysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{}
	if own.switchUser {
		attr.Credential = &syscall.Credential{
			Uid: uint32(own.uid), Gid: uint32(own.gid), Groups: own.groups,
		}
	}
	return attr
}

// freePort asks the kernel for a currently unused loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
