package gapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/dbcert-agent/dbcert-agent/agent/apierr"
	"github.com/dbcert-agent/dbcert-agent/agent/wire"
	"io"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/oauth2"
)

// MaxBody bounds every response body Do reads (1 MiB, wire.MaxBody). A larger body is
// a permanent error (for 2xx) — the API never sends that much.
const MaxBody = wire.MaxBody

// Request is one API call.
type Request struct {
	// Method is the HTTP method, e.g. "GET" or "POST".
	Method string
	// URL is the full, already escaped URL.
	URL string
	// Body, when non-nil, is encoded as JSON and sent with Content-Type
	// application/json. nil sends no body and no Content-Type.
	Body any
	// Call names the API method in errors, e.g. "generateEphemeralCert".
	Call string
	// Target names the resource in errors, e.g. "my-proj/orders-pg".
	Target string
	// Permission, when set, is the IAM permission named in the hint of a 403,
	// e.g. "cloudsql.instances.connect".
	Permission string
}

// NetError is a failed API call that got no HTTP response from the API (connection
// refused or reset, TLS failure, timeout, body cut short, a token source that failed).
// It is retryable unless the caller's context ended, or the cause itself says it is
// permanent (a cause with a Retryable method decides). It never carries headers or
// tokens.
type NetError struct {
	// Call and Target are as in Request.
	Call, Target string
	// Host is the host (and port) the request went to.
	Host string
	// Err is the cause (a *url.Error's inner error, or a context error).
	Err error

	canceled   bool
	permanent  bool
	retryAfter time.Duration
}

// Error implements error.
func (e *NetError) Error() string {
	s := "calling " + e.Call
	if e.Target != "" {
		s += " for " + e.Target
	}
	s += " at " + e.Host
	switch {
	case e.canceled:
		return fmt.Sprintf("%s was canceled: %v", s, e.Err)
	case e.permanent:
		return fmt.Sprintf("%s failed: %v", s, e.Err)
	}
	return fmt.Sprintf("%s failed: %v (retryable)", s, e.Err)
}

// Unwrap returns the cause.
func (e *NetError) Unwrap() error { return e.Err }

// Retryable is true unless the caller's context was canceled or hit its deadline, or
// the cause is permanent.
func (e *NetError) Retryable() bool { return !e.canceled && !e.permanent }

// RetryAfter is the cause's RetryAfter when it has one, else 0.
func (e *NetError) RetryAfter() time.Duration { return e.retryAfter }

// Do sends req with c (which must already add Authorization) and decodes a 2xx JSON
// answer into out (ignored when nil). It sets Accept and User-Agent, and Content-Type
// when there is a body. Response bodies are limited to MaxBody.
//
// Errors: *NetError when no response arrived; *Error for a non-2xx status (parsed per
// the Google error format, with DefaultHint) and for an unusable 2xx body (not JSON, or
// larger than MaxBody), which is permanent.
func Do(ctx context.Context, c *http.Client, req Request, out any) error {
	hr, err := newHTTPRequest(ctx, req)
	if err != nil {
		return err
	}
	resp, err := c.Do(hr)
	if err != nil {
		return netError(ctx, req, hr.URL.Host, err)
	}
	defer resp.Body.Close()
	raw, tooBig, err := wire.ReadBody(resp.Body)
	if err != nil && !apierr.RetryableStatus(resp.StatusCode) && resp.StatusCode/100 != 2 {
		err = nil // a cut-short 4xx body is still a 4xx; parse what arrived
	}
	if err != nil {
		return netError(ctx, req, hr.URL.Host, fmt.Errorf("reading the %d response: %w", resp.StatusCode, err))
	}
	if resp.StatusCode/100 != 2 {
		e := ParseError(resp.StatusCode, resp.Header, raw)
		e.Call, e.Target = req.Call, req.Target
		e.Hint = DefaultHint(e, req.Permission)
		return e
	}
	if tooBig {
		return &Error{Code: resp.StatusCode, Call: req.Call, Target: req.Target, Body: apierr.CapBytes(raw, MaxKeptBody),
			Message: "the response body exceeds the 1 MiB limit"}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return &Error{Code: resp.StatusCode, Call: req.Call, Target: req.Target, Body: apierr.CapBytes(raw, MaxKeptBody),
			Message: apierr.OneLine("the response is not valid JSON: " + err.Error()), Err: err}
	}
	return nil
}

func newHTTPRequest(ctx context.Context, req Request) (*http.Request, error) {
	var body io.Reader
	if req.Body != nil {
		b, err := json.Marshal(req.Body)
		if err != nil {
			return nil, fmt.Errorf("encoding the %s request: %w", req.Call, err)
		}
		body = bytes.NewReader(b)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, req.URL, body)
	if err != nil {
		return nil, fmt.Errorf("building the %s request: %w", req.Call, err)
	}
	if err := wire.CheckURL("the "+req.Call+" URL", hr.URL); err != nil {
		return nil, err
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	hr.Header.Set("Accept", "application/json")
	hr.Header.Set("User-Agent", wire.UserAgent())
	return hr, nil
}

// netError maps an error from http.Client.Do: a token endpoint's refusal becomes an
// *Error, everything else a *NetError.
func netError(ctx context.Context, req Request, host string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	ne := &NetError{Call: req.Call, Target: req.Target, Host: host, Err: err}
	if ctx.Err() != nil {
		ne.canceled = true
		if !errors.Is(err, ctx.Err()) {
			ne.Err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return ne
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return tokenError(req, re)
	}
	var r interface {
		Retryable() bool
		RetryAfter() time.Duration
	}
	if errors.As(err, &r) {
		ne.permanent = !r.Retryable()
		ne.retryAfter = r.RetryAfter()
	}
	return ne
}

// oauthBody is a token endpoint's error body (RFC 6749 §5.2).
type oauthBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// tokenError turns the token endpoint's answer into an *Error: 5xx/429/408 retryable,
// other statuses permanent (invalid_grant, invalid_client, ...).
func tokenError(req Request, re *oauth2.RetrieveError) *Error {
	e := &Error{Call: req.Call + " (access token request)", Target: req.Target, Body: apierr.CapBytes(re.Body, MaxKeptBody),
		Code: http.StatusBadRequest, Reason: re.ErrorCode, Message: apierr.OneLine(re.ErrorDescription), Err: re}
	if re.Response != nil {
		e.Code = re.Response.StatusCode
		if d, ok := apierr.ParseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now()); ok {
			e.retryAfter = d
		}
	}
	var b oauthBody
	if e.Reason == "" && json.Unmarshal(re.Body, &b) == nil {
		e.Reason, e.Message = b.Error, apierr.OneLine(b.Description)
	}
	if e.Reason == "" && e.Message == "" {
		e.Message = "non-JSON body"
	}
	e.Hint = "the token endpoint rejected the credentials; check credentials_file/token_file"
	if e.Retryable() {
		e.Hint = "the token endpoint failed (retryable)"
	}
	return e
}
