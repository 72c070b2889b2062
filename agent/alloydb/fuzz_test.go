package alloydb

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

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/gapi"
)

// FuzzDecodeResponses: any generateClientCertificate and connectionInfo bodies either
// make a bundle whose leaf is for our key, or a permanent error; never a panic.
func FuzzDecodeResponses(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caT, caT, caKey.Public(), caKey)
	ca, _ := x509.ParseCertificate(caDER)
	leafT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0)}
	leafDER, _ := x509.CreateCertificate(rand.Reader, leafT, ca, key.Public(), caKey)
	enc := func(d []byte) string { return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})) }
	resp := func(chain []string, ca string) []byte {
		b, _ := json.Marshal(map[string]any{"pemCertificateChain": chain, "caCert": ca})
		return b
	}
	info := []byte(`{"ipAddress":"10.1.2.3","publicIpAddress":"34.5.6.7","pscDnsName":"x.alloydb-psc.goog."}`)
	f.Add(resp([]string{enc(leafDER), enc(caDER)}, enc(caDER)), info)
	f.Add(resp([]string{enc(caDER), enc(leafDER)}, enc(caDER)), []byte(`{"ip_address":"10.0.0.1"}`))
	f.Add([]byte(`{"pem_certificate_chain":["x"],"ca_cert":"y"}`), []byte(`{}`))
	f.Add([]byte(`{}`), []byte(`null`))
	f.Fuzz(func(t *testing.T, body, infoBody []byte) {
		var ci connectionInfo
		if json.Unmarshal(infoBody, &ci) == nil {
			for _, typ := range []string{"public", "private", "psc"} {
				_ = ci.address(typ)
			}
			_ = gapi.NoAddress("c", "t", "public", ci.address)
		}
		var r generateResponse
		if json.Unmarshal(body, &r) != nil {
			return
		}
		p := &Provider{target: "p/l/c"}
		b, err := p.assemble(key, r)
		if err != nil {
			if re, ok := err.(interface{ Retryable() bool }); !ok || re.Retryable() {
				t.Fatalf("a bad answer is not a permanent error: %v", err)
			}
			return
		}
		if len(b.Chain) == 0 || len(b.CAs) == 0 || !bundle.PublicKeysEqual(b.Chain[0].PublicKey, key.Public()) {
			t.Fatalf("accepted a bundle with %d certificates, %d CAs", len(b.Chain), len(b.CAs))
		}
	})
}
