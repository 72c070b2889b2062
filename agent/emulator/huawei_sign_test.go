package emulator

import (
	"net/http"
	"testing"
	"time"
)

// The emulator's verifier is written apart from the agent's signer; it must accept the
// reference's test vector 2 as the Go SDK signs it, and nothing altered.
func TestVerifyHuaweiSignatureVector2(t *testing.T) {
	const (
		ak   = "HWAKEXAMPLE0000000001"
		sk   = "HWSKEXAMPLEexampleEXAMPLEexample0000000001"
		auth = "SDK-HMAC-SHA256 Access=HWAKEXAMPLE0000000001, SignedHeaders=host;x-project-id;x-sdk-date, Signature=89d36d8e4ab18c3518478d2d2c56ac8b096f631cc60d15d86e60ac702e80f010"
	)
	mk := func() *http.Request {
		r, _ := http.NewRequest("GET", "https://gaussdb-nosql.cn-north-4.myhuaweicloud.com/v3/0123456789abcdef0123456789abcdef/instances/a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5din06/ssl-cert/download-link", nil)
		r.Header.Set("X-Project-Id", "0123456789abcdef0123456789abcdef")
		r.Header.Set("X-Sdk-Date", "20260102T030405Z")
		r.Header.Set("Content-Type", "application/json") // sent, not signed (SDK)
		r.Header.Set("Authorization", auth)
		return r
	}
	now := time.Date(2026, 1, 2, 3, 10, 0, 0, time.UTC)
	if msg := verifyHuaweiSignature(mk(), nil, ak, sk, now); msg != "" {
		t.Fatalf("vector 2 refused: %s", msg)
	}
	r := mk()
	r.Header.Set("X-Project-Id", "ffff456789abcdef0123456789abcdef")
	if verifyHuaweiSignature(r, nil, ak, sk, now) == "" {
		t.Fatal("altered header accepted")
	}
	if verifyHuaweiSignature(mk(), []byte("x"), ak, sk, now) == "" {
		t.Fatal("altered body accepted")
	}
	if verifyHuaweiSignature(mk(), nil, ak, sk, now.Add(20*time.Minute)) == "" {
		t.Fatal("skew over 15 minutes accepted")
	}
	if verifyHuaweiSignature(mk(), nil, "OTHERAK", sk, now) == "" {
		t.Fatal("unknown AK accepted")
	}
}
