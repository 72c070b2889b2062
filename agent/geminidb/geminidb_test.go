package geminidb_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
	"github.com/dbcert-agent/dbcert-agent/agent/geminidb"
	"github.com/dbcert-agent/dbcert-agent/agent/huaweiauth"
)

const (
	project  = "0123456789abcdef0123456789abcdef"
	instance = "a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5din06"
	target   = project + "/" + instance
)

// The agent's Provider contract.
var _ interface {
	Fetch(ctx context.Context, key crypto.Signer) (*bundle.Bundle, error)
} = (*geminidb.Provider)(nil)

type retryable interface {
	Retryable() bool
	RetryAfter() time.Duration
}

func startEmulator(t *testing.T) *emulator.Emulator {
	t.Helper()
	e, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.CloseHuawei(); _ = e.Close() })
	e.AddHuaweiUser("acct", "ops", "pw-secret-1")
	e.AddGeminiDBInstance(project, instance)
	return e
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func passwordClient(t *testing.T, e *emulator.Emulator) *http.Client {
	t.Helper()
	tr, err := huaweiauth.NewTransport(huaweiauth.Options{
		Region: "cn-north-4", IAMEndpoint: e.URL(),
		UserName: "ops", PasswordFile: writeFile(t, "pw", "pw-secret-1"), DomainName: "acct", ProjectID: project,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func akskClient(t *testing.T, e *emulator.Emulator) *http.Client {
	t.Helper()
	ak, sk := e.HuaweiAKSK()
	tr, err := huaweiauth.NewTransport(huaweiauth.Options{Region: "cn-north-4", AccessKey: ak, SecretKeyFile: writeFile(t, "sk", sk)})
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func newProvider(t *testing.T, e *emulator.Emulator, api *http.Client, dl *http.Client) *geminidb.Provider {
	t.Helper()
	p, err := geminidb.New(geminidb.Options{ProjectID: project, InstanceID: instance, Endpoint: e.URL(), HTTPClient: api, DownloadClient: dl})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func fetch(t *testing.T, p *geminidb.Provider) (*bundle.Bundle, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.Fetch(ctx, nil)
}

func obsRequests(e *emulator.Emulator) []emulator.Request {
	var out []emulator.Request
	for _, r := range e.Requests() {
		if strings.HasPrefix(r.Path, "/nosql-certs/") {
			out = append(out, r)
		}
	}
	return out
}

func TestFetchFormats(t *testing.T) {
	e := startEmulator(t)
	p := newProvider(t, e, passwordClient(t, e), nil)
	for _, f := range []emulator.GeminiDBFormat{emulator.GeminiDBPEM, emulator.GeminiDBZip, emulator.GeminiDBDER} {
		e.SetGeminiDBDownloadFormat(f)
		b, err := fetch(t, p)
		if err != nil {
			t.Fatalf("format %d: %v", f, err)
		}
		if b.HasClientCert() || b.Key != nil || len(b.CAs) != 1 {
			t.Fatalf("format %d: not a CA-only bundle with one CA: %+v", f, b)
		}
		if !bytes.Equal(b.CAPEM(), e.GeminiDBCAPEM(project, instance)) {
			t.Fatalf("format %d: CA differs from the emulator's", f)
		}
		if err := b.Verify(time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDownloadCarriesNoCredentials(t *testing.T) {
	e := startEmulator(t)
	for name, api := range map[string]*http.Client{"password": passwordClient(t, e), "aksk": akskClient(t, e)} {
		p := newProvider(t, e, api, nil)
		if _, err := fetch(t, p); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		obs := obsRequests(e)
		if len(obs) == 0 {
			t.Fatalf("%s: no download request", name)
		}
		h := obs[len(obs)-1].Header
		for _, k := range []string{"X-Auth-Token", "Authorization", "X-Sdk-Date", "X-Project-Id", "X-Security-Token"} {
			if h.Get(k) != "" {
				t.Fatalf("%s: download request carries %s", name, k)
			}
		}
	}
	// The fake storage host refuses credentials, so the check above has teeth.
	leaky := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.Header.Set("X-Auth-Token", "MIIleaked")
		return http.DefaultTransport.RoundTrip(r)
	})}
	_, err := fetch(t, newProvider(t, e, passwordClient(t, e), leaky))
	if err == nil || !strings.Contains(err.Error(), "400 InvalidArgument") {
		t.Fatalf("leaky download client: %v", err)
	}
	// The API client is never used for the download.
	api := passwordClient(t, e)
	if _, err := geminidb.New(geminidb.Options{ProjectID: project, InstanceID: instance, Endpoint: e.URL(), HTTPClient: api, DownloadClient: api}); err == nil {
		t.Fatal("New accepted the API client as download client")
	}
}

// TestAPIRequestHeaders: ListSslCertDownloadAddresses goes out with the headers
// cloud-apis.md §6.1 lists (Content-Type: application/json, as Huawei's SDK sends it,
// though the GET has no body), with either kind of credentials.
func TestAPIRequestHeaders(t *testing.T) {
	e := startEmulator(t)
	for name, api := range map[string]*http.Client{"password": passwordClient(t, e), "aksk": akskClient(t, e)} {
		if _, err := fetch(t, newProvider(t, e, api, nil)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var last *emulator.Request
		for _, r := range e.Requests() {
			if strings.HasSuffix(r.Path, "/ssl-cert/download-link") {
				last = &r
			}
		}
		if last == nil {
			t.Fatalf("%s: no ListSslCertDownloadAddresses request", name)
		}
		if got := last.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("%s: Content-Type = %q, want application/json", name, got)
		}
		if got := last.Header.Get("Accept"); got != "application/json" {
			t.Errorf("%s: Accept = %q, want application/json", name, got)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestRotationVisibleOnNextFetch(t *testing.T) {
	e := startEmulator(t)
	p := newProvider(t, e, passwordClient(t, e), nil)
	b1, err := fetch(t, p)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := fetch(t, p)
	if err != nil {
		t.Fatal(err)
	}
	if !bundle.CAsEqual(b1, b2) {
		t.Fatal("CA changed without rotation")
	}
	e.RotateGeminiDBCA(project, instance)
	b3, err := fetch(t, p)
	if err != nil {
		t.Fatal(err)
	}
	if bundle.CAsEqual(b1, b3) || !bytes.Equal(b3.CAPEM(), e.GeminiDBCAPEM(project, instance)) {
		t.Fatal("rotated CA not seen")
	}
	// The server certificate the emulator issues chains to the downloaded CA.
	certPEM, _, err := e.GeminiDBServerCert(project, instance, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	leaf, _ := x509.ParseCertificate(blk.Bytes)
	pool := x509.NewCertPool()
	pool.AddCert(b3.CAs[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Fatal(err)
	}
}

func TestAPIErrors(t *testing.T) {
	e := startEmulator(t)
	p := newProvider(t, e, passwordClient(t, e), nil)
	for _, c := range []struct {
		name      string
		fault     emulator.Fault
		want      string
		retryable bool
		after     time.Duration
	}{
		{"instance state", emulator.Fault{Status: 403, Body: `{"error_code":"DBS.200019","error_msg":"The instance status does not allow this operation."}`},
			"403 DBS.200019 from ssl-cert/download-link for " + target + ": The instance status does not allow this operation.; the instance's state", false, 0},
		{"apig forbidden", emulator.Fault{Status: 403, Body: `{"error_code":"APIGW.0302","error_msg":"The IAM user is not authorized to access the API.","request_id":"req-1"}`},
			"403 APIGW.0302 from ssl-cert/download-link for " + target + ": The IAM user is not authorized to access the API.; grant the IAM user gaussdbfornosql:instance:listSslCertDownloadAddresses in this project (request id req-1)", false, 0},
		{"nested", emulator.Fault{Status: 400, Body: `{"error":{"code":"DBS.200001","message":"Parameter error."}}`},
			"400 DBS.200001 from ssl-cert/download-link for " + target + ": Parameter error.; the API rejected the request", false, 0},
		{"throttled", emulator.Fault{Status: 429, RetryAfter: "5", Body: `{"error_code":"APIGW.0308","error_msg":"The throttling threshold has been reached"}`},
			"429 APIGW.0308", true, 5 * time.Second},
		{"server", emulator.Fault{Status: 503, Garbage: true}, "503 from ssl-cert/download-link for " + target + ": non-JSON body; server error (retryable)", true, 0},
		{"not json 200", emulator.Fault{Status: 200, Garbage: true}, "200 from ssl-cert/download-link for " + target + ": the response is not the expected JSON", false, 0},
		{"no certs", emulator.Fault{Status: 200, Body: `{"certs":[]}`}, "lists no certificate download link; check that SSL is enabled", false, 0},
		{"bad link", emulator.Fault{Status: 200, Body: `{"certs":[{"category":"international","download_link":"http://obs.example.com/ca.crt"}]}`}, "use https://", false, 0},
		{"conn", emulator.Fault{CloseConn: true}, "calling ssl-cert/download-link for " + target, true, 0},
	} {
		e.ClearFaults()
		c.fault.Match = "ssl-cert/download-link"
		c.fault.Times = 1
		if c.fault.CloseConn {
			c.fault.Times = 0 // net/http retries a GET once on a reused connection
		}
		e.Inject(c.fault)
		_, err := fetch(t, p)
		t.Logf("%s: %v", c.name, err)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v\nwant %q", c.name, err, c.want)
			continue
		}
		var r retryable
		if !errors.As(err, &r) || r.Retryable() != c.retryable || r.RetryAfter() != c.after {
			t.Errorf("%s: retryable/after wrong: %v", c.name, err)
		}
	}
}

func TestUnknownInstanceAndBadCredentials(t *testing.T) {
	e := startEmulator(t)
	p, err := geminidb.New(geminidb.Options{ProjectID: project, InstanceID: "nope", Endpoint: e.URL(), HTTPClient: passwordClient(t, e)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = fetch(t, p)
	want := "404 DBS.200002 from ssl-cert/download-link for " + project + "/nope: The DB instance does not exist.; check project_id and instance_id"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("%v\nwant %q", err, want)
	}
	// A token file holding a token the API does not know: 401 after a re-read.
	tr, _ := huaweiauth.NewTransport(huaweiauth.Options{TokenFile: writeFile(t, "tok", "MIIunknowntoken")})
	p = newProvider(t, e, &http.Client{Transport: tr}, nil)
	_, err = fetch(t, p)
	var r retryable
	if err == nil || !strings.Contains(err.Error(), "401 APIGW.0301 from ssl-cert/download-link") ||
		!strings.Contains(err.Error(), "credentials were rejected") || strings.Contains(err.Error(), "MIIunknowntoken") ||
		!errors.As(err, &r) || r.Retryable() {
		t.Fatalf("bad token: %v", err)
	}
	// IAM refusing the password surfaces as IAM's sentence, not a network error.
	e.AddHuaweiUser("acct", "ops", "changed")
	_, err = fetch(t, newProvider(t, e, passwordClient(t, e), nil))
	if err == nil || !strings.HasPrefix(err.Error(), "401 from IAM token request") || errors.As(err, new(*huaweiauth.NetError)) {
		t.Fatalf("IAM refusal: %v", err)
	}
}

func TestDownloadErrors(t *testing.T) {
	e := startEmulator(t)
	p := newProvider(t, e, passwordClient(t, e), nil)
	big := strings.Repeat("A", geminidb.MaxBody+10)
	for _, c := range []struct {
		name      string
		fault     emulator.Fault
		want      string
		retryable bool
	}{
		{"too big", emulator.Fault{Body: big}, "exceeds the 1 MiB limit", false},
		{"garbage", emulator.Fault{Garbage: true}, "neither PEM, DER nor a zip", false},
		{"not a cert", emulator.Fault{Body: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, "does not parse", false},
		{"forbidden", emulator.Fault{Status: 403}, "403 AccessDenied from the CA download from 127.0.0.1:", false},
		{"storage down", emulator.Fault{Status: 503}, "503 ServiceUnavailable", true},
		{"conn", emulator.Fault{CloseConn: true}, "calling the CA download for " + target, true},
	} {
		e.ClearFaults()
		c.fault.Match = "GET /nosql-certs/"
		c.fault.Times = 1
		if c.fault.CloseConn {
			c.fault.Times = 0 // net/http retries a GET once on a reused connection
		}
		e.Inject(c.fault)
		_, err := fetch(t, p)
		t.Logf("%s: %v", c.name, err)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v\nwant %q", c.name, err, c.want)
			continue
		}
		var r retryable
		if !errors.As(err, &r) || r.Retryable() != c.retryable {
			t.Errorf("%s: retryable wrong: %v", c.name, err)
		}
		if !c.retryable && c.name != "forbidden" && !errors.Is(err, bundle.ErrInvalid) {
			t.Errorf("%s: does not wrap bundle.ErrInvalid: %v", c.name, err)
		}
	}
}

func TestCanceled(t *testing.T) {
	e := startEmulator(t)
	p := newProvider(t, e, passwordClient(t, e), nil)
	e.Inject(emulator.Fault{Match: "ssl-cert/download-link", Delay: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := p.Fetch(ctx, nil)
	var r retryable
	if err == nil || !errors.As(err, &r) || r.Retryable() {
		t.Fatalf("canceled: %v", err)
	}
}

// stub serves a download-link answer and the files it points at.
func stub(t *testing.T, certsJSON func(dl string) string, file []byte) (*geminidb.Provider, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	dl := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "trap") {
			t.Errorf("downloaded the wrong category: %s", r.URL.Path)
		}
		hits.Add(1)
		_, _ = w.Write(file)
	}))
	t.Cleanup(dl.Close)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, certsJSON(dl.URL))
	}))
	t.Cleanup(api.Close)
	p, err := geminidb.New(geminidb.Options{ProjectID: project, InstanceID: instance, Endpoint: api.URL, HTTPClient: api.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return p, &hits
}

func TestCategoryPick(t *testing.T) {
	caPEM, _ := testCA(t, "stub CA")
	for _, c := range []struct {
		name, body string
		ok         bool
	}{
		{"international among others", `{"certs":[{"category":"national","download_link":"DL/trap.crt"},{"category":"international","download_link":"DL/ca.crt"}]}`, true},
		{"casing", `{"certs":[{"category":"national","download_link":"DL/trap"},{"category":"INTERNATIONAL","download_link":"DL/ca.crt"}]}`, true},
		{"no category", `{"certs":[{"download_link":"DL/ca.crt"}]}`, true},
		{"camelCase link", `{"certs":[{"category":"international","downloadLink":"DL/ca.crt"}]}`, true},
		{"single other", `{"certs":[{"category":"global","download_link":"DL/ca.crt"}]}`, true},
		{"only national", `{"certs":[{"category":"national","download_link":"DL/trap"}]}`, false},
		{"absent", `{}`, false},
	} {
		p, hits := stub(t, func(dl string) string { return strings.ReplaceAll(c.body, "DL", dl) }, caPEM)
		b, err := fetch(t, p)
		if c.ok != (err == nil) {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if c.ok && (len(b.CAs) != 1 || hits.Load() != 1) {
			t.Errorf("%s: %d CAs, %d downloads", c.name, len(b.CAs), hits.Load())
		}
	}
}

func TestDefaults(t *testing.T) {
	api := &http.Client{}
	if _, err := geminidb.New(geminidb.Options{ProjectID: project, InstanceID: instance, Region: "cn-north-4", HTTPClient: api}); err != nil {
		t.Fatal(err)
	}
	for _, o := range []geminidb.Options{
		{ProjectID: project, InstanceID: instance, HTTPClient: api},
		{ProjectID: "", InstanceID: instance, Region: "cn-north-4", HTTPClient: api},
		{ProjectID: project, InstanceID: "a/b", Region: "cn-north-4", HTTPClient: api},
		{ProjectID: project, InstanceID: instance, Region: "cn-north-4"},
		{ProjectID: project, InstanceID: instance, Endpoint: "http://gaussdb.example.com", HTTPClient: api},
	} {
		if _, err := geminidb.New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

func testCA(t *testing.T, cn string) (pemData, der []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), der
}

func makeZip(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, data := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParseCAFile(t *testing.T) {
	a, aDER := testCA(t, "A")
	b, bDER := testCA(t, "B")
	for _, c := range []struct {
		name string
		data []byte
		n    int
	}{
		{"pem", a, 1},
		{"pem two", append(append([]byte{}, a...), b...), 2},
		{"pem with text", append([]byte("subject=CN = A\nissuer=CN = A\n"), a...), 1},
		{"pem crlf bom", append([]byte("\xef\xbb\xbf"), bytes.ReplaceAll(a, []byte("\n"), []byte("\r\n"))...), 1},
		{"pem with key block ignored", append(append([]byte{}, a...), []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")...), 1},
		{"der", aDER, 1},
		{"der two", append(append([]byte{}, aDER...), bDER...), 2},
		{"zip", makeZip(t, map[string][]byte{"ca.pem": a, "readme.txt": []byte("hi")}), 1},
		{"zip dir and cer", makeZip(t, map[string][]byte{"GeminiDB/ca.CER": aDER, "__MACOSX/._ca.CER": []byte("junk")}), 1},
		{"zip two files dedup", makeZip(t, map[string][]byte{"ca.pem": a, "ca-bundle.crt": append(append([]byte{}, a...), b...)}), 2},
		{"zip none", makeZip(t, map[string][]byte{"readme.txt": a}), 0},
		{"zip bad", makeZip(t, map[string][]byte{"ca.crt": []byte("nope")}), 0},
		{"empty", []byte("  \n"), 0},
		{"text", []byte("hello"), 0},
		{"truncated zip", []byte("PK\x03\x04garbage"), 0},
		{"no cert block", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0},
		{"der garbage", []byte{0x30, 0x03, 0x01, 0x01, 0x00}, 0},
	} {
		certs, err := geminidb.ParseCAFile(c.data)
		if c.n == 0 {
			if err == nil || !errors.Is(err, bundle.ErrInvalid) {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err != nil || len(certs) != c.n {
			t.Errorf("%s: %d certs, %v", c.name, len(certs), err)
		}
	}
	many := bytes.Repeat(a, bundle.MaxCerts+1)
	if _, err := geminidb.ParseCAFile(many); err == nil {
		t.Error("accepted more than MaxCerts")
	}
}
