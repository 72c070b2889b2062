package huaweiauth

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"github.com/dbcert-agent/dbcert-agent/agent/apierr"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Error is a failed Huawei Cloud call for which the server answered: a non-2xx status
// with (usually) a Huawei error body, or a 2xx answer that could not be used.
//
// Error() reads as one sentence naming the status, the Huawei error code, the call, the
// target, the server's message and what to do, e.g.
//
//	403 APIGW.0302 from ssl-cert/download-link for 0123.../a1b2...: The IAM user is not
//	authorized to access the API.; grant the IAM user gaussdbfornosql:instance:listSslCertDownloadAddresses
//
// The agent consumes it only through Retryable and RetryAfter. Body is never printed.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Code is the Huawei error code ("APIGW.0301", "DBS.200002", "IAM.0001"), an OBS
	// error code ("AccessDenied"), or "" when the body had none.
	Code string
	// Message is the server's message (one line, capped), or what was wrong with the
	// response ("non-JSON body").
	Message string
	// RequestID is the X-Request-Id header or the body's request_id, for support.
	RequestID string
	// Call names the API call ("ssl-cert/download-link", "IAM token request").
	Call string
	// Target names the resource or principal ("project/instance", "user ops in domain acct").
	Target string
	// Hint says what to do.
	Hint string
	// Body is the raw response body, capped at MaxKeptBody bytes. Not printed.
	Body []byte
	// Err is the underlying cause, if any.
	Err error

	retryAfter time.Duration
	retryable  bool // with decided: overrides the status-based answer of Retryable
	decided    bool
}

// MaxKeptBody bounds how much of a failed response's body Error.Body keeps.
const MaxKeptBody = 8 << 10

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(e.Status))
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	b.WriteString(" from " + e.Call)
	if e.Target != "" {
		b.WriteString(" for " + e.Target)
	}
	b.WriteString(": ")
	msg := strings.TrimSpace(e.Message)
	switch {
	case msg != "" && e.Hint != "":
		b.WriteString(msg + "; " + e.Hint)
	case msg != "":
		b.WriteString(msg)
	case e.Hint != "":
		b.WriteString(e.Hint)
	default:
		b.WriteString("unexpected response")
	}
	if e.RequestID != "" {
		b.WriteString(" (request id " + e.RequestID + ")")
	}
	return b.String()
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether a later attempt may succeed: 5xx, 429 and 408 are
// retryable, everything else (bad credentials, missing instance, unusable answer) is
// permanent.
func (e *Error) Retryable() bool {
	if e.decided {
		return e.retryable
	}
	return apierr.RetryableStatus(e.Status)
}

// SetRetryable overrides the status-based answer of Retryable.
func (e *Error) SetRetryable(r bool) { e.decided, e.retryable = true, r }

// RetryAfter is the wait the server asked for (Retry-After), 0 when it gave none.
func (e *Error) RetryAfter() time.Duration { return e.retryAfter }

// IsAuthError reports whether e says the credentials were rejected: 401, or APIGW.0301
// (bad/expired token or signature), or a message asking for a new token.
func (e *Error) IsAuthError() bool {
	return e.Status == http.StatusUnauthorized || e.Code == "APIGW.0301" ||
		strings.Contains(strings.ToLower(e.Message), "token must be updated")
}

// ParseError builds an *Error from a non-2xx response: status, headers and body. It
// accepts, in this order (reference §6.2): top-level error_code + error_msg; top-level
// code + message; the same pairs in a nested object ({"error":{...}}, Keystone style);
// an OBS/S3 XML <Error><Code/><Message/></Error>; anything else ("non-JSON body").
// Call, Target and Hint are left for the caller.
func ParseError(status int, h http.Header, raw []byte) *Error {
	e := &Error{Status: status, Body: apierr.CapBytes(raw, MaxKeptBody)}
	if h != nil {
		e.RequestID = apierr.OneLine(h.Get("X-Request-Id"))
		if d, ok := apierr.ParseRetryAfter(h.Get("Retry-After"), time.Now()); ok {
			e.retryAfter = d
		}
	}
	trimmed := strings.TrimSpace(string(raw))
	switch {
	case trimmed == "":
		e.Message = "empty body"
	case strings.HasPrefix(trimmed, "{") || strings.HasPrefix(trimmed, "["):
		var v any
		if json.Unmarshal(raw, &v) != nil {
			e.Message = "non-JSON body"
			break
		}
		code, msg, reqID, ok := findErrorFields(v, 0)
		if !ok {
			e.Message = "unrecognised error body"
			break
		}
		e.Code, e.Message = apierr.OneLine(code), apierr.OneLine(msg)
		if e.RequestID == "" {
			e.RequestID = apierr.OneLine(reqID)
		}
	case strings.HasPrefix(trimmed, "<"):
		var x struct {
			XMLName   xml.Name
			Code      string `xml:"Code"`
			Message   string `xml:"Message"`
			RequestID string `xml:"RequestId"`
		}
		if xml.Unmarshal(raw, &x) == nil && x.XMLName.Local == "Error" {
			e.Code, e.Message = apierr.OneLine(x.Code), apierr.OneLine(x.Message)
			if e.RequestID == "" {
				e.RequestID = apierr.OneLine(x.RequestID)
			}
			break
		}
		e.Message = "non-JSON body"
	default:
		e.Message = "non-JSON body"
	}
	if len(e.Code) > 64 {
		e.Code = e.Code[:64]
	}
	if len(e.RequestID) > 128 {
		e.RequestID = e.RequestID[:128]
	}
	return e
}

// findErrorFields looks for an error code and message in a decoded JSON value,
// preferring the top level, then nested objects (depth-limited). Numeric codes (a
// Keystone or Google "code": 401) are not Huawei error codes and are dropped.
func findErrorFields(v any, depth int) (code, msg, reqID string, ok bool) {
	if depth > 4 {
		return "", "", "", false
	}
	switch t := v.(type) {
	case []any:
		if len(t) > 0 {
			return findErrorFields(t[0], depth+1)
		}
		return "", "", "", false
	case map[string]any:
		reqID, _ = t["request_id"].(string)
		if c, m, found := pair(t, "error_code", "error_msg"); found {
			return c, m, reqID, true
		}
		if c, m, found := pair(t, "code", "message"); found {
			return c, m, reqID, true
		}
		for _, k := range sortedKeys(t) {
			if c, m, r, found := findErrorFields(t[k], depth+1); found {
				if r == "" {
					r = reqID
				}
				return c, m, r, true
			}
		}
	}
	return "", "", "", false
}

// pair reads a code/message pair; it counts as found when either is a non-empty string.
func pair(m map[string]any, codeKey, msgKey string) (code, msg string, ok bool) {
	switch c := m[codeKey].(type) {
	case string:
		code = c
	case float64: // numeric codes are HTTP statuses, not Huawei codes
	}
	msg, _ = m[msgKey].(string)
	_, hasCode := m[codeKey]
	return code, msg, (hasCode && msg != "") || code != ""
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// "error" first (the usual nesting), then the rest in order, for determinism.
	sort.Slice(keys, func(i, j int) bool {
		if (keys[i] == "error") != (keys[j] == "error") {
			return keys[i] == "error"
		}
		return keys[i] < keys[j]
	})
	return keys
}

// NetError is a failed call that got no HTTP response (connection refused or reset,
// TLS failure, timeout, body cut short). It is retryable unless the caller's context
// ended. It never carries headers, tokens or secrets.
type NetError struct {
	// Call and Target are as in Error.
	Call, Target string
	// Host is the host (and port) the request went to.
	Host string
	// Err is the cause.
	Err error

	canceled bool
}

// NewNetError wraps err from an HTTP round trip to host. It unwraps *url.Error (whose
// text repeats the URL) and notes whether ctx has ended (then it is not retryable).
func NewNetError(ctx context.Context, call, target, host string, err error) *NetError {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	ne := &NetError{Call: call, Target: target, Host: host, Err: err}
	if ctx != nil && ctx.Err() != nil {
		ne.canceled = true
	}
	return ne
}

// Error implements error.
func (e *NetError) Error() string {
	s := "calling " + e.Call
	if e.Target != "" {
		s += " for " + e.Target
	}
	if e.Host != "" {
		s += " at " + e.Host
	}
	if e.canceled {
		return fmt.Sprintf("%s was canceled: %v", s, e.Err)
	}
	return fmt.Sprintf("%s failed: %v (retryable)", s, e.Err)
}

// Unwrap returns the cause.
func (e *NetError) Unwrap() error { return e.Err }

// Retryable is true unless the caller's context ended.
func (e *NetError) Retryable() bool { return !e.canceled }

// RetryAfter is always 0: the server said nothing.
func (e *NetError) RetryAfter() time.Duration { return 0 }

// credError is a problem with local credential material (a secret file, the token
// file). Its text names the file, never its content.
type credError struct {
	msg       string
	retryable bool
	err       error
}

func (e *credError) Error() string             { return e.msg }
func (e *credError) Unwrap() error             { return e.err }
func (e *credError) Retryable() bool           { return e.retryable }
func (e *credError) RetryAfter() time.Duration { return 0 }

// redact replaces every occurrence of each secret (of at least 4 bytes) in s.
func redact(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}
