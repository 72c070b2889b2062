package cloudsql

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/gapi"
)

// FuzzDecodeResponses: any generateEphemeralCert and connectSettings bodies either make
// a bundle whose leaf is for our key and whose CAs parse, or a permanent error; the
// address helpers never panic.
func FuzzDecodeResponses(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "c"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0), IsCA: true, BasicConstraintsValid: true}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	derOther, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, other.Public(), other)
	p := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	po := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: derOther}))
	cert := func(s string) []byte {
		b, _ := json.Marshal(map[string]any{"ephemeralCert": map[string]string{"cert": s}})
		return b
	}
	settings := func(s string) []byte {
		b, _ := json.Marshal(map[string]any{"serverCaCert": map[string]string{"cert": s}, "databaseVersion": "POSTGRES_15",
			"ipAddresses": []map[string]string{{"type": "PRIMARY", "ipAddress": "1.2.3.4"}, {"type": "PRIVATE", "ipAddress": "10.0.0.1"}},
			"pscEnabled":  true, "dnsName": "a.b.sql.goog.",
			"dnsNames": []map[string]string{{"name": "a.b.sql.goog.", "connectionType": "PRIVATE_SERVICE_CONNECT", "dnsScope": "INSTANCE"}}})
		return b
	}
	f.Add(cert(p), settings(p+po))
	f.Add(cert(po), settings(p))
	f.Add(cert(p+p), settings("garbage"))
	f.Add([]byte(`{"ephemeralCert":{}}`), []byte(`{}`))
	f.Add([]byte(`<html>`), []byte(`null`))
	f.Fuzz(func(t *testing.T, certBody, settingsBody []byte) {
		var cr ephemeralCertResponse
		var cs connectSettings
		if json.Unmarshal(certBody, &cr) != nil || json.Unmarshal(settingsBody, &cs) != nil {
			return
		}
		for _, typ := range []string{"", "public", "private", "psc"} {
			_ = cs.address(typ)
		}
		_ = gapi.NoAddress("c", "t", "public", cs.address)
		p := &Provider{target: "p/i"}
		b, err := p.assemble(key, cr, cs)
		if err != nil {
			if isRetryable(err) {
				t.Fatalf("a bad answer is retryable: %v", err)
			}
			return
		}
		if len(b.Chain) != 1 || len(b.CAs) == 0 || !b.Chain[0].PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
			t.Fatalf("accepted a bundle with %d certificates, %d CAs", len(b.Chain), len(b.CAs))
		}
	})
}
