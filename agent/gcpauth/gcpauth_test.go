package gcpauth

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/dbcert-agent/dbcert-agent/agent/gapi"
)

// Secret values the fakes hand out or accept. No error may contain them.
const (
	saToken        = "ya29.sa-token-7f3c"
	userToken      = "ya29.user-token-91ab"
	metadataToken  = "ya29.metadata-token-55d2"
	impToken       = "ya29.impersonated-token-c0de"
	fileToken      = "file-token-3e8a1b"
	refreshToken   = "1//refresh-secret-4411"
	clientSecret   = "client-secret-8c8c"
	saEmail        = "agent@test-proj.iam.gserviceaccount.com"
	targetSA       = "certs@test-proj.iam.gserviceaccount.com"
	deniedSA       = "denied@test-proj.iam.gserviceaccount.com"
	sqlLoginScope  = "https://www.googleapis.com/auth/sqlservice.login"
	metadataProjID = "meta-proj"
)

var secrets = []string{saToken, userToken, metadataToken, impToken, fileToken, refreshToken, clientSecret}

// fakeGoogle is a loopback stand-in for the OAuth token endpoint, the IAM
// Credentials API, the metadata server and an API that echoes headers.
type fakeGoogle struct {
	srv *httptest.Server
	key *rsa.PrivateKey

	mu sync.Mutex
	st fakeStats
}

// fakeStats records what the fakes saw.
type fakeStats struct {
	lastJWTScope  string
	lastMDScopes  string
	lastImpScope  []string
	lastImpSource string
	tokenHits     int
	metadataHits  int
	impHits       int
}

var (
	fake   *fakeGoogle
	saKey  *rsa.PrivateKey
	tmpDir string
)

func TestMain(m *testing.M) {
	var err error
	tmpDir, err = os.MkdirTemp("", "gcpauth-test")
	if err != nil {
		panic(err)
	}
	// Isolate from the developer's gcloud files and environment, and keep
	// the metadata library away from 169.254.169.254.
	os.Setenv("HOME", filepath.Join(tmpDir, "home"))
	os.Unsetenv("GOOGLE_APPLICATION_CREDENTIALS")
	os.Unsetenv("CLOUDSDK_CONFIG")
	saKey, err = rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	fake = newFakeGoogle(saKey)
	os.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(fake.srv.URL, "http://"))
	code := m.Run()
	fake.srv.Close()
	os.RemoveAll(tmpDir)
	os.Exit(code)
}

func newFakeGoogle(key *rsa.PrivateKey) *fakeGoogle {
	f := &fakeGoogle{key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", f.token)
	mux.HandleFunc("POST /iam/v1/projects/{project}/serviceAccounts/{rest}", f.generateAccessToken)
	mux.HandleFunc("GET /computeMetadata/v1/", f.metadata)
	mux.HandleFunc("GET /api/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"authorization": r.Header.Get("Authorization"),
			"quota":         r.Header.Get("X-Goog-User-Project"),
		})
	})
	f.srv = httptest.NewServer(mux)
	return f
}

func (f *fakeGoogle) tokenURL() string { return f.srv.URL + "/token" }
func (f *fakeGoogle) iamURL() string   { return f.srv.URL + "/iam/" }

func oauthError(w http.ResponseWriter, code int, e, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": e, "error_description": desc})
}

func writeToken(w http.ResponseWriter, tok string) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "expires_in": 3599, "token_type": "Bearer"})
}

func (f *fakeGoogle) token(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.st.tokenHits++
	f.mu.Unlock()
	if err := r.ParseForm(); err != nil {
		oauthError(w, 400, "invalid_request", err.Error())
		return
	}
	switch r.PostForm.Get("grant_type") {
	case "urn:ietf:params:oauth:grant-type:jwt-bearer":
		claims, err := f.verifyJWT(r.PostForm.Get("assertion"))
		if err != nil {
			oauthError(w, 400, "invalid_grant", err.Error())
			return
		}
		f.mu.Lock()
		f.st.lastJWTScope, _ = claims["scope"].(string)
		f.mu.Unlock()
		writeToken(w, saToken)
	case "refresh_token":
		if r.PostForm.Get("client_id") != "cid.apps.googleusercontent.com" ||
			r.PostForm.Get("client_secret") != clientSecret ||
			r.PostForm.Get("refresh_token") != refreshToken {
			oauthError(w, 400, "invalid_grant", "Bad Request")
			return
		}
		writeToken(w, userToken)
	default:
		oauthError(w, 400, "unsupported_grant_type", "bad grant_type")
	}
}

// verifyJWT checks an RS256 JWT-bearer assertion against the service
// account's public key and the claims Google requires.
func (f *fakeGoogle) verifyJWT(assertion string) (map[string]any, error) {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return nil, errors.New("assertion is not a JWS")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("header: %v", err)
	}
	var hdr struct{ Alg, Typ, Kid string }
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return nil, fmt.Errorf("header: %v", err)
	}
	if hdr.Alg != "RS256" || hdr.Kid != "kid-1" {
		return nil, fmt.Errorf("unexpected header %+v", hdr)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("signature: %v", err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(&f.key.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		return nil, fmt.Errorf("signature does not verify: %v", err)
	}
	cb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("claims: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(cb, &claims); err != nil {
		return nil, fmt.Errorf("claims: %v", err)
	}
	if claims["iss"] != saEmail {
		return nil, fmt.Errorf("iss = %v", claims["iss"])
	}
	if claims["aud"] != f.tokenURL() {
		return nil, fmt.Errorf("aud = %v, want %s", claims["aud"], f.tokenURL())
	}
	if s, _ := claims["scope"].(string); s == "" {
		return nil, errors.New("no scope claim")
	}
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	now := float64(time.Now().Unix())
	if iat > now+60 || exp < now || exp-iat > 3600 {
		return nil, fmt.Errorf("bad iat/exp %v/%v", iat, exp)
	}
	return claims, nil
}

func (f *fakeGoogle) generateAccessToken(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.st.impHits++
	f.mu.Unlock()
	gerr := func(code int, status, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"code":%d,"message":%q,"status":%q}}`, code, msg, status)
	}
	if r.PathValue("project") != "-" {
		gerr(400, "INVALID_ARGUMENT", "project must be -")
		return
	}
	sa, ok := strings.CutSuffix(r.PathValue("rest"), ":generateAccessToken")
	if !ok {
		gerr(404, "NOT_FOUND", "no such method")
		return
	}
	src := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if src == "" || src == r.Header.Get("Authorization") {
		gerr(401, "UNAUTHENTICATED", "no bearer token")
		return
	}
	var body map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		gerr(400, "INVALID_ARGUMENT", "bad JSON")
		return
	}
	var scope []string
	if err := json.Unmarshal(body["scope"], &scope); err != nil || len(scope) == 0 {
		gerr(400, "INVALID_ARGUMENT", "scope is required")
		return
	}
	var lifetime string
	if json.Unmarshal(body["lifetime"], &lifetime) != nil || lifetime != "3600s" {
		gerr(400, "INVALID_ARGUMENT", "bad lifetime")
		return
	}
	f.mu.Lock()
	f.st.lastImpScope, f.st.lastImpSource = scope, src
	f.mu.Unlock()
	if sa == deniedSA {
		gerr(403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).")
		return
	}
	if sa != targetSA {
		gerr(404, "NOT_FOUND", "unknown service account")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{
		"accessToken": impToken,
		"expireTime":  time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
	})
}

func (f *fakeGoogle) metadata(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Metadata-Flavor") != "Google" {
		http.Error(w, "missing Metadata-Flavor", http.StatusForbidden)
		return
	}
	w.Header().Set("Metadata-Flavor", "Google")
	switch strings.TrimPrefix(r.URL.Path, "/computeMetadata/v1/") {
	case "instance/service-accounts/default/token":
		f.mu.Lock()
		f.st.metadataHits++
		f.st.lastMDScopes = r.URL.Query().Get("scopes")
		f.mu.Unlock()
		writeToken(w, metadataToken)
	case "project/project-id":
		io.WriteString(w, metadataProjID)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeGoogle) snapshot() fakeStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

// --- credential files -------------------------------------------------------

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func saJSON(t *testing.T) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "test-proj",
		"private_key_id": "kid-1",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   saEmail,
		"client_id":      "1234567890",
		"token_uri":      fake.tokenURL(),
	})
	return string(b)
}

func userJSON(quota string) string {
	m := map[string]string{
		"type":          "authorized_user",
		"client_id":     "cid.apps.googleusercontent.com",
		"client_secret": clientSecret,
		"refresh_token": refreshToken,
		"token_uri":     fake.tokenURL(),
	}
	if quota != "" {
		m["quota_project_id"] = quota
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// isolate gives the test an empty HOME and no GOOGLE_APPLICATION_CREDENTIALS.
func isolate(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	return home
}

// call makes one request through a client from NewClient and returns the
// headers the API saw.
func call(t *testing.T, o Options) (auth, quota string, err error) {
	t.Helper()
	c, err := NewClient(context.Background(), o)
	if err != nil {
		return "", "", err
	}
	resp, err := c.Get(fake.srv.URL + "/api/echo")
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	var m map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m["authorization"], m["quota"], nil
}

func TestClientSources(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(t *testing.T) Options
		wantToken string
		wantQuota string
		check     func(t *testing.T, before, after fakeStats)
	}{
		{
			name: "service account JSON file",
			setup: func(t *testing.T) Options {
				return Options{CredentialsFile: writeFile(t, "sa.json", saJSON(t))}
			},
			wantToken: saToken,
			check: func(t *testing.T, _, after fakeStats) {
				if after.lastJWTScope != CloudPlatformScope {
					t.Errorf("JWT scope = %q, want default %q", after.lastJWTScope, CloudPlatformScope)
				}
			},
		},
		{
			name: "service account JSON with custom scopes and quota project",
			setup: func(t *testing.T) Options {
				return Options{
					CredentialsFile: writeFile(t, "sa.json", saJSON(t)),
					Scopes:          []string{sqlLoginScope, "openid"},
					QuotaProject:    "billing-proj",
				}
			},
			wantToken: saToken,
			wantQuota: "billing-proj",
			check: func(t *testing.T, _, after fakeStats) {
				if after.lastJWTScope != sqlLoginScope+" openid" {
					t.Errorf("JWT scope = %q", after.lastJWTScope)
				}
			},
		},
		{
			name: "authorized_user file with quota_project_id",
			setup: func(t *testing.T) Options {
				return Options{CredentialsFile: writeFile(t, "user.json", userJSON("json-quota"))}
			},
			wantToken: userToken,
			wantQuota: "json-quota",
		},
		{
			name: "quota_project option overrides the file's",
			setup: func(t *testing.T) Options {
				return Options{CredentialsFile: writeFile(t, "user.json", userJSON("json-quota")), QuotaProject: "opt-quota"}
			},
			wantToken: userToken,
			wantQuota: "opt-quota",
		},
		{
			name: "ADC from GOOGLE_APPLICATION_CREDENTIALS",
			setup: func(t *testing.T) Options {
				t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", writeFile(t, "adc.json", saJSON(t)))
				return Options{}
			},
			wantToken: saToken,
		},
		{
			name: "ADC from the gcloud well-known file under HOME",
			setup: func(t *testing.T) Options {
				home := isolate(t)
				dir := filepath.Join(home, ".config", "gcloud")
				if err := os.MkdirAll(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "application_default_credentials.json"), []byte(userJSON("adc-quota")), 0o600); err != nil {
					t.Fatal(err)
				}
				return Options{}
			},
			wantToken: userToken,
			wantQuota: "adc-quota",
		},
		{
			name: "ADC from the metadata server",
			setup: func(t *testing.T) Options {
				isolate(t)
				return Options{Scopes: []string{CloudPlatformScope, sqlLoginScope}}
			},
			wantToken: metadataToken,
			check: func(t *testing.T, before, after fakeStats) {
				if after.metadataHits == before.metadataHits {
					t.Error("metadata token endpoint not called")
				}
				if want := CloudPlatformScope + "," + sqlLoginScope; after.lastMDScopes != want {
					t.Errorf("metadata scopes = %q, want %q", after.lastMDScopes, want)
				}
			},
		},
		{
			name: "token file",
			setup: func(t *testing.T) Options {
				return Options{TokenFile: writeFile(t, "token", "  "+fileToken+"\n"), QuotaProject: "q"}
			},
			wantToken: fileToken,
			wantQuota: "q",
		},
		{
			name: "impersonation over a service account key",
			setup: func(t *testing.T) Options {
				return Options{
					CredentialsFile:           writeFile(t, "sa.json", saJSON(t)),
					ImpersonateServiceAccount: targetSA,
					IAMCredentialsEndpoint:    fake.iamURL(),
					Scopes:                    []string{sqlLoginScope},
				}
			},
			wantToken: impToken,
			check: func(t *testing.T, _, after fakeStats) {
				if after.lastJWTScope != CloudPlatformScope {
					t.Errorf("source JWT scope = %q, want cloud-platform", after.lastJWTScope)
				}
				if after.lastImpSource != saToken {
					t.Error("generateAccessToken not called with the source token")
				}
				if len(after.lastImpScope) != 1 || after.lastImpScope[0] != sqlLoginScope {
					t.Errorf("impersonation scope = %q", after.lastImpScope)
				}
			},
		},
		{
			name: "impersonation over a token file, endpoint without trailing slash",
			setup: func(t *testing.T) Options {
				return Options{
					TokenFile:                 writeFile(t, "token", fileToken),
					ImpersonateServiceAccount: targetSA,
					IAMCredentialsEndpoint:    strings.TrimSuffix(fake.iamURL(), "/"),
					QuotaProject:              "imp-quota",
				}
			},
			wantToken: impToken,
			wantQuota: "imp-quota",
			check: func(t *testing.T, _, after fakeStats) {
				if after.lastImpSource != fileToken {
					t.Error("generateAccessToken not called with the token file's token")
				}
				if len(after.lastImpScope) != 1 || after.lastImpScope[0] != CloudPlatformScope {
					t.Errorf("impersonation scope = %q", after.lastImpScope)
				}
			},
		},
		{
			name: "impersonation drops the ADC file's quota project",
			setup: func(t *testing.T) Options {
				t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", writeFile(t, "user.json", userJSON("user-quota")))
				return Options{ImpersonateServiceAccount: targetSA, IAMCredentialsEndpoint: fake.iamURL()}
			},
			wantToken: impToken,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolate(t)
			o := tt.setup(t)
			before := fake.snapshot()
			auth, quota, err := call(t, o)
			if err != nil {
				t.Fatalf("request failed: %v", err)
			}
			if auth != "Bearer "+tt.wantToken {
				t.Errorf("Authorization = %q, want Bearer %s", auth, tt.wantToken)
			}
			if quota != tt.wantQuota {
				t.Errorf("X-Goog-User-Project = %q, want %q", quota, tt.wantQuota)
			}
			if tt.check != nil {
				tt.check(t, before, fake.snapshot())
			}
		})
	}
}

func TestTokenSourceReuse(t *testing.T) {
	isolate(t)
	ts, err := TokenSource(context.Background(), Options{
		CredentialsFile:           writeFile(t, "sa.json", saJSON(t)),
		ImpersonateServiceAccount: targetSA,
		IAMCredentialsEndpoint:    fake.iamURL(),
	})
	if err != nil {
		t.Fatal(err)
	}
	before := fake.snapshot()
	for range 3 {
		tok, err := ts.Token()
		if err != nil {
			t.Fatal(err)
		}
		if tok.AccessToken != impToken || time.Until(tok.Expiry) < 50*time.Minute {
			t.Fatalf("token %q expiring %v", tok.AccessToken, tok.Expiry)
		}
	}
	after := fake.snapshot()
	if n := after.impHits - before.impHits; n != 1 {
		t.Errorf("generateAccessToken called %d times, want 1 (cached)", n)
	}
	if n := after.tokenHits - before.tokenHits; n != 1 {
		t.Errorf("token endpoint called %d times, want 1 (cached)", n)
	}
}

func TestTokenSourceCanceledContext(t *testing.T) {
	isolate(t)
	ctx, cancel := context.WithCancel(context.Background())
	ts, err := TokenSource(ctx, Options{CredentialsFile: writeFile(t, "sa.json", saJSON(t))})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Token(); err != nil {
		t.Fatalf("token source died with its construction context: %v", err)
	}
}

func TestTokenFileReread(t *testing.T) {
	p := writeFile(t, "token", "token-a\n")
	ts, err := TokenSource(context.Background(), Options{TokenFile: p})
	if err != nil {
		t.Fatal(err)
	}
	get := func() string {
		t.Helper()
		tok, err := ts.Token()
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Until(tok.Expiry); d <= 0 || d > tokenFileExpiry {
			t.Errorf("expiry in %v, want within %v", d, tokenFileExpiry)
		}
		return tok.AccessToken
	}
	if got := get(); got != "token-a" {
		t.Fatalf("got %q", got)
	}
	fi, _ := os.Stat(p)
	mtime := fi.ModTime()

	// Same size, same mtime, same inode: the cached token is served.
	if err := os.WriteFile(p, []byte("token-x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, mtime, mtime)
	if got := get(); got != "token-a" {
		t.Errorf("unchanged stat: got %q, want cached token-a", got)
	}

	// Rewritten in place with a new mtime.
	if err := os.WriteFile(p, []byte("token-b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, mtime.Add(time.Second), mtime.Add(time.Second))
	if got := get(); got != "token-b" {
		t.Errorf("after rewrite: got %q, want token-b", got)
	}

	// Replaced by rename (new inode), same size and mtime.
	tmp := p + ".tmp"
	os.WriteFile(tmp, []byte("token-c\n"), 0o600)
	os.Chtimes(tmp, mtime.Add(time.Second), mtime.Add(time.Second))
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != "token-c" {
		t.Errorf("after rename: got %q, want token-c", got)
	}

	// Emptied: a clear error, then recovery.
	os.WriteFile(p, nil, 0o600)
	if _, err := ts.Token(); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: err = %v", err)
	}
	os.WriteFile(p, []byte("token-d"), 0o600)
	if got := get(); got != "token-d" {
		t.Errorf("after refill: got %q", got)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T) Options
		atToken bool     // the error surfaces from Token, not from TokenSource
		perm    bool     // with atToken: an API call through the client fails permanently
		want    []string // substrings of the error
		is      error
		check   func(t *testing.T, before, after fakeStats)
	}{
		{
			name: "credentials_file and token_file together",
			setup: func(t *testing.T) Options {
				return Options{CredentialsFile: "/x.json", TokenFile: "/y"}
			},
			want: []string{"mutually exclusive"},
		},
		{
			name: "missing credentials file",
			setup: func(t *testing.T) Options {
				return Options{CredentialsFile: filepath.Join(t.TempDir(), "nope.json")}
			},
			want: []string{"nope.json", "no such file"},
			is:   os.ErrNotExist,
		},
		{
			name: "credentials file is not JSON",
			setup: func(t *testing.T) Options {
				return Options{CredentialsFile: writeFile(t, "bad.json", "not json "+fileToken)}
			},
			want: []string{"bad.json", "not a Google credentials JSON file"},
		},
		{
			name: "client secrets file is refused",
			setup: func(t *testing.T) Options {
				return Options{CredentialsFile: writeFile(t, "cs.json", `{"installed":{"client_id":"x","client_secret":"`+clientSecret+`"}}`)}
			},
			want: []string{`missing "type"`},
		},
		{
			name: "unknown type",
			setup: func(t *testing.T) Options {
				return Options{CredentialsFile: writeFile(t, "x.json", `{"type":"weird"}`)}
			},
			want: []string{`unsupported credentials type "weird"`},
		},
		{
			name: "GOOGLE_APPLICATION_CREDENTIALS points nowhere: no fallback",
			setup: func(t *testing.T) Options {
				t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(t.TempDir(), "gone.json"))
				return Options{}
			},
			want: []string{"GOOGLE_APPLICATION_CREDENTIALS", "gone.json"},
			check: func(t *testing.T, before, after fakeStats) {
				if after.metadataHits != before.metadataHits {
					t.Error("fell back to the metadata server")
				}
			},
		},
		{
			name: "GOOGLE_APPLICATION_CREDENTIALS holds garbage",
			setup: func(t *testing.T) Options {
				t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", writeFile(t, "garbage.json", "{"+refreshToken))
				return Options{}
			},
			want: []string{"GOOGLE_APPLICATION_CREDENTIALS"},
		},
		{
			name: "no ADC at all",
			setup: func(t *testing.T) Options {
				old := findDefaultCredentials
				findDefaultCredentials = func(context.Context, google.CredentialsParams) (*google.Credentials, error) {
					return nil, errors.New("google: could not find default credentials. See https://cloud.google.com/docs/authentication/external/set-up-adc for more information")
				}
				t.Cleanup(func() { findDefaultCredentials = old })
				return Options{}
			},
			want: []string{"no Application Default Credentials found", "credentials_file", "token_file", "GOOGLE_APPLICATION_CREDENTIALS"},
			is:   ErrNoCredentials,
		},
		{
			name: "refresh token rejected",
			setup: func(t *testing.T) Options {
				j := strings.Replace(userJSON(""), refreshToken, "1//other-refresh", 1)
				return Options{CredentialsFile: writeFile(t, "user.json", j)}
			},
			atToken: true,
			perm:    true,
			want:    []string{"invalid_grant"},
		},
		{
			name: "missing token file",
			setup: func(t *testing.T) Options {
				return Options{TokenFile: filepath.Join(t.TempDir(), "token")}
			},
			atToken: true,
			want:    []string{"token_file", "no such file"},
			is:      os.ErrNotExist,
		},
		{
			name: "empty token file",
			setup: func(t *testing.T) Options {
				return Options{TokenFile: writeFile(t, "token", " \n")}
			},
			atToken: true,
			want:    []string{"token_file", "is empty"},
		},
		{
			name: "token file with two words",
			setup: func(t *testing.T) Options {
				return Options{TokenFile: writeFile(t, "token", fileToken+" "+saToken)}
			},
			atToken: true,
			want:    []string{"white space"},
		},
		{
			name: "impersonation denied",
			setup: func(t *testing.T) Options {
				return Options{
					TokenFile:                 writeFile(t, "token", fileToken),
					ImpersonateServiceAccount: deniedSA,
					IAMCredentialsEndpoint:    fake.iamURL(),
				}
			},
			atToken: true,
			perm:    true,
			want:    []string{deniedSA, "403", "PERMISSION_DENIED", "serviceAccountTokenCreator"},
		},
		{
			name: "impersonation of an unknown account",
			setup: func(t *testing.T) Options {
				return Options{
					CredentialsFile:           writeFile(t, "sa.json", saJSON(t)),
					ImpersonateServiceAccount: "nobody@test-proj.iam.gserviceaccount.com",
					IAMCredentialsEndpoint:    fake.iamURL(),
				}
			},
			atToken: true,
			perm:    true,
			want:    []string{"nobody@test-proj.iam.gserviceaccount.com", "404"},
		},
		{
			name: "VM without a service account",
			setup: func(t *testing.T) Options {
				md := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Metadata-Flavor", "Google")
					http.NotFound(w, r) // what the metadata server answers then
				}))
				t.Cleanup(md.Close)
				t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(md.URL, "http://"))
				return Options{}
			},
			atToken: true,
			perm:    true,
			want:    []string{"metadata server", "no service account attached", "credentials_file"},
		},
		{
			name: "impersonation source fails",
			setup: func(t *testing.T) Options {
				return Options{
					TokenFile:                 filepath.Join(t.TempDir(), "missing"),
					ImpersonateServiceAccount: targetSA,
					IAMCredentialsEndpoint:    fake.iamURL(),
				}
			},
			atToken: true,
			want:    []string{targetSA, "source token", "no such file"},
		},
		{
			name: "plain http IAM endpoint off loopback",
			setup: func(t *testing.T) Options {
				return Options{
					TokenFile:                 writeFile(t, "token", fileToken),
					ImpersonateServiceAccount: targetSA,
					IAMCredentialsEndpoint:    "http://iam.example.com/",
				}
			},
			want: []string{"https://"},
		},
		{
			name: "bad service account name",
			setup: func(t *testing.T) Options {
				return Options{
					TokenFile:                 writeFile(t, "token", fileToken),
					ImpersonateServiceAccount: "a/b@c",
				}
			},
			want: []string{"a/b@c"},
		},
	}
	var all []string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolate(t)
			o := tt.setup(t)
			before := fake.snapshot()
			ts, err := TokenSource(context.Background(), o)
			if tt.atToken {
				if err != nil {
					t.Fatalf("TokenSource: %v (want the error from Token)", err)
				}
				_, err = ts.Token()
				// The same error reaches HTTP callers.
				_, _, cerr := call(t, o)
				if cerr == nil || !strings.Contains(cerr.Error(), "getting Google access token") {
					t.Errorf("client error = %v", cerr)
				} else {
					all = append(all, cerr.Error())
				}
				// And an API call says whether a retry can help (spec §5: a refusal is
				// permanent; a file that may appear later is not).
				c, cerr := NewClient(context.Background(), o)
				if cerr != nil {
					t.Fatal(cerr)
				}
				aerr := gapi.Do(context.Background(), c, gapi.Request{Method: http.MethodGet, URL: fake.srv.URL + "/api/echo", Call: "echo"}, nil)
				var r interface{ Retryable() bool }
				if !errors.As(aerr, &r) || r.Retryable() == tt.perm {
					t.Errorf("API call error %v: retryable = %v, want %v", aerr, r != nil && r.Retryable(), !tt.perm)
				}
			}
			if err == nil {
				t.Fatal("no error")
			}
			all = append(all, err.Error())
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if tt.check != nil {
				tt.check(t, before, fake.snapshot())
			}
		})
	}
	t.Run("no secret in any error", func(t *testing.T) {
		if len(all) < len(tests) {
			t.Fatalf("only %d errors collected", len(all))
		}
		for _, e := range all {
			for _, s := range secrets {
				if strings.Contains(e, s) {
					t.Errorf("error %q contains secret %q", e, s)
				}
			}
		}
	})
}

func TestImpersonationErrorRetryable(t *testing.T) {
	for code, want := range map[int]bool{400: false, 401: false, 403: false, 404: false, 408: true, 429: true, 500: true, 503: true} {
		e := &ImpersonationError{StatusCode: code}
		if e.Retryable() != want {
			t.Errorf("%d: Retryable = %v", code, !want)
		}
	}
}

func TestCheckEndpoint(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://iamcredentials.googleapis.com/": true,
		"https://private.example.com/base":       true,
		"http://127.0.0.1:8080/":                 true,
		"http://[::1]:8080":                      true,
		"http://localhost:1/":                    true,
		"http://10.0.0.1/":                       false,
		"ftp://x/":                               false,
		"https://":                               false,
		"://bad":                                 false,
	} {
		u, err := checkEndpoint(raw)
		if (err == nil) != ok {
			t.Errorf("%q: err = %v, want ok=%v", raw, err, ok)
		}
		if err == nil && !strings.HasSuffix(u.Path, "/") {
			t.Errorf("%q: path %q lacks trailing slash", raw, u.Path)
		}
	}
}

// Compile-time check that the token source types satisfy the interface.
var (
	_ oauth2.TokenSource = (*fileTokenSource)(nil)
	_ oauth2.TokenSource = (*impersonatingSource)(nil)
)

type countingRT struct {
	mu    sync.Mutex
	paths []string
}

func (c *countingRT) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.paths = append(c.paths, r.URL.Path)
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func TestBaseTransportUsed(t *testing.T) {
	isolate(t)
	rt := &countingRT{}
	auth, _, err := call(t, Options{
		CredentialsFile:           writeFile(t, "sa.json", saJSON(t)),
		ImpersonateServiceAccount: targetSA,
		IAMCredentialsEndpoint:    fake.iamURL(),
		Base:                      rt,
	})
	if err != nil || auth != "Bearer "+impToken {
		t.Fatalf("auth %q, err %v", auth, err)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	want := []string{"/token", "/iam/v1/projects/-/serviceAccounts/" + targetSA + ":generateAccessToken", "/api/echo"}
	if strings.Join(rt.paths, " ") != strings.Join(want, " ") {
		t.Errorf("requests through Base = %q, want %q", rt.paths, want)
	}
}

// TestImpersonationRefreshesARefusedSourceToken: a 401 from generateAccessToken means
// the source token was refused (revoked before its expiry): the source is reset and the
// call made once more with its new token; a refusal is final (permanent) only when the
// refresh gives no new token (spec §5).
func TestImpersonationRefreshesARefusedSourceToken(t *testing.T) {
	var calls atomic.Int32
	iam := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") == "Bearer ya29.revoked" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}`)
			return
		}
		fmt.Fprintf(w, `{"accessToken":"ya29.minted","expireTime":%q}`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	defer iam.Close()
	for _, tt := range []struct {
		name      string
		sources   []string // what the source gives, build after build
		wantCalls int32
		wantOK    bool
	}{
		{"refused, then a fresh source token", []string{"ya29.revoked", "ya29.fresh"}, 2, true},
		{"refused, and the refresh gives the same token", []string{"ya29.revoked", "ya29.revoked"}, 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			calls.Store(0)
			n := 0
			base, err := newResettable(func() (oauth2.TokenSource, error) {
				tok := tt.sources[min(n, len(tt.sources)-1)]
				n++
				return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok, Expiry: time.Now().Add(time.Hour)}), nil
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.WithValue(context.Background(), oauth2.HTTPClient, iam.Client())
			ts, err := newImpersonatingSource(ctx, base, targetSA, iam.URL+"/", []string{CloudPlatformScope})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := ts.Token()
			if tt.wantOK != (err == nil) {
				t.Fatalf("Token = %v, %v", tok, err)
			}
			if !tt.wantOK {
				var ie *ImpersonationError
				if !errors.As(err, &ie) || ie.Retryable() {
					t.Errorf("error %v: want a permanent ImpersonationError", err)
				}
			}
			if got := calls.Load(); got != tt.wantCalls {
				t.Errorf("%d generateAccessToken calls, want %d", got, tt.wantCalls)
			}
		})
	}
}
