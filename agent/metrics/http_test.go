package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHandler(t *testing.T) {
	r := NewRegistry()
	r.Counter("dbcert_refresh_total", "Refreshes.", "instance").Inc("orders")
	var notReady atomic.Pointer[[]string]
	ready := func() (bool, []string) {
		if p := notReady.Load(); p != nil {
			return false, *p
		}
		return true, nil
	}
	h := Handler(r, ready)

	metricsBody := "# HELP dbcert_refresh_total Refreshes.\n# TYPE dbcert_refresh_total counter\ndbcert_refresh_total{instance=\"orders\"} 1\n"
	for _, tc := range []struct {
		name, method, path string
		notReady           *[]string
		code               int
		ctype, body        string
	}{
		{"metrics", "GET", "/metrics", nil, 200, ContentType, metricsBody},
		{"metrics head", "HEAD", "/metrics", nil, 200, ContentType, ""},
		{"livez", "GET", "/livez", nil, 200, "text/plain; charset=utf-8", "ok"},
		{"readyz ready", "GET", "/readyz", nil, 200, "application/json", `{"status":"ready"}`},
		{"readyz not ready", "GET", "/readyz", &[]string{"b", "a"}, 503, "application/json", `{"status":"not ready","instances":["a","b"]}`},
		{"readyz not ready empty", "GET", "/readyz", &[]string{}, 503, "application/json", `{"status":"not ready","instances":[]}`},
		{"readyz head", "HEAD", "/readyz", &[]string{"a"}, 503, "application/json", ""},
		{"not found", "GET", "/", nil, 404, "", ""},
		{"not found sub", "GET", "/metrics/x", nil, 404, "", ""},
		{"post metrics", "POST", "/metrics", nil, 405, "", ""},
		{"delete readyz", "DELETE", "/readyz", nil, 405, "", ""},
		{"put livez", "PUT", "/livez", nil, 405, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			notReady.Store(tc.notReady)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.code {
				t.Fatalf("code = %d, want %d", rec.Code, tc.code)
			}
			if tc.code == 405 {
				if a := rec.Header().Get("Allow"); a != "GET, HEAD" {
					t.Errorf("Allow = %q", a)
				}
				return
			}
			if tc.code == 404 {
				return
			}
			if ct := rec.Header().Get("Content-Type"); ct != tc.ctype {
				t.Errorf("Content-Type = %q, want %q", ct, tc.ctype)
			}
			if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control = %q", cc)
			}
			if tc.method == "GET" && rec.Body.String() != tc.body {
				t.Errorf("body = %q, want %q", rec.Body.String(), tc.body)
			}
		})
	}
}

func TestHandlerNilArgs(t *testing.T) {
	h := Handler(nil, nil)
	for path, want := range map[string]string{"/metrics": "", "/readyz": `{"status":"ready"}`, "/livez": "ok"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 || rec.Body.String() != want {
			t.Errorf("%s: %d %q", path, rec.Code, rec.Body.String())
		}
	}
}

func TestServe(t *testing.T) {
	r := NewRegistry()
	r.Gauge("up", "Up.").Set(1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, done, err := Serve(ctx, "127.0.0.1:0", Handler(r, nil))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(addr, ":0") {
		t.Fatalf("bound address %q is not resolved", addr)
	}

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "up 1\n") {
		t.Fatalf("GET /metrics: %d %q", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != ContentType {
		t.Fatalf("Content-Type %q", ct)
	}

	// Address in use: reported at once.
	if _, d2, err := Serve(ctx, addr, Handler(r, nil)); err == nil || d2 != nil {
		t.Fatalf("second Serve on %s: err=%v done=%v, want an error and nil done", addr, err, d2)
	} else if !strings.Contains(err.Error(), "address already in use") {
		t.Logf("address-in-use error: %v", err)
	}

	cancel()
	select {
	case err, ok := <-done:
		if !ok || err != nil {
			t.Fatalf("done: %v, %v; want nil, true", err, ok)
		}
	case <-time.After(ShutdownTimeout + 2*time.Second):
		t.Fatal("server did not stop")
	}
	if _, ok := <-done; ok {
		t.Fatal("done not closed after its value")
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		t.Fatal("still listening after shutdown")
	}
}

func TestServeErrors(t *testing.T) {
	ctx := context.Background()
	if _, _, err := Serve(ctx, "", nil); err == nil {
		t.Error("empty address accepted")
	}
	if _, _, err := Serve(ctx, "127.0.0.1:notaport", nil); err == nil {
		t.Error("bad port accepted")
	}
}

func TestServeGraceful(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, done, err := Serve(ctx, "127.0.0.1:0", h)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-entered
	cancel()
	select {
	case err := <-done:
		t.Fatalf("stopped with a request in flight: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if s := <-got; s != "done" {
		t.Fatalf("in-flight request: %q", s)
	}
	if err := <-done; err != nil {
		t.Fatalf("done: %v", err)
	}
}
