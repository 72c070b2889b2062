package huaweiauth

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzParseError: any error body (service, APIG, Keystone, nested, non-JSON) gives an
// *Error whose sentence is one line and whose status is kept; never a panic.
func FuzzParseError(f *testing.F) {
	for _, s := range []string{
		`{"error_code":"DBS.200001","error_msg":"Parameter error."}`,
		`{"error_msg":"Incorrect IAM authentication information: x","error_code":"APIGW.0301","request_id":"abc"}`,
		`{"error":{"code":401,"message":"The username or password is wrong.","title":"Unauthorized"}}`,
		`{"error":{"code":"X.1","message":"nested"}}`,
		`{"code":"Y.2","message":"top"}`,
		`<html>502</html>`, ``, `[]`, `{"error":{"error":{"error":{}}}}`,
	} {
		f.Add(401, s)
		f.Add(500, s)
	}
	f.Fuzz(func(t *testing.T, status int, body string) {
		if status < 100 || status > 999 {
			return
		}
		h := http.Header{"X-Request-Id": {"req-1"}}
		e := ParseError(status, h, []byte(body))
		if e == nil || e.Status != status {
			t.Fatalf("ParseError(%d) = %+v", status, e)
		}
		if msg := e.Error(); strings.ContainsAny(msg, "\n\r") {
			t.Fatalf("multi-line error: %q", msg)
		}
	})
}

// FuzzTokenTimes: any expires_at/issued_at pair gives a token that expires after it was
// asked for and is refreshed before it expires.
func FuzzTokenTimes(f *testing.F) {
	f.Add("2026-01-02T03:04:05.123000Z", "2026-01-03T03:04:05.123000Z")
	f.Add("", "")
	f.Add("2026-01-03T03:04:05Z", "2026-01-02T03:04:05Z")
	f.Add("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z")
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, issued, expires string) {
		c := newCachedToken("tok", start, issued, expires)
		if c.lifetime <= 0 || !c.expiry.After(start) || c.refreshAt.After(c.expiry) || !c.refreshAt.After(start) {
			t.Fatalf("lifetime %v expiry %v refreshAt %v (start %v)", c.lifetime, c.expiry, c.refreshAt, start)
		}
	})
}
