package cloudsql

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
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
	instance = "orders-pg"
	target   = project + "/" + instance
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

// newEnv starts an emulator with my-proj/orders-pg and an HTTP client authenticated
// through the real oauth2 JWT-bearer flow against it.
func newEnv(t *testing.T, scopes ...string) *env {
	t.Helper()
	clk := &clock{t: time.Now()}
	emu, err := emulator.New(emulator.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	emu.AddCloudSQLInstance(project, instance, emulator.CloudSQLInstance{})
	if len(scopes) == 0 {
		scopes = []string{emulator.ScopeSQLAdmin}
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
	creds, err := google.CredentialsFromJSONWithType(ctx, js, google.ServiceAccount, scopes...)
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
	if o.Instance == "" {
		o.Instance = instance
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

func fetch(t *testing.T, p *Provider, key crypto.Signer) (*bundle.Bundle, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.Fetch(ctx, key)
}

func TestFetchSuccess(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, version, endpoint, prefix string
	}{
		{"v1beta4 default", "", e.emu.URL(), "/sql/v1beta4/"},
		{"v1beta4 no trailing slash", V1Beta4, strings.TrimSuffix(e.emu.URL(), "/"), "/sql/v1beta4/"},
		{"v1", V1, e.emu.URL(), "/v1/"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.apiRequests())
			key := keyOnce()
			b, err := fetch(t, e.provider(t, Options{APIVersion: tc.version, Endpoint: tc.endpoint}), key)
			if err != nil {
				t.Fatal(err)
			}
			checkBundle(t, e.emu, b, key, 1)
			reqs := e.apiRequests()[before:]
			if len(reqs) != 2 {
				t.Fatalf("got %d API requests, want 2", len(reqs))
			}
			want := map[string]bool{
				"POST " + tc.prefix + "projects/my-proj/instances/orders-pg:generateEphemeralCert": true,
				"GET " + tc.prefix + "projects/my-proj/instances/orders-pg/connectSettings":        true,
			}
			for _, r := range reqs {
				if !want[r.Method+" "+r.Path] {
					t.Errorf("unexpected request %s %s", r.Method, r.Path)
				}
				checkHeaders(t, r)
			}
		})
	}
}

func checkHeaders(t *testing.T, r emulator.Request) {
	t.Helper()
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") { // value deliberately not printed
		t.Errorf("%s %s: no bearer token", r.Method, r.Path)
	}
	if ua := r.Header.Get("User-Agent"); ua != wire.UserAgent() {
		t.Errorf("%s %s: User-Agent %q", r.Method, r.Path, ua)
	}
	ct := r.Header.Get("Content-Type")
	if r.Method == http.MethodPost && ct != "application/json" {
		t.Errorf("POST %s: Content-Type %q", r.Path, ct)
	}
	if r.Method == http.MethodGet && ct != "" {
		t.Errorf("GET %s: Content-Type %q on a request without body", r.Path, ct)
	}
}

func checkBundle(t *testing.T, emu *emulator.Emulator, b *bundle.Bundle, key crypto.Signer, nCAs int) {
	t.Helper()
	if b.Key != key {
		t.Error("bundle key is not the key we passed")
	}
	if len(b.Chain) != 1 || !bundle.PublicKeysEqual(b.Chain[0].PublicKey, key.Public()) {
		t.Fatalf("chain: %d certs or wrong key", len(b.Chain))
	}
	if err := b.Verify(time.Now()); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if !bytes.Equal(b.CAPEM(), emu.ServerCAPEM(project, instance)) || len(b.CAs) != nCAs {
		t.Errorf("CAs: got %d, want %d equal to the emulator's", len(b.CAs), nCAs)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(emu.ClientCAPEM())
	if _, err := b.Chain[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client cert does not verify against the client CA: %v", err)
	}
}

func TestFetchDomainScopedProject(t *testing.T) {
	e := newEnv(t)
	const proj = "example.com:proj"
	e.emu.AddCloudSQLInstance(proj, instance, emulator.CloudSQLInstance{})
	if _, err := fetch(t, e.provider(t, Options{Project: proj}), keyOnce()); err != nil {
		t.Fatal(err)
	}
	for _, r := range e.apiRequests() {
		if !strings.Contains(r.RawPath, "/projects/example.com%3Aproj/instances/orders-pg") {
			t.Errorf("on the wire: %s %s, want example.com%%3Aproj", r.Method, r.RawPath)
		}
		if !strings.Contains(r.Path, "/projects/example.com:proj/") {
			t.Errorf("decoded path %s", r.Path)
		}
	}
}

func TestFetchKeepsEveryServerCA(t *testing.T) {
	e := newEnv(t)
	e.emu.AddCloudSQLInstance(project, instance, emulator.CloudSQLInstance{ServerCAs: 2})
	b, err := fetch(t, e.provider(t, Options{}), keyOnce())
	if err != nil {
		t.Fatal(err)
	}
	checkBundle(t, e.emu, b, keyOnce(), 2)
}

func TestRequestUsesSnakeCasePublicKey(t *testing.T) {
	e := newEnv(t)
	key := keyOnce()
	if _, err := fetch(t, e.provider(t, Options{}), key); err != nil {
		t.Fatal(err)
	}
	for _, r := range e.apiRequests() {
		if !strings.HasSuffix(r.Path, ":generateEphemeralCert") {
			continue
		}
		var body map[string]string
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatalf("request body: %v", err)
		}
		if _, ok := body["publicKey"]; ok || len(body) != 1 {
			t.Fatalf("request fields %v, want only public_key", keys(body))
		}
		blk, _ := pem.Decode([]byte(body["public_key"]))
		if blk == nil || blk.Type != "RSA PUBLIC KEY" {
			t.Fatalf("public_key is not an RSA PUBLIC KEY PEM block")
		}
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil || !bundle.PublicKeysEqual(pub, key.Public()) {
			t.Fatalf("public_key is not our key as PKIX: %v", err)
		}
		return
	}
	t.Fatal("no generateEphemeralCert request recorded")
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestFetchErrors(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, Options{})
	retryInfo := `{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED",` +
		`"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"2.500s"}]}}`
	cases := []struct {
		name       string
		fault      emulator.Fault
		retryable  bool
		retryAfter time.Duration // -1: check approximately 30s
		want       string        // substring of Error()
	}{
		{"503 retry-after seconds", emulator.Fault{Match: "generateEphemeralCert", Status: 503, RetryAfter: "7"}, true, 7 * time.Second,
			"503 backendError from generateEphemeralCert for my-proj/orders-pg: server error (retryable) (The service is currently unavailable.)"},
		{"429 retry-after date", emulator.Fault{Match: "generateEphemeralCert", Status: 429,
			RetryAfter: time.Now().Add(31 * time.Second).UTC().Format(http.TimeFormat)}, true, -1,
			"429 rateLimitExceeded from generateEphemeralCert for my-proj/orders-pg: quota exceeded (retryable) (Quota exceeded"},
		{"429 RetryInfo", emulator.Fault{Match: "generateEphemeralCert", Status: 429, Body: retryInfo}, true, 2500 * time.Millisecond,
			"429 RESOURCE_EXHAUSTED from generateEphemeralCert for my-proj/orders-pg: quota exceeded (retryable) (slow down)"},
		{"403 notAuthorized", emulator.Fault{Match: "generateEphemeralCert", Status: 403}, false, 0,
			"403 notAuthorized from generateEphemeralCert for my-proj/orders-pg: the credentials lack cloudsql.instances.connect or the instance name is wrong (The client is not authorized to make this request.)"},
		{"404 connectSettings", emulator.Fault{Match: "connectSettings", Status: 404}, false, 0,
			"404 notFound from connectSettings for my-proj/orders-pg: check project and instance names"},
		{"400", emulator.Fault{Match: "generateEphemeralCert", Status: 400}, false, 0,
			"400 invalid from generateEphemeralCert for my-proj/orders-pg:"},
		{"401 from the API", emulator.Fault{Match: "connectSettings", Status: 401}, false, 0,
			"401 authError from connectSettings for my-proj/orders-pg: the credentials were rejected; check credentials_file/token_file"},
		{"408", emulator.Fault{Match: "connectSettings", Status: 408}, true, 0, "408 from connectSettings"},
		{"500 garbage", emulator.Fault{Match: "generateEphemeralCert", Status: 500, Garbage: true}, true, 0,
			"500 from generateEphemeralCert for my-proj/orders-pg: server error (retryable) (non-JSON body)"},
		{"502 array-wrapped", emulator.Fault{Match: "connectSettings", Status: 502,
			Body: `[{"error":{"message":"upstream","status":"UNAVAILABLE"}}]`}, true, 0,
			"502 UNAVAILABLE from connectSettings for my-proj/orders-pg: server error (retryable) (upstream)"},
		{"200 garbage", emulator.Fault{Match: "generateEphemeralCert", Garbage: true}, false, 0,
			"200 from generateEphemeralCert for my-proj/orders-pg: the response is not valid JSON"},
		{"200 over 1 MiB", emulator.Fault{Match: "connectSettings", Body: `{"kind":"` + strings.Repeat("x", 1<<20) + `"}`}, false, 0,
			"200 from connectSettings for my-proj/orders-pg: the response body exceeds the 1 MiB limit"},
		{"missing serverCaCert", emulator.Fault{Match: "connectSettings", Body: `{"kind":"sql#connectSettings"}`}, false, 0,
			"200 from connectSettings for my-proj/orders-pg: the instance may not be a second-generation instance with SSL (invalid credential material: the response has no serverCaCert)"},
		{"bad CA PEM", emulator.Fault{Match: "connectSettings", Body: `{"serverCaCert":{"cert":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}}`}, false, 0,
			"200 from connectSettings for my-proj/orders-pg: invalid credential material: serverCaCert.cert: certificate 1:"},
		{"missing ephemeralCert", emulator.Fault{Match: "generateEphemeralCert", Body: `{}`}, false, 0,
			"200 from generateEphemeralCert for my-proj/orders-pg: invalid credential material: the response has no ephemeralCert.cert"},
		{"connection closed", emulator.Fault{Match: "connectSettings", CloseConn: true}, true, 0,
			"calling connectSettings for my-proj/orders-pg at 127.0.0.1:"},
		{"permanent beats retryable", emulator.Fault{Match: "connectSettings", Status: 403}, false, 0,
			"403 notAuthorized from connectSettings"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.emu.ClearFaults()
			if tc.name == "permanent beats retryable" {
				e.emu.Inject(emulator.Fault{Match: "generateEphemeralCert", Status: 503})
			}
			e.emu.Inject(tc.fault)
			_, err := fetch(t, p, keyOnce())
			checkErr(t, err, tc.retryable, tc.retryAfter, tc.want)
		})
	}
	e.emu.ClearFaults()
	if _, err := fetch(t, p, keyOnce()); err != nil {
		t.Fatalf("after clearing faults: %v", err)
	}
}

func checkErr(t *testing.T, err error, retryable bool, retryAfter time.Duration, want string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	t.Logf("error: %v", err) // errors never hold tokens: checked below
	re, ok := err.(retryErr)
	if !ok {
		t.Fatalf("%T does not implement Retryable/RetryAfter: %v", err, err)
	}
	if re.Retryable() != retryable {
		t.Errorf("Retryable() = %v, want %v: %v", re.Retryable(), retryable, err)
	}
	switch got := re.RetryAfter(); {
	case retryAfter == -1:
		if got < 25*time.Second || got > 31*time.Second {
			t.Errorf("RetryAfter() = %v, want about 30s", got)
		}
	case got != retryAfter:
		t.Errorf("RetryAfter() = %v, want %v", got, retryAfter)
	}
	if msg := err.Error(); !strings.Contains(msg, want) {
		t.Errorf("error\n got: %s\nwant: …%s…", msg, want)
	}
	if strings.Contains(err.Error(), "ya29.") || strings.Contains(err.Error(), "Bearer") {
		t.Errorf("error leaks a token: %v", err)
	}
}

func TestFetchCertForAnotherKey(t *testing.T) {
	e := newEnv(t)
	other, err := bundle.PublicKeyPEM(key2Once(), "RSA PUBLIC KEY")
	if err != nil {
		t.Fatal(err)
	}
	// An intermediary that swaps the public key in the request.
	inner := e.emu.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ":generateEphemeralCert") {
			b, _ := json.Marshal(map[string]string{"public_key": string(other)})
			r.Body = readCloser{bytes.NewReader(b)}
			r.ContentLength = int64(len(b))
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	_, err = fetch(t, e.provider(t, Options{Endpoint: srv.URL}), keyOnce())
	checkErr(t, err, false, 0, "200 from generateEphemeralCert for my-proj/orders-pg: something between the agent and the API altered the request or the response")
	if !errors.Is(err, bundle.ErrInvalid) {
		t.Errorf("error does not wrap bundle.ErrInvalid: %v", err)
	}
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

func TestFetchUnauthenticated(t *testing.T) {
	e := newEnv(t)
	t.Run("missing bearer", func(t *testing.T) {
		_, err := fetch(t, e.provider(t, Options{HTTPClient: &http.Client{}}), keyOnce())
		checkErr(t, err, false, 0, "401 authError from generateEphemeralCert for my-proj/orders-pg: the credentials were rejected; check credentials_file/token_file (Request is missing required authentication credential.")
	})
	t.Run("expired bearer", func(t *testing.T) {
		p := e.provider(t, Options{})
		if _, err := fetch(t, p, keyOnce()); err != nil {
			t.Fatal(err) // the client now holds a token it believes valid for an hour
		}
		e.clock.Add(2 * time.Hour)
		_, err := fetch(t, p, keyOnce())
		checkErr(t, err, false, 0, "401 authError from generateEphemeralCert for my-proj/orders-pg: the credentials were rejected; check credentials_file/token_file (Request had invalid authentication credentials.")
	})
}

func TestFetchTokenEndpointErrors(t *testing.T) {
	e := newEnv(t)
	js, err := e.emu.ServiceAccountJSON("agent@my-proj.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(js, &m); err != nil {
		t.Fatal(err)
	}
	m["private_key_id"] = "deleted-key"
	js, _ = json.Marshal(m)
	creds, err := google.CredentialsFromJSONWithType(context.Background(), js, google.ServiceAccount, emulator.ScopeSQLAdmin)
	if err != nil {
		t.Fatal(err)
	}
	p := e.provider(t, Options{HTTPClient: oauth2.NewClient(context.Background(), creds.TokenSource)})
	_, err = fetch(t, p, keyOnce())
	checkErr(t, err, false, 0, "400 invalid_grant from generateEphemeralCert (access token request) for my-proj/orders-pg: the token endpoint rejected the credentials; check credentials_file/token_file (Invalid grant: account not found)")

	e.emu.Inject(emulator.Fault{Match: "POST /token", Status: 503, RetryAfter: "3"})
	_, err = fetch(t, e.provider(t, Options{}), keyOnce())
	checkErr(t, err, true, 3*time.Second, "503 temporarily_unavailable from generateEphemeralCert (access token request) for my-proj/orders-pg: the token endpoint failed (retryable)")
}

func TestFetchInsufficientScope(t *testing.T) {
	e := newEnv(t, emulator.ScopeSQLLogin)
	_, err := fetch(t, e.provider(t, Options{}), keyOnce())
	checkErr(t, err, false, 0, "403 insufficientPermissions from generateEphemeralCert for my-proj/orders-pg: the access token lacks the cloud-platform scope")
}

func TestFetchUnknownInstance(t *testing.T) {
	e := newEnv(t)
	// generateEphemeralCert answers 403 and connectSettings 404: the cert call's error wins.
	for range 3 {
		_, err := fetch(t, e.provider(t, Options{Instance: "nope"}), keyOnce())
		checkErr(t, err, false, 0, "403 notAuthorized from generateEphemeralCert for my-proj/nope: the credentials lack cloudsql.instances.connect or the instance name is wrong")
	}
}

func TestFetchHonoursContext(t *testing.T) {
	e := newEnv(t)
	e.emu.Inject(emulator.Fault{Match: "connectSettings", Delay: 5 * time.Second})
	p := e.provider(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Fetch(ctx, keyOnce())
	if time.Since(start) > 3*time.Second {
		t.Errorf("Fetch took %v after its context ended", time.Since(start))
	}
	checkErr(t, err, false, 0, "calling connectSettings for my-proj/orders-pg at 127.0.0.1:")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error does not wrap context.DeadlineExceeded: %v", err)
	}
}

func TestFetchServerDown(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, Options{})
	_ = e.emu.Close()
	_, err := fetch(t, p, keyOnce())
	checkErr(t, err, true, 0, "calling generateEphemeralCert for my-proj/orders-pg at 127.0.0.1:")
}

func TestResetSSLAndOperation(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, Options{})
	ctx := context.Background()
	caBefore := e.emu.ServerCAPEM(project, instance)
	name, err := p.ResetSSL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var statuses []string
	for range 5 {
		op, err := p.Operation(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		statuses = append(statuses, op.Status)
		if op.Done() {
			if op.Err() != nil || op.Name != name {
				t.Fatalf("op %+v: %v", op, op.Err())
			}
			break
		}
	}
	if got := strings.Join(statuses, ","); got != "RUNNING,DONE" {
		t.Errorf("statuses %s", got)
	}
	if bytes.Equal(caBefore, e.emu.ServerCAPEM(project, instance)) {
		t.Error("server CA unchanged after reset")
	}
	for _, r := range e.apiRequests() {
		if strings.HasSuffix(r.Path, "/resetSslConfig") && (len(r.Body) != 0 || r.Header.Get("Content-Type") != "") {
			t.Errorf("resetSslConfig sent a body or Content-Type")
		}
	}

	e.emu.FailNextOperation(emulator.OpFailure{Code: "INTERNAL_ERROR", Message: "An internal error occurred."})
	name, err = p.ResetSSL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var op *Operation
	for op == nil || !op.Done() {
		if op, err = p.Operation(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := op.Err(); err == nil || !strings.Contains(err.Error(), "INTERNAL_ERROR: An internal error occurred.") {
		t.Errorf("failed op error: %v", err)
	}

	_, err = p.Operation(ctx, "no-such-op")
	checkErr(t, err, false, 0, "404 notFound from operations.get for my-proj/orders-pg")
}

func TestNewValidates(t *testing.T) {
	c := &http.Client{}
	bad := []Options{
		{Instance: instance, HTTPClient: c},
		{Project: project, HTTPClient: c},
		{Project: project, Instance: "p:r:i", HTTPClient: c},
		{Project: project, Instance: instance},
		{Project: project, Instance: instance, HTTPClient: c, APIVersion: "v2"},
		{Project: project, Instance: instance, HTTPClient: c, Endpoint: "ftp://x/"},
		{Project: project, Instance: instance, HTTPClient: c, Endpoint: "https://x/?a=b"},
	}
	for _, o := range bad {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

func TestURLs(t *testing.T) {
	cases := []struct {
		endpoint, version, project, want string
	}{
		{"", "", "my-proj", "https://sqladmin.googleapis.com/sql/v1beta4/projects/my-proj/instances/i:generateEphemeralCert"},
		{"https://private.example/", V1, "example.com:my-proj", "https://private.example/v1/projects/example.com%3Amy-proj/instances/i:generateEphemeralCert"},
		{"http://127.0.0.1:8080/prefix", V1Beta4, "a b", "http://127.0.0.1:8080/prefix/sql/v1beta4/projects/a%20b/instances/i:generateEphemeralCert"},
	}
	for _, tc := range cases {
		p, err := New(Options{Project: tc.project, Instance: "i", Endpoint: tc.endpoint, APIVersion: tc.version, HTTPClient: &http.Client{}})
		if err != nil {
			t.Fatal(err)
		}
		got := p.url(p.inst + ":generateEphemeralCert")
		if got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
		req, err := http.NewRequest(http.MethodPost, got, nil)
		if err != nil {
			t.Fatal(err)
		}
		if wire := req.URL.RequestURI(); !strings.HasSuffix(tc.want, wire) {
			t.Errorf("on the wire %s, want the escaped form", wire)
		}
	}
}

// judged is a cause that says itself whether a retry can help (as gcpauth's
// ImpersonationError does).
type judged bool

func (j judged) Error() string   { return "judged" }
func (j judged) Retryable() bool { return bool(j) }

// TestLoginTokenErrorRetryable: a login token failure is retried unless its cause is
// permanent: a refusal from IAM Credentials or the token endpoint (spec §5), wrapped at
// any depth.
func TestLoginTokenErrorRetryable(t *testing.T) {
	retrieve := func(code int) error {
		return &oauth2.RetrieveError{Response: &http.Response{StatusCode: code}}
	}
	tests := []struct {
		name  string
		cause error
		want  bool
	}{
		{"plain error", errors.New("connection refused"), true},
		{"cause says permanent", judged(false), false},
		{"cause says retryable", judged(true), true},
		{"wrapped permanent cause", fmt.Errorf("getting a token: %w", judged(false)), false},
		{"token endpoint 400", retrieve(http.StatusBadRequest), false},
		{"token endpoint 503", retrieve(http.StatusServiceUnavailable), true},
		{"token endpoint 429", retrieve(http.StatusTooManyRequests), true},
	}
	for _, tt := range tests {
		e := &LoginTokenError{Target: "p/i", Err: tt.cause}
		if got := e.Retryable(); got != tt.want {
			t.Errorf("%s: Retryable = %v, want %v", tt.name, got, tt.want)
		}
	}
}
