package huaweiauth

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Vector 1 (reference §6.4): Huawei's signing guide.
func TestSignVector1(t *testing.T) {
	const (
		sk   = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"
		sts  = "SDK-HMAC-SHA256\n20191115T033655Z\nb25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"
		want = "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"
	)
	if got := signature(sk, sts); got != want {
		t.Fatalf("signature = %s, want %s", got, want)
	}
	const wantAuth = "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;x-sdk-date, Signature=" + want
	if got := authorization("QTWAOYTTINDUT2QVKYUC", "content-type;host;x-sdk-date", signature(sk, sts)); got != wantAuth {
		t.Fatalf("Authorization = %q, want %q", got, wantAuth)
	}
	// The date line of the string to sign is X-Sdk-Date as sent.
	if got := stringToSign("20191115T033655Z", ""); !strings.HasPrefix(got, "SDK-HMAC-SHA256\n20191115T033655Z\n") {
		t.Fatalf("stringToSign prefix: %q", got)
	}
}

// Vector 2 (reference §6.4): cross-checked against the Go SDK's signer.
const (
	v2AK        = "HWAKEXAMPLE0000000001"
	v2SK        = "HWSKEXAMPLEexampleEXAMPLEexample0000000001"
	v2URL       = "https://gaussdb-nosql.cn-north-4.myhuaweicloud.com/v3/0123456789abcdef0123456789abcdef/instances/a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5din06/ssl-cert/download-link"
	v2Project   = "0123456789abcdef0123456789abcdef"
	v2Canonical = "GET\n/v3/0123456789abcdef0123456789abcdef/instances/a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5din06/ssl-cert/download-link/\n\nhost:gaussdb-nosql.cn-north-4.myhuaweicloud.com\nx-project-id:0123456789abcdef0123456789abcdef\nx-sdk-date:20260102T030405Z\n\nhost;x-project-id;x-sdk-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	v2Hash      = "6f004123a1b94320beeef3456fd0393eb05d45c08f768e1d511682980e15fff2"
	v2Auth      = "SDK-HMAC-SHA256 Access=HWAKEXAMPLE0000000001, SignedHeaders=host;x-project-id;x-sdk-date, Signature=89d36d8e4ab18c3518478d2d2c56ac8b096f631cc60d15d86e60ac702e80f010"
)

var v2Time = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestSignVector2Steps(t *testing.T) {
	u, _ := url.Parse(v2URL)
	headers := map[string]string{
		"Host":         "gaussdb-nosql.cn-north-4.myhuaweicloud.com",
		"X-Project-Id": v2Project,
		"X-Sdk-Date":   "20260102T030405Z",
	}
	signed, canonical := canonicalRequest("GET", u, headers, hexSHA256(nil))
	if canonical != v2Canonical {
		t.Fatalf("canonical request:\n%q\nwant\n%q", canonical, v2Canonical)
	}
	if signed != "host;x-project-id;x-sdk-date" {
		t.Fatalf("signed headers %q", signed)
	}
	sts := stringToSign("20260102T030405Z", canonical)
	if want := "SDK-HMAC-SHA256\n20260102T030405Z\n" + v2Hash; sts != want {
		t.Fatalf("string to sign %q, want %q", sts, want)
	}
	if got := authorization(v2AK, signed, signature(v2SK, sts)); got != v2Auth {
		t.Fatalf("Authorization\n%s\nwant\n%s", got, v2Auth)
	}
}

func TestSignVector2Request(t *testing.T) {
	req, _ := http.NewRequest("GET", v2URL, nil)
	req.Header.Set("X-Project-Id", v2Project)
	req.Header.Set("Accept", "application/json") // not signed
	req.Header.Set("User-Agent", "dbcert-agent") // not signed
	if err := Sign(req, nil, v2AK, v2SK, v2Time.In(time.FixedZone("CST", 8*3600))); err != nil {
		t.Fatal(err)
	}
	if got := req.Header.Get("Authorization"); got != v2Auth {
		t.Fatalf("Authorization\n%s\nwant\n%s", got, v2Auth)
	}
	if got := req.Header.Get("X-Sdk-Date"); got != "20260102T030405Z" {
		t.Fatalf("X-Sdk-Date %q", got)
	}
	if req.Host != "gaussdb-nosql.cn-north-4.myhuaweicloud.com" {
		t.Fatalf("Host %q", req.Host)
	}
	// A default port is not part of the signed host: same signature.
	req2, _ := http.NewRequest("GET", strings.Replace(v2URL, ".com/", ".com:443/", 1), nil)
	req2.Header.Set("X-Project-Id", v2Project)
	if err := Sign(req2, nil, v2AK, v2SK, v2Time); err != nil {
		t.Fatal(err)
	}
	if got := req2.Header.Get("Authorization"); got != v2Auth {
		t.Fatalf("with :443: Authorization\n%s\nwant\n%s", got, v2Auth)
	}
}

func TestCanonicalPieces(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/v3/a b/x~y", "/v3/a%20b/x~y/"},
		{"/v3/p:q/", "/v3/p%3Aq/"},
	} {
		if got := CanonicalURI(c.in); got != c.want {
			t.Errorf("CanonicalURI(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	q := url.Values{"b": {"2", "1"}, "a": {""}, "c d": {"x/y"}}
	if got, want := CanonicalQuery(q), "a=&b=1&b=2&c%20d=x%2Fy"; got != want {
		t.Errorf("CanonicalQuery = %q, want %q", got, want)
	}
}

func TestSignBodyAndContentType(t *testing.T) {
	body := []byte(`{"a":1}`)
	req, _ := http.NewRequest("POST", "https://iam.example.com/v3/x?b=1&a=2", nil)
	req.Header.Set("Content-Type", "application/json")
	if err := Sign(req, body, "AK", "SK", v2Time); err != nil {
		t.Fatal(err)
	}
	a := req.Header.Get("Authorization")
	if !strings.Contains(a, "SignedHeaders=content-type;host;x-sdk-date,") {
		t.Fatalf("Authorization %q", a)
	}
	// Recompute by hand.
	canonical := "POST\n/v3/x/\na=2&b=1\ncontent-type:application/json\nhost:iam.example.com\nx-sdk-date:20260102T030405Z\n\ncontent-type;host;x-sdk-date\n" + hexSHA256(body)
	want := authorization("AK", "content-type;host;x-sdk-date", signature("SK", stringToSign("20260102T030405Z", canonical)))
	if a != want {
		t.Fatalf("Authorization %q, want %q", a, want)
	}
	// UNSIGNED-PAYLOAD replaces the body hash.
	req, _ = http.NewRequest("PUT", "https://h/x", nil)
	req.Header.Set("X-Sdk-Content-Sha256", "UNSIGNED-PAYLOAD")
	_ = Sign(req, []byte("ignored"), "AK", "SK", v2Time)
	canonical = "PUT\n/x/\n\nhost:h\nx-sdk-content-sha256:UNSIGNED-PAYLOAD\nx-sdk-date:20260102T030405Z\n\nhost;x-sdk-content-sha256;x-sdk-date\nUNSIGNED-PAYLOAD"
	want = authorization("AK", "host;x-sdk-content-sha256;x-sdk-date", signature("SK", stringToSign("20260102T030405Z", canonical)))
	if got := req.Header.Get("Authorization"); got != want {
		t.Fatalf("unsigned payload: %q, want %q", got, want)
	}
	if err := Sign(req, nil, "AK", "", v2Time); err == nil || strings.Contains(err.Error(), "SK") && strings.Contains(err.Error(), "=") {
		t.Fatalf("empty SK: %v", err)
	}
}
