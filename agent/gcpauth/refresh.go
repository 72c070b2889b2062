package gcpauth

import (
	"net/http"
	"sync"

	"golang.org/x/oauth2"

	"github.com/dbcert-agent/dbcert-agent/agent/wire"
)

// A Google 401 means the access token was refused (revoked, or expired earlier than its
// expiry said). Spec §5: 401/403 are permanent only after a token refresh. So the
// transport drops the cached token and sends the request once more with a fresh one;
// only a second refusal reaches the caller.

// resetter is a token source whose cached token can be dropped.
type resetter interface {
	// reset drops the cached token if it is still bad, so the next Token call fetches
	// a new one.
	reset(bad string)
}

// resettableSource is a cached token source that can be rebuilt from scratch: the
// oauth2 and google libraries offer no way to drop a cached token, so reset makes a new
// source (with an empty cache) the way the first one was made.
type resettableSource struct {
	build func() (oauth2.TokenSource, error)

	mu  sync.Mutex
	cur oauth2.TokenSource
}

// newResettable builds the first source with build.
func newResettable(build func() (oauth2.TokenSource, error)) (*resettableSource, error) {
	ts, err := build()
	if err != nil {
		return nil, err
	}
	return &resettableSource{build: build, cur: ts}, nil
}

func (s *resettableSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	return cur.Token()
}

func (s *resettableSource) reset(bad string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, err := s.cur.Token(); err == nil && t.AccessToken != bad {
		return // another request already replaced it
	}
	if ts, err := s.build(); err == nil {
		s.cur = ts
	}
}

func (s *annotatedSource) reset(bad string) {
	if r, ok := s.src.(resetter); ok {
		r.reset(bad)
	}
}

// replayable reports whether req's body can be sent a second time.
func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// retryUnauthorized sends req once more with a fresh token after a 401 answered tok;
// it returns resp unchanged when no fresh token can be had (or the body cannot be sent
// again).
func (t *authTransport) retryUnauthorized(req *http.Request, resp *http.Response, tok *oauth2.Token) (*http.Response, error) {
	r, ok := t.src.(resetter)
	if !ok || !replayable(req) {
		return resp, nil
	}
	r.reset(tok.AccessToken)
	fresh, err := t.src.Token()
	if err != nil || fresh.AccessToken == tok.AccessToken {
		return resp, nil // the 401 stands
	}
	r2 := req.Clone(req.Context())
	if req.Body != nil && req.Body != http.NoBody {
		b, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		r2.Body = b
	}
	wire.Discard(resp)
	wire.SetUserAgent(r2)
	fresh.SetAuthHeader(r2)
	if t.quota != "" {
		r2.Header.Set(quotaProjectHeader, t.quota)
	}
	return t.base.RoundTrip(r2)
}
