package alloydb

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
	"github.com/dbcert-agent/dbcert-agent/agent/pgtest"
)

// TestPostgresAcceptsChain: a real PostgreSQL server whose ssl_ca_file holds only the
// emulator's AlloyDB client root accepts psql with the fetched chain (leaf +
// intermediate) and key, and psql verifies the server with the fetched caCert. The leaf
// alone is refused, so the intermediate in the file — and its order — is what works.
func TestPostgresAcceptsChain(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	b, err := fetch(t, e.provider(t, Options{CertDuration: MinCertDuration}), keyOnce())
	if err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, err := e.emu.AlloyDBServerCert(project, location, cluster, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	srv := pgtest.Start(t, pgtest.Options{
		ServerCertPEM: srvCert,
		ServerKeyPEM:  srvKey,
		ClientCAPEM:   e.emu.AlloyDBClientRootPEM(project, location, cluster),
	})
	keyPEM, err := b.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key, ca := write("cert.pem", b.ChainPEM()), write("key.pem", keyPEM), write("ca.pem", b.CAPEM())
	leafOnly := write("leaf.pem", bundle.CertsPEM(b.Chain[:1]))
	ctx := context.Background()
	conn := func(cert string) string {
		return "sslmode=verify-ca sslcert=" + cert + " sslkey=" + key + " sslrootcert=" + ca
	}
	out, err := srv.Psql(ctx, conn(cert), "select 1", "")
	if err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("psql with the fetched files: %v\n%s\nserver log:\n%s", err, out, srv.Logs())
	}
	out, err = srv.Psql(ctx, conn(leafOnly), "select 1", "")
	if err == nil {
		t.Fatalf("psql with the leaf alone succeeded; the intermediate is not needed and the test proves nothing:\n%s", out)
	}
	if !strings.Contains(out, "unknown ca") && !strings.Contains(out, "certificate verify failed") {
		t.Errorf("psql with the leaf alone failed for another reason:\n%s", out)
	}
}
