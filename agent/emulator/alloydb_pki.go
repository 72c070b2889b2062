package emulator

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"time"
)

// newAlloyCA makes an ECDSA P-256 CA for an AlloyDB cluster. With parent nil it is a
// self-signed root that may sign one level of intermediates (path length 1); with a
// parent it is an intermediate signed by parent that may sign leaves only.
func newAlloyCA(cn string, now time.Time, parent *ca) (*ca, error) {
	if parent == nil {
		return newCertAuthority(cn, now, nil, 1)
	}
	return newCertAuthority(cn, now, parent, 0)
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
