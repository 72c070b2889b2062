package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// TestCallTransport: the API calls of a paced fetch are counted by answer (429 and 503
// refused, anything else admitted); requests without a count in their context (token
// requests) are not.
func TestCallTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		w.WriteHeader(code)
	}))
	defer srv.Close()
	c := &http.Client{Transport: callTransport{http.DefaultTransport}}
	get := func(ctx context.Context, code int) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"?code="+strconv.Itoa(code), nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	ctx, calls := withCallCount(context.Background())
	for _, code := range []int{200, 403, 429, 503, 500, 404} {
		get(ctx, code)
	}
	get(context.Background(), 200) // not counted
	if a, r := calls.admitted.Load(), calls.refused.Load(); a != 4 || r != 2 {
		t.Errorf("admitted %d, refused %d; want 4 and 2", a, r)
	}
}
