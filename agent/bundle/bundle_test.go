package bundle

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func cert(t *testing.T, pub crypto.PublicKey, signer crypto.Signer, parent *x509.Certificate, isCA bool, from, to time.Time) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "test"},
		NotBefore:    from, NotAfter: to,
		IsCA: isCA, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testBundle(t *testing.T) *Bundle {
	caKey := ecKey(t)
	ca := cert(t, caKey.Public(), caKey, nil, true, t0.Add(-time.Hour), t0.Add(24*time.Hour))
	key := ecKey(t)
	leaf := cert(t, key.Public(), caKey, ca, false, t0, t0.Add(time.Hour))
	return &Bundle{Key: key, Chain: []*x509.Certificate{leaf}, CAs: []*x509.Certificate{ca}}
}

func TestVerify(t *testing.T) {
	good := testBundle(t)
	other := testBundle(t)
	tests := []struct {
		name    string
		b       *Bundle
		now     time.Time
		wantErr string
	}{
		{"valid", good, t0.Add(time.Minute), ""},
		{"small clock skew tolerated", good, t0.Add(-30 * time.Second), ""},
		{"not yet valid", good, t0.Add(-2 * time.Minute), "not valid before"},
		{"expired", good, t0.Add(time.Hour), "expired"},
		{"key mismatch", &Bundle{Key: other.Key, Chain: good.Chain, CAs: good.CAs}, t0, "not issued for our private key"},
		{"no CA", &Bundle{Key: good.Key, Chain: good.Chain}, t0, "no server CA"},
		{"cert without key", &Bundle{Chain: good.Chain, CAs: good.CAs}, t0, "without private key"},
		{"key without cert", &Bundle{Key: good.Key, CAs: good.CAs}, t0, "without certificate"},
		{"CA only", &Bundle{CAs: good.CAs}, t0, ""},
		{"nil", nil, t0, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.b.Verify(tt.now)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Verify = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Verify = %v, want error containing %q wrapping ErrInvalid", err, tt.wantErr)
			}
		})
	}
}

func TestPEMRoundTrip(t *testing.T) {
	b := testBundle(t)
	keyPEM, err := b.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(keyPEM), "-----BEGIN PRIVATE KEY-----\n") {
		t.Errorf("key is not PKCS#8 PEM: %.40q", keyPEM)
	}
	k, err := ParseKeyPEM(keyPEM, "key")
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ParseCertsPEM(b.ChainPEM(), "cert")
	if err != nil {
		t.Fatal(err)
	}
	cas, err := ParseCertsPEM(b.CAPEM(), "ca")
	if err != nil {
		t.Fatal(err)
	}
	if got := (&Bundle{Key: k, Chain: chain, CAs: cas}); !Equal(got, b) {
		t.Error("round trip changed the bundle")
	}
}

func TestParseCertsPEMStrict(t *testing.T) {
	b := testBundle(t)
	two := append(b.CAPEM(), b.ChainPEM()...)
	keyPEM, _ := b.KeyPEM()
	tests := []struct {
		name    string
		in      []byte
		want    int
		wantErr string
	}{
		{"two blocks kept", two, 2, ""},
		{"trailing whitespace ok", append(b.CAPEM(), "\n\n "...), 1, ""},
		{"empty", nil, 0, "no PEM certificate"},
		{"garbage", []byte("hello"), 0, "trailing data"},
		{"trailing garbage", append(b.CAPEM(), "junk"...), 0, "trailing data"},
		{"truncated", b.CAPEM()[:len(b.CAPEM())-30], 0, "trailing data"},
		{"key block", keyPEM, 0, "unexpected PEM block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCertsPEM(tt.in, "x")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(got) != tt.want {
				t.Fatalf("got %d certs, err %v", len(got), err)
			}
		})
	}
}

func TestNotAfterClampsToToken(t *testing.T) {
	b := testBundle(t)
	if !b.NotAfter().Equal(b.Chain[0].NotAfter) {
		t.Fatal("NotAfter without token != leaf NotAfter")
	}
	b.TokenExpiry = t0.Add(10 * time.Minute)
	if !b.NotAfter().Equal(b.TokenExpiry) {
		t.Errorf("NotAfter = %v, want token expiry", b.NotAfter())
	}
	b.TokenExpiry = t0.Add(10 * time.Hour)
	if !b.NotAfter().Equal(b.Chain[0].NotAfter) {
		t.Errorf("a later token must not extend the lifetime")
	}
}

// TestEqualComparesWhatSinksDeriveFilesFrom: Host, Engine, DNSName and the login token
// make bundles differ; Issued and TokenExpiry (metadata of the same files) do not.
func TestEqualComparesWhatSinksDeriveFilesFrom(t *testing.T) {
	base := func() *Bundle {
		return &Bundle{Host: "10.0.0.5", Engine: "POSTGRES_15", DNSName: "a.sql.goog.", LoginToken: "t"}
	}
	tests := []struct {
		name string
		edit func(*Bundle)
		want bool
	}{
		{"same", func(*Bundle) {}, true},
		{"issued", func(b *Bundle) { b.Issued = time.Unix(1, 0) }, true},
		{"token expiry", func(b *Bundle) { b.TokenExpiry = time.Unix(1, 0) }, true},
		{"host", func(b *Bundle) { b.Host = "10.0.0.6" }, false},
		{"engine", func(b *Bundle) { b.Engine = "MYSQL_8_0" }, false},
		{"dns name", func(b *Bundle) { b.DNSName = "b.sql.goog." }, false},
		{"login token", func(b *Bundle) { b.LoginToken = "u" }, false},
	}
	for _, tt := range tests {
		b := base()
		tt.edit(b)
		if got := Equal(base(), b); got != tt.want {
			t.Errorf("%s: Equal = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestKeyPKCS8: KeyDER and KeyPEM use the encoding a caller set instead of encoding the
// key again (so it must be the key's), Equal ignores it, and CA-only bundles have none.
func TestKeyPKCS8(t *testing.T) {
	b := testBundle(t)
	der, err := b.KeyDER()
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := x509.MarshalPKCS8PrivateKey(b.Key); !bytes.Equal(der, want) {
		t.Fatal("KeyDER is not the key's PKCS#8 encoding")
	}
	kept := *b
	kept.KeyPKCS8 = []byte("kept encoding")
	if got, _ := kept.KeyDER(); string(got) != "kept encoding" {
		t.Errorf("KeyDER encoded again instead of using KeyPKCS8: %.20q", got)
	}
	if pemKey, _ := kept.KeyPEM(); !bytes.Contains(pemKey, []byte(base64.StdEncoding.EncodeToString([]byte("kept encoding")))) {
		t.Errorf("KeyPEM does not use KeyPKCS8: %s", pemKey)
	}
	if !Equal(&kept, b) {
		t.Error("Equal looks at KeyPKCS8")
	}
	if der, err := (&Bundle{CAs: b.CAs}).KeyDER(); der != nil || err != nil {
		t.Errorf("CA-only: %q, %v", der, err)
	}
}
