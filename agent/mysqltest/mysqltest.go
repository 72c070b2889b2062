// Package mysqltest is TEST SUPPORT ONLY: it starts a real, throwaway MariaDB server with
// TLS, whose user requires a verified X.509 client certificate (REQUIRE X509), so
// end-to-end tests can check that the files dbcert-agent writes work with the MySQL
// protocol's clients (mariadb, Connector/J). Production code must never import it.
//
// Start skips the calling test when the MariaDB server (mariadbd, mariadb-install-db) or
// the mariadb client is missing, unless DBCERT_E2E=require is set, in which case it fails
// the test and says what is missing (Debian: apt-get install mariadb-server).
//
// When the test runs as root, the server runs as the "mysql" OS user (--user=mysql); its
// files are owned by that user.
package mysqltest

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
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvE2E set to "require" turns "MariaDB not available" from a skip into a failure.
const EnvE2E = "DBCERT_E2E"

// Options for a throwaway MariaDB server.
type Options struct {
	// ServerCertPEM (leaf first, then any intermediates) and ServerKeyPEM are the server's
	// TLS certificate and key. Required.
	ServerCertPEM, ServerKeyPEM []byte
	// ClientCAPEM is ssl-ca: the CA(s) client certificates must chain to. Required.
	ClientCAPEM []byte
	// User is the account created with REQUIRE X509 and all privileges, from any host.
	// Default "app".
	User string
	// Database is created when set. Default "app".
	Database string
}

// Server is a running throwaway MariaDB server, stopped and removed by a cleanup
// registered with the testing.TB given to Start.
type Server struct {
	root, data, tls, sock, log string
	port                       int
	user, db                   string
	client                     string // the mariadb client binary
	uid, gid                   int    // owner of the server's files (-1: current user)

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Host is the address the server listens on: "127.0.0.1".
func (s *Server) Host() string { return "127.0.0.1" }

// Port is the TCP port the server listens on.
func (s *Server) Port() int { return s.port }

// User is the REQUIRE X509 account; Database the database created for it.
func (s *Server) User() string     { return s.user }
func (s *Server) Database() string { return s.db }

// Client is the path of the mariadb client binary.
func (s *Server) Client() string { return s.client }

// Logs returns the server's error log.
func (s *Server) Logs() string {
	b, err := os.ReadFile(s.log)
	if err != nil {
		return fmt.Sprintf("(mysqltest: log unavailable: %v)", err)
	}
	return string(b)
}

func unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(EnvE2E) == "require" {
		t.Fatalf("mysqltest: MariaDB end-to-end environment unavailable (%s=require): %s", EnvE2E, why)
	}
	t.Skipf("mysqltest: skipping, MariaDB unavailable: %s (set %s=require to fail instead)", why, EnvE2E)
}

func find(names ...string) string {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
		for _, d := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"} {
			if fi, err := os.Stat(filepath.Join(d, n)); err == nil && fi.Mode()&0o111 != 0 {
				return filepath.Join(d, n)
			}
		}
	}
	return ""
}

// Start creates a data directory with mariadb-install-db in a fresh temporary directory,
// starts mariadbd on a free loopback port with TLS (ssl-cert, ssl-key, ssl-ca from o),
// creates o.User REQUIRE X509 and o.Database, and returns once the server answers (at
// most 60 s). The cleanup stops the server (SIGTERM, then SIGKILL) and removes its files.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	server, install, client := find("mariadbd", "mysqld"), find("mariadb-install-db", "mysql_install_db"), find("mariadb", "mysql")
	var missing []string
	for n, p := range map[string]string{"mariadbd": server, "mariadb-install-db": install, "mariadb (client)": client} {
		if p == "" {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		unavailable(t, "not found: "+strings.Join(missing, ", ")+" (Debian: apt-get install mariadb-server)")
	}
	if len(o.ServerCertPEM) == 0 || len(o.ServerKeyPEM) == 0 || len(o.ClientCAPEM) == 0 {
		t.Fatal("mysqltest: Options.ServerCertPEM, ServerKeyPEM and ClientCAPEM are required")
	}
	if o.User == "" {
		o.User = "app"
	}
	if o.Database == "" {
		o.Database = "app"
	}
	s := &Server{user: o.User, db: o.Database, client: client, uid: -1, gid: -1}
	var runAs []string
	if os.Geteuid() == 0 {
		u, err := user.Lookup("mysql")
		if err != nil {
			unavailable(t, "running as root and there is no mysql OS user to run the server as")
		}
		s.uid, _ = strconv.Atoi(u.Uid)
		s.gid, _ = strconv.Atoi(u.Gid)
		runAs = []string{"--user=mysql"}
	}
	root, err := os.MkdirTemp("/tmp", "mysqltest-")
	if err != nil {
		t.Fatal(err)
	}
	s.root, s.data, s.tls = root, filepath.Join(root, "data"), filepath.Join(root, "tls")
	s.sock, s.log = filepath.Join(root, "mysqld.sock"), filepath.Join(root, "error.log")
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("mysqltest: MariaDB error log:\n%s", s.Logs())
		}
		_ = os.RemoveAll(root)
	})
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{s.data, s.tls} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		s.chown(d)
	}
	s.chown(root)
	if err := s.writeTLS(o.ServerCertPEM, o.ServerKeyPEM, o.ClientCAPEM); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--no-defaults", "--datadir=" + s.data, "--auth-root-authentication-method=normal",
		"--skip-test-db", "--skip-name-resolve"}, runAs...)
	cmd := exec.Command(install, args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mysqltest: mariadb-install-db: %v\n%s", err, out)
	}

	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.port = port
		if err := s.launch(server, runAs); err != nil {
			t.Fatalf("mysqltest: starting mariadbd: %v", err)
		}
		err = s.waitReady()
		if err == nil {
			break
		}
		s.stop()
		if attempt < 5 && strings.Contains(s.Logs(), "Address already in use") {
			continue
		}
		t.Fatalf("mysqltest: MariaDB did not become ready: %v", err)
	}
	q := fmt.Sprintf("CREATE DATABASE IF NOT EXISTS `%s`; CREATE USER '%s'@'%%' REQUIRE X509; GRANT ALL ON *.* TO '%s'@'%%'; FLUSH PRIVILEGES;",
		o.Database, o.User, o.User)
	if out, err := s.Root(context.Background(), q); err != nil {
		t.Fatalf("mysqltest: creating the user: %v\n%s", err, out)
	}
	return s
}

func (s *Server) chown(p string) {
	if s.uid >= 0 {
		_ = os.Chown(p, s.uid, s.gid)
	}
}

func (s *Server) writeTLS(cert, key, ca []byte) error {
	for name, b := range map[string][]byte{"server.crt": cert, "server.key": key, "client-ca.crt": ca} {
		tmp := filepath.Join(s.tls, "."+name)
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return err
		}
		s.chown(tmp)
		if err := os.Rename(tmp, filepath.Join(s.tls, name)); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) launch(server string, runAs []string) error {
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := append([]string{"--no-defaults", "--datadir=" + s.data, "--socket=" + s.sock,
		"--port=" + strconv.Itoa(s.port), "--bind-address=127.0.0.1", "--skip-name-resolve",
		"--pid-file=" + filepath.Join(s.root, "mysqld.pid"), "--log-error=" + s.log,
		"--ssl-cert=" + filepath.Join(s.tls, "server.crt"), "--ssl-key=" + filepath.Join(s.tls, "server.key"),
		"--ssl-ca=" + filepath.Join(s.tls, "client-ca.crt"),
		"--innodb-buffer-pool-size=16M", "--innodb-log-file-size=4M", "--performance-schema=OFF",
		"--skip-log-bin", "--max-connections=20"}, runAs...)
	cmd := exec.Command(server, args...)
	cmd.Dir = s.root
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	return nil
}

func (s *Server) waitReady() error {
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return errors.New("mariadbd exited")
		default:
		}
		if _, err := s.Root(context.Background(), "SELECT 1"); err == nil {
			return nil
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not ready after 60s: %v", last)
}

// Root runs sql as the server's root account over its Unix socket and returns the
// output (tab-separated, no column names).
func (s *Server) Root(ctx context.Context, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.client, "--no-defaults", "--socket="+s.sock, "-uroot", "-N", "-B", "-e", sql)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// ReplaceServerCert writes a new server certificate and key (and client CA, when
// non-nil) and makes the server use them for new connections (FLUSH SSL).
func (s *Server) ReplaceServerCert(certPEM, keyPEM, clientCAPEM []byte) error {
	if clientCAPEM == nil {
		b, err := os.ReadFile(filepath.Join(s.tls, "client-ca.crt"))
		if err != nil {
			return err
		}
		clientCAPEM = b
	}
	if err := s.writeTLS(certPEM, keyPEM, clientCAPEM); err != nil {
		return err
	}
	if out, err := s.Root(context.Background(), "FLUSH SSL"); err != nil {
		return fmt.Errorf("mysqltest: FLUSH SSL: %v: %s", err, out)
	}
	return nil
}

func (s *Server) stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return
	case <-time.After(20 * time.Second):
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-exited
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
