package huaweiauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/dbcert-agent/dbcert-agent/agent/apierr"
	"github.com/dbcert-agent/dbcert-agent/agent/wire"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// CallIAMToken names the IAM token request in errors.
const CallIAMToken = "IAM token request (POST /v3/auth/tokens)"

const (
	// iamTimeout bounds one token request; it runs detached from the API request that
	// needed it, so that one impatient caller does not cancel it for the others.
	iamTimeout = 30 * time.Second
	// refreshMargin: refresh when less than this is left (or a quarter of the
	// lifetime, when that is shorter — short-lived test tokens).
	refreshMargin = time.Hour
	// defaultLifetime is assumed when the response has no usable expires_at.
	defaultLifetime = time.Hour
)

// passwordSource gets and caches project-scoped IAM tokens.
type passwordSource struct {
	tokenURL               string
	user, domain           string
	projectID, projectName string
	password               *secretFile
	base                   http.RoundTripper
	now                    func() time.Time

	mu       sync.Mutex
	cur      *cachedToken
	inflight *fetchCall
	nextTry  time.Time // after a failed refresh: keep the old token until then
}

type cachedToken struct {
	value     string
	expiry    time.Time // by our clock
	refreshAt time.Time
	lifetime  time.Duration
}

// usable reports whether the token can still be sent at now: before expiry, with a
// small safety margin for the time the request takes.
func (c *cachedToken) usable(now time.Time) bool {
	if c == nil {
		return false
	}
	margin := min(30*time.Second, c.lifetime/10)
	return now.Before(c.expiry.Add(-margin))
}

type fetchCall struct {
	done chan struct{}
	tok  *cachedToken
	err  error
}

// token returns a token that is not due for refresh, fetching one (once, for every
// concurrent caller) when needed. ctx bounds only the wait.
func (s *passwordSource) token(ctx context.Context) (string, error) {
	s.mu.Lock()
	now := s.now()
	if c := s.cur; c != nil && (now.Before(c.refreshAt) || (now.Before(s.nextTry) && c.usable(now))) {
		s.mu.Unlock()
		return c.value, nil
	}
	call := s.inflight
	if call == nil {
		call = &fetchCall{done: make(chan struct{})}
		s.inflight = call
		go s.fetch(call)
	}
	s.mu.Unlock()
	select {
	case <-call.done:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if call.err == nil {
		return call.tok.value, nil
	}
	// IAM failed; a token that is merely due for refresh is still good to use.
	s.mu.Lock()
	c := s.cur
	ok := c != nil && c.usable(s.now())
	s.mu.Unlock()
	if ok {
		return c.value, nil
	}
	return "", call.err
}

// invalidate drops the cached token if it is value (the API rejected it).
func (s *passwordSource) invalidate(value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && s.cur.value == value {
		s.cur = nil
	}
}

func (s *passwordSource) fetch(call *fetchCall) {
	ctx, cancel := context.WithTimeout(context.Background(), iamTimeout)
	defer cancel()
	tok, err := s.request(ctx)
	s.mu.Lock()
	s.inflight = nil
	if err == nil {
		s.cur, s.nextTry = tok, time.Time{}
	} else if c := s.cur; c != nil {
		// Try again soon, not on every request.
		left := c.expiry.Sub(s.now())
		s.nextTry = s.now().Add(max(min(time.Minute, left/4), 0))
	}
	call.tok, call.err = tok, err
	s.mu.Unlock()
	close(call.done)
}

// Request body of KeystoneCreateUserTokenByPassword (reference §6.3); names exact.
type pwdRequest struct {
	Auth pwdAuth `json:"auth"`
}

type pwdAuth struct {
	Identity pwdIdentity `json:"identity"`
	Scope    pwdScope    `json:"scope"`
}

type pwdIdentity struct {
	Methods  []string    `json:"methods"`
	Password pwdPassword `json:"password"`
}

type pwdPassword struct {
	User pwdUser `json:"user"`
}

type pwdUser struct {
	Name     string  `json:"name"`
	Password string  `json:"password"`
	Domain   pwdName `json:"domain"`
}

type pwdName struct {
	Name string `json:"name"`
}

type pwdScope struct {
	Project pwdProject `json:"project"`
}

type pwdProject struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

type tokenResponse struct {
	Token struct {
		ExpiresAt string `json:"expires_at"`
		IssuedAt  string `json:"issued_at"`
	} `json:"token"`
}

func (s *passwordSource) target() string {
	return "user " + s.user + " in domain " + s.domain
}

// request performs one POST /v3/auth/tokens.
func (s *passwordSource) request(ctx context.Context) (*cachedToken, error) {
	password, err := s.password.get(false)
	if err != nil {
		return nil, err
	}
	body := pwdRequest{Auth: pwdAuth{
		Identity: pwdIdentity{
			Methods:  []string{"password"},
			Password: pwdPassword{User: pwdUser{Name: s.user, Password: password, Domain: pwdName{Name: s.domain}}},
		},
		Scope: pwdScope{Project: pwdProject{ID: s.projectID}},
	}}
	if s.projectID == "" {
		body.Auth.Scope.Project.Name = s.projectName
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("huaweiauth: encoding the token request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.tokenURL, bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("huaweiauth: building the token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json;charset=utf8")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", wire.UserAgent())
	start := s.now()
	resp, err := s.base.RoundTrip(req)
	if err != nil {
		return nil, s.netError(ctx, req.URL, err)
	}
	defer resp.Body.Close()
	data, tooBig, err := wire.ReadBody(resp.Body)
	if err == nil && tooBig && resp.StatusCode/100 == 2 {
		data = nil // a token body larger than 1 MiB is not one: use the default lifetime
	}
	if err != nil && resp.StatusCode/100 == 2 {
		return nil, s.netError(ctx, req.URL, fmt.Errorf("reading the %d response: %w", resp.StatusCode, err))
	}
	if resp.StatusCode/100 != 2 {
		e := ParseError(resp.StatusCode, resp.Header, data)
		e.Message = redact(e.Message, password)
		e.Call, e.Target = CallIAMToken, s.target()
		e.Hint = s.hint(e)
		return nil, e
	}
	bad := func(msg string) error {
		e := &Error{Status: resp.StatusCode, Call: CallIAMToken, Target: s.target(), Message: msg,
			RequestID: apierr.OneLine(resp.Header.Get("X-Request-Id")), Hint: "check iam_endpoint: it does not look like Huawei Cloud IAM"}
		e.SetRetryable(false)
		return e
	}
	value := resp.Header.Get("X-Subject-Token")
	if value == "" {
		return nil, bad("the response has no X-Subject-Token header")
	}
	if !printable(value) || len(value) > maxSecretFile {
		return nil, bad("the X-Subject-Token header is not a usable token")
	}
	var tr tokenResponse
	_ = json.Unmarshal(data, &tr) // tolerated: a missing body means the default lifetime
	return newCachedToken(value, start, tr.Token.IssuedAt, tr.Token.ExpiresAt), nil
}

// newCachedToken computes expiry by our clock: the lifetime the server gave
// (expires_at − issued_at) counted from when we asked, so clock skew does not matter.
func newCachedToken(value string, start time.Time, issuedAt, expiresAt string) *cachedToken {
	lifetime := defaultLifetime
	exp, errE := time.Parse(time.RFC3339Nano, expiresAt)
	iss, errI := time.Parse(time.RFC3339Nano, issuedAt)
	switch {
	case errE == nil && errI == nil && exp.After(iss):
		lifetime = exp.Sub(iss)
	case errE == nil && exp.After(start):
		lifetime = exp.Sub(start)
	}
	c := &cachedToken{value: value, lifetime: lifetime, expiry: start.Add(lifetime)}
	c.refreshAt = c.expiry.Add(-min(refreshMargin, lifetime/4))
	return c
}

func (s *passwordSource) hint(e *Error) string {
	switch c := e.Status; {
	case c == http.StatusUnauthorized:
		return "IAM rejected the user name, password or domain name; check user_name, password_file and domain_name (the password may have expired or the user may be locked)"
	case c == http.StatusForbidden:
		return "the user may not obtain tokens; enable programmatic access for the IAM user and check the account's status"
	case c == http.StatusNotFound:
		return "check iam_endpoint and region"
	case c == http.StatusBadRequest:
		if s.projectID != "" {
			return "IAM rejected the request; check domain_name and project_id " + s.projectID
		}
		return "IAM rejected the request; check domain_name and region " + s.projectName + " (the project the token is scoped to)"
	case apierr.RetryableStatus(c):
		return "IAM is unavailable (retryable)"
	}
	return ""
}

func (s *passwordSource) netError(ctx context.Context, u *url.URL, err error) error {
	ne := NewNetError(ctx, CallIAMToken, s.target(), u.Host, err)
	if errors.Is(err, context.DeadlineExceeded) && ne.canceled {
		// Our own timeout, not the caller's: worth retrying.
		ne.canceled = false
	}
	return ne
}
