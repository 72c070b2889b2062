package emulator

import (
	"bytes"
	"cmp"
	"encoding/json"
	"net/http"
	"strconv"
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
	// Mutate, when set, lets the request be handled normally and rewrites the body of
	// its answer (status and headers kept, Content-Length fixed): for hostile answers
	// built from real ones (a certificate that does not parse, is for another key, is
	// expired; a CA that does not parse). See MutateJSON.
	Mutate func(body []byte) []byte
	// HugeBody, when positive, answers with Status or 200 and a JSON-looking body of
	// that many bytes (e.g. 10 MiB).
	HugeBody int
	// EmptyBody answers with Status or 200 and no body at all.
	EmptyBody bool
}

// MutateJSON returns a Mutate function that decodes a JSON object answer, lets edit
// change it, and encodes it again. A body that is not a JSON object is left alone.
func MutateJSON(edit func(m map[string]any)) func([]byte) []byte {
	return func(body []byte) []byte {
		var m map[string]any
		if json.Unmarshal(body, &m) != nil {
			return body
		}
		edit(m)
		out, err := json.Marshal(m)
		if err != nil {
			return body
		}
		return out
	}
}

// recorder captures a normal answer for Mutate.
type recorder struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) WriteHeader(s int) {
	if r.status == 0 {
		r.status = s
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

// serveMutated handles r with next into a recorder, then writes the mutated answer.
func serveMutated(w http.ResponseWriter, r *http.Request, f *Fault, next http.HandlerFunc) {
	rec := &recorder{h: http.Header{}}
	next(rec, r)
	body := f.Mutate(rec.body.Bytes())
	for k, v := range rec.h {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(cmp.Or(rec.status, http.StatusOK))
	_, _ = w.Write(body)
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
	if f.Mutate != nil {
		return false // the caller serves it through serveMutated
	}
	if f.HugeBody > 0 || f.EmptyBody {
		w.Header().Set("Content-Type", jsonContentType)
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		w.WriteHeader(cmp.Or(f.Status, http.StatusOK))
		if f.HugeBody > 0 {
			writeHuge(w, f.HugeBody)
		}
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

// writeHuge writes n bytes: a JSON object whose one string never ends in time.
func writeHuge(w http.ResponseWriter, n int) {
	chunk := bytes.Repeat([]byte("A"), 64<<10)
	head := []byte(`{"ephemeralCert":{"cert":"`)
	if _, err := w.Write(head); err != nil {
		return
	}
	for left := n - len(head); left > 0; left -= len(chunk) {
		if _, err := w.Write(chunk[:min(left, len(chunk))]); err != nil {
			return // the client stopped reading
		}
	}
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
