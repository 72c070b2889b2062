// Package gapi is the small HTTP+JSON client core the Google providers share (Cloud SQL
// Admin now, AlloyDB Admin later): one request, one JSON answer, and errors that read as
// one sentence and say whether a retry can help.
//
// The agent consumes errors through duck-typed methods, never through this package:
//
//	Retryable() bool           // a later attempt may succeed
//	RetryAfter() time.Duration // the server's requested wait, 0 when it gave none
//
// Both *Error (the API answered) and *NetError (it did not) implement them.
package gapi

import (
	"encoding/json"
	"fmt"
	"github.com/dbcert-agent/dbcert-agent/agent/apierr"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error is a failed API call for which the server answered: a non-2xx status, or a 2xx
// response that was unusable (not JSON, too large, or rejected by the provider's checks).
//
// Error() reads as one sentence naming the HTTP code, the Google reason, the call, the
// target and what to do, e.g.
//
//	403 notAuthorized from generateEphemeralCert for my-proj/orders-pg: the credentials
//	lack cloudsql.instances.connect or the instance name is wrong (The client is not
//	authorized to make this request.)
//
// Body is never printed: it is kept (capped) for debugging only.
type Error struct {
	// Code is the HTTP status code (the body's error.code when the body has one).
	Code int
	// Status is the canonical google.rpc.Code name, e.g. "PERMISSION_DENIED".
	Status string
	// Reason is the first errors[].reason (legacy format), e.g. "notAuthorized".
	Reason string
	// InfoReason is the reason of the first google.rpc.ErrorInfo detail, e.g.
	// "ACCESS_TOKEN_SCOPE_INSUFFICIENT".
	InfoReason string
	// Message is the server's message (one line, capped), or what was wrong with the
	// response ("non-JSON body").
	Message string
	// Call names the API method, e.g. "generateEphemeralCert".
	Call string
	// Target names the resource, e.g. "my-proj/orders-pg".
	Target string
	// Hint says what to do, e.g. "check project and instance names".
	Hint string
	// Body is the raw response body, capped at MaxKeptBody bytes. Not printed.
	Body []byte
	// Err is the underlying cause, if any (a JSON error, bundle.ErrInvalid, ...).
	Err error

	retryAfter time.Duration
}

// MaxKeptBody bounds how much of a failed response's body Error.Body keeps.
const MaxKeptBody = 8 << 10

// apierr.MaxMessage bounds the server message quoted in Error().

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(e.Code))
	if l := e.label(); l != "" {
		b.WriteString(" " + l)
	}
	b.WriteString(" from " + e.Call)
	if e.Target != "" {
		b.WriteString(" for " + e.Target)
	}
	b.WriteString(": ")
	switch {
	case e.Hint != "" && e.Message != "":
		b.WriteString(e.Hint + " (" + e.Message + ")")
	case e.Hint != "":
		b.WriteString(e.Hint)
	case e.Message != "":
		b.WriteString(e.Message)
	default:
		b.WriteString("unexpected response")
	}
	return b.String()
}

func (e *Error) label() string {
	switch {
	case e.Reason != "":
		return e.Reason
	case e.InfoReason != "":
		return e.InfoReason
	}
	return e.Status
}

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether a later attempt may succeed: 5xx, 429 and 408 are
// retryable; every other status (other 4xx, unusable 2xx) is permanent.
func (e *Error) Retryable() bool { return apierr.RetryableStatus(e.Code) }

// RetryAfter is the wait the server asked for (Retry-After header or RetryInfo detail),
// 0 when it gave none.
func (e *Error) RetryAfter() time.Duration { return e.retryAfter }

// IPTypes are the connection ip_type values, in the order NoAddress lists them.
var IPTypes = []string{"public", "private", "psc"}

// NoAddress makes the permanent error for an instance that has no address of ipType
// where one is needed (connection files, .pgpass): it names the ip_type and lists the
// addresses the instance does have, which address gives for each of IPTypes.
func NoAddress(call, target, ipType string, address func(ipType string) string) *Error {
	var have []string
	for _, t := range IPTypes {
		if a := address(t); a != "" {
			have = append(have, t+" "+a)
		}
	}
	if len(have) == 0 {
		have = []string{"no usable address at all"}
	}
	return BadResponse(call, target,
		fmt.Errorf("the instance has no address for ip_type %q; it has %s", ipType, strings.Join(have, ", ")),
		"set ip_type to one the instance has, or set host in the connection block")
}

// BadResponse makes the permanent error for a 2xx response the caller could not use
// (missing field, certificate that does not parse or does not match). cause says what
// was wrong and is wrapped; hint says what to do (may be empty).
func BadResponse(call, target string, cause error, hint string) *Error {
	return &Error{
		Code:    http.StatusOK,
		Call:    call,
		Target:  target,
		Message: apierr.OneLine(cause.Error()),
		Hint:    hint,
		Err:     cause,
	}
}

// envelope is the Google error body (§7 of the reference): {"error": {...}}.
type envelope struct {
	Error *errorObj `json:"error"`
}

type errorObj struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Status  string `json:"status"`
	Errors  []struct {
		Reason string `json:"reason"`
	} `json:"errors"`
	Details []json.RawMessage `json:"details"`
}

type detail struct {
	Type       string `json:"@type"`
	Reason     string `json:"reason"`
	RetryDelay string `json:"retryDelay"`
}

// ParseError builds an *Error from a non-2xx response's status, header and body. It
// accepts `{"error":{...}}`, a JSON array whose first element is that object, a body
// without `code` (the HTTP status is used) and non-JSON bodies (Message "non-JSON body").
// Call, Target and Hint are left for the caller.
func ParseError(status int, h http.Header, raw []byte) *Error {
	e := &Error{Code: status, Body: apierr.CapBytes(raw, MaxKeptBody)}
	var ra time.Duration
	if b, ok := decodeErrorBody(raw); ok {
		if b.Code != 0 {
			e.Code = b.Code
		}
		e.Status = b.Status
		e.Message = apierr.OneLine(b.Message)
		for _, it := range b.Errors {
			if it.Reason != "" {
				e.Reason = it.Reason
				break
			}
		}
		e.InfoReason, ra = parseDetails(b.Details)
	} else if len(strings.TrimSpace(string(raw))) == 0 {
		e.Message = "empty body"
	} else {
		e.Message = "non-JSON body"
	}
	if d, ok := apierr.ParseRetryAfter(h.Get("Retry-After"), time.Now()); ok {
		ra = d
	}
	e.retryAfter = ra
	return e
}

func decodeErrorBody(raw []byte) (*errorObj, bool) {
	trimmed := strings.TrimSpace(string(raw))
	if strings.HasPrefix(trimmed, "[") {
		var arr []json.RawMessage
		if json.Unmarshal(raw, &arr) != nil || len(arr) == 0 {
			return nil, false
		}
		raw = arr[0]
	}
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil || env.Error == nil {
		return nil, false
	}
	return env.Error, true
}

// parseDetails returns the first ErrorInfo reason and the RetryInfo delay.
func parseDetails(ds []json.RawMessage) (infoReason string, retry time.Duration) {
	for _, raw := range ds {
		var d detail
		if json.Unmarshal(raw, &d) != nil {
			continue
		}
		switch {
		case strings.HasSuffix(d.Type, "google.rpc.ErrorInfo") && infoReason == "":
			infoReason = d.Reason
		case strings.HasSuffix(d.Type, "google.rpc.RetryInfo"):
			if v, err := parseProtoDuration(d.RetryDelay); err == nil {
				retry = v
			}
		}
	}
	return infoReason, retry
}

// parseProtoDuration parses a google.protobuf.Duration in its JSON form ("1.5s").
func parseProtoDuration(s string) (time.Duration, error) {
	if !strings.HasSuffix(s, "s") {
		return 0, fmt.Errorf("duration %q: missing unit s", s)
	}
	f, err := strconv.ParseFloat(strings.TrimSuffix(s, "s"), 64)
	if err != nil || f < 0 || f > 1e9 {
		return 0, fmt.Errorf("duration %q: bad value", s)
	}
	return time.Duration(f * float64(time.Second)), nil
}

// DefaultHint says what to do about e, for the sentence Error() prints. permission
// names the IAM permission the call needs (e.g. "cloudsql.instances.connect"); it may
// be empty.
func DefaultHint(e *Error, permission string) string {
	switch c := e.Code; {
	case c == http.StatusUnauthorized:
		return "the credentials were rejected; check credentials_file/token_file"
	case c == http.StatusForbidden:
		return forbiddenHint(e, permission)
	case c == http.StatusNotFound:
		return "check project and instance names"
	case c == http.StatusTooManyRequests:
		return "quota exceeded (retryable)"
	case c == http.StatusRequestTimeout:
		return "the request timed out (retryable)"
	case c >= 500:
		return "server error (retryable)"
	case c == http.StatusConflict:
		return "another operation is in progress or the resource changed; try again later"
	case c == http.StatusBadRequest:
		return "the API rejected the request as invalid"
	}
	return ""
}

func forbiddenHint(e *Error, permission string) string {
	switch {
	case e.Reason == "insufficientPermissions" || e.InfoReason == "ACCESS_TOKEN_SCOPE_INSUFFICIENT":
		return "the access token lacks the cloud-platform scope"
	case e.InfoReason == "SERVICE_DISABLED" || e.Reason == "accessNotConfigured":
		return "the API is not enabled in the project; enable it"
	case permission != "":
		return "the credentials lack " + permission + " or the instance name is wrong"
	}
	return "the credentials lack permission or the resource name is wrong"
}
