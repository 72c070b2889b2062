package huaweiauth_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
	"github.com/dbcert-agent/dbcert-agent/agent/huaweiauth"
)

const (
	project  = "0123456789abcdef0123456789abcdef"
	instance = "a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5din06"
	domain   = "acct"
	user     = "ops"
	password = "S3cret Passw0rd!"
)

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

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func startEmulator(t *testing.T, c *clock) *emulator.Emulator {
	t.Helper()
	o := emulator.Options{}
	if c != nil {
		o.Now = c.Now
	}
	e, err := emulator.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.CloseHuawei(); _ = e.Close() })
	e.AddHuaweiUser(domain, user, password)
	e.AddGeminiDBInstance(project, instance)
	return e
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func apiURL(e *emulator.Emulator) string {
	return strings.TrimSuffix(e.URL(), "/") + "/v3/" + project + "/instances/" + instance + "/ssl-cert/download-link"
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, error) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

func mustGet(t *testing.T, c *http.Client, u string, want int) {
	t.Helper()
	resp, err := get(t, c, u)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Fatalf("GET: status %d, want %d", resp.StatusCode, want)
	}
}

// count returns how many recorded requests have this method and path.
func count(e *emulator.Emulator, method, path string) int {
	n := 0
	for _, r := range e.Requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

func iamCount(e *emulator.Emulator) int { return count(e, "POST", "/v3/auth/tokens") }

func passwordClient(t *testing.T, e *emulator.Emulator, c *clock, mutate func(*huaweiauth.Options)) *http.Client {
	t.Helper()
	o := huaweiauth.Options{
		Region:       "cn-north-4",
		IAMEndpoint:  e.URL(),
		UserName:     user,
		PasswordFile: writeFile(t, t.TempDir(), "pw", password+"\n"),
		DomainName:   domain,
		ProjectID:    project,
	}
	if c != nil {
		o.Now = c.Now
	}
	if mutate != nil {
		mutate(&o)
	}
	tr, err := huaweiauth.NewTransport(o)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestPasswordTokenRequestBody(t *testing.T) {
	e := startEmulator(t, nil)
	c := passwordClient(t, e, nil, nil)
	mustGet(t, c, apiURL(e), 200)

	var iam *emulator.Request
	for _, r := range e.Requests() {
		if r.Path == "/v3/auth/tokens" {
			iam = &r
			break
		}
	}
	if iam == nil {
		t.Fatal("no IAM request")
	}
	if ct := iam.Header.Get("Content-Type"); ct != "application/json;charset=utf8" {
		t.Errorf("Content-Type %q", ct)
	}
	if iam.Query.Get("nocatalog") == "" {
		t.Errorf("nocatalog not set: %v", iam.Query)
	}
	want := `{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"ops","password":"S3cret Passw0rd!","domain":{"name":"acct"}}}},"scope":{"project":{"id":"` + project + `"}}}}`
	if string(iam.Body) != want {
		t.Errorf("IAM body\n%s\nwant\n%s", iam.Body, want)
	}
	// The API request carries the token from X-Subject-Token.
	reqs := e.Requests()
	last := reqs[len(reqs)-1]
	if last.Header.Get("X-Auth-Token") == "" || !strings.HasPrefix(last.Header.Get("X-Auth-Token"), "MII") {
		t.Errorf("API request without the IAM token")
	}
}

func TestPasswordScopeByRegionName(t *testing.T) {
	e := startEmulator(t, nil)
	c := passwordClient(t, e, nil, func(o *huaweiauth.Options) { o.ProjectID = "" })
	mustGet(t, c, apiURL(e), 200)
	for _, r := range e.Requests() {
		if r.Path == "/v3/auth/tokens" && !strings.Contains(string(r.Body), `"scope":{"project":{"name":"cn-north-4"}}`) {
			t.Errorf("scope by name: %s", r.Body)
		}
	}
}

func TestPasswordTokenCachedAndRefreshedBeforeExpiry(t *testing.T) {
	c := newClock()
	e := startEmulator(t, c)
	cl := passwordClient(t, e, c, nil)
	for range 3 {
		mustGet(t, cl, apiURL(e), 200)
	}
	if n := iamCount(e); n != 1 {
		t.Fatalf("IAM requests %d, want 1 (cached)", n)
	}
	c.Add(22*time.Hour + 59*time.Minute) // 24 h token: refresh once less than 1 h is left
	mustGet(t, cl, apiURL(e), 200)
	if n := iamCount(e); n != 1 {
		t.Fatalf("IAM requests %d after 22h59m, want 1", n)
	}
	c.Add(2 * time.Minute)
	mustGet(t, cl, apiURL(e), 200)
	if n := iamCount(e); n != 2 {
		t.Fatalf("IAM requests %d after 23h01m, want 2 (refreshed before expiry)", n)
	}
}

func TestShortTokenRefreshedAtQuarterLeft(t *testing.T) {
	c := newClock()
	e := startEmulator(t, c)
	e.SetHuaweiTokenLifetime(8 * time.Second)
	cl := passwordClient(t, e, c, nil)
	mustGet(t, cl, apiURL(e), 200)
	c.Add(5 * time.Second)
	mustGet(t, cl, apiURL(e), 200)
	if n := iamCount(e); n != 1 {
		t.Fatalf("IAM requests %d at 5s of 8s, want 1", n)
	}
	c.Add(1500 * time.Millisecond)
	mustGet(t, cl, apiURL(e), 200)
	if n := iamCount(e); n != 2 {
		t.Fatalf("IAM requests %d at 6.5s of 8s, want 2", n)
	}
	// Far past expiry: a fresh token, and the API accepts it.
	c.Add(time.Hour)
	mustGet(t, cl, apiURL(e), 200)
	if n := iamCount(e); n != 3 {
		t.Fatalf("IAM requests %d, want 3", n)
	}
}

func TestRefreshFailureKeepsUsableToken(t *testing.T) {
	c := newClock()
	e := startEmulator(t, c)
	cl := passwordClient(t, e, c, nil)
	mustGet(t, cl, apiURL(e), 200)
	c.Add(23*time.Hour + 10*time.Minute) // due for refresh, still valid
	e.Inject(emulator.Fault{Match: "POST /v3/auth/tokens", Status: 503, Times: 1})
	mustGet(t, cl, apiURL(e), 200)
	mustGet(t, cl, apiURL(e), 200) // no second IAM attempt right away
	if n := iamCount(e); n != 2 {
		t.Fatalf("IAM requests %d, want 2", n)
	}
	c.Add(2 * time.Minute)
	mustGet(t, cl, apiURL(e), 200)
	if n := iamCount(e); n != 3 {
		t.Fatalf("IAM requests %d, want 3 (retried after a while)", n)
	}
}

func TestUnauthorizedTriggersRefresh(t *testing.T) {
	e := startEmulator(t, nil)
	cl := passwordClient(t, e, nil, nil)
	mustGet(t, cl, apiURL(e), 200)
	e.RevokeHuaweiTokens() // as a password change does
	mustGet(t, cl, apiURL(e), 200)
	if n := iamCount(e); n != 2 {
		t.Fatalf("IAM requests %d, want 2", n)
	}
	path := "/v3/" + project + "/instances/" + instance + "/ssl-cert/download-link"
	if n := count(e, "GET", path); n != 3 {
		t.Fatalf("API requests %d, want 3 (ok, 401, retried ok)", n)
	}
}

func TestUnauthorizedRetryReplaysBody(t *testing.T) {
	e := startEmulator(t, nil)
	var (
		mu     sync.Mutex
		bodies []string
		tokens []string
	)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		bodies = append(bodies, string(b))
		tokens = append(tokens, r.Header.Get("X-Auth-Token"))
		if len(bodies) == 1 {
			w.WriteHeader(401)
			_, _ = io.WriteString(w, `{"error_code":"APIGW.0301","error_msg":"Incorrect IAM authentication information: The token must be updated."}`)
			return
		}
		w.WriteHeader(202)
	}))
	defer api.Close()
	cl := passwordClient(t, e, nil, nil)
	resp, err := cl.Post(api.URL+"/v3/x", "application/json", strings.NewReader(`{"ssl_option":"on"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 || bodies[0] != bodies[1] || bodies[1] != `{"ssl_option":"on"}` {
		t.Fatalf("bodies %q", bodies)
	}
	if tokens[0] == tokens[1] {
		t.Fatal("retried with the same token")
	}
}

func TestConcurrentRequestsShareOneTokenRequest(t *testing.T) {
	e := startEmulator(t, nil)
	e.Inject(emulator.Fault{Match: "POST /v3/auth/tokens", Delay: 100 * time.Millisecond, Times: 1})
	cl := passwordClient(t, e, nil, nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			resp, err := get(t, cl, apiURL(e))
			if err != nil || resp.StatusCode != 200 {
				t.Errorf("GET: %v %v", resp, err)
			}
		})
	}
	wg.Wait()
	if n := iamCount(e); n != 1 {
		t.Fatalf("IAM requests %d, want 1", n)
	}
}

// retryable is what the agent looks for.
type retryable interface {
	Retryable() bool
	RetryAfter() time.Duration
}

func TestWrongPassword(t *testing.T) {
	e := startEmulator(t, nil)
	e.AddHuaweiUser(domain, user, "another password")
	cl := passwordClient(t, e, nil, nil)
	_, err := get(t, cl, apiURL(e))
	if err == nil {
		t.Fatal("no error")
	}
	var he *huaweiauth.Error
	if !errors.As(err, &he) {
		t.Fatalf("%T %v", err, err)
	}
	msg := he.Error()
	for _, want := range []string{"401", "IAM token request", "user ops in domain acct", "The username or password is wrong.", "check user_name, password_file and domain_name"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(err.Error(), password) || strings.Contains(err.Error(), "another password") {
		t.Fatalf("secret in error: %v", err)
	}
	var r retryable
	if !errors.As(err, &r) || r.Retryable() {
		t.Fatalf("wrong password must be permanent: %v", err)
	}
}

func TestIAMErrorsAreTyped(t *testing.T) {
	e := startEmulator(t, nil)
	cl := passwordClient(t, e, nil, nil)
	e.Inject(emulator.Fault{Match: "POST /v3/auth/tokens", Status: 503, RetryAfter: "7",
		Body: `{"error":{"code":"IAM.0007","message":"Service busy, the password is ` + password + `"}}`, Times: 1})
	_, err := get(t, cl, apiURL(e))
	var r retryable
	if !errors.As(err, &r) || !r.Retryable() || r.RetryAfter() != 7*time.Second {
		t.Fatalf("503: %v", err)
	}
	if strings.Contains(err.Error(), password) {
		t.Fatalf("password in error: %v", err)
	}
	if !strings.Contains(err.Error(), "503 IAM.0007 from IAM token request") {
		t.Fatalf("error: %v", err)
	}
	// A network error is retryable.
	e.Inject(emulator.Fault{Match: "POST /v3/auth/tokens", CloseConn: true, Times: 1})
	_, err = get(t, cl, apiURL(e))
	var ne *huaweiauth.NetError
	if !errors.As(err, &ne) || !ne.Retryable() {
		t.Fatalf("network error: %T %v", err, err)
	}
	// Something that is not IAM: no X-Subject-Token.
	e.Inject(emulator.Fault{Match: "POST /v3/auth/tokens", Status: 201, Body: `{}`, Times: 1})
	_, err = get(t, cl, apiURL(e))
	if !errors.As(err, &r) || r.Retryable() || !strings.Contains(err.Error(), "X-Subject-Token") {
		t.Fatalf("no token header: %v", err)
	}
}

func TestPasswordFileProblems(t *testing.T) {
	e := startEmulator(t, nil)
	dir := t.TempDir()
	cl := passwordClient(t, e, nil, func(o *huaweiauth.Options) { o.PasswordFile = filepath.Join(dir, "missing") })
	_, err := get(t, cl, apiURL(e))
	var r retryable
	if err == nil || !strings.Contains(err.Error(), "password_file") || !errors.As(err, &r) || r.Retryable() {
		t.Fatalf("missing password file: %v", err)
	}
	cl = passwordClient(t, e, nil, func(o *huaweiauth.Options) { o.PasswordFile = writeFile(t, dir, "pw2", "line1\nline2\n") })
	_, err = get(t, cl, apiURL(e))
	if err == nil || strings.Contains(err.Error(), "line1") {
		t.Fatalf("two-line password file: %v", err)
	}
}

func emulatorToken(t *testing.T, e *emulator.Emulator) string {
	t.Helper()
	body := `{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"ops","password":"` + password +
		`","domain":{"name":"acct"}}}},"scope":{"project":{"id":"` + project + `"}}}}`
	resp, err := http.Post(e.URL()+"v3/auth/tokens", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("IAM status %d", resp.StatusCode)
	}
	var tr struct {
		Token struct {
			ExpiresAt string `json:"expires_at"`
		} `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || tr.Token.ExpiresAt == "" {
		t.Fatalf("IAM body: %v", err)
	}
	return resp.Header.Get("X-Subject-Token")
}

func lastAPIToken(e *emulator.Emulator) string {
	reqs := e.Requests()
	return reqs[len(reqs)-1].Header.Get("X-Auth-Token")
}

func TestTokenFile(t *testing.T) {
	e := startEmulator(t, nil)
	dir := t.TempDir()
	a := emulatorToken(t, e)
	p := writeFile(t, dir, "token", a+"\n")
	tr, err := huaweiauth.NewTransport(huaweiauth.Options{Region: "cn-north-4", TokenFile: p})
	if err != nil {
		t.Fatal(err)
	}
	cl := &http.Client{Transport: tr}
	mustGet(t, cl, apiURL(e), 200)
	if lastAPIToken(e) != a {
		t.Fatal("token from file not sent")
	}
	// Someone writes a new token: it is picked up.
	b := emulatorToken(t, e)
	if err := os.WriteFile(p+".new", []byte(b), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p+".new", p); err != nil {
		t.Fatal(err)
	}
	mustGet(t, cl, apiURL(e), 200)
	if lastAPIToken(e) != b {
		t.Fatal("new token not picked up")
	}
	if n := iamCount(e); n != 2 {
		t.Fatalf("token file transport called IAM: %d", n)
	}

	// A 401 makes it read the file again even when it looks unchanged.
	fi, _ := os.Stat(p)
	e.RevokeHuaweiTokens()
	c := emulatorToken(t, e)
	if len(c) != len(b) {
		t.Skip("tokens differ in length")
	}
	if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	mustGet(t, cl, apiURL(e), 200)
	if lastAPIToken(e) != c {
		t.Fatal("token not re-read after 401")
	}
}

func TestTokenFileProblems(t *testing.T) {
	dir := t.TempDir()
	tr, err := huaweiauth.NewTransport(huaweiauth.Options{TokenFile: filepath.Join(dir, "nope")})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://127.0.0.1:1/", nil)
	_, err = tr.RoundTrip(req)
	var r retryable
	if err == nil || !strings.Contains(err.Error(), "token_file") || !errors.As(err, &r) || !r.Retryable() {
		t.Fatalf("missing token file: %v", err)
	}
	p := writeFile(t, dir, "tok", "MIIabc def")
	tr, _ = huaweiauth.NewTransport(huaweiauth.Options{TokenFile: p})
	_, err = tr.RoundTrip(req)
	if err == nil || strings.Contains(err.Error(), "MIIabc") {
		t.Fatalf("bad token file: %v", err)
	}
}

func TestAKSK(t *testing.T) {
	e := startEmulator(t, nil)
	ak, sk := e.HuaweiAKSK()
	dir := t.TempDir()
	skFile := writeFile(t, dir, "sk", sk+"\n")
	for _, pid := range []string{project, ""} { // "" → taken from the path
		tr, err := huaweiauth.NewTransport(huaweiauth.Options{Region: "cn-north-4", AccessKey: ak, SecretKeyFile: skFile, ProjectID: pid})
		if err != nil {
			t.Fatal(err)
		}
		mustGet(t, &http.Client{Transport: tr}, apiURL(e), 200)
		reqs := e.Requests()
		h := reqs[len(reqs)-1].Header
		if h.Get("X-Project-Id") != project || h.Get("X-Sdk-Date") == "" ||
			!strings.HasPrefix(h.Get("Authorization"), "SDK-HMAC-SHA256 Access="+ak+", SignedHeaders=host;x-project-id;x-sdk-date, Signature=") {
			t.Fatalf("headers %v", h)
		}
	}
	// Clock skew over 15 minutes is refused.
	tr, _ := huaweiauth.NewTransport(huaweiauth.Options{AccessKey: ak, SecretKeyFile: skFile, ProjectID: project,
		Now: func() time.Time { return time.Now().Add(16 * time.Minute) }})
	mustGet(t, &http.Client{Transport: tr}, apiURL(e), 401)
	// A wrong secret key is refused, and never printed.
	bad := writeFile(t, dir, "badsk", "WRONGSECRETKEYwrongsecretkey0000000000001")
	tr, _ = huaweiauth.NewTransport(huaweiauth.Options{AccessKey: ak, SecretKeyFile: bad, ProjectID: project})
	mustGet(t, &http.Client{Transport: tr}, apiURL(e), 401)
	// The caller's request is not modified.
	tr, _ = huaweiauth.NewTransport(huaweiauth.Options{AccessKey: ak, SecretKeyFile: skFile, ProjectID: project})
	req, _ := http.NewRequest("GET", apiURL(e), nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if req.Header.Get("Authorization") != "" || req.Header.Get("X-Sdk-Date") != "" {
		t.Fatal("RoundTrip modified the caller's request")
	}
	// Missing SK file: permanent, names the attribute.
	tr, _ = huaweiauth.NewTransport(huaweiauth.Options{AccessKey: ak, SecretKeyFile: filepath.Join(dir, "none"), ProjectID: project})
	_, err = get(t, &http.Client{Transport: tr}, apiURL(e))
	var r retryable
	if err == nil || !strings.Contains(err.Error(), "secret_key_file") || !errors.As(err, &r) || r.Retryable() {
		t.Fatalf("missing SK file: %v", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, c := range []struct {
		o    huaweiauth.Options
		want string
	}{
		{huaweiauth.Options{}, "set one way"},
		{huaweiauth.Options{TokenFile: "t", AccessKey: "a", SecretKeyFile: "s"}, "exactly one"},
		{huaweiauth.Options{TokenFile: "t", UserName: "u"}, "exactly one"},
		{huaweiauth.Options{AccessKey: "a"}, "both access_key and secret_key_file"},
		{huaweiauth.Options{UserName: "u", PasswordFile: "p"}, "domain_name"},
		{huaweiauth.Options{UserName: "u", PasswordFile: "p", DomainName: "d"}, "project_id or region"},
		{huaweiauth.Options{UserName: "u", PasswordFile: "p", DomainName: "d", Region: "cn-north-4", IAMEndpoint: "http://iam.example.com"}, "loopback"},
		{huaweiauth.Options{TokenFile: "t", Region: "cn north"}, "invalid region"},
	} {
		_, err := huaweiauth.NewTransport(c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.o, err, c.want)
		}
	}
	for _, o := range []huaweiauth.Options{
		{TokenFile: "t"},
		{AccessKey: "a", SecretKeyFile: "s"},
		{UserName: "u", PasswordFile: "p", DomainName: "d", Region: "cn-north-4"},
		{UserName: "u", PasswordFile: "p", DomainName: "d", ProjectID: project, IAMEndpoint: "http://127.0.0.1:9/"},
	} {
		if _, err := huaweiauth.NewTransport(o); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
}

func TestUnauthorizedNonReplayableBody(t *testing.T) {
	e := startEmulator(t, nil)
	var (
		mu     sync.Mutex
		tokens []string
	)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		tokens = append(tokens, r.Header.Get("X-Auth-Token"))
		if len(tokens) == 1 {
			w.WriteHeader(401)
		}
	}))
	defer api.Close()
	cl := passwordClient(t, e, nil, nil)
	req, _ := http.NewRequest("POST", api.URL, io.NopCloser(strings.NewReader("once"))) // no GetBody
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("status %d, want the 401 (body not replayable)", resp.StatusCode)
	}
	mustGet(t, cl, api.URL, 200)
	mu.Lock()
	defer mu.Unlock()
	if len(tokens) != 2 || tokens[0] == tokens[1] {
		t.Fatal("the rejected token was used again")
	}
}
