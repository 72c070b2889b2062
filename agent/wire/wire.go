// Package wire holds the rules every cloud API client of the agent shares, each in one
// place: which endpoints may be called (https, or http only to a loopback host), how
// much of a response body is read (MaxBody), and the User-Agent sent.
//
// It imports only the standard library, so the config package and every client can use
// it.
package wire

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
)

// MaxBody bounds every response body the agent reads from an API or a download
// (1 MiB, spec §6).
const MaxBody = 1 << 20

// version is the agent's version. Release builds set it with
// -ldflags "-X github.com/dbcert-agent/dbcert-agent/agent/wire.version=1.2.3"; otherwise
// the main module's version from the build information is used, or "dev".
var version = ""

// Version is the agent version named in the User-Agent.
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// UserAgent is the User-Agent header value of every request the agent makes:
// "dbcert-agent/VERSION".
func UserAgent() string { return "dbcert-agent/" + Version() }

// IsLoopbackHost reports whether host (without port; IPv6 with or without brackets) is
// "localhost" or a loopback IP address (127.0.0.0/8, ::1).
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return ip != nil && ip.IsLoopback()
}

// ErrInsecure is wrapped by CheckEndpoint and CheckURL errors for http:// to a host that
// is not loopback.
var ErrInsecure = errors.New("http:// is allowed only for loopback addresses (127.0.0.0/8, ::1, localhost); use https://")

// CheckURL accepts an absolute https:// URL with a host, or http:// to a loopback host,
// without user info; credentials may be sent to it. what names the setting in errors.
func CheckURL(what string, u *url.URL) error {
	switch {
	case u == nil || u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%s %s has no host; want https://host[:port][/path]", what, quote(u))
	case u.User != nil:
		return fmt.Errorf("%s %s carries user info; remove it", what, quote(u))
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && IsLoopbackHost(u.Hostname()):
		return nil
	case u.Scheme == "http":
		return fmt.Errorf("%s %s: %w", what, quote(u), ErrInsecure)
	}
	return fmt.Errorf("%s %s: unsupported scheme %q; want https://", what, quote(u), u.Scheme)
}

func quote(u *url.URL) string {
	if u == nil {
		return `""`
	}
	c := *u
	c.User = nil // never print a password
	return fmt.Sprintf("%q", c.String())
}

// CheckEndpoint parses and checks an API root URL: CheckURL, and no query or fragment.
// It returns the URL with its path ending in "/".
func CheckEndpoint(what, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s %q is not a URL: %v", what, raw, err)
	}
	if err := CheckURL(what, u); err != nil {
		return nil, err
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("%s %q must not carry a query or fragment", what, raw)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		if u.RawPath != "" {
			u.RawPath += "/"
		}
	}
	return u, nil
}

// ReadCapped reads r up to limit bytes. tooBig reports that r held more (data then has
// exactly limit bytes); err is a read error, with what was read so far.
func ReadCapped(r io.Reader, limit int64) (data []byte, tooBig bool, err error) {
	data, err = io.ReadAll(io.LimitReader(r, limit+1))
	if int64(len(data)) > limit {
		return data[:limit], true, nil
	}
	return data, false, err
}

// ReadBody is ReadCapped with MaxBody.
func ReadBody(r io.Reader) (data []byte, tooBig bool, err error) { return ReadCapped(r, MaxBody) }

// Discard drains up to 64 KiB of a response body we will not use (so the connection can
// be reused) and closes it.
func Discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// SetUserAgent sets the agent's User-Agent on req unless it has one.
func SetUserAgent(req *http.Request) {
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", UserAgent())
	}
}
