// Package emulator is an in-process fake of the cloud APIs the agent calls — the
// Google OAuth token endpoint and the Cloud SQL Admin connect/operations methods — with
// the wire format of the reference (exact paths for v1beta4 and v1, Google error bodies,
// real status codes). Tests use it, and so does `dbcert-agent dev`.
//
// It serves every API from one root URL. It issues real certificates from its own CAs
// and real OAuth access tokens for the service-account keys it hands out, records every
// request, and injects faults on demand. It listens on loopback only.
package emulator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/wire"
)

// Options configure an Emulator. Zero values mean the defaults.
type Options struct {
	// CertLifetime is the lifetime of issued client certificates; default 1h.
	CertLifetime time.Duration
	// Now is the emulator's clock, for certificate validity, access-token expiry and
	// JWT assertion checks; default time.Now. Note that OAuth clients track token expiry
	// with the real clock: moving Now past TokenLifetime makes their tokens fail with 401.
	Now func() time.Time
	// TokenLifetime is the lifetime of issued OAuth access tokens; default 1h.
	TokenLifetime time.Duration
	// NoLoginTokenClamp makes generateEphemeralCert ignore the embedded access_token's
	// expiry when it sets the certificate's NotAfter (CertLifetime alone decides). Real
	// Cloud SQL may or may not bound the certificate by the token; the connector clamps
	// locally regardless (reference §1.5, pitfall 8), and so must the agent: tests of
	// that clamp use this mode so the emulator does not do the agent's job for it.
	NoLoginTokenClamp bool
	// Quota, when set, limits each identity's admin API requests (see Quota); default
	// none. SetQuota changes it later.
	Quota Quota
}

// Request is one request the emulator received.
type Request struct {
	Method string
	// Path is the decoded path ("/sql/v1beta4/projects/example.com:p/...").
	Path string
	// RawPath is the path as it went on the wire ("/sql/v1beta4/projects/example.com%3Ap/...").
	RawPath string
	Query   url.Values
	// Header holds every request header, Authorization included: never print it.
	Header http.Header
	Body   []byte
	// Time is when the request arrived (by Options.Now).
	Time time.Time
}

// Emulator is the fake API server. Its methods are safe for concurrent use.
type Emulator struct {
	opts     Options
	clientCA *ca

	mu        sync.Mutex
	url       string
	srv       *http.Server
	requests  []Request
	faults    []*faultState
	issued    int
	auth      authState
	instances map[string]*sqlInstance // key: project + "/" + instance
	ops       map[string]*sqlOperation
	opFail    *OpFailure
	alloy     alloyState  // alloydb.go
	huawei    huaweiState // huawei.go (IAM tokens, GeminiDB)
	quota     quotaState  // quota.go (own lock)
}

// New makes an Emulator and its client-certificate CA. It does not listen; call Start,
// or serve Handler yourself (then call SetURL).
func New(opts Options) (*Emulator, error) {
	if opts.CertLifetime <= 0 {
		opts.CertLifetime = time.Hour
	}
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	clientCA, err := newCA("emulator Cloud SQL client CA", opts.Now())
	if err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	return &Emulator{
		quota:     quotaState{q: opts.Quota, buckets: map[string]*quotaBuckets{}},
		opts:      opts,
		clientCA:  clientCA,
		auth:      newAuthState(),
		instances: map[string]*sqlInstance{},
		ops:       map[string]*sqlOperation{},
	}, nil
}

func (e *Emulator) now() time.Time { return e.opts.Now() }

// Handler returns the emulator as an http.Handler.
func (e *Emulator) Handler() http.Handler { return http.HandlerFunc(e.serveHTTP) }

// Start listens on addr (default "127.0.0.1:0") and serves in the background. It
// refuses addresses that are not loopback, and a second Start.
func (e *Emulator) Start(addr string) error {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("emulator: listen address %q: %v", addr, err)
	}
	if !wire.IsLoopbackHost(host) {
		return fmt.Errorf("emulator: refusing to listen on %q: only loopback addresses (127.0.0.0/8, ::1, localhost)", addr)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		return errors.New("emulator: already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	e.srv = &http.Server{Handler: e.Handler(), ReadHeaderTimeout: 10 * time.Second}
	e.url = "http://" + ln.Addr().String() + "/"
	go func(srv *http.Server) { _ = srv.Serve(ln) }(e.srv)
	return nil
}

// URL is the root URL, e.g. "http://127.0.0.1:PORT/", or "" before Start/SetURL.
// Every API lives under it: the token endpoint is URL()+"token".
func (e *Emulator) URL() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.url
}

// SetURL tells an emulator served by someone else (httptest.NewServer(e.Handler()))
// its root URL, for the token_uri of the credentials it hands out.
func (e *Emulator) SetURL(root string) {
	if !strings.HasSuffix(root, "/") {
		root += "/"
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.url = root
}

// Close stops a started emulator, closing open connections. It is safe to call twice.
func (e *Emulator) Close() error {
	herr := e.CloseHuawei() // the separate download ("OBS") listener, if started
	e.mu.Lock()
	srv := e.srv
	e.mu.Unlock()
	if srv == nil {
		return herr
	}
	return errors.Join(srv.Close(), herr)
}

// Requests returns a copy of every request received so far, in order.
func (e *Emulator) Requests() []Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Request, len(e.requests))
	for i, r := range e.requests {
		r.Header = r.Header.Clone()
		r.Query = cloneValues(r.Query)
		r.Body = bytes.Clone(r.Body)
		out[i] = r
	}
	return out
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// Issued is the number of client certificates issued so far.
func (e *Emulator) Issued() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.issued
}

// maxRequestBody bounds the request bodies the emulator accepts.
const maxRequestBody = 1 << 20

func (e *Emulator) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil {
		return // client went away
	}
	if len(body) > maxRequestBody {
		writeGoogleError(w, http.StatusRequestEntityTooLarge, "INVALID_ARGUMENT", "badRequest", "Request payload size exceeds the limit.")
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	e.record(r, body)
	f := e.matchFault(r.Method + " " + r.URL.Path)
	if f != nil && applyFault(w, r, f) {
		return
	}
	if f != nil && f.Mutate != nil {
		serveMutated(w, r, f, e.route)
		return
	}
	if e.checkQuota(w, r) {
		return
	}
	e.route(w, r)
}

func (e *Emulator) record(r *http.Request, body []byte) {
	raw, _, _ := strings.Cut(r.RequestURI, "?")
	if raw == "" || !strings.HasPrefix(raw, "/") {
		raw = r.URL.EscapedPath()
	}
	rec := Request{
		Method:  r.Method,
		Path:    r.URL.Path,
		RawPath: raw,
		Query:   r.URL.Query(),
		Header:  r.Header.Clone(),
		Body:    body,
		Time:    e.now(),
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.requests = append(e.requests, rec)
}

// route dispatches by decoded path; unknown paths get Google's HTML 404 page.
func (e *Emulator) route(w http.ResponseWriter, r *http.Request) {
	if e.serveAlloyDB(w, r) || e.serveHuawei(w, r) {
		return
	}
	p := r.URL.Path
	switch {
	case p == "/token":
		e.serveToken(w, r)
		return
	case strings.HasPrefix(p, "/sql/v1beta4/"):
		if e.serveCloudSQL(w, r, strings.TrimPrefix(p, "/sql/v1beta4/")) {
			return
		}
	case strings.HasPrefix(p, "/v1/"):
		if e.serveCloudSQL(w, r, strings.TrimPrefix(p, "/v1/")) {
			return
		}
	}
	writeNotFoundPage(w, r)
}
