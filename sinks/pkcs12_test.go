package sinks

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// TestPKCS12Files: keystore.p12 (key mode) holds the key and chain, truststore.p12
// (0644) every CA; both open with the password from the file (trailing newline
// trimmed); the same material is no change; a new password is (the stores are
// re-encrypted); CA-only bundles get only the trust store.
func TestPKCS12Files(t *testing.T) {
	ca := newCA(t, "p12")
	ca2 := newCA(t, "p12 second CA")
	dir := sinkDir(t)
	pwFile := filepath.Join(t.TempDir(), "keystore.pass")
	must(t, os.WriteFile(pwFile, []byte("s3cret pw\n"), 0o600))
	o := opts(dir)
	o.KeyMode = 0o640
	o.PKCS12 = &PKCS12Options{PasswordFile: pwFile}
	f := newSink(t, o)
	p := f.Paths()

	b := ca.rsaBundle(t)
	b.CAs = append(b.CAs, ca2.cert)
	mustWrite(t, f, b, true)
	mustCurrent(t, f, b)
	checkStores(t, p, "s3cret pw", b)
	if m := fileMode(t, p.KeyStore); m != 0o640 {
		t.Errorf("keystore.p12 mode %04o, want the key mode 0640", m)
	}
	if m := fileMode(t, p.TrustStore); m != 0o644 {
		t.Errorf("truststore.p12 mode %04o, want 0644", m)
	}
	mustWrite(t, f, b, false)

	must(t, os.WriteFile(pwFile, []byte("n3w\r\n"), 0o600))
	mustWrite(t, f, b, true)
	checkStores(t, p, "n3w", b)

	mustWrite(t, f, ca.caOnly(), true)
	if exists(t, p.KeyStore) {
		t.Error("a CA-only bundle left keystore.p12")
	}
	checkStores(t, p, "n3w", ca.caOnly())

	must(t, os.WriteFile(pwFile, nil, 0o600))
	_, err := f.Write(t.Context(), b)
	if err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("Write with an empty password file: %v", err)
	}
	must(t, os.Remove(pwFile))
	if _, err := f.Write(t.Context(), b); err == nil || strings.Contains(err.Error(), "n3w") {
		t.Fatalf("Write without the password file: %v", err)
	}
	if _, err := NewFile(FileOptions{Dir: dir, UID: -1, GID: -1, PKCS12: &PKCS12Options{}}); err == nil {
		t.Error("NewFile accepted pkcs12 without a password")
	}
}

// checkStores decodes the key and trust stores with pw and compares them with b.
func checkStores(t *testing.T, p Paths, pw string, b *bundle.Bundle) {
	t.Helper()
	if b.HasClientCert() {
		data, err := os.ReadFile(p.KeyStore)
		must(t, err)
		if !keyStoreHolds(data, bundle.Secret(pw), b) {
			t.Errorf("keystore.p12 does not open with the password or does not hold the bundle")
		}
		if _, _, _, err := pkcs12.DecodeChain(data, pw+"x"); err == nil {
			t.Errorf("keystore.p12 opens with a wrong password")
		}
	}
	data, err := os.ReadFile(p.TrustStore)
	must(t, err)
	if !trustStoreHolds(data, bundle.Secret(pw), b) {
		t.Errorf("truststore.p12 does not open with the password or does not hold the CAs")
	}
}

// javaTools returns java and keytool, skipping (or failing under DBCERT_E2E=require)
// when they are missing.
func javaTools(t *testing.T) (java, keytool string) {
	t.Helper()
	java, err1 := exec.LookPath("java")
	keytool, err2 := exec.LookPath("keytool")
	if err1 != nil || err2 != nil {
		if os.Getenv("DBCERT_E2E") == "require" {
			t.Fatal("java/keytool are not installed (DBCERT_E2E=require)")
		}
		t.Skip("java/keytool are not installed")
	}
	return java, keytool
}

// serverCert issues a TLS server certificate for 127.0.0.1 and localhost from ca.
func (ca *testCA) serverCert(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	must(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	must(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// TestPKCS12WithJava: real Java reads both stores. keytool lists the key entry and one
// trusted-certificate entry per CA; a JSSE client configured only through
// javax.net.ssl.keyStore/trustStore completes a handshake with a server that requires
// a client certificate chaining to the CA, and verifies the server against the trust
// store.
func TestPKCS12WithJava(t *testing.T) {
	java, keytool := javaTools(t)
	ca := newCA(t, "java CA")
	ca2 := newCA(t, "java second CA")
	dir := sinkDir(t)
	o := opts(dir)
	o.PKCS12 = &PKCS12Options{Password: "changeit-123"}
	f := newSink(t, o)
	b := ca.rsaBundle(t)
	b.CAs = append(b.CAs, ca2.cert)
	mustWrite(t, f, b, true)
	p := f.Paths()

	list := func(path string) string {
		out, err := exec.Command(keytool, "-list", "-keystore", path, "-storetype", "PKCS12", "-storepass", "changeit-123").CombinedOutput()
		if err != nil {
			t.Fatalf("keytool -list %s: %v\n%s", path, err, out)
		}
		return string(out)
	}
	ks := list(p.KeyStore)
	if strings.Count(ks, "PrivateKeyEntry") != 1 {
		t.Errorf("keytool sees no single key entry in keystore.p12:\n%s", ks)
	}
	// go-pkcs12 sets no friendlyName on the key bag, so Java names the entry "1" (see
	// PKCS12Options); this records what Java sees.
	t.Logf("keystore.p12 as keytool lists it:\n%s", ks)
	ts := list(p.TrustStore)
	if n := strings.Count(ts, "trustedCertEntry"); n != 2 {
		t.Errorf("truststore.p12 holds %d trusted-certificate entries, want 2:\n%s", n, ts)
	}

	certPEM, keyPEM := ca.serverCert(t)
	srvCert, err := tls.X509KeyPair(certPEM, keyPEM)
	must(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				_ = tc.SetDeadline(time.Now().Add(30 * time.Second))
				if err := tc.Handshake(); err != nil {
					return
				}
				line, _ := bufio.NewReader(tc).ReadString('\n')
				peer := tc.ConnectionState().PeerCertificates[0]
				_, _ = tc.Write([]byte("client=" + peer.SerialNumber.String() + " said=" + strings.TrimSpace(line) + "\n"))
			}()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	cmd := exec.Command(java,
		"-Djavax.net.ssl.keyStore="+p.KeyStore, "-Djavax.net.ssl.keyStoreType=PKCS12", "-Djavax.net.ssl.keyStorePassword=changeit-123",
		"-Djavax.net.ssl.trustStore="+p.TrustStore, "-Djavax.net.ssl.trustStoreType=PKCS12", "-Djavax.net.ssl.trustStorePassword=changeit-123",
		filepath.Join("testdata", "java", "TLSProbe.java"), "127.0.0.1", port)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("Java TLS client with the sink's key and trust stores: %v\n%s", err, out)
	}
	if want := "client=" + b.Leaf().SerialNumber.String() + " said=hello"; strings.TrimSpace(string(out)) != want {
		t.Fatalf("Java client got %q, want %q", out, want)
	}
}
