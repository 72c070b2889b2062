package wire

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestCheckEndpoint(t *testing.T) {
	tests := []struct {
		raw, want string
		insecure  bool
		bad       bool
	}{
		{raw: "https://sqladmin.googleapis.com", want: "https://sqladmin.googleapis.com/"},
		{raw: "https://example.com/prefix", want: "https://example.com/prefix/"},
		{raw: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080/"},
		{raw: "http://127.9.9.9/", want: "http://127.9.9.9/"},
		{raw: "http://[::1]:9/", want: "http://[::1]:9/"},
		{raw: "http://LocalHost:9", want: "http://LocalHost:9/"},
		{raw: "http://example.com/", insecure: true},
		{raw: "http://10.0.0.1/", insecure: true},
		{raw: "http://127.0.0.1.example.com/", insecure: true},
		{raw: "http://localhost.evil/", insecure: true},
		{raw: "ftp://127.0.0.1/", bad: true},
		{raw: "https:///nohost", bad: true},
		{raw: "https://u:secretpw@example.com/", bad: true},
		{raw: "https://example.com/?a=b", bad: true},
		{raw: "https://example.com/#f", bad: true},
		{raw: "127.0.0.1:80", bad: true},
		{raw: "::", bad: true},
	}
	for _, tc := range tests {
		u, err := CheckEndpoint("api_endpoint", tc.raw)
		switch {
		case tc.insecure:
			if !errors.Is(err, ErrInsecure) {
				t.Errorf("%q: err %v, want ErrInsecure", tc.raw, err)
			}
		case tc.bad:
			if err == nil || errors.Is(err, ErrInsecure) {
				t.Errorf("%q: err %v, want a rejection", tc.raw, err)
			}
		default:
			if err != nil || u.String() != tc.want {
				t.Errorf("%q: %v %v, want %s", tc.raw, u, err, tc.want)
			}
		}
		if err != nil && strings.Contains(err.Error(), "secretpw") {
			t.Errorf("%q: the error shows the password: %v", tc.raw, err)
		}
	}
}

func TestReadCapped(t *testing.T) {
	for _, n := range []int{0, 10, MaxBody, MaxBody + 1, 10 << 20} {
		data, tooBig, err := ReadBody(bytes.NewReader(make([]byte, n)))
		if err != nil || tooBig != (n > MaxBody) || len(data) != min(n, MaxBody) {
			t.Errorf("%d bytes: len %d tooBig %v err %v", n, len(data), tooBig, err)
		}
	}
}

func TestUserAgent(t *testing.T) {
	if ua := UserAgent(); !strings.HasPrefix(ua, "dbcert-agent/") || len(ua) <= len("dbcert-agent/") {
		t.Errorf("UserAgent() = %q", ua)
	}
}
