package gapi

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/dbcert-agent/dbcert-agent/agent/apierr"
	"github.com/dbcert-agent/dbcert-agent/agent/wire"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseError(t *testing.T) {
	cases := []struct {
		name                                 string
		status                               int
		header                               http.Header
		body                                 string
		code                                 int
		gStatus, reason, infoReason, message string
		retryAfter                           time.Duration
	}{
		{name: "cloud sql 403", status: 403,
			body: `{"error":{"code":403,"message":"The client is not authorized to make this request.","errors":[{"message":"The client is not authorized to make this request.","domain":"global","reason":"notAuthorized"}],"status":"PERMISSION_DENIED"}}`,
			code: 403, gStatus: "PERMISSION_DENIED", reason: "notAuthorized", message: "The client is not authorized to make this request."},
		{name: "scope", status: 403,
			body: `{"error":{"code":403,"message":"Request had insufficient authentication scopes.","errors":[{"message":"Insufficient Permission","domain":"global","reason":"insufficientPermissions"}],"status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"ACCESS_TOKEN_SCOPE_INSUFFICIENT","domain":"googleapis.com","metadata":{"service":"sqladmin.googleapis.com"}}]}}`,
			code: 403, gStatus: "PERMISSION_DENIED", reason: "insufficientPermissions", infoReason: "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
			message: "Request had insufficient authentication scopes."},
		{name: "array wrapped, no code", status: 503,
			body: `[{"error":{"message":"down","status":"UNAVAILABLE"}}]`,
			code: 503, gStatus: "UNAVAILABLE", message: "down"},
		{name: "non-JSON", status: 502, body: "<html>Bad Gateway</html>", code: 502, message: "non-JSON body"},
		{name: "empty", status: 500, body: "", code: 500, message: "empty body"},
		{name: "retry-after seconds", status: 429, header: http.Header{"Retry-After": {"12"}},
			body: `{"error":{"code":429,"message":"q","status":"RESOURCE_EXHAUSTED"}}`,
			code: 429, gStatus: "RESOURCE_EXHAUSTED", message: "q", retryAfter: 12 * time.Second},
		{name: "RetryInfo", status: 429,
			body: `{"error":{"code":429,"message":"q","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}`,
			code: 429, message: "q", retryAfter: 1500 * time.Millisecond},
		{name: "header beats RetryInfo", status: 503, header: http.Header{"Retry-After": {"4"}},
			body: `{"error":{"code":503,"message":"q","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"9s"}]}}`,
			code: 503, message: "q", retryAfter: 4 * time.Second},
		{name: "multi-line message", status: 400, body: `{"error":{"code":400,"message":"a\n  b"}}`, code: 400, message: "a b"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.header
			if h == nil {
				h = http.Header{}
			}
			e := ParseError(tc.status, h, []byte(tc.body))
			if e.Code != tc.code || e.Status != tc.gStatus || e.Reason != tc.reason || e.InfoReason != tc.infoReason || e.Message != tc.message {
				t.Errorf("got code=%d status=%q reason=%q info=%q message=%q", e.Code, e.Status, e.Reason, e.InfoReason, e.Message)
			}
			if e.RetryAfter() != tc.retryAfter {
				t.Errorf("RetryAfter = %v, want %v", e.RetryAfter(), tc.retryAfter)
			}
			if string(e.Body) != tc.body {
				t.Errorf("Body not kept")
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	}
	for _, tc := range cases {
		got, ok := apierr.ParseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("apierr.ParseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestErrorSentenceAndHints(t *testing.T) {
	mk := func(code int, reason, info, msg string) *Error {
		e := &Error{Code: code, Reason: reason, InfoReason: info, Message: msg, Call: "generateEphemeralCert", Target: "my-proj/orders-pg"}
		e.Hint = DefaultHint(e, "cloudsql.instances.connect")
		return e
	}
	cases := []struct {
		e         *Error
		want      string
		retryable bool
	}{
		{mk(403, "notAuthorized", "", ""), "403 notAuthorized from generateEphemeralCert for my-proj/orders-pg: the credentials lack cloudsql.instances.connect or the instance name is wrong", false},
		{mk(403, "", "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "m"), "403 ACCESS_TOKEN_SCOPE_INSUFFICIENT from generateEphemeralCert for my-proj/orders-pg: the access token lacks the cloud-platform scope (m)", false},
		{mk(403, "accessNotConfigured", "SERVICE_DISABLED", ""), "403 accessNotConfigured from generateEphemeralCert for my-proj/orders-pg: the API is not enabled in the project; enable it", false},
		{mk(401, "authError", "", ""), "401 authError from generateEphemeralCert for my-proj/orders-pg: the credentials were rejected; check credentials_file/token_file", false},
		{mk(404, "notFound", "", ""), "404 notFound from generateEphemeralCert for my-proj/orders-pg: check project and instance names", false},
		{mk(429, "rateLimitExceeded", "", ""), "429 rateLimitExceeded from generateEphemeralCert for my-proj/orders-pg: quota exceeded (retryable)", true},
		{mk(503, "", "", "non-JSON body"), "503 from generateEphemeralCert for my-proj/orders-pg: server error (retryable) (non-JSON body)", true},
		{mk(418, "", "", ""), "418 from generateEphemeralCert for my-proj/orders-pg: unexpected response", false},
		{&Error{Code: 403, Call: "x"}, "403 from x: unexpected response", false},
	}
	for _, tc := range cases {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
		if tc.e.Retryable() != tc.retryable {
			t.Errorf("%s: Retryable() = %v", tc.want, tc.e.Retryable())
		}
	}
	long := ParseError(400, http.Header{}, []byte(`{"error":{"message":"`+strings.Repeat("é", 400)+`"}}`))
	if got := long.Error(); !strings.HasSuffix(got, "…") || len(got) > 400 || !utf8.ValidString(got) {
		t.Errorf("long message not capped: %d bytes", len(got))
	}
	cause := errors.New("boom")
	if br := BadResponse("c", "t", cause, ""); !errors.Is(br, cause) || br.Retryable() || br.Error() != "200 from c for t: boom" {
		t.Errorf("BadResponse: %v", br)
	}
}

func TestDo(t *testing.T) {
	var got *http.Request
	var gotBody []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		gotBody, _ = io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/ok":
			_, _ = io.WriteString(w, `{"name":"x"}`)
		case "/huge":
			_, _ = io.WriteString(w, `{"name":"`+strings.Repeat("x", MaxBody)+`"}`)
		case "/huge500":
			w.WriteHeader(500)
			_, _ = io.WriteString(w, strings.Repeat("x", 2*MaxBody))
		case "/bad":
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(503)
			_, _ = io.WriteString(w, `{"error":{"code":503,"message":"down","status":"UNAVAILABLE"}}`)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	var out struct{ Name string }
	err := Do(ctx, srv.Client(), Request{Method: "POST", URL: srv.URL + "/ok", Body: map[string]string{"public_key": "k"}, Call: "c", Target: "t"}, &out)
	if err != nil || out.Name != "x" {
		t.Fatalf("Do: %v, %+v", err, out)
	}
	if got.Header.Get("Content-Type") != "application/json" || got.Header.Get("Accept") != "application/json" || got.Header.Get("User-Agent") != wire.UserAgent() {
		t.Errorf("headers %v", got.Header)
	}
	var sent map[string]string
	if json.Unmarshal(gotBody, &sent) != nil || sent["public_key"] != "k" {
		t.Errorf("body %s", gotBody)
	}
	if err := Do(ctx, srv.Client(), Request{Method: "GET", URL: srv.URL + "/ok", Call: "c"}, nil); err != nil || got.Header.Get("Content-Type") != "" {
		t.Errorf("GET: %v, Content-Type %q", err, got.Header.Get("Content-Type"))
	}

	err = Do(ctx, srv.Client(), Request{Method: "GET", URL: srv.URL + "/huge", Call: "c"}, &out)
	var ge *Error
	if !errors.As(err, &ge) || ge.Retryable() || !strings.Contains(err.Error(), "exceeds the 1 MiB limit") {
		t.Errorf("huge 200: %v", err)
	}
	err = Do(ctx, srv.Client(), Request{Method: "GET", URL: srv.URL + "/huge500", Call: "c"}, &out)
	if !errors.As(err, &ge) || !ge.Retryable() || len(ge.Body) > MaxKeptBody {
		t.Errorf("huge 500: %v", err)
	}
	err = Do(ctx, srv.Client(), Request{Method: "GET", URL: srv.URL + "/bad", Call: "c", Target: "t"}, &out)
	if !errors.As(err, &ge) || !ge.Retryable() || ge.RetryAfter() != 5*time.Second ||
		err.Error() != "503 UNAVAILABLE from c for t: server error (retryable) (down)" {
		t.Errorf("503: %v", err)
	}
}

type permanentErr struct{}

func (permanentErr) Error() string             { return "token file is empty" }
func (permanentErr) Retryable() bool           { return false }
func (permanentErr) RetryAfter() time.Duration { return 0 }

type failingTransport struct{ err error }

func (f failingTransport) RoundTrip(*http.Request) (*http.Response, error) { return nil, f.err }

func TestDoNetErrors(t *testing.T) {
	req := Request{Method: "GET", URL: "http://127.0.0.1:1/x", Call: "connectSettings", Target: "p/i"}
	err := Do(context.Background(), &http.Client{Transport: failingTransport{errors.New("connection reset by peer")}}, req, nil)
	var ne *NetError
	if !errors.As(err, &ne) || !ne.Retryable() ||
		err.Error() != "calling connectSettings for p/i at 127.0.0.1:1 failed: connection reset by peer (retryable)" {
		t.Errorf("reset: %v", err)
	}
	err = Do(context.Background(), &http.Client{Transport: failingTransport{permanentErr{}}}, req, nil)
	if !errors.As(err, &ne) || ne.Retryable() || strings.Contains(err.Error(), "retryable") {
		t.Errorf("permanent cause: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = Do(ctx, &http.Client{Transport: failingTransport{errors.New("x")}}, req, nil)
	if !errors.As(err, &ne) || ne.Retryable() || !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
}
