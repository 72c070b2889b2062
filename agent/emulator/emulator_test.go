package emulator_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jws"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
)

const base = "sql/v1beta4/projects/my-proj/instances/orders-pg"

var clientKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

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

func start(t *testing.T, o emulator.Options) *emulator.Emulator {
	t.Helper()
	e, err := emulator.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	e.AddCloudSQLInstance("my-proj", "orders-pg", emulator.CloudSQLInstance{})
	return e
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("status %d, body not JSON: %s", r.status, r.body)
	}
	return m
}

// googleErr returns code, status and errors[0].reason of a Google error body.
func (r response) googleErr(t *testing.T) (int, string, string) {
	t.Helper()
	var b struct {
		Error struct {
			Code   int
			Status string
			Errors []struct{ Reason string }
		}
	}
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("not a Google error body: %s", r.body)
	}
	reason := ""
	if len(b.Error.Errors) > 0 {
		reason = b.Error.Errors[0].Reason
	}
	return b.Error.Code, b.Error.Status, reason
}

func call(t *testing.T, e *emulator.Emulator, method, path, token string, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}
}

func pubPEM(t *testing.T, label string, pkcs1 bool) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&clientKey().PublicKey)
	if pkcs1 {
		der = x509.MarshalPKCS1PublicKey(&clientKey().PublicKey)
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: label, Bytes: der}))
}

func ephemeralBody(t *testing.T, field, pemKey string) string {
	b, _ := json.Marshal(map[string]string{field: pemKey})
	return string(b)
}

func TestStartRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{":0", "0.0.0.0:0", "10.1.2.3:0", "[::]:0", "example.com:0"} {
		e, _ := emulator.New(emulator.Options{})
		if err := e.Start(addr); err == nil {
			_ = e.Close()
			t.Errorf("Start(%q) accepted", addr)
		}
	}
	e, _ := emulator.New(emulator.Options{})
	if err := e.Start(""); err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if !strings.HasPrefix(e.URL(), "http://127.0.0.1:") || !strings.HasSuffix(e.URL(), "/") {
		t.Errorf("URL %s", e.URL())
	}
	if err := e.Start(""); err == nil {
		t.Error("second Start accepted")
	}
}

func TestGenerateEphemeralCert(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	e := start(t, emulator.Options{Now: clk.Now, CertLifetime: 10 * time.Minute})
	tok, _ := e.AccessToken()
	for _, tc := range []struct {
		name, label string
		pkcs1       bool
	}{
		{"PKIX under RSA PUBLIC KEY", "RSA PUBLIC KEY", false},
		{"PKIX under PUBLIC KEY", "PUBLIC KEY", false},
		{"PKCS#1 under RSA PUBLIC KEY", "RSA PUBLIC KEY", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.Issued()
			r := call(t, e, "POST", base+":generateEphemeralCert?alt=json&prettyPrint=false", tok,
				ephemeralBody(t, "public_key", pubPEM(t, tc.label, tc.pkcs1)))
			if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
				t.Fatalf("status %d %s: %s", r.status, r.header.Get("Content-Type"), r.body)
			}
			ec, _ := r.json(t)["ephemeralCert"].(map[string]any)
			for _, f := range []string{"kind", "cert", "certSerialNumber", "commonName", "sha1Fingerprint", "instance", "createTime", "expirationTime"} {
				if ec[f] == nil || ec[f] == "" {
					t.Errorf("ephemeralCert.%s missing", f)
				}
			}
			blk, rest := pem.Decode([]byte(ec["cert"].(string)))
			if blk == nil || strings.TrimSpace(string(rest)) != "" {
				t.Fatal("cert is not exactly one PEM block")
			}
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if !cert.PublicKey.(*rsa.PublicKey).Equal(&clientKey().PublicKey) {
				t.Error("cert not for our key")
			}
			if !cert.NotAfter.Equal(clk.Now().Add(10*time.Minute)) || !cert.NotBefore.Equal(clk.Now().Add(-time.Minute)) {
				t.Errorf("validity %s – %s", cert.NotBefore, cert.NotAfter)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(e.ClientCAPEM())
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: clk.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("verify against client CA: %v", err)
			}
			if e.Issued() != before+1 {
				t.Errorf("Issued %d, want %d", e.Issued(), before+1)
			}
		})
	}

	bad := []struct{ name, body, want string }{
		{"camelCase publicKey", ephemeralBody(t, "publicKey", pubPEM(t, "RSA PUBLIC KEY", false)), `Unknown name \"publicKey\"`},
		{"missing", `{}`, "public_key is required"},
		{"not PEM", `{"public_key":"hello"}`, "not a valid PEM public key"},
		{"not JSON", `{`, "Invalid JSON payload"},
		{"bad validDuration", `{"public_key":` + jsonString(pubPEM(t, "PUBLIC KEY", false)) + `,"validDuration":"1h"}`, "valid_duration"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, e, "POST", base+":generateEphemeralCert", tok, tc.body)
			if code, status, reason := r.googleErr(t); code != 400 || r.status != 400 || status != "INVALID_ARGUMENT" || reason != "invalid" {
				t.Errorf("got %d %s %s", code, status, reason)
			}
			if !strings.Contains(string(r.body), tc.want) {
				t.Errorf("body %s lacks %s", r.body, tc.want)
			}
		})
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestEphemeralCertClampedToAccessToken(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	e := start(t, emulator.Options{Now: clk.Now})
	login, loginExp := e.AccessToken(emulator.ScopeSQLLogin)
	clk.Add(30 * time.Minute)
	admin, _ := e.AccessToken()
	body, _ := json.Marshal(map[string]string{"public_key": pubPEM(t, "RSA PUBLIC KEY", false), "access_token": login})
	r := call(t, e, "POST", base+":generateEphemeralCert", admin, string(body))
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	exp := r.json(t)["ephemeralCert"].(map[string]any)["expirationTime"].(string)
	if got, _ := time.Parse(time.RFC3339, exp); !got.Equal(loginExp) {
		t.Errorf("expirationTime %s, want the login token's expiry %s", exp, loginExp)
	}
	body, _ = json.Marshal(map[string]string{"public_key": pubPEM(t, "RSA PUBLIC KEY", false), "access_token": "ya29.forged"})
	if r := call(t, e, "POST", base+":generateEphemeralCert", admin, string(body)); r.status != 400 {
		t.Errorf("forged access_token: %d", r.status)
	}
}

func TestConnectSettingsBothVersions(t *testing.T) {
	e := start(t, emulator.Options{})
	e.AddCloudSQLInstance("example.com:proj", "two", emulator.CloudSQLInstance{ServerCAs: 2, DatabaseVersion: "MYSQL_8_0", Region: "europe-west1"})
	tok, _ := e.AccessToken(emulator.ScopeSQLAdmin)
	for _, path := range []string{
		"sql/v1beta4/projects/example.com%3Aproj/instances/two/connectSettings?alt=json",
		"v1/projects/example.com%3Aproj/instances/two/connectSettings",
	} {
		r := call(t, e, "GET", path, tok, "")
		if r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		m := r.json(t)
		ca := m["serverCaCert"].(map[string]any)["cert"].(string)
		if ca != string(e.ServerCAPEM("example.com:proj", "two")) || strings.Count(ca, "BEGIN CERTIFICATE") != 2 {
			t.Errorf("serverCaCert.cert does not hold the two CAs")
		}
		if m["kind"] != "sql#connectSettings" || m["backendType"] != "SECOND_GEN" || m["region"] != "europe-west1" || m["databaseVersion"] != "MYSQL_8_0" {
			t.Errorf("settings %v", m)
		}
		ips := m["ipAddresses"].([]any)
		if ip := ips[0].(map[string]any); ip["type"] != "PRIMARY" || ip["ipAddress"] != "127.0.0.1" {
			t.Errorf("ipAddresses %v", ips)
		}
	}
	reqs := e.Requests()
	if last := reqs[len(reqs)-1]; last.Path != "/v1/projects/example.com:proj/instances/two/connectSettings" ||
		last.RawPath != "/v1/projects/example.com%3Aproj/instances/two/connectSettings" {
		t.Errorf("recorded %s / %s", last.Path, last.RawPath)
	}
}

func TestAuthErrors(t *testing.T) {
	clk := &clock{t: time.Now()}
	e := start(t, emulator.Options{Now: clk.Now})
	path := base + "/connectSettings"
	r := call(t, e, "GET", path, "", "")
	if code, status, reason := r.googleErr(t); code != 401 || status != "UNAUTHENTICATED" || reason != "authError" || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("no token: %d %s %s", code, status, reason)
	}
	if r := call(t, e, "GET", path, "ya29.made-up", ""); r.status != 401 {
		t.Errorf("unknown token: %d", r.status)
	}
	login, _ := e.AccessToken(emulator.ScopeSQLLogin)
	if code, _, reason := call(t, e, "GET", path, login, "").googleErr(t); code != 403 || reason != "insufficientPermissions" {
		t.Errorf("login-scoped token: %d %s", code, reason)
	}
	tok, _ := e.AccessToken()
	if r := call(t, e, "GET", path, tok, ""); r.status != 200 {
		t.Fatalf("valid token: %d", r.status)
	}
	clk.Add(time.Hour)
	if r := call(t, e, "GET", path, tok, ""); r.status != 401 {
		t.Errorf("expired token: %d", r.status)
	}
}

func TestUnknownInstancesAndPaths(t *testing.T) {
	e := start(t, emulator.Options{})
	tok, _ := e.AccessToken()
	pk := ephemeralBody(t, "public_key", pubPEM(t, "RSA PUBLIC KEY", false))
	cases := []struct {
		method, path, body string
		status             int
		reason             string
	}{
		{"POST", "sql/v1beta4/projects/my-proj/instances/nope:generateEphemeralCert", pk, 403, "notAuthorized"},
		{"GET", "sql/v1beta4/projects/my-proj/instances/nope/connectSettings", "", 404, "notFound"},
		{"GET", "sql/v1beta4/projects/other/instances/nope/connectSettings", "", 403, "notAuthorized"},
		{"POST", "v1/projects/other/instances/x:generateEphemeralCert", pk, 403, "notAuthorized"},
		{"GET", "sql/v1beta4/projects/my-proj/operations/nope", "", 404, "notFound"},
	}
	for _, tc := range cases {
		r := call(t, e, tc.method, tc.path, tok, tc.body)
		if code, _, reason := r.googleErr(t); r.status != tc.status || code != tc.status || reason != tc.reason {
			t.Errorf("%s %s: %d %s, want %d %s", tc.method, tc.path, r.status, reason, tc.status, tc.reason)
		}
	}
	for _, p := range []string{"sql/v1/projects/my-proj/instances/orders-pg/connectSettings", "v1beta4/x", "nope"} {
		if r := call(t, e, "GET", p, tok, ""); r.status != 404 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
			t.Errorf("GET %s: %d %s", p, r.status, r.header.Get("Content-Type"))
		}
	}
	if r := call(t, e, "GET", base+":generateEphemeralCert", tok, ""); r.status != 404 {
		t.Errorf("wrong method: %d", r.status)
	}
}

func TestFaults(t *testing.T) {
	e := start(t, emulator.Options{})
	tok, _ := e.AccessToken()
	path := base + "/connectSettings"
	e.Inject(emulator.Fault{Match: "GET /sql/v1beta4/", Status: 503, RetryAfter: "3", Times: 2})
	e.Inject(emulator.Fault{Match: "connectSettings", Garbage: true, Times: 1})
	e.Inject(emulator.Fault{Match: "connectSettings", Body: `{"x":1}`, Status: 500, Times: 1})
	e.Inject(emulator.Fault{Match: "connectSettings", Delay: 50 * time.Millisecond, Times: 1})
	for i := range 2 {
		r := call(t, e, "GET", path, tok, "")
		if code, status, _ := r.googleErr(t); code != 503 || status != "UNAVAILABLE" || r.header.Get("Retry-After") != "3" {
			t.Errorf("request %d: %d %s", i, code, status)
		}
	}
	if r := call(t, e, "GET", path, tok, ""); r.status != 200 || json.Valid(r.body) {
		t.Errorf("garbage: %d %s", r.status, r.body)
	}
	if r := call(t, e, "GET", path, tok, ""); r.status != 500 || string(r.body) != `{"x":1}` {
		t.Errorf("body override: %d %s", r.status, r.body)
	}
	t0 := time.Now()
	if r := call(t, e, "GET", path, tok, ""); r.status != 200 || time.Since(t0) < 50*time.Millisecond {
		t.Errorf("delay: %d after %v", r.status, time.Since(t0))
	}
	if r := call(t, e, "GET", path, tok, ""); r.status != 200 {
		t.Errorf("after faults: %d", r.status)
	}
	e.Inject(emulator.Fault{Match: "POST /token", Status: 400})
	r, err := http.PostForm(e.URL()+"token", url.Values{"grant_type": {"x"}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != 400 || !strings.Contains(string(b), `"error":"invalid_grant"`) {
		t.Errorf("token fault: %d %s", r.StatusCode, b)
	}
}

func TestServiceAccountFlow(t *testing.T) {
	e := start(t, emulator.Options{TokenLifetime: 30 * time.Minute})
	js, err := e.ServiceAccountJSON("sa@my-proj.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	var sa map[string]string
	_ = json.Unmarshal(js, &sa)
	if sa["type"] != "service_account" || sa["token_uri"] != e.URL()+"token" || sa["project_id"] != "my-proj" {
		t.Errorf("SA JSON fields %v", sa["type"])
	}
	ctx := context.Background()
	creds, err := google.CredentialsFromJSONWithType(ctx, js, google.ServiceAccount, emulator.ScopeCloudPlatform)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := creds.TokenSource.Token()
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(tok.Expiry); left < 29*time.Minute || left > 31*time.Minute || tok.TokenType != "Bearer" {
		t.Errorf("token expiry in %v, type %s", left, tok.TokenType)
	}
	if r := call(t, e, "GET", base+"/connectSettings", tok.AccessToken, ""); r.status != 200 {
		t.Errorf("API with SA token: %d", r.status)
	}

	// Hand-made assertions, signed with the SA key.
	blk, _ := pem.Decode([]byte(sa["private_key"]))
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key := k.(*rsa.PrivateKey)
	now := time.Now()
	good := jws.ClaimSet{Iss: sa["client_email"], Scope: emulator.ScopeSQLAdmin, Aud: sa["token_uri"], Iat: now.Unix(), Exp: now.Add(time.Hour).Unix()}
	other, _ := rsa.GenerateKey(rand.Reader, 1024)
	cases := []struct {
		name   string
		claims func(c *jws.ClaimSet)
		kid    string
		key    *rsa.PrivateKey
		code   string
	}{
		{"valid", func(*jws.ClaimSet) {}, sa["private_key_id"], key, ""},
		{"wrong aud", func(c *jws.ClaimSet) { c.Aud = "https://oauth2.googleapis.com/token" }, sa["private_key_id"], key, "invalid_grant"},
		{"expired", func(c *jws.ClaimSet) { c.Iat, c.Exp = now.Add(-3*time.Hour).Unix(), now.Add(-2*time.Hour).Unix() }, sa["private_key_id"], key, "invalid_grant"},
		{"too long", func(c *jws.ClaimSet) { c.Exp = now.Add(3 * time.Hour).Unix() }, sa["private_key_id"], key, "invalid_grant"},
		{"no scope", func(c *jws.ClaimSet) { c.Scope = "" }, sa["private_key_id"], key, "invalid_scope"},
		{"wrong signer", func(*jws.ClaimSet) {}, sa["private_key_id"], other, "invalid_grant"},
		{"unknown kid", func(*jws.ClaimSet) {}, "nope", key, "invalid_grant"},
		{"other iss", func(c *jws.ClaimSet) { c.Iss = "x@y.iam.gserviceaccount.com" }, sa["private_key_id"], key, "invalid_grant"},
	}
	for _, tc := range cases {
		c := good
		tc.claims(&c)
		assertion, err := jws.Encode(&jws.Header{Algorithm: "RS256", Typ: "JWT", KeyID: tc.kid}, &c, tc.key)
		if err != nil {
			t.Fatal(err)
		}
		status, m := postToken(t, e, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {assertion}})
		if tc.code == "" {
			if status != 200 || m["access_token"] == "" || m["token_type"] != "Bearer" || m["expires_in"] == nil {
				t.Errorf("%s: %d %v", tc.name, status, m["error"])
			}
			continue
		}
		if status != 400 || m["error"] != tc.code || m["error_description"] == "" {
			t.Errorf("%s: %d %v, want 400 %s", tc.name, status, m["error"], tc.code)
		}
	}
	if status, m := postToken(t, e, url.Values{"grant_type": {"password"}}); status != 400 || m["error"] != "unsupported_grant_type" {
		t.Errorf("unsupported grant: %d %v", status, m["error"])
	}
}

func postToken(t *testing.T, e *emulator.Emulator, form url.Values) (int, map[string]any) {
	t.Helper()
	r, err := http.PostForm(e.URL()+"token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		t.Fatalf("token response not JSON: %v", err)
	}
	return r.StatusCode, m
}

func TestAuthorizedUserFlow(t *testing.T) {
	e := start(t, emulator.Options{})
	js, err := e.AuthorizedUserJSON()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	creds, err := google.CredentialsFromJSONWithType(ctx, js, google.AuthorizedUser, emulator.ScopeSQLAdmin)
	if err != nil {
		t.Fatal(err)
	}
	client := oauth2.NewClient(ctx, creds.TokenSource)
	r, err := client.Get(e.URL() + base + "/connectSettings")
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Body.Close()
	if r.StatusCode != 200 {
		t.Errorf("API with user token: %d", r.StatusCode)
	}
	var u map[string]string
	_ = json.Unmarshal(js, &u)
	if status, m := postToken(t, e, url.Values{"grant_type": {"refresh_token"}, "client_id": {u["client_id"]}, "client_secret": {"wrong"}, "refresh_token": {u["refresh_token"]}}); status != 401 || m["error"] != "invalid_client" {
		t.Errorf("bad secret: %d %v", status, m["error"])
	}
	if status, m := postToken(t, e, url.Values{"grant_type": {"refresh_token"}, "client_id": {u["client_id"]}, "client_secret": {u["client_secret"]}, "refresh_token": {"1//revoked"}}); status != 400 || m["error"] != "invalid_grant" {
		t.Errorf("bad refresh token: %d %v", status, m["error"])
	}
}

func TestServerCert(t *testing.T) {
	e := start(t, emulator.Options{})
	certPEM, keyPEM, err := e.ServerCert("my-proj", "orders-pg", []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ServerCAPEM("my-proj", "orders-pg"))
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if leaf.Subject.CommonName != "my-proj:orders-pg" {
		t.Errorf("CN %s", leaf.Subject.CommonName)
	}
	if _, _, err := e.ServerCert("my-proj", "nope", nil); err == nil {
		t.Error("ServerCert for an unknown instance")
	}
	if _, ok := pair.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("server key %T", pair.PrivateKey)
	}
}

func TestResetSSLConfigOperation(t *testing.T) {
	e := start(t, emulator.Options{})
	tok, _ := e.AccessToken()
	before := string(e.ServerCAPEM("my-proj", "orders-pg"))
	r := call(t, e, "POST", "v1/projects/my-proj/instances/orders-pg/resetSslConfig", tok, "")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	op := r.json(t)
	if op["kind"] != "sql#operation" || op["status"] != "PENDING" || op["targetId"] != "orders-pg" {
		t.Errorf("op %v", op)
	}
	var statuses []string
	for range 3 {
		m := call(t, e, "GET", "v1/projects/my-proj/operations/"+op["name"].(string), tok, "").json(t)
		statuses = append(statuses, m["status"].(string))
		if m["status"] == "DONE" && m["error"] != nil {
			t.Errorf("error %v", m["error"])
		}
	}
	if got := strings.Join(statuses, ","); got != "RUNNING,DONE,DONE" {
		t.Errorf("statuses %s", got)
	}
	if string(e.ServerCAPEM("my-proj", "orders-pg")) == before {
		t.Error("server CA not rotated")
	}
}

func TestHandlerWithSetURL(t *testing.T) {
	e, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ServiceAccountJSON("a@b.iam.gserviceaccount.com"); err == nil {
		t.Error("ServiceAccountJSON without a URL")
	}
	e.SetURL("http://127.0.0.1:1")
	if e.URL() != "http://127.0.0.1:1/" {
		t.Errorf("URL %s", e.URL())
	}
}
