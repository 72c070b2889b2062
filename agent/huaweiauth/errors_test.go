package huaweiauth

import (
	"github.com/dbcert-agent/dbcert-agent/agent/apierr"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseError(t *testing.T) {
	for _, c := range []struct {
		name, body         string
		hdr                http.Header
		status             int
		code, msg, request string
	}{
		{"service", `{"error_code":"DBS.200002","error_msg":"The DB instance does not exist."}`, nil, 404, "DBS.200002", "The DB instance does not exist.", ""},
		{"apig", `{"error_msg":"Incorrect IAM authentication information: x","error_code":"APIGW.0301","request_id":"r1"}`, nil, 401, "APIGW.0301", "Incorrect IAM authentication information: x", "r1"},
		{"code/message", `{"code":"IAM.0001","message":"bad"}`, nil, 400, "IAM.0001", "bad", ""},
		{"nested", `{"error":{"code":"DBS.280001","message":"nested msg"}}`, http.Header{"X-Request-Id": {"hdr"}}, 400, "DBS.280001", "nested msg", "hdr"},
		{"keystone", `{"error":{"code":401,"message":"The request you have made requires authentication.","title":"Unauthorized"}}`, nil, 401, "", "The request you have made requires authentication.", ""},
		{"deep", `{"outer":{"error":{"error_code":"X.1","error_msg":"deep"}}}`, nil, 500, "X.1", "deep", ""},
		{"obs xml", `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message><RequestId>abc</RequestId></Error>`, nil, 403, "AccessDenied", "Request has expired", "abc"},
		{"html", `<html><body>502 Bad Gateway</body></html>`, nil, 502, "", "non-JSON body", ""},
		{"empty", ``, nil, 503, "", "empty body", ""},
		{"json other", `{"foo":1}`, nil, 500, "", "unrecognised error body", ""},
	} {
		e := ParseError(c.status, c.hdr, []byte(c.body))
		if e.Code != c.code || e.Message != c.msg || e.RequestID != c.request || e.Status != c.status {
			t.Errorf("%s: got code %q msg %q req %q", c.name, e.Code, e.Message, e.RequestID)
		}
	}
}

func TestErrorSentence(t *testing.T) {
	e := ParseError(403, http.Header{"Retry-After": {"3"}}, []byte(`{"error_code":"DBS.200019","error_msg":"The instance status does not allow this operation."}`))
	e.Call, e.Target, e.Hint = "ssl-cert/download-link", "p/i", "wait for the instance"
	want := "403 DBS.200019 from ssl-cert/download-link for p/i: The instance status does not allow this operation.; wait for the instance"
	if e.Error() != want {
		t.Fatalf("%q\nwant %q", e.Error(), want)
	}
	if e.Retryable() || e.RetryAfter() != 3*time.Second {
		t.Fatal("403 retryable or Retry-After lost")
	}
	e = ParseError(429, nil, []byte(`{"error_code":"APIGW.0308","error_msg":"throttled"}`))
	if !e.Retryable() {
		t.Fatal("429 not retryable")
	}
	e.SetRetryable(false)
	if e.Retryable() {
		t.Fatal("SetRetryable ignored")
	}
	long := strings.Repeat("x ", 400)
	e = ParseError(500, nil, []byte(`{"error_code":"A","error_msg":"`+long+`"}`))
	if len(e.Message) > 310 || strings.Contains(e.Message, "\n") {
		t.Fatalf("message not capped: %d", len(e.Message))
	}
	if d, ok := apierr.ParseRetryAfter("Wed, 21 Oct 2015 07:28:10 GMT", time.Date(2015, 10, 21, 7, 28, 0, 0, time.UTC)); !ok || d != 10*time.Second {
		t.Fatalf("http date: %v %v", d, ok)
	}
}
