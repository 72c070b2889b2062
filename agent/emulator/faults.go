package emulator

import (
	"net/http"
	"strings"
	"time"
)

// Fault makes matching requests fail (or slow down). Faults are checked in the order
// they were injected; the first live one that matches applies.
type Fault struct {
	// Match is a substring of "METHOD path" (decoded path), e.g. "generateEphemeralCert",
	// "GET /v1/", "POST /token". Empty matches every request.
	Match string
	// Status, when non-zero, is the response status. Without Body or Garbage the body is
	// the Google error body for that status (OAuth error JSON on /token).
	Status int
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter string
	// Body, when set, is sent as is (Content-Type application/json), with Status or 200.
	Body string
	// Garbage sends a non-JSON body (a cut-off HTML page), with Status or 200.
	Garbage bool
	// Delay waits this long before answering (or before handling the request normally,
	// when nothing else is set). A client that gives up ends the wait.
	Delay time.Duration
	// CloseConn closes the connection without any response (a network error).
	CloseConn bool
	// Times is how many matching requests the fault applies to; 0 means forever.
	Times int
}

type faultState struct {
	Fault
	used int
}

// Inject adds a fault after those already injected.
func (e *Emulator) Inject(f Fault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = append(e.faults, &faultState{Fault: f})
}

// ClearFaults removes every injected fault.
func (e *Emulator) ClearFaults() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = nil
}

// matchFault returns a copy of the first live fault matching "METHOD path" and uses it up.
func (e *Emulator) matchFault(methodPath string) *Fault {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, f := range e.faults {
		if f.Times > 0 && f.used >= f.Times {
			continue
		}
		if !strings.Contains(methodPath, f.Match) {
			continue
		}
		f.used++
		c := f.Fault
		return &c
	}
	return nil
}

// garbageBody is what a broken proxy might send: HTML, cut off.
const garbageBody = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gat"

// applyFault writes the fault's response; false means "now handle the request normally".
func applyFault(w http.ResponseWriter, r *http.Request, f *Fault) bool {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return true
		}
	}
	if f.CloseConn {
		closeConn(w)
		return true
	}
	if f.Status == 0 && f.Body == "" && !f.Garbage {
		return false
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	status := f.Status
	if status == 0 {
		status = http.StatusOK
	}
	switch {
	case f.Body != "":
		w.Header().Set("Content-Type", jsonContentType)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(f.Body))
	case f.Garbage:
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(garbageBody))
	case isHuaweiPath(r.URL.Path):
		writeHuaweiDefaultError(w, r, status)
	case r.URL.Path == "/token":
		writeOAuthError(w, status, oauthErrorCode(status), http.StatusText(status))
	default:
		writeDefaultError(w, status)
	}
	return true
}

func closeConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler) // HTTP/2 or a recorder: abort the stream
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// oauthErrorCode is the RFC 6749 error code a token endpoint sends with status.
func oauthErrorCode(status int) string {
	switch {
	case status >= 500 || status == http.StatusTooManyRequests:
		return "temporarily_unavailable"
	case status == http.StatusUnauthorized:
		return "invalid_client"
	}
	return "invalid_grant"
}
