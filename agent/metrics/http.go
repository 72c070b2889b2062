package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// ContentType is the Content-Type of /metrics responses.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// ShutdownTimeout is how long Serve waits for in-flight requests when its
// context is done before it closes the remaining connections.
const ShutdownTimeout = 5 * time.Second

// Handler serves the agent's operational endpoints:
//
//   - GET /metrics: r in the Prometheus text format, Content-Type ContentType.
//   - GET /livez: 200 "ok" (text/plain) whenever the process serves HTTP.
//   - GET /readyz: calls ready; 200 {"status":"ready"} when it returns true,
//     else 503 {"status":"not ready","instances":[…]} with the names it
//     returned, sorted (an empty list as []). A nil ready is always ready.
//
// Any other path is 404; a method other than GET or HEAD on a known path is
// 405 with "Allow: GET, HEAD". HEAD gets the headers of GET without a body.
// Responses carry "Cache-Control: no-store". A nil r serves an empty /metrics.
func Handler(r *Registry, ready func() (bool, []string)) http.Handler {
	return &handler{reg: r, ready: ready}
}

type handler struct {
	reg   *Registry
	ready func() (bool, []string)
}

func (h *handler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var serve func(http.ResponseWriter, *http.Request)
	switch req.URL.Path {
	case "/metrics":
		serve = h.metrics
	case "/livez":
		serve = livez
	case "/readyz":
		serve = h.readyz
	default:
		http.NotFound(w, req)
		return
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	serve(w, req)
}

func (h *handler) metrics(w http.ResponseWriter, req *http.Request) {
	bp := bufPool.Get().(*[]byte)
	b := h.reg.appendTextNil((*bp)[:0])
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if req.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
	if cap(b) <= 8<<20 {
		*bp = b[:0]
		bufPool.Put(bp)
	}
}

// appendTextNil is appendText that tolerates a nil Registry.
func (r *Registry) appendTextNil(b []byte) []byte {
	if r == nil {
		return b
	}
	return r.appendText(b)
}

func livez(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("ok"))
}

func (h *handler) readyz(w http.ResponseWriter, _ *http.Request) {
	ok, notReady := true, []string(nil)
	if h.ready != nil {
		ok, notReady = h.ready()
	}
	code, out := http.StatusOK, []byte(`{"status":"ready"}`)
	if !ok {
		names := slices.Clone(notReady)
		slices.Sort(names)
		if names == nil {
			names = []string{} // [] rather than null
		}
		code = http.StatusServiceUnavailable
		out, _ = json.Marshal(struct {
			Status    string   `json:"status"`
			Instances []string `json:"instances"`
		}{"not ready", names})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(code)
	_, _ = w.Write(out)
}

// Serve listens on addr (host:port; port 0 picks a free one) and serves h in
// the background. A listen failure (bad address, address in use, permission)
// is returned at once as err, with boundAddr "" and done nil. Otherwise
// boundAddr is the actual listening address and done receives exactly one
// value and is then closed: nil after a clean stop, or the error that ended
// serving early. When ctx is done the server shuts down gracefully, waiting
// up to ShutdownTimeout for in-flight requests before closing them.
//
// The server uses ReadHeaderTimeout 5 s, ReadTimeout 10 s, WriteTimeout 30 s,
// IdleTimeout 60 s and 16 KiB of headers at most; its internal errors are
// logged through slog.Default at level WARN.
func Serve(ctx context.Context, addr string, h http.Handler) (boundAddr string, done <-chan error, err error) {
	if addr == "" {
		return "", nil, errors.New("metrics: empty listen address")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	ch := make(chan error, 1)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	go func() {
		defer close(ch)
		select {
		case err := <-served:
			// Serve ended on its own (not through Shutdown).
			ch <- err
			return
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close()
		}
		<-served // http.ErrServerClosed
		ch <- nil
	}()
	return ln.Addr().String(), ch, nil
}
