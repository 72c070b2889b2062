package emulator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"time"
)

// newAlloyCA makes an ECDSA P-256 CA for an AlloyDB cluster. With parent nil it is a
// self-signed root that may sign one level of intermediates (path length 1); with a
// parent it is an intermediate signed by parent that may sign leaves only.
func newAlloyCA(cn string, now time.Time, parent *ca) (*ca, error) {
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
	}
	var cert *x509.Certificate
	if parent == nil {
		tmpl.MaxPathLen = 1
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			return nil, fmt.Errorf("creating CA %q: %w", cn, err)
		}
		if cert, err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
	} else {
		tmpl.MaxPathLenZero = true
		if cert, err = parent.sign(tmpl, key.Public()); err != nil {
			return nil, fmt.Errorf("creating CA %q: %w", cn, err)
		}
	}
	return &ca{cert: cert, key: key}, nil
}

// alloyClientCertTemplate is the client certificate the emulator's AlloyDB issues.
func alloyClientCertTemplate(now, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: "alloydb-client", Organization: []string{"dbcert-agent emulator"}},
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}
