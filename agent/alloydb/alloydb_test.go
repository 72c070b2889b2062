package alloydb

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
	"github.com/dbcert-agent/dbcert-agent/agent/wire"
)

// fetcher is the agent's Provider contract (defined in package agent, not imported here).
type fetcher interface {
	Fetch(ctx context.Context, key crypto.Signer) (*bundle.Bundle, error)
}

var _ fetcher = (*Provider)(nil)

// retryErr is how the agent sees provider errors.
type retryErr interface {
	error
	Retryable() bool
	RetryAfter() time.Duration
}

const (
	project  = "my-proj"
	location = "us-central1"
	cluster  = "analytics"
	target   = project + "/" + location + "/" + cluster
	parent   = "projects/" + project + "/locations/" + location + "/clusters/" + cluster
)

var (
	keyOnce  = sync.OnceValue(func() *rsa.PrivateKey { return mustKey() })
	key2Once = sync.OnceValue(func() *rsa.PrivateKey { return mustKey() })
)

func mustKey() *rsa.PrivateKey {
	k, err := bundle.NewKey()
	if err != nil {
		panic(err)
	}
	return k
}

// clock is a settable emulator clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	emu    *emulator.Emulator
	clock  *clock
	client *http.Client
}

// newEnv starts an emulator with my-proj/us-central1/analytics and an HTTP client
// authenticated through the real oauth2 JWT-bearer flow against it.
func newEnv(t *testing.T, o emulator.Options, scopes ...string) *env {
	t.Helper()
	clk := &clock{t: time.Now()}
	o.Now = clk.Now
	emu, err := emulator.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	emu.AddAlloyDBCluster(project, location, cluster)
	if len(scopes) == 0 {
		scopes = []string{emulator.ScopeCloudPlatform}
	}
	return &env{emu: emu, clock: clk, client: saClient(t, emu, scopes...)}
}

func saClient(t *testing.T, emu *emulator.Emulator, scopes ...string) *http.Client {
	t.Helper()
	js, err := emu.ServiceAccountJSON("agent@my-proj.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	creds, err := google.CredentialsFromJSON(ctx, js, scopes...)
	if err != nil {
		t.Fatal(err)
	}
	return oauth2.NewClient(ctx, creds.TokenSource)
}

func (e *env) provider(t *testing.T, o Options) *Provider {
	t.Helper()
	if o.Project == "" {
		o.Project = project
	}
	if o.Location == "" {
		o.Location = location
	}
	if o.Cluster == "" {
		o.Cluster = cluster
	}
	if o.Endpoint == "" {
		o.Endpoint = e.emu.URL()
	}
	if o.HTTPClient == nil {
		o.HTTPClient = e.client
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// apiRequests are the recorded requests other than the token endpoint's.
func (e *env) apiRequests() []emulator.Request {
	var out []emulator.Request
	for _, r := range e.emu.Requests() {
		if r.Path != "/token" {
			out = append(out, r)
		}
	}
	return out
}

// lastBody decodes the body of the last API request.
func (e *env) lastBody(t *testing.T) map[string]any {
	t.Helper()
	reqs := e.apiRequests()
	if len(reqs) == 0 {
		t.Fatal("no API request recorded")
	}
	var m map[string]any
	if err := json.Unmarshal(reqs[len(reqs)-1].Body, &m); err != nil {
		t.Fatalf("request body: %v", err)
	}
	return m
}

func fetch(t *testing.T, p *Provider, key crypto.Signer) (*bundle.Bundle, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.Fetch(ctx, key)
}

func TestFetchSuccess(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	cases := []struct {
		name, version, endpoint, path string
	}{
		{"v1beta default", "", e.emu.URL(), "/v1beta/" + parent + ":generateClientCertificate"},
		{"v1beta no trailing slash", V1Beta, strings.TrimSuffix(e.emu.URL(), "/"), "/v1beta/" + parent + ":generateClientCertificate"},
		{"v1", V1, e.emu.URL(), "/v1/" + parent + ":generateClientCertificate"},
		{"v1alpha", V1Alpha, e.emu.URL(), "/v1alpha/" + parent + ":generateClientCertificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.apiRequests())
			key := keyOnce()
			b, err := fetch(t, e.provider(t, Options{APIVersion: tc.version, Endpoint: tc.endpoint}), key)
			if err != nil {
				t.Fatal(err)
			}
			checkBundle(t, e.emu, b, key)
			reqs := e.apiRequests()[before:]
			if len(reqs) != 1 {
				t.Fatalf("got %d API requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != http.MethodPost || r.Path != tc.path {
				t.Errorf("request %s %s, want POST %s", r.Method, r.Path, tc.path)
			}
			if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") { // value deliberately not printed
				t.Error("no bearer token")
			}
			if ua := r.Header.Get("User-Agent"); ua != wire.UserAgent() {
				t.Errorf("User-Agent %q", ua)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
	if got := e.emu.AlloyDBIssued(); got != len(cases) {
		t.Errorf("AlloyDBIssued() = %d, want %d", got, len(cases))
	}
}

// checkBundle checks key, chain [leaf, intermediate] that verifies against the
// emulator's client root alone, and caCert kept as the CAs.
func checkBundle(t *testing.T, emu *emulator.Emulator, b *bundle.Bundle, key crypto.Signer) {
	t.Helper()
	if b.Key != key {
		t.Error("bundle key is not the key we passed")
	}
	if len(b.Chain) != 2 {
		t.Fatalf("chain has %d certificates, want leaf and intermediate", len(b.Chain))
	}
	if !bundle.PublicKeysEqual(b.Chain[0].PublicKey, key.Public()) {
		t.Fatal("leaf is not for our key")
	}
	if !b.Chain[1].IsCA || bytes.Equal(b.Chain[1].RawSubject, b.Chain[1].RawIssuer) {
		t.Errorf("chain[1] is not an intermediate CA: %s issued by %s", b.Chain[1].Subject, b.Chain[1].Issuer)
	}
	if err := b.Verify(time.Now()); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if !b.NotAfter().Equal(b.Chain[0].NotAfter) {
		t.Errorf("NotAfter %v is not the leaf's %v", b.NotAfter(), b.Chain[0].NotAfter)
	}
	if !bytes.Equal(b.CAPEM(), emu.AlloyDBCAPEM(project, location, cluster)) || len(b.CAs) != 1 {
		t.Errorf("CAs: got %d, want the emulator's caCert", len(b.CAs))
	}
	verifyChain(t, emu, b.ChainPEM())
}

// verifyChain checks a cert file's content like a server trusting only the root does:
// the leaf verifies through the intermediates in the file, for client auth.
func verifyChain(t *testing.T, emu *emulator.Emulator, chainPEM []byte) {
	t.Helper()
	certs, err := bundle.ParseCertsPEM(chainPEM, "chain")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(emu.AlloyDBClientRootPEM(project, location, cluster)) {
		t.Fatal("no client root")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := certs[0].Verify(opts); err != nil {
		t.Errorf("leaf does not verify against the root through the file's intermediates: %v", err)
	}
	// Without the intermediate it must not verify: the file's order and content matter.
	opts.Intermediates = nil
	if _, err := certs[0].Verify(opts); err == nil {
		t.Error("leaf verifies against the root without the intermediate; the test proves nothing")
	}
}

func TestServerVerifiesWithCACert(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	b, err := fetch(t, e.provider(t, Options{}), keyOnce())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := e.emu.AlloyDBServerCert(project, location, cluster, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := bundle.ParseCertsPEM(certPEM, "server cert")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, c := range b.CAs {
		pool.AddCert(c)
	}
	if _, err := srv[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Errorf("server cert does not verify against the fetched caCert: %v", err)
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestRequestBody(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	cases := []struct {
		name         string
		dur          time.Duration
		wantDuration any // nil: absent
	}{
		{"no certDuration", 0, nil},
		{"1h", time.Hour, "3600s"},
		{"90m", 90 * time.Minute, "5400s"},
		{"24h", 24 * time.Hour, "86400s"},
		{"fractional", time.Hour + 1500*time.Millisecond, "3601.5s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := keyOnce()
			if _, err := fetch(t, e.provider(t, Options{CertDuration: tc.dur}), key); err != nil {
				t.Fatal(err)
			}
			body := e.lastBody(t)
			want := map[string]bool{"parent": true, "publicKey": true, "useMetadataExchange": true, "requestId": true}
			if tc.wantDuration != nil {
				want["certDuration"] = true
			}
			for k := range body {
				if !want[k] {
					t.Errorf("unexpected field %q", k)
				}
			}
			for k := range want {
				if _, ok := body[k]; !ok {
					t.Errorf("missing field %q", k)
				}
			}
			if body["parent"] != parent {
				t.Errorf("parent %v", body["parent"])
			}
			if body["useMetadataExchange"] != false {
				t.Errorf("useMetadataExchange %v, want false", body["useMetadataExchange"])
			}
			if tc.wantDuration != nil && body["certDuration"] != tc.wantDuration {
				t.Errorf("certDuration %v, want %v", body["certDuration"], tc.wantDuration)
			}
			if id, _ := body["requestId"].(string); !uuidV4.MatchString(id) {
				t.Errorf("requestId %q is not a UUIDv4", id)
			}
			pk, _ := body["publicKey"].(string)
			blk, rest := pem.Decode([]byte(pk))
			if blk == nil || blk.Type != "RSA PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
				t.Fatalf("publicKey is not one RSA PUBLIC KEY PEM block")
			}
			pub, err := x509.ParsePKCS1PublicKey(blk.Bytes)
			if err != nil || !bundle.PublicKeysEqual(pub, key.Public()) {
				t.Fatalf("publicKey is not our key as PKCS#1: %v", err)
			}
		})
	}
}

func TestNonRSAKeyIsSentAsPKIX(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := fetch(t, e.provider(t, Options{}), key)
	if err != nil {
		t.Fatal(err)
	}
	if !bundle.PublicKeysEqual(b.Leaf().PublicKey, key.Public()) {
		t.Error("leaf not for the ECDSA key")
	}
	pk, _ := e.lastBody(t)["publicKey"].(string)
	if blk, _ := pem.Decode([]byte(pk)); blk == nil || blk.Type != "PUBLIC KEY" {
		t.Errorf("publicKey %q, want a PUBLIC KEY block", pk)
	}
}

func TestCertDuration(t *testing.T) {
	c := &http.Client{}
	base := Options{Project: project, Location: location, Cluster: cluster, HTTPClient: c}
	for _, d := range []time.Duration{-time.Hour, time.Second, 59 * time.Minute, 24*time.Hour + time.Second, 25 * time.Hour} {
		o := base
		o.CertDuration = d
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), "cert_duration") {
			t.Errorf("CertDuration %v: err %v", d, err)
		}
	}
	for _, d := range []time.Duration{0, time.Hour, 24 * time.Hour} {
		o := base
		o.CertDuration = d
		if _, err := New(o); err != nil {
			t.Errorf("CertDuration %v: %v", d, err)
		}
	}

	// The emulator honours the hint (its CertLifetime is the 1h default) ...
	e := newEnv(t, emulator.Options{})
	b, err := fetch(t, e.provider(t, Options{CertDuration: 2 * time.Hour}), keyOnce())
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Leaf().NotAfter.Sub(e.clock.Now()); got < 2*time.Hour-time.Second || got > 2*time.Hour+time.Second {
		t.Errorf("leaf lifetime %v, want 2h", got)
	}
	// ... except when tests ask it for short certificates; expiry always comes from the leaf.
	e = newEnv(t, emulator.Options{CertLifetime: 30 * time.Second})
	b, err = fetch(t, e.provider(t, Options{CertDuration: time.Hour}), keyOnce())
	if err != nil {
		t.Fatal(err)
	}
	if got := b.NotAfter().Sub(e.clock.Now()); got < 29*time.Second || got > 31*time.Second {
		t.Errorf("lifetime %v, want 30s", got)
	}
}

func requestIDs(e *env) []string {
	var out []string
	for _, r := range e.apiRequests() {
		var m map[string]any
		if json.Unmarshal(r.Body, &m) == nil {
			id, _ := m["requestId"].(string)
			out = append(out, id)
		}
	}
	return out
}

func TestRequestIDReuse(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	p := e.provider(t, Options{})
	k1, k2 := keyOnce(), key2Once()
	steps := []struct {
		name  string
		fault *emulator.Fault
		key   crypto.Signer
		same  bool // requestId equal to the previous request's
	}{
		{"first", nil, k1, false},
		{"fresh after success", &emulator.Fault{Status: 503}, k1, false},
		{"reused after 503", &emulator.Fault{Status: 429, RetryAfter: "1"}, k1, true},
		{"reused after 429", &emulator.Fault{CloseConn: true}, k1, true},
		{"reused after a lost connection", &emulator.Fault{Status: 403}, k1, true},
		{"fresh after 403", &emulator.Fault{Status: 500}, k1, false},
		{"fresh for another key", nil, k2, false},
		{"fresh after success again", nil, k2, false},
	}
	var prev string
	for _, s := range steps {
		e.emu.ClearFaults()
		if s.fault != nil {
			f := *s.fault
			f.Match, f.Times = "generateClientCertificate", 1
			e.emu.Inject(f)
		}
		_, err := fetch(t, p, s.key)
		if (err == nil) != (s.fault == nil) {
			t.Fatalf("%s: err %v", s.name, err)
		}
		ids := requestIDs(e)
		cur := ids[len(ids)-1]
		if !uuidV4.MatchString(cur) {
			t.Fatalf("%s: requestId %q", s.name, cur)
		}
		if prev != "" && (cur == prev) != s.same {
			t.Errorf("%s: requestId reused = %v, want %v", s.name, cur == prev, s.same)
		}
		prev = cur
	}
}

// TestLostResponseNotIssuedTwice: the server issues, the answer is lost on the way; the
// retry carries the same requestId, and the server answers with the same certificate.
func TestLostResponseNotIssuedTwice(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	inner := e.emu.Handler()
	var (
		mu       sync.Mutex
		lost     []byte
		dropNext = true
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		drop := dropNext && strings.HasSuffix(r.URL.Path, ":generateClientCertificate")
		dropNext = dropNext && !drop
		mu.Unlock()
		if !drop {
			inner.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, r)
		mu.Lock()
		lost = rec.Body.Bytes()
		mu.Unlock()
		w.WriteHeader(http.StatusBadGateway) // the proxy lost the answer
	}))
	t.Cleanup(srv.Close)
	p := e.provider(t, Options{Endpoint: srv.URL})
	_, err := fetch(t, p, keyOnce())
	checkErr(t, err, true, 0, "502 from generateClientCertificate for "+target+": server error (retryable)")
	b, err := fetch(t, p, keyOnce())
	if err != nil {
		t.Fatal(err)
	}
	var first struct{ PemCertificateChain []string }
	if err := json.Unmarshal(lost, &first); err != nil || len(first.PemCertificateChain) == 0 {
		t.Fatalf("lost answer: %v", err)
	}
	if !bytes.Equal(b.ChainPEM()[:len(first.PemCertificateChain[0])], []byte(first.PemCertificateChain[0])) {
		t.Error("the retry got a different leaf than the lost answer held")
	}
	if n := e.emu.AlloyDBIssued(); n != 1 {
		t.Errorf("AlloyDBIssued() = %d, want 1", n)
	}
	if ids := requestIDs(e); len(ids) != 2 || ids[0] != ids[1] {
		t.Errorf("requestIds %v, want the same twice", ids)
	}
}

// rewriting serves the emulator through a proxy that lets edit change the JSON answer
// of generateClientCertificate.
func rewriting(t *testing.T, e *env, edit func(m map[string]any)) *Provider {
	t.Helper()
	inner := e.emu.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK || !strings.HasSuffix(r.URL.Path, ":generateClientCertificate") {
			w.WriteHeader(rec.Code)
			_, _ = io.Copy(w, rec.Body)
			return
		}
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Errorf("emulator answer: %v", err)
		}
		edit(m)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(m)
	}))
	t.Cleanup(srv.Close)
	return e.provider(t, Options{Endpoint: srv.URL})
}

func TestChainShapes(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	chainOf := func(m map[string]any) []any { return m["pemCertificateChain"].([]any) }
	cases := []struct {
		name     string
		edit     func(m map[string]any)
		wantLen  int
		wantCert string // error substring; "" for success
	}{
		{"as sent", func(map[string]any) {}, 2, ""},
		{"no root", func(m map[string]any) { m["pemCertificateChain"] = chainOf(m)[:2] }, 2, ""},
		{"leaf only", func(m map[string]any) { m["pemCertificateChain"] = chainOf(m)[:1] }, 1, ""},
		{"snake_case answer", func(m map[string]any) {
			m["pem_certificate_chain"], m["ca_cert"] = m["pemCertificateChain"], m["caCert"]
			delete(m, "pemCertificateChain")
			delete(m, "caCert")
		}, 2, ""},
		{"root before intermediate", func(m map[string]any) {
			c := chainOf(m)
			m["pemCertificateChain"] = []any{c[0], c[2], c[1]}
		}, 0, "200 from generateClientCertificate for " + target + ": invalid credential material: pemCertificateChain is not in leaf-to-root order: certificate 1"},
		{"leaf last", func(m map[string]any) {
			c := chainOf(m)
			m["pemCertificateChain"] = []any{c[2], c[1], c[0]}
		}, 0, "200 from generateClientCertificate for " + target + ": something between the agent and the API altered the request or the response"},
		{"no chain", func(m map[string]any) { delete(m, "pemCertificateChain") }, 0,
			"200 from generateClientCertificate for " + target + ": invalid credential material: the response has no pemCertificateChain"},
		{"no caCert", func(m map[string]any) { delete(m, "caCert") }, 0,
			"200 from generateClientCertificate for " + target + ": invalid credential material: the response has no caCert"},
		{"bad caCert", func(m map[string]any) { m["caCert"] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" }, 0,
			"200 from generateClientCertificate for " + target + ": invalid credential material: caCert: certificate 1:"},
		{"garbage in chain", func(m map[string]any) { m["pemCertificateChain"] = []any{"hello"} }, 0,
			"200 from generateClientCertificate for " + target + ": invalid credential material: pemCertificateChain:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := fetch(t, rewriting(t, e, tc.edit), keyOnce())
			if tc.wantCert != "" {
				checkErr(t, err, false, 0, tc.wantCert)
				if !errors.Is(err, bundle.ErrInvalid) {
					t.Errorf("error does not wrap bundle.ErrInvalid: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Chain) != tc.wantLen {
				t.Errorf("chain of %d, want %d", len(b.Chain), tc.wantLen)
			}
			if tc.wantLen == 2 {
				checkBundle(t, e.emu, b, keyOnce())
			}
		})
	}
}

func TestFetchCertForAnotherKey(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	other := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&key2Once().PublicKey)})
	// An intermediary that swaps the public key in the request.
	inner := e.emu.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ":generateClientCertificate") {
			var m map[string]any
			_ = json.NewDecoder(r.Body).Decode(&m)
			m["publicKey"] = string(other)
			b, _ := json.Marshal(m)
			r.Body = io.NopCloser(bytes.NewReader(b))
			r.ContentLength = int64(len(b))
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p := e.provider(t, Options{Endpoint: srv.URL})
	_, err := fetch(t, p, keyOnce())
	checkErr(t, err, false, 0, "200 from generateClientCertificate for "+target+": something between the agent and the API altered the request or the response (invalid credential material: the leaf certificate")
	if !errors.Is(err, bundle.ErrInvalid) {
		t.Errorf("error does not wrap bundle.ErrInvalid: %v", err)
	}
	// A permanent failure: the next request gets a fresh requestId.
	_, _ = fetch(t, p, keyOnce())
	if ids := requestIDs(e); len(ids) != 2 || ids[0] == ids[1] {
		t.Errorf("requestIds %v, want two different", ids)
	}
}

// TestRepeatRefused: a permanent answer to a request that repeated the requestId of an
// unanswered one (409, an empty 200, ...) may be about the repeat (reference §4.1 does
// not say how the API answers one), so it is retryable, and the next request, with a new
// requestId, is judged on its own.
func TestRepeatRefused(t *testing.T) {
	const m = "generateClientCertificate"
	for _, refusal := range []emulator.Fault{
		{Match: m, Status: 409, Body: `{"error":{"code":409,"message":"request already exists","status":"ALREADY_EXISTS"}}`},
		{Match: m, Body: `{}`},
	} {
		e := newEnv(t, emulator.Options{})
		p := e.provider(t, Options{})
		e.emu.Inject(emulator.Fault{Match: m, Status: 503, Times: 1})
		if _, err := fetch(t, p, keyOnce()); err == nil {
			t.Fatal("the 503 was not returned")
		}
		refusal.Times = 1
		e.emu.Inject(refusal)
		_, err := fetch(t, p, keyOnce())
		var re *RepeatError
		r, ok := err.(interface{ Retryable() bool })
		if !errors.As(err, &re) || !ok || !r.Retryable() || !strings.Contains(err.Error(), "repeated the requestId") {
			t.Fatalf("refused repeat: %v, want a retryable RepeatError", err)
		}
		// Judged on its own: the same refusal to a fresh requestId is permanent.
		refusal.Times = 1
		e.emu.Inject(refusal)
		_, err = fetch(t, p, keyOnce())
		if r, ok := err.(interface{ Retryable() bool }); !ok || r.Retryable() || errors.As(err, &re) {
			t.Fatalf("refusal of a fresh request: %v, want permanent", err)
		}
		if ids := requestIDs(e); len(ids) != 3 || ids[0] != ids[1] || ids[1] == ids[2] {
			t.Errorf("requestIds %v: want the first repeated once, then a new one", ids)
		}
		if _, err := fetch(t, p, keyOnce()); err != nil {
			t.Fatalf("after the refusals: %v", err)
		}
	}
}

func TestFetchErrors(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	p := e.provider(t, Options{})
	const m = "generateClientCertificate"
	const pre = " from generateClientCertificate for " + target + ": "
	retryInfo := `{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED",` +
		`"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"2.500s"}]}}`
	cases := []struct {
		name       string
		fault      emulator.Fault
		retryable  bool
		retryAfter time.Duration
		want       string // substring of Error()
	}{
		{"403 AlloyDB body", emulator.Fault{Match: m, Status: 403, Body: emulator.AlloyDBErrorBody(403)}, false, 0,
			"403 IAM_PERMISSION_DENIED" + pre + "the credentials lack alloydb.clusters.generateClientCertificate (roles/alloydb.client) or the cluster name is wrong (Permission 'alloydb.clusters.generateClientCertificate' denied"},
		{"403 default body", emulator.Fault{Match: m, Status: 403}, false, 0,
			"403 notAuthorized" + pre + "the credentials lack alloydb.clusters.generateClientCertificate (roles/alloydb.client) or the cluster name is wrong"},
		{"403 API disabled", emulator.Fault{Match: m, Status: 403, Body: `{"error":{"code":403,"message":"AlloyDB API has not been used","status":"PERMISSION_DENIED",` +
			`"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SERVICE_DISABLED"}]}}`}, false, 0,
			"403 SERVICE_DISABLED" + pre + "the API is not enabled in the project; enable it"},
		{"404 AlloyDB body", emulator.Fault{Match: m, Status: 404, Body: emulator.AlloyDBErrorBody(404)}, false, 0,
			"404 NOT_FOUND" + pre + "check project, location and cluster (Resource was not found.)"},
		{"429 Retry-After", emulator.Fault{Match: m, Status: 429, RetryAfter: "7", Body: emulator.AlloyDBErrorBody(429)}, true, 7 * time.Second,
			"429 RATE_LIMIT_EXCEEDED" + pre + "quota exceeded (retryable) (Quota exceeded"},
		{"429 RetryInfo", emulator.Fault{Match: m, Status: 429, Body: retryInfo}, true, 2500 * time.Millisecond,
			"429 RESOURCE_EXHAUSTED" + pre + "quota exceeded (retryable) (slow down)"},
		{"503 AlloyDB body", emulator.Fault{Match: m, Status: 503, RetryAfter: "3", Body: emulator.AlloyDBErrorBody(503)}, true, 3 * time.Second,
			"503 UNAVAILABLE" + pre + "server error (retryable) (The service is currently unavailable.)"},
		{"503 default body", emulator.Fault{Match: m, Status: 503}, true, 0,
			"503 backendError" + pre + "server error (retryable)"},
		{"500 garbage", emulator.Fault{Match: m, Status: 500, Garbage: true}, true, 0,
			"500" + pre + "server error (retryable) (non-JSON body)"},
		{"400", emulator.Fault{Match: m, Status: 400, Body: emulator.AlloyDBErrorBody(400)}, false, 0,
			"400 INVALID_ARGUMENT" + pre + "the API rejected the request as invalid"},
		{"401 from the API", emulator.Fault{Match: m, Status: 401, Body: emulator.AlloyDBErrorBody(401)}, false, 0,
			"401 ACCESS_TOKEN_EXPIRED" + pre + "the credentials were rejected; check credentials_file/token_file"},
		{"200 garbage", emulator.Fault{Match: m, Garbage: true}, false, 0,
			"200" + pre + "the response is not valid JSON"},
		{"200 over 1 MiB", emulator.Fault{Match: m, Body: `{"caCert":"` + strings.Repeat("x", 1<<20) + `"}`}, false, 0,
			"200" + pre + "the response body exceeds the 1 MiB limit"},
		{"200 empty object", emulator.Fault{Match: m, Body: `{}`}, false, 0,
			"200" + pre + "invalid credential material: the response has no pemCertificateChain"},
		{"connection closed", emulator.Fault{Match: m, CloseConn: true}, true, 0,
			"calling generateClientCertificate for " + target + " at 127.0.0.1:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.emu.ClearFaults()
			e.emu.Inject(tc.fault)
			// A provider of its own: each case is a first request (a request that
			// repeats an unanswered one is judged differently: TestRepeatRefused).
			_, err := fetch(t, e.provider(t, Options{}), keyOnce())
			checkErr(t, err, tc.retryable, tc.retryAfter, tc.want)
		})
	}
	e.emu.ClearFaults()
	if _, err := fetch(t, p, keyOnce()); err != nil {
		t.Fatalf("after clearing faults: %v", err)
	}
}

func TestFetchEmulatorErrors(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	cases := []struct {
		name string
		p    func(t *testing.T) *Provider
		want string
	}{
		{"unknown cluster", func(t *testing.T) *Provider { return e.provider(t, Options{Cluster: "nope"}) },
			"404 NOT_FOUND from generateClientCertificate for my-proj/us-central1/nope: check project, location and cluster " +
				"(Resource 'projects/my-proj/locations/us-central1/clusters/nope' was not found)"},
		{"wrong endpoint path", func(t *testing.T) *Provider { return e.provider(t, Options{Endpoint: e.emu.URL() + "alloydb/"}) },
			"404 from generateClientCertificate for " + target + ": the API has no such method here; check api_endpoint and api_version (non-JSON body)"},
		{"missing bearer", func(t *testing.T) *Provider { return e.provider(t, Options{HTTPClient: &http.Client{}}) },
			"401 CREDENTIALS_MISSING from generateClientCertificate for " + target + ": the credentials were rejected; check credentials_file/token_file (Request is missing required authentication credential."},
		{"insufficient scope", func(t *testing.T) *Provider {
			return e.provider(t, Options{HTTPClient: saClient(t, e.emu, emulator.ScopeSQLAdmin)})
		}, "403 ACCESS_TOKEN_SCOPE_INSUFFICIENT from generateClientCertificate for " + target + ": the access token lacks the cloud-platform scope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := fetch(t, tc.p(t), keyOnce())
			checkErr(t, err, false, 0, tc.want)
		})
	}
}

func TestFetchDomainScopedProject(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	const proj = "example.com:proj"
	e.emu.AddAlloyDBCluster(proj, location, cluster)
	if _, err := fetch(t, e.provider(t, Options{Project: proj}), keyOnce()); err != nil {
		t.Fatal(err)
	}
	r := e.apiRequests()[0]
	if !strings.Contains(r.RawPath, "/projects/example.com%3Aproj/locations/us-central1/clusters/analytics:generateClientCertificate") {
		t.Errorf("on the wire: %s, want example.com%%3Aproj", r.RawPath)
	}
	if got := e.lastBody(t)["parent"]; got != "projects/example.com:proj/locations/us-central1/clusters/analytics" {
		t.Errorf("parent %v, want the unescaped name", got)
	}
}

func TestFetchHonoursContext(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	e.emu.Inject(emulator.Fault{Match: "generateClientCertificate", Delay: 5 * time.Second, Times: 1})
	p := e.provider(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Fetch(ctx, keyOnce())
	if time.Since(start) > 3*time.Second {
		t.Errorf("Fetch took %v after its context ended", time.Since(start))
	}
	checkErr(t, err, false, 0, "calling generateClientCertificate for "+target+" at 127.0.0.1:")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error does not wrap context.DeadlineExceeded: %v", err)
	}
	// The request may have reached the server: its requestId is sent again.
	if _, err := fetch(t, p, keyOnce()); err != nil {
		t.Fatal(err)
	}
	if ids := requestIDs(e); len(ids) != 2 || ids[0] != ids[1] {
		t.Errorf("requestIds %v, want the same twice", ids)
	}
}

func TestFetchServerDown(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	p := e.provider(t, Options{})
	_ = e.emu.Close()
	_, err := fetch(t, p, keyOnce())
	checkErr(t, err, true, 0, "calling generateClientCertificate for "+target+" at 127.0.0.1:")
}

func TestFetchNilKey(t *testing.T) {
	p, err := New(Options{Project: project, Location: location, Cluster: cluster, HTTPClient: &http.Client{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Fetch(context.Background(), nil); err == nil {
		t.Error("Fetch(nil key) succeeded")
	}
}

func checkErr(t *testing.T, err error, retryable bool, retryAfter time.Duration, want string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	t.Logf("error: %v", err)
	var re retryErr
	if !errors.As(err, &re) {
		t.Fatalf("%T does not implement Retryable/RetryAfter: %v", err, err)
	}
	if re.Retryable() != retryable {
		t.Errorf("Retryable() = %v, want %v: %v", re.Retryable(), retryable, err)
	}
	if got := re.RetryAfter(); got != retryAfter {
		t.Errorf("RetryAfter() = %v, want %v", got, retryAfter)
	}
	if msg := err.Error(); !strings.Contains(msg, want) {
		t.Errorf("error\n got: %s\nwant: …%s…", msg, want)
	}
	if strings.Contains(err.Error(), "ya29.") || strings.Contains(err.Error(), "Bearer") {
		t.Errorf("error leaks a token: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	c := &http.Client{}
	ok := Options{Project: project, Location: location, Cluster: cluster, HTTPClient: c}
	bad := []func(o *Options){
		func(o *Options) { o.Project = "" },
		func(o *Options) { o.Project = "a/b" },
		func(o *Options) { o.Location = "" },
		func(o *Options) { o.Location = "us/central1" },
		func(o *Options) { o.Cluster = "" },
		func(o *Options) { o.Cluster = "projects/p/locations/l/clusters/c" },
		func(o *Options) { o.Cluster = "a:b" },
		func(o *Options) { o.HTTPClient = nil },
		func(o *Options) { o.APIVersion = "v2" },
		func(o *Options) { o.APIVersion = "v1beta4" },
		func(o *Options) { o.Endpoint = "ftp://x/" },
		func(o *Options) { o.Endpoint = "https://x/?a=b" },
		func(o *Options) { o.Endpoint = "https://user@x/" },
		func(o *Options) { o.CertDuration = 30 * time.Minute },
	}
	for i, f := range bad {
		o := ok
		f(&o)
		if _, err := New(o); err == nil {
			t.Errorf("case %d: New(%+v) accepted", i, o)
		}
	}
	if _, err := New(ok); err != nil {
		t.Error(err)
	}
}

func TestURLs(t *testing.T) {
	cases := []struct {
		endpoint, version, project, want string
	}{
		{"", "", "my-proj", "https://alloydb.googleapis.com/v1beta/projects/my-proj/locations/l/clusters/c:generateClientCertificate"},
		{"https://private.example/", V1, "example.com:my-proj", "https://private.example/v1/projects/example.com%3Amy-proj/locations/l/clusters/c:generateClientCertificate"},
		{"http://127.0.0.1:8080/prefix", V1Alpha, "a b", "http://127.0.0.1:8080/prefix/v1alpha/projects/a%20b/locations/l/clusters/c:generateClientCertificate"},
	}
	for _, tc := range cases {
		p, err := New(Options{Project: tc.project, Location: "l", Cluster: "c", Endpoint: tc.endpoint, APIVersion: tc.version, HTTPClient: &http.Client{}})
		if err != nil {
			t.Fatal(err)
		}
		if p.url != tc.want {
			t.Errorf("got  %s\nwant %s", p.url, tc.want)
		}
		req, err := http.NewRequest(http.MethodPost, p.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if wire := req.URL.RequestURI(); !strings.HasSuffix(tc.want, wire) {
			t.Errorf("on the wire %s, want the escaped form", wire)
		}
	}
}
