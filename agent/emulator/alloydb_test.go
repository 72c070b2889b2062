package emulator_test

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
)

const (
	alloyName = "projects/my-proj/locations/us-central1/clusters/analytics"
	alloyPath = "v1beta/" + alloyName + ":generateClientCertificate"
)

func startAlloy(t *testing.T, o emulator.Options) *emulator.Emulator {
	t.Helper()
	e := start(t, o)
	e.AddAlloyDBCluster("my-proj", "us-central1", "analytics")
	return e
}

// alloyBody builds a request body from field/value pairs.
func alloyBody(kv ...any) string {
	m := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// alloyAnswer is a generateClientCertificate answer, parsed.
type alloyAnswer struct {
	chain []*x509.Certificate
	ca    []byte
	raw   map[string]any
}

func (r response) alloy(t *testing.T) alloyAnswer {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var b struct {
		PemCertificateChain []string `json:"pemCertificateChain"`
		CaCert              string   `json:"caCert"`
	}
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatal(err)
	}
	a := alloyAnswer{ca: []byte(b.CaCert), raw: r.json(t)}
	for _, p := range b.PemCertificateChain {
		blk, _ := pem.Decode([]byte(p))
		if blk == nil {
			t.Fatalf("chain element is not PEM: %q", p)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		a.chain = append(a.chain, c)
	}
	return a
}

// alloyErr checks an AlloyDB error body: code, status, and no legacy errors[] array.
func (r response) alloyErr(t *testing.T, code int, status, msgPart string) map[string]any {
	t.Helper()
	var b struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(r.body, &b); err != nil || b.Error == nil {
		t.Fatalf("status %d, not a Google error body: %s", r.status, r.body)
	}
	if r.status != code || b.Error["code"] != float64(code) || b.Error["status"] != status {
		t.Errorf("got %d %v %v, want %d %s: %s", r.status, b.Error["code"], b.Error["status"], code, status, r.body)
	}
	if _, ok := b.Error["errors"]; ok {
		t.Errorf("AlloyDB error with a legacy errors[] array: %s", r.body)
	}
	if msg, _ := b.Error["message"].(string); !strings.Contains(msg, msgPart) {
		t.Errorf("message %q, want …%s…", msg, msgPart)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	return b.Error
}

func TestAlloyDBGenerateClientCertificate(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Second)}
	e := startAlloy(t, emulator.Options{Now: clk.Now})
	tok, _ := e.AccessToken()
	cases := []struct {
		name, path, body string
	}{
		{"v1beta PKCS#1", alloyPath, alloyBody("parent", alloyName, "publicKey", pubPEM(t, "RSA PUBLIC KEY", true))},
		{"v1 PKIX under RSA PUBLIC KEY", "v1/" + alloyName + ":generateClientCertificate",
			alloyBody("parent", alloyName, "publicKey", pubPEM(t, "RSA PUBLIC KEY", false), "useMetadataExchange", false)},
		{"v1alpha PUBLIC KEY", "v1alpha/" + alloyName + ":generateClientCertificate",
			alloyBody("parent", alloyName, "publicKey", pubPEM(t, "PUBLIC KEY", false), "certDuration", "3600s",
				"requestId", "0b3a2a7e-8d43-4d55-9a4c-2f6f8c1e3b11")},
		{"query parameters ignored", alloyPath + "?$alt=json;enum-encoding=int",
			alloyBody("parent", alloyName, "publicKey", pubPEM(t, "RSA PUBLIC KEY", true))},
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(e.AlloyDBClientRootPEM("my-proj", "us-central1", "analytics"))
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := call(t, e, "POST", tc.path, tok, tc.body).alloy(t)
			if len(a.chain) != 3 {
				t.Fatalf("chain of %d, want leaf, intermediate, root", len(a.chain))
			}
			leaf, inter, root := a.chain[0], a.chain[1], a.chain[2]
			if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(&clientKey().PublicKey) {
				t.Error("leaf is not for our key")
			}
			if string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})) !=
				string(e.AlloyDBClientRootPEM("my-proj", "us-central1", "analytics")) {
				t.Error("chain[2] is not AlloyDBClientRootPEM")
			}
			if got := leaf.NotAfter.Sub(clk.Now()); got != time.Hour {
				t.Errorf("lifetime %v, want the default 1h", got)
			}
			inters := x509.NewCertPool()
			inters.AddCert(inter)
			opts := x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
			if _, err := leaf.Verify(opts); err != nil {
				t.Errorf("leaf does not verify via the intermediate: %v", err)
			}
			if string(a.ca) != string(e.AlloyDBCAPEM("my-proj", "us-central1", "analytics")) {
				t.Error("caCert is not AlloyDBCAPEM")
			}
			if e.AlloyDBIssued() != i+1 || e.Issued() != i+1 {
				t.Errorf("AlloyDBIssued %d, Issued %d, want %d", e.AlloyDBIssued(), e.Issued(), i+1)
			}
		})
	}
}

func TestAlloyDBBadRequests(t *testing.T) {
	e := startAlloy(t, emulator.Options{})
	tok, _ := e.AccessToken()
	pk := pubPEM(t, "RSA PUBLIC KEY", true)
	csr := csrPEM(t)
	cases := []struct {
		name, path, body, msg string
	}{
		{"snake_case public_key", alloyPath, alloyBody("parent", alloyName, "public_key", pk), `Unknown name "public_key"`},
		{"snake_case alongside camelCase", alloyPath, alloyBody("parent", alloyName, "publicKey", pk, "cert_duration", "3600s"), `Unknown name "cert_duration"`},
		{"no parent", alloyPath, alloyBody("publicKey", pk), "does not match the resource name"},
		{"other parent", alloyPath, alloyBody("parent", "projects/my-proj/locations/us-central1/clusters/other", "publicKey", pk), "does not match"},
		{"no key", alloyPath, alloyBody("parent", alloyName), "public_key is required"},
		{"not PEM", alloyPath, alloyBody("parent", alloyName, "publicKey", "hello"), "not a valid PEM public key"},
		{"not JSON", alloyPath, "{", "Invalid JSON payload"},
		{"wrong type", alloyPath, alloyBody("parent", alloyName, "publicKey", pk, "useMetadataExchange", "yes"), "Invalid JSON payload"},
		{"bad certDuration", alloyPath, alloyBody("parent", alloyName, "publicKey", pk, "certDuration", "1h"), "cert_duration"},
		{"bad requestId", alloyPath, alloyBody("parent", alloyName, "publicKey", pk, "requestId", "abc"), "request_id"},
		{"zero requestId", alloyPath, alloyBody("parent", alloyName, "publicKey", pk, "requestId", "00000000-0000-0000-0000-000000000000"), "request_id"},
		{"pemCsr is not in v1", "v1/" + alloyName + ":generateClientCertificate", alloyBody("parent", alloyName, "pemCsr", csr), `Unknown name "pemCsr"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			call(t, e, "POST", tc.path, tok, tc.body).alloyErr(t, 400, "INVALID_ARGUMENT", tc.msg)
		})
	}
	if a := call(t, e, "POST", alloyPath, tok, alloyBody("parent", alloyName, "pemCsr", csr)).alloy(t); len(a.chain) != 3 {
		t.Error("pemCsr on v1beta")
	}
	if n := e.AlloyDBIssued(); n != 1 {
		t.Errorf("AlloyDBIssued() = %d after bad requests, want 1", n)
	}
}

func csrPEM(t *testing.T) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, clientKey())
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func TestAlloyDBAuthAndNotFound(t *testing.T) {
	e := startAlloy(t, emulator.Options{})
	tok, _ := e.AccessToken()
	sqlOnly, _ := e.AccessToken(emulator.ScopeSQLAdmin)
	body := alloyBody("parent", alloyName, "publicKey", pubPEM(t, "RSA PUBLIC KEY", true))

	r := call(t, e, "POST", alloyPath, "", body)
	r.alloyErr(t, 401, "UNAUTHENTICATED", "missing required authentication credential")
	if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Error("no WWW-Authenticate")
	}
	call(t, e, "POST", alloyPath, "ya29.unknown", body).alloyErr(t, 401, "UNAUTHENTICATED", "invalid authentication credentials")
	call(t, e, "POST", alloyPath, sqlOnly, body).alloyErr(t, 403, "PERMISSION_DENIED", "insufficient authentication scopes")

	nope := "projects/my-proj/locations/us-central1/clusters/nope"
	obj := call(t, e, "POST", "v1/"+nope+":generateClientCertificate", tok, alloyBody("parent", nope, "publicKey", pubPEM(t, "RSA PUBLIC KEY", true))).
		alloyErr(t, 404, "NOT_FOUND", "Resource '"+nope+"' was not found")
	details, _ := obj["details"].([]any)
	if len(details) != 1 || details[0].(map[string]any)["resourceName"] != nope ||
		details[0].(map[string]any)["@type"] != "type.googleapis.com/google.rpc.ResourceInfo" {
		t.Errorf("details %v, want a ResourceInfo", obj["details"])
	}
}

func TestAlloyDBRouting(t *testing.T) {
	e := startAlloy(t, emulator.Options{})
	tok, _ := e.AccessToken()
	body := alloyBody("parent", alloyName, "publicKey", pubPEM(t, "RSA PUBLIC KEY", true))
	notFound := []struct{ method, path string }{
		{"GET", alloyPath},
		{"POST", "v2/" + alloyName + ":generateClientCertificate"},
		{"POST", "v1beta/" + alloyName + ":generateEphemeralCert"},
		{"POST", "v1beta/" + alloyName + "/instances/x:generateClientCertificate"},
		{"POST", "v1beta/projects/my-proj/clusters/analytics:generateClientCertificate"},
	}
	for _, c := range notFound {
		if r := call(t, e, c.method, c.path, tok, body); r.status != 404 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
			t.Errorf("%s %s: %d %s", c.method, c.path, r.status, r.header.Get("Content-Type"))
		}
	}
	// Cloud SQL v1 shares the /v1/projects/ prefix and still works.
	if r := call(t, e, "GET", "v1/projects/my-proj/instances/orders-pg/connectSettings", tok, ""); r.status != 200 {
		t.Errorf("Cloud SQL v1 connectSettings: %d %s", r.status, r.body)
	}
	// A domain-scoped project, escaped on the wire, is matched decoded.
	e.AddAlloyDBCluster("example.com:proj", "us-central1", "analytics")
	name := "projects/example.com:proj/locations/us-central1/clusters/analytics"
	r := call(t, e, "POST", "v1/projects/example.com%3Aproj/locations/us-central1/clusters/analytics:generateClientCertificate", tok,
		alloyBody("parent", name, "publicKey", pubPEM(t, "RSA PUBLIC KEY", true)))
	if len(r.alloy(t).chain) != 3 {
		t.Error("domain-scoped project")
	}
}

func TestAlloyDBRequestIDDedup(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Second)}
	e := startAlloy(t, emulator.Options{Now: clk.Now})
	tok, _ := e.AccessToken()
	const id = "7c0e2a3e-5a6b-4c1d-9e8f-0a1b2c3d4e5f"
	body := alloyBody("parent", alloyName, "publicKey", pubPEM(t, "RSA PUBLIC KEY", true), "requestId", id)
	first := call(t, e, "POST", alloyPath, tok, body)
	a1 := first.alloy(t)
	again := call(t, e, "POST", alloyPath, tok, body)
	if string(again.body) != string(first.body) {
		t.Error("a repeated requestId got a different answer")
	}
	if e.AlloyDBIssued() != 1 {
		t.Errorf("AlloyDBIssued() = %d, want 1", e.AlloyDBIssued())
	}
	other := call(t, e, "POST", alloyPath, tok, alloyBody("parent", alloyName, "publicKey", pubPEM(t, "RSA PUBLIC KEY", true),
		"requestId", "7c0e2a3e-5a6b-4c1d-9e8f-0a1b2c3d4e60")).alloy(t)
	if other.chain[0].Equal(a1.chain[0]) || e.AlloyDBIssued() != 2 {
		t.Error("another requestId got the same certificate")
	}
	clk.Add(61 * time.Minute)
	tok, _ = e.AccessToken() // the old one expired
	late := call(t, e, "POST", alloyPath, tok, body).alloy(t)
	if late.chain[0].Equal(a1.chain[0]) || e.AlloyDBIssued() != 3 {
		t.Error("a requestId older than 60 minutes was still deduplicated")
	}
}

func TestAlloyDBCertDuration(t *testing.T) {
	pk := pubPEM(t, "RSA PUBLIC KEY", true)
	cases := []struct {
		name     string
		lifetime time.Duration // Options.CertLifetime
		dur      string
		want     time.Duration
	}{
		{"default", 0, "", time.Hour},
		{"honoured 2h", 0, "7200s", 2 * time.Hour},
		{"honoured 24h", 0, "86400s", 24 * time.Hour},
		{"honoured fractional", 0, "3600.5s", time.Hour + 500*time.Millisecond},
		{"too short ignored", 0, "1800s", time.Hour},
		{"too long ignored", 0, "90000s", time.Hour},
		{"negative ignored", 0, "-3600s", time.Hour},
		{"longer CertLifetime as default", 3 * time.Hour, "", 3 * time.Hour},
		{"hint beats a long CertLifetime", 3 * time.Hour, "3600s", time.Hour},
		{"short CertLifetime wins", 20 * time.Second, "3600s", 20 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := &clock{t: time.Now().Truncate(time.Second)}
			e := startAlloy(t, emulator.Options{Now: clk.Now, CertLifetime: tc.lifetime})
			tok, _ := e.AccessToken()
			kv := []any{"parent", alloyName, "publicKey", pk}
			if tc.dur != "" {
				kv = append(kv, "certDuration", tc.dur)
			}
			a := call(t, e, "POST", alloyPath, tok, alloyBody(kv...)).alloy(t)
			if got := a.chain[0].NotAfter.Sub(clk.Now()); got != tc.want.Truncate(time.Second) {
				t.Errorf("lifetime %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAlloyDBServerCertAndFaults(t *testing.T) {
	e := startAlloy(t, emulator.Options{})
	certPEM, keyPEM, err := e.AlloyDBServerCert("my-proj", "us-central1", "analytics", []string{"127.0.0.1", "localhost"})
	if err != nil || len(keyPEM) == 0 {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.AlloyDBCAPEM("my-proj", "us-central1", "analytics"))
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Errorf("server cert: %v", err)
	}
	if _, _, err := e.AlloyDBServerCert("my-proj", "us-central1", "nope", nil); err == nil {
		t.Error("server cert for an unknown cluster")
	}
	if e.AlloyDBCAPEM("my-proj", "us-central1", "nope") != nil || e.AlloyDBClientRootPEM("x", "y", "z") != nil {
		t.Error("PEM for an unknown cluster")
	}

	tok, _ := e.AccessToken()
	body := alloyBody("parent", alloyName, "publicKey", pubPEM(t, "RSA PUBLIC KEY", true))
	e.Inject(emulator.Fault{Match: "POST /v1beta/", Status: 503, RetryAfter: "4", Body: emulator.AlloyDBErrorBody(503), Times: 1})
	e.Inject(emulator.Fault{Match: "generateClientCertificate", Status: 429, Times: 1})
	r := call(t, e, "POST", alloyPath, tok, body)
	r.alloyErr(t, 503, "UNAVAILABLE", "currently unavailable")
	if r.header.Get("Retry-After") != "4" {
		t.Error("no Retry-After")
	}
	if r := call(t, e, "POST", alloyPath, tok, body); r.status != 429 {
		t.Errorf("second fault: %d", r.status)
	}
	if r := call(t, e, "POST", alloyPath, tok, body); r.status != 200 || e.AlloyDBIssued() != 1 {
		t.Errorf("after faults: %d, issued %d", r.status, e.AlloyDBIssued())
	}
	for _, code := range []int{400, 401, 403, 404, 409, 429, 500, 501, 503, 504, 418} {
		var b struct {
			Error struct {
				Code   int
				Status string
				Errors []any
			}
		}
		if err := json.Unmarshal([]byte(emulator.AlloyDBErrorBody(code)), &b); err != nil || b.Error.Code != code ||
			(code != 418 && b.Error.Status == "") || b.Error.Errors != nil {
			t.Errorf("AlloyDBErrorBody(%d): %+v %v", code, b, err)
		}
	}
}
