// Package apierr holds what the cloud API clients share about HTTP errors: which
// statuses a retry can help, how to read a Retry-After header, and how to make a
// server's message printable. Standard library only.
package apierr

import (
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxMessage is how much of a server's error message OneLine keeps, in bytes.
const MaxMessage = 300

// OneLine makes a server message printable on one line (white space folded) and caps
// it at MaxMessage bytes on a rune boundary, marking a cut with "…".
func OneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > MaxMessage {
		cut := MaxMessage
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// CapBytes returns a copy of at most the first n bytes of b.
func CapBytes(b []byte, n int) []byte {
	if len(b) > n {
		b = b[:n]
	}
	return append([]byte(nil), b...)
}

// RetryableStatus reports whether a retry can help an HTTP status: 5xx, 429 and 408.
func RetryableStatus(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
}

// ParseRetryAfter parses a Retry-After value: delay seconds or an HTTP date (relative to
// now). ok is false when the value is empty or unparseable; a date in the past yields
// 0, true.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		const maxSecs = int64(1<<63-1) / int64(time.Second)
		return time.Duration(min(secs, maxSecs)) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
