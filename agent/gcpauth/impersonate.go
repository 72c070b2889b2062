package gcpauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/dbcert-agent/dbcert-agent/agent/apierr"
	"github.com/dbcert-agent/dbcert-agent/agent/wire"
)

const (
	// impersonationLifetime is requested for impersonated tokens (the API's
	// maximum without an organisation policy exception).
	impersonationLifetime = "3600s"

	// impersonationEarlyRefresh: impersonated tokens are replaced this long
	// before they expire.
	impersonationEarlyRefresh = 5 * time.Minute
)

// impersonatingSource mints access tokens for a service account through IAM
// Credentials generateAccessToken, authenticated with base.
type impersonatingSource struct {
	ctx    context.Context // carries oauth2.HTTPClient
	base   oauth2.TokenSource
	sa     string
	url    string
	scopes []string
}

func newImpersonatingSource(ctx context.Context, base oauth2.TokenSource, sa, endpoint string, scopes []string) (oauth2.TokenSource, error) {
	if strings.ContainsAny(sa, "/?#% \t\r\n") {
		return nil, fmt.Errorf("impersonate_service_account %q is not a service account e-mail or unique ID", sa)
	}
	if endpoint == "" {
		endpoint = DefaultIAMCredentialsEndpoint
	}
	u, err := checkEndpoint(endpoint)
	if err != nil {
		return nil, fmt.Errorf("IAM Credentials endpoint: %w", err)
	}
	s := &impersonatingSource{
		ctx:    ctx,
		base:   base,
		sa:     sa,
		url:    u.String() + "v1/projects/-/serviceAccounts/" + url.PathEscape(sa) + ":generateAccessToken",
		scopes: append([]string(nil), scopes...),
	}
	return newResettable(func() (oauth2.TokenSource, error) {
		return oauth2.ReuseTokenSourceWithExpiry(nil, s, impersonationEarlyRefresh), nil
	})
}

type generateAccessTokenRequest struct {
	Scope    []string `json:"scope"`
	Lifetime string   `json:"lifetime"`
}

type generateAccessTokenResponse struct {
	AccessToken string `json:"accessToken"`
	ExpireTime  string `json:"expireTime"`
}

// googleError is the usual Google API error body.
type googleError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
	} `json:"error"`
}

// Token mints a token with the source token. A 401 means the source token was refused
// (revoked, or expired before its time): the source is reset and, when that gives a
// new token, the call is made once more, so a refusal is final only after a refresh
// (spec §5).
func (s *impersonatingSource) Token() (*oauth2.Token, error) {
	src, err := s.base.Token()
	if err != nil {
		return nil, fmt.Errorf("impersonating service account %s: getting the source token: %w", s.sa, err)
	}
	tok, err := s.generate(src)
	var ie *ImpersonationError
	if r, ok := s.base.(resetter); ok && errors.As(err, &ie) && ie.StatusCode == http.StatusUnauthorized {
		r.reset(src.AccessToken)
		if fresh, ferr := s.base.Token(); ferr == nil && fresh.AccessToken != src.AccessToken {
			return s.generate(fresh)
		}
	}
	return tok, err
}

// generate makes one generateAccessToken call authenticated with src.
func (s *impersonatingSource) generate(src *oauth2.Token) (*oauth2.Token, error) {
	body, err := json.Marshal(generateAccessTokenRequest{Scope: s.scopes, Lifetime: impersonationLifetime})
	if err != nil {
		return nil, fmt.Errorf("impersonating service account %s: %w", s.sa, err)
	}
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("impersonating service account %s: %w", s.sa, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", wire.UserAgent())
	src.SetAuthHeader(req)

	hc, _ := s.ctx.Value(oauth2.HTTPClient).(*http.Client)
	if hc == nil {
		hc = &http.Client{Timeout: tokenFetchTimeout}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("impersonating service account %s: generateAccessToken: %w", s.sa, err)
	}
	defer resp.Body.Close()
	b, tooBig, err := wire.ReadBody(resp.Body)
	if err == nil && tooBig {
		err = fmt.Errorf("the body exceeds the %d-byte limit", wire.MaxBody)
	}
	if err != nil {
		return nil, fmt.Errorf("impersonating service account %s: generateAccessToken: reading response (HTTP %s): %w", s.sa, resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		ie := &ImpersonationError{ServiceAccount: s.sa, StatusCode: resp.StatusCode, Status: resp.Status, Message: errorMessage(b)}
		ie.retryAfter, _ = apierr.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		return nil, ie
	}
	var r generateAccessTokenResponse
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("impersonating service account %s: generateAccessToken returned an invalid body (HTTP %s): %w", s.sa, resp.Status, err)
	}
	if r.AccessToken == "" {
		return nil, fmt.Errorf("impersonating service account %s: generateAccessToken returned no accessToken", s.sa)
	}
	exp, err := time.Parse(time.RFC3339, r.ExpireTime)
	if err != nil {
		return nil, fmt.Errorf("impersonating service account %s: generateAccessToken returned an invalid expireTime %q: %w", s.sa, r.ExpireTime, err)
	}
	return &oauth2.Token{AccessToken: r.AccessToken, TokenType: "Bearer", Expiry: exp}, nil
}

// ImpersonationError is returned when IAM Credentials refuses to mint a token.
type ImpersonationError struct {
	ServiceAccount string
	StatusCode     int    // HTTP status code
	Status         string // HTTP status line text, e.g. "403 Forbidden"
	Message        string // Google's error message, or the start of the body
	retryAfter     time.Duration
}

func (e *ImpersonationError) Error() string {
	var hint string
	switch e.StatusCode {
	case http.StatusForbidden:
		hint = " (the calling identity needs roles/iam.serviceAccountTokenCreator on that service account)"
	case http.StatusNotFound:
		hint = " (check the service account e-mail)"
	case http.StatusUnauthorized:
		hint = " (the source credentials were rejected)"
	}
	msg := ""
	if e.Message != "" {
		msg = ": " + e.Message
	}
	return fmt.Sprintf("impersonating service account %s: generateAccessToken returned HTTP %s%s%s", e.ServiceAccount, e.Status, msg, hint)
}

// Retryable reports whether retrying may help: 429, 408 and 5xx. A refusal (403: the
// caller may not impersonate the account; 404: no such account; 400; 401: the source
// credentials were rejected) is permanent until the configuration changes.
func (e *ImpersonationError) Retryable() bool { return apierr.RetryableStatus(e.StatusCode) }

// RetryAfter is the wait IAM Credentials asked for (Retry-After), 0 when it gave none.
func (e *ImpersonationError) RetryAfter() time.Duration { return e.retryAfter }

// errorMessage extracts "STATUS: message" from a Google error body, or the
// first line of a non-JSON body, at most 300 bytes.
func errorMessage(b []byte) string {
	var g googleError
	var msg string
	if json.Unmarshal(b, &g) == nil && (g.Error.Message != "" || g.Error.Status != "") {
		msg = g.Error.Message
		switch {
		case msg == "":
			msg = g.Error.Status
		case g.Error.Status != "":
			msg = g.Error.Status + ": " + msg
		}
	} else {
		msg = strings.TrimSpace(string(b))
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
	}
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	return strings.ToValidUTF8(msg, "?")
}
