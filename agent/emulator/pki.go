package emulator

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// ca is a certificate authority the emulator signs with.
type ca struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// caLifetime is how long emulator CAs are valid (Cloud SQL server CAs last ten years).
const caLifetime = 10 * 365 * 24 * time.Hour

// newCA makes a self-signed ECDSA P-256 CA (fast to generate) that signs leaves only.
func newCA(cn string, now time.Time) (*ca, error) { return newCertAuthority(cn, now, nil, 0) }

// newCertAuthority makes an ECDSA P-256 CA: self-signed when parent is nil, else an
// intermediate signed by parent. pathLen is how many intermediates may follow it.
func newCertAuthority(cn string, now time.Time, parent *ca, pathLen int) (*ca, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"dbcert-agent emulator"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            pathLen,
		MaxPathLenZero:        pathLen == 0,
	}
	var cert *x509.Certificate
	if parent == nil {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			return nil, fmt.Errorf("creating CA %q: %w", cn, err)
		}
		if cert, err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
	} else if cert, err = parent.sign(tmpl, key.Public()); err != nil {
		return nil, fmt.Errorf("creating CA %q: %w", cn, err)
	}
	return &ca{cert: cert, key: key}, nil
}

// sign issues a leaf for pub from tmpl (SerialNumber filled in when nil).
func (c *ca) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	if tmpl.SerialNumber == nil {
		s, err := randomSerial()
		if err != nil {
			return nil, err
		}
		tmpl.SerialNumber = s
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// clientCertTemplate is the ephemeral client certificate Cloud SQL issues.
func clientCertTemplate(now, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: "Google Cloud SQL Client", Organization: []string{"Google, Inc"}, Country: []string{"US"}},
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// serverCertTemplate is a server certificate for hosts (IPs or DNS names), with the
// legacy Cloud SQL CN "project:instance".
func serverCertTemplate(cn string, hosts []string, now time.Time) *x509.Certificate {
	t := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(caLifetime / 10),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			t.IPAddresses = append(t.IPAddresses, ip)
		} else {
			t.DNSNames = append(t.DNSNames, h)
		}
	}
	return t
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func certPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func sha1Hex(c *x509.Certificate) string {
	sum := sha1.Sum(c.Raw)
	return hex.EncodeToString(sum[:])
}

// parsePublicKeyPEM accepts PKIX bytes under "RSA PUBLIC KEY" or "PUBLIC KEY", falling
// back to PKCS#1 (the labels lie: pitfall 4).
func parsePublicKeyPEM(s string) (crypto.PublicKey, error) {
	blk, _ := pem.Decode([]byte(s))
	if blk == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	if blk.Type != "RSA PUBLIC KEY" && blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("unexpected PEM block type %q", blk.Type)
	}
	if pub, err := x509.ParsePKIXPublicKey(blk.Bytes); err == nil {
		return pub, nil
	}
	pub, err := x509.ParsePKCS1PublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("neither PKIX nor PKCS#1: %v", err)
	}
	return pub, nil
}
