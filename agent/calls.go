package agent

import (
	"context"
	"net/http"
	"sync/atomic"
)

// callCount counts the API calls of one paced request by how the API answered them.
// The pacer learns from it what the quota admits: a refresh of two calls fails as a
// whole when one of them is refused, so whole-request answers undercount what got
// through, and a guess from what was sent overcounts it.
type callCount struct {
	admitted atomic.Int32 // answered with anything but 429 or 503
	refused  atomic.Int32 // answered 429 or 503
}

type callCountKey struct{}

// withCallCount returns ctx carrying a new callCount for callTransport to fill.
func withCallCount(ctx context.Context) (context.Context, *callCount) {
	c := &callCount{}
	return context.WithValue(ctx, callCountKey{}, c), c
}

// admittedOrUnknown is the number of calls the API admitted, or -1 when no call was
// answered (a provider that does not use HTTP, or a fetch that failed before any answer).
func (c *callCount) admittedOrUnknown() int {
	admitted := int(c.admitted.Load())
	if admitted+int(c.refused.Load()) == 0 {
		return -1
	}
	return admitted
}

// callTransport counts the answers to requests whose context carries a callCount
// (the API calls of a paced fetch; token requests have contexts of their own).
type callTransport struct{ base http.RoundTripper }

func (t callTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if c, ok := req.Context().Value(callCountKey{}).(*callCount); ok && err == nil {
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			c.refused.Add(1)
		} else {
			c.admitted.Add(1)
		}
	}
	return resp, err
}
