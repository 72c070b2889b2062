package pgtest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/pgtest"
)

// issued is a certificate with its key, PEM-encoded.
type issued struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	keyPEM  []byte // PKCS#8, "BEGIN PRIVATE KEY"
}

// issue creates a certificate from tmpl, signed by parent (self-signed when nil).
func issue(t *testing.T, tmpl *x509.Certificate, parent *issued) *issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	signerCert, signerKey := tmpl, key
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &issued{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
	}
}

func newCA(t *testing.T, cn string) *issued {
	return issue(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil)
}

func newServerCert(t *testing.T, ca *issued) *issued {
	return issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca)
}

func newClientCert(t *testing.T, ca *issued) *issued {
	return issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "postgres"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca)
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestServerRequiresVerifiedClientCertificates(t *testing.T) {
	serverCA := newCA(t, "pgtest server CA")
	clientCA := newCA(t, "pgtest client CA")
	otherCA := newCA(t, "pgtest other client CA")
	server := newServerCert(t, serverCA)
	client := newClientCert(t, clientCA)
	stranger := newClientCert(t, otherCA)
	unrelatedKey := newClientCert(t, clientCA) // only its key is used

	begin := time.Now()
	srv := pgtest.Start(t, pgtest.Options{
		ServerCertPEM: server.certPEM,
		ServerKeyPEM:  server.keyPEM,
		ClientCAPEM:   clientCA.certPEM,
	})
	t.Logf("server ready on %s:%d after %v", srv.Host(), srv.Port(), time.Since(begin))

	dir := t.TempDir()
	clientCrt := writeFile(t, filepath.Join(dir, "client.crt"), client.certPEM)
	clientKey := writeFile(t, filepath.Join(dir, "client.key"), client.keyPEM)
	wrongKey := writeFile(t, filepath.Join(dir, "wrong.key"), unrelatedKey.keyPEM)
	strangerCrt := writeFile(t, filepath.Join(dir, "stranger.crt"), stranger.certPEM)
	strangerKey := writeFile(t, filepath.Join(dir, "stranger.key"), stranger.keyPEM)
	serverCACrt := writeFile(t, filepath.Join(dir, "server-ca.crt"), serverCA.certPEM)

	home := filepath.Join(dir, "home")
	writeFile(t, filepath.Join(home, ".postgresql", "postgresql.crt"), client.certPEM)
	writeFile(t, filepath.Join(home, ".postgresql", "postgresql.key"), client.keyPEM)
	writeFile(t, filepath.Join(home, ".postgresql", "root.crt"), serverCA.certPEM)

	ctx := context.Background()
	conn := func(cert, key, root string) string {
		s := "sslmode=verify-ca"
		if cert != "" {
			s += " sslcert=" + cert + " sslkey=" + key
		}
		if root != "" {
			s += " sslrootcert=" + root
		}
		return s
	}
	succeeds := func(t *testing.T, connString, home string) {
		t.Helper()
		out, err := srv.Psql(ctx, connString, "select 1", home)
		if err != nil || strings.TrimSpace(out) != "1" {
			t.Fatalf("psql %q: err=%v, output:\n%s\nserver log:\n%s", connString, err, out, srv.Logs())
		}
	}
	fails := func(t *testing.T, connString, home string, wantOut ...string) {
		t.Helper()
		out, err := srv.Psql(ctx, connString, "select 1", home)
		if err == nil {
			t.Fatalf("psql %q succeeded, want failure; output:\n%s", connString, out)
		}
		for _, w := range wantOut {
			if !strings.Contains(out, w) {
				t.Errorf("psql %q output does not contain %q:\n%s", connString, w, out)
			}
		}
		t.Logf("failed as expected: %s", strings.TrimSpace(out))
	}

	t.Run("ClientCertFiles", func(t *testing.T) {
		succeeds(t, conn(clientCrt, clientKey, serverCACrt), "")
	})
	t.Run("KeyNotMatchingCert", func(t *testing.T) {
		fails(t, conn(clientCrt, wrongKey, serverCACrt), "", "key values mismatch")
	})
	t.Run("NoClientCert", func(t *testing.T) {
		fails(t, conn("", "", serverCACrt), "", "connection requires a valid client certificate")
	})
	t.Run("ClientCertFromOtherCA", func(t *testing.T) {
		fails(t, conn(strangerCrt, strangerKey, serverCACrt), "", "unknown ca")
	})
	t.Run("ServerCANotTrusted", func(t *testing.T) {
		fails(t, conn(clientCrt, clientKey, strangerCrt), "", "certificate verify failed")
	})
	t.Run("HomeDotPostgresql", func(t *testing.T) {
		succeeds(t, "sslmode=verify-ca", home)
	})
	t.Run("ReplaceServerCert", func(t *testing.T) {
		newServerCA := newCA(t, "pgtest server CA 2")
		newServer := newServerCert(t, newServerCA)
		begin := time.Now()
		if err := srv.ReplaceServerCert(newServer.certPEM, newServer.keyPEM, nil); err != nil {
			t.Fatal(err)
		}
		t.Logf("reload effective after %v", time.Since(begin))
		// ~/.postgresql/root.crt still holds the old server CA.
		fails(t, "sslmode=verify-ca", home, "certificate verify failed")
		newCACrt := writeFile(t, filepath.Join(dir, "server-ca-2.crt"), newServerCA.certPEM)
		succeeds(t, conn(clientCrt, clientKey, newCACrt), "")
		succeeds(t, "sslmode=verify-ca sslrootcert="+newCACrt, home)
	})
	t.Run("ReplaceClientCA", func(t *testing.T) {
		// The client CA is replaced too: the stranger's CA becomes the trusted one.
		serverCA3 := newCA(t, "pgtest server CA 3")
		server3 := newServerCert(t, serverCA3)
		if err := srv.ReplaceServerCert(server3.certPEM, server3.keyPEM, otherCA.certPEM); err != nil {
			t.Fatal(err)
		}
		ca3 := writeFile(t, filepath.Join(dir, "server-ca-3.crt"), serverCA3.certPEM)
		succeeds(t, conn(strangerCrt, strangerKey, ca3), "")
		fails(t, conn(clientCrt, clientKey, ca3), "", "unknown ca")
	})
	t.Run("ReplaceWithMismatchedKeyFails", func(t *testing.T) {
		serverCA4 := newCA(t, "pgtest server CA 4")
		server4 := newServerCert(t, serverCA4)
		if err := srv.ReplaceServerCert(server4.certPEM, server4.keyPEM, clientCA.certPEM); err != nil {
			t.Fatal(err)
		}
		ca4 := writeFile(t, filepath.Join(dir, "server-ca-4.crt"), serverCA4.certPEM)
		succeeds(t, conn(clientCrt, clientKey, ca4), "")

		server5 := newServerCert(t, newCA(t, "pgtest server CA 5"))
		err := srv.ReplaceServerCert(server5.certPEM, server4.keyPEM, nil)
		if err == nil {
			t.Fatal("ReplaceServerCert with a key not matching the certificate succeeded")
		}
		t.Logf("rejected as expected: %v", err)
		// The server keeps serving server4, and another reload keeps working.
		succeeds(t, conn(clientCrt, clientKey, ca4), "")
		if err := srv.ReplaceServerCert(server4.certPEM, server4.keyPEM, nil); err != nil {
			t.Fatalf("reload after a rejected one: %v", err)
		}
		succeeds(t, conn(clientCrt, clientKey, ca4), "")
	})
	if !strings.Contains(srv.Logs(), "connection received") {
		t.Errorf("server log lacks log_connections output:\n%s", srv.Logs())
	}
}
