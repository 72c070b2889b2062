package verify

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/pgtest"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key}
}

func (ca *testCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// issue returns a leaf certificate and PKCS#8 key PEM; server certificates get dns as SAN
// and 127.0.0.1.
func (ca *testCA) issue(t *testing.T, cn string, server bool, dns ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(12 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = dns
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})
}

// clientFiles writes a client certificate, key and CA file and returns a Target for them.
func clientFiles(t *testing.T, cert, key, ca []byte) Target {
	t.Helper()
	d := t.TempDir()
	tg := Target{CertFile: filepath.Join(d, "cert.pem"), KeyFile: filepath.Join(d, "key.pem"), CAFile: filepath.Join(d, "ca.pem")}
	for p, b := range map[string][]byte{tg.CertFile: cert, tg.KeyFile: key, tg.CAFile: ca} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return tg
}

// TestPostgres runs Check against a real PostgreSQL server that requires verified client
// certificates: accepted, rejected (client certificate from another CA), a server from
// another CA (chain fails), and identity by DNS SAN and by CN.
func TestPostgres(t *testing.T) {
	serverCA, clientCA, otherCA := newTestCA(t, "server CA"), newTestCA(t, "client CA"), newTestCA(t, "other CA")
	srvCert, srvKey := serverCA.issue(t, "proj:orders", true, "orders.example.internal")
	srv := pgtest.Start(t, pgtest.Options{ServerCertPEM: srvCert, ServerKeyPEM: srvKey, ClientCAPEM: clientCA.pem()})
	addr := net.JoinHostPort(srv.Host(), strconv.Itoa(srv.Port()))
	goodCert, goodKey := clientCA.issue(t, "app", false)
	badCert, badKey := otherCA.issue(t, "app", false)

	tests := []struct {
		name         string
		cert, key    []byte
		ca           []byte
		id           Identity
		ok, chain    bool
		identity     bool
		accepted     bool
		errIs        error
		lineContains string
		db           string // default "postgres"
	}{
		{name: "accepted, CN", cert: goodCert, key: goodKey, ca: serverCA.pem(), id: Identity{CN: "proj:orders"},
			ok: true, chain: true, identity: true, accepted: true, lineContains: "client-cert=accepted"},
		{name: "accepted, DNS SAN", cert: goodCert, key: goodKey, ca: serverCA.pem(), id: Identity{DNSName: "Orders.example.internal.", CN: "x:y"},
			ok: true, chain: true, identity: true, accepted: true, lineContains: "identity=ok(DNS"},
		{name: "accepted, chain only", cert: goodCert, key: goodKey, ca: serverCA.pem(),
			ok: true, chain: true, identity: true, accepted: true, lineContains: "chain only"},
		{name: "wrong identity", cert: goodCert, key: goodKey, ca: serverCA.pem(), id: Identity{DNSName: "other.example", CN: "proj:other"},
			chain: true, accepted: true, lineContains: "identity does not match"},
		{name: "server from another CA", cert: goodCert, key: goodKey, ca: otherCA.pem(), id: Identity{CN: "proj:orders"},
			identity: true, accepted: true, lineContains: "does not verify against the CA file"},
		// With trust authentication the first reply is AuthenticationOk, before the
		// server looks up the database: accepted.
		{name: "unknown database after AuthenticationOk", cert: goodCert, key: goodKey, ca: serverCA.pem(), id: Identity{CN: "proj:orders"}, db: "nope",
			ok: true, chain: true, identity: true, accepted: true, lineContains: "client-cert=accepted"},
		{name: "client certificate rejected", cert: badCert, key: badKey, ca: serverCA.pem(), id: Identity{CN: "proj:orders"},
			chain: true, identity: true, errIs: ErrRejected, lineContains: "rejected the client certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := clientFiles(t, tc.cert, tc.key, tc.ca)
			tg.Instance, tg.Engine, tg.Addr, tg.User, tg.Database, tg.Identity = "orders", EnginePostgres, addr, "postgres", "postgres", tc.id
			if tc.db != "" {
				tg.Database = tc.db
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r := Check(ctx, tg)
			var b strings.Builder
			WriteLine(&b, r)
			line := b.String()
			t.Log(line)
			if r.OK() != tc.ok || r.ChainOK != tc.chain || r.IdentityOK != tc.identity || r.Accepted != tc.accepted {
				t.Errorf("ok=%v chain=%v identity=%v accepted=%v, want %v %v %v %v (err %v)", r.OK(), r.ChainOK, r.IdentityOK, r.Accepted,
					tc.ok, tc.chain, tc.identity, tc.accepted, r.Err)
			}
			if tc.errIs != nil && !errors.Is(r.Err, tc.errIs) {
				t.Errorf("err = %v, want %v", r.Err, tc.errIs)
			}
			if tc.errIs == nil && r.Err != nil {
				t.Errorf("err = %v", r.Err)
			}
			if r.TLSVersion != "TLS1.3" || r.Subject != "CN=proj:orders" {
				t.Errorf("TLS %q subject %q", r.TLSVersion, r.Subject)
			}
			if !strings.Contains(line, tc.lineContains) || !strings.HasPrefix(line, "orders: ") {
				t.Errorf("line %q does not contain %q", line, tc.lineContains)
			}
		})
	}
}

func TestCheckMissingFiles(t *testing.T) {
	r := Check(context.Background(), Target{Instance: "x", CertFile: "/nonexistent/cert.pem", KeyFile: "/nonexistent/key.pem", CAFile: "/nonexistent/ca.pem", Addr: "127.0.0.1:1"})
	if r.OK() || r.Err == nil || !strings.Contains(r.Err.Error(), "/nonexistent/cert.pem") {
		t.Fatalf("result %+v", r)
	}
}

func TestNamesCertificate(t *testing.T) {
	for msg, want := range map[string]bool{
		"FATAL 28000: connection requires a valid client certificate":                                   true,
		`FATAL 28000: certificate authentication failed for user "app"`:                                 true,
		`FATAL 28000: no pg_hba.conf entry for host "10.0.0.1", user "x", database "y", SSL encryption`: false,
		`FATAL 3D000: database "nope" does not exist`:                                                   false,
	} {
		if got := namesCertificate(msg); got != want {
			t.Errorf("namesCertificate(%q) = %v, want %v", msg, got, want)
		}
	}
}
