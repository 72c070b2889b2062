package sinks

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/pgtest"
)

// envFileValue returns the value of name in a connection.env written by formatEnv.
func envFileValue(t *testing.T, path, name string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	must(t, err)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+"='"); ok {
			return strings.TrimSuffix(v, "'")
		}
	}
	t.Fatalf("%s has no %s", path, name)
	return ""
}

// TestConnectionFilesWithRealClients: against a real PostgreSQL that requires a verified
// client certificate, psql connects with `service=orders` through the sink's
// pg_service.conf and with its DATABASE_URL, and pgjdbc connects with its JDBC_URL,
// which uses the DER key (key.pk8).
func TestConnectionFilesWithRealClients(t *testing.T) {
	ca := newCA(t, "clients CA")
	certPEM, keyPEM := ca.serverCert(t)
	srv := pgtest.Start(t, pgtest.Options{ServerCertPEM: certPEM, ServerKeyPEM: keyPEM, ClientCAPEM: bundle.CertsPEM([]*x509.Certificate{ca.cert})})

	dir := sinkDir(t)
	o := opts(dir)
	o.Connection = &Connection{Service: "orders", User: "postgres", DBName: "postgres", Host: "127.0.0.1", Port: srv.Port()}
	f := newSink(t, o)
	b := ca.rsaBundle(t)
	b.Engine, b.Host = "POSTGRES_15", "203.0.113.1" // the configured host wins
	mustWrite(t, f, b, true)
	p := f.Paths()

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	home := t.TempDir()
	must(t, os.Symlink(p.PGService, filepath.Join(home, ".pg_service.conf")))
	if out, err := srv.Psql(ctx, "service=orders", "select 'svc:' || current_user", home); err != nil || !strings.Contains(out, "svc:postgres") {
		t.Fatalf("psql service=orders: %v\n%s", err, out)
	}
	url := envFileValue(t, p.ConnEnv, "DATABASE_URL")
	if out, err := srv.Psql(ctx, url, "select 'url:' || current_user", ""); err != nil || !strings.Contains(out, "url:postgres") {
		t.Fatalf("psql DATABASE_URL: %v\n%s", err, out)
	}

	java, _ := javaTools(t)
	const jar = "/usr/share/java/postgresql.jar"
	if _, err := os.Stat(jar); err != nil {
		if os.Getenv("DBCERT_E2E") == "require" {
			t.Fatalf("pgjdbc is not installed at %s (DBCERT_E2E=require)", jar)
		}
		t.Skipf("pgjdbc is not installed at %s", jar)
	}
	jdbc := envFileValue(t, p.ConnEnv, "JDBC_URL")
	if !strings.Contains(jdbc, "sslkey="+p.KeyDER) {
		t.Fatalf("JDBC_URL does not use the DER key: %s", jdbc)
	}
	cmd := exec.CommandContext(ctx, java, "-cp", jar, filepath.Join("testdata", "java", "JDBCProbe.java"), jdbc, "select 'jdbc:' || current_user")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "jdbc:postgres" {
		t.Fatalf("pgjdbc with JDBC_URL: %v\n%s", err, out)
	}
}
