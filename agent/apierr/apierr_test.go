package apierr

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"", 0, false},
		{"7", 7 * time.Second, true},
		{" 0 ", 0, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{"Fri, 02 Jan 2026 03:05:05 GMT", time.Minute, true},
		{"Fri, 02 Jan 2026 03:00:00 GMT", 0, true}, // in the past
		{"99999999999999999999", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestRetryableStatus(t *testing.T) {
	for code, want := range map[int]bool{200: false, 400: false, 401: false, 403: false, 404: false, 408: true, 429: true, 500: true, 503: true} {
		if RetryableStatus(code) != want {
			t.Errorf("RetryableStatus(%d) = %v", code, !want)
		}
	}
}

func TestOneLine(t *testing.T) {
	if got := OneLine("a\n  b\tc"); got != "a b c" {
		t.Errorf("OneLine = %q", got)
	}
	long := strings.Repeat("é", MaxMessage) // 2 bytes each
	got := OneLine(long)
	if !strings.HasSuffix(got, "…") || len(got) > MaxMessage+len("…") || !utf8.ValidString(got) {
		t.Errorf("OneLine cut badly: %d bytes, valid=%v", len(got), utf8.ValidString(got))
	}
}
