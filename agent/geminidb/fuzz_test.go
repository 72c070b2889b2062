package geminidb

import (
	"archive/zip"
	"bytes"
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
)

func seedCert(f *testing.F) []byte {
	f.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "seed CA"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		f.Fatal(err)
	}
	return der
}

func zipOf(f *testing.F, files map[string][]byte) []byte {
	f.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, data := range files {
		w, _ := zw.Create(name)
		w.Write(data)
	}
	zw.Close()
	return buf.Bytes()
}

// FuzzParseCAFile: whatever the download link serves (PEM, DER, zip, garbage), the parser
// never panics, and what it accepts is 1..MaxCerts certificates.
func FuzzParseCAFile(f *testing.F) {
	der := seedCert(f)
	p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	f.Add(p)
	f.Add(der)
	f.Add(append(append([]byte{}, der...), der...))
	f.Add(append([]byte("\xef\xbb\xbf"), p...))
	f.Add(zipOf(f, map[string][]byte{"ca.pem": p, "readme.txt": []byte("hi")}))
	f.Add(zipOf(f, map[string][]byte{"certs/ca.crt": der, "__MACOSX/._ca.crt": []byte("x")}))
	f.Add([]byte("<html>502</html>"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("PK\x03\x04garbage"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCAFile(data)
		if err != nil {
			if certs != nil {
				t.Fatal("certificates with an error")
			}
			return
		}
		if len(certs) == 0 || len(certs) > bundle.MaxCerts {
			t.Fatalf("%d certificates accepted", len(certs))
		}
	})
}

// FuzzDownloadLinkResponse: any JSON body of ssl-cert/download-link either yields a link
// the agent may fetch (https, or http to loopback) or an error; never a panic.
func FuzzDownloadLinkResponse(f *testing.F) {
	f.Add([]byte(`{"certs":[{"category":"international","download_link":"https://obs.cn-north-4.myhuaweicloud.com/nosql-certs/ca.crt"}]}`))
	f.Add([]byte(`{"certs":[{"category":"national","download_link":"https://x/a"},{"category":"International","downloadLink":"http://127.0.0.1:9/a"}]}`))
	f.Add([]byte(`{"certs":[{"category":"international","download_link":"http://obs.example.com/ca.crt"}]}`))
	f.Add([]byte(`{"certs":[]}`))
	f.Add([]byte(`{"certs":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var lr linkResponse
		if json.Unmarshal(data, &lr) != nil {
			return
		}
		c, err := pickCert(lr.Certs)
		if err != nil {
			return
		}
		if c.link() == "" {
			t.Fatal("picked an entry without a link")
		}
	})
}
