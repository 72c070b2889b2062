package mysqltest

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
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T, cn string) *ca {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &ca{c, key}
}

func (c *ca) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})
}

func (c *ca) issue(t *testing.T, server bool) (certPEM, keyPEM []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})
}

// TestStart: the mariadb client connects over TLS as the REQUIRE X509 user with a
// certificate from the client CA, and is refused with one from another CA or none.
func TestStart(t *testing.T) {
	serverCA, clientCA, otherCA := newCA(t, "server"), newCA(t, "client"), newCA(t, "other")
	sc, sk := serverCA.issue(t, true)
	s := Start(t, Options{ServerCertPEM: sc, ServerKeyPEM: sk, ClientCAPEM: clientCA.pem()})
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", serverCA.pem())
	gc, gk := clientCA.issue(t, false)
	bc, bk := otherCA.issue(t, false)
	good := []string{"--ssl-cert=" + write("good.crt", gc), "--ssl-key=" + write("good.key", gk)}
	bad := []string{"--ssl-cert=" + write("bad.crt", bc), "--ssl-key=" + write("bad.key", bk)}
	run := func(extra []string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		args := append([]string{"--no-defaults", "-h", s.Host(), "-P", strconv.Itoa(s.Port()), "-u", s.User(), "--ssl-ca=" + caFile,
			"--ssl-verify-server-cert", "-N", "-B", "-e", "SHOW SESSION STATUS LIKE 'Ssl_version'", s.Database()}, extra...)
		out, err := exec.CommandContext(ctx, s.Client(), args...).CombinedOutput()
		return string(out), err
	}
	if out, err := run(good); err != nil || !strings.Contains(out, "TLSv1.") {
		t.Fatalf("good certificate: %v\n%s", err, out)
	}
	for name, args := range map[string][]string{"other CA": bad, "no certificate": nil} {
		if out, err := run(args); err == nil {
			t.Errorf("%s: connected:\n%s", name, out)
		}
	}
	if err := s.ReplaceServerCert(sc, sk, otherCA.pem()); err != nil {
		t.Fatal(err)
	}
	if out, err := run(bad); err != nil {
		t.Fatalf("after ReplaceServerCert trusting the other CA: %v\n%s", err, out)
	}
}
