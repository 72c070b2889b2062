package huaweiauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Signing constants (reference §6.4).
const (
	// Algorithm is the signature algorithm name in the Authorization header.
	Algorithm = "SDK-HMAC-SHA256"
	// DateFormat is the format of X-Sdk-Date: basic ISO 8601, UTC.
	DateFormat = "20060102T150405Z"

	headerSdkDate       = "X-Sdk-Date"
	headerProjectID     = "X-Project-Id"
	headerContentSHA256 = "X-Sdk-Content-Sha256"
)

// signedHeaderNames are the headers Sign includes when the request carries them, besides
// host and x-sdk-date (always signed). Headers not listed (Accept, User-Agent, ...) are
// left unsigned, so a proxy that rewrites them cannot break the signature.
var signedHeaderNames = []string{
	"content-type",
	"x-domain-id",
	"x-project-id",
	"x-sdk-content-sha256",
	"x-security-token",
}

// Sign signs req for Huawei Cloud's API gateway with the access key ak and secret key sk
// (SDK-HMAC-SHA256, reference §6.4). It sets X-Sdk-Date (from now, UTC), req.Host (the
// URL's host without a default port, which is what is signed) and Authorization.
//
// body is the exact request body (nil for none); it is hashed unless the request carries
// X-Sdk-Content-Sha256 (e.g. UNSIGNED-PAYLOAD), whose value is used instead. Signed are
// host, x-sdk-date and, when present, content-type, x-domain-id, x-project-id,
// x-sdk-content-sha256 and x-security-token; put X-Project-Id on req before calling Sign.
//
// Errors never contain sk.
func Sign(req *http.Request, body []byte, ak, sk string, now time.Time) error {
	if req == nil || req.URL == nil {
		return errors.New("huaweiauth: Sign: nil request")
	}
	if ak == "" || sk == "" {
		return errors.New("huaweiauth: Sign: empty access key or secret key")
	}
	if req.Header == nil {
		req.Header = http.Header{}
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	host = stripDefaultPort(host, req.URL.Scheme)
	if host == "" {
		return errors.New("huaweiauth: Sign: request has no host")
	}
	req.Host = host
	req.Header.Del("Authorization")
	req.Header.Set(headerSdkDate, now.UTC().Format(DateFormat))

	headers := map[string]string{"host": host}
	for _, name := range append([]string{"x-sdk-date"}, signedHeaderNames...) {
		if vs := req.Header.Values(name); len(vs) > 0 {
			headers[name] = strings.Join(vs, ",")
		}
	}
	payloadHash := req.Header.Get(headerContentSHA256)
	if payloadHash == "" {
		payloadHash = hexSHA256(body)
	}
	names, canonical := canonicalRequest(req.Method, req.URL, headers, payloadHash)
	sts := stringToSign(req.Header.Get(headerSdkDate), canonical)
	req.Header.Set("Authorization", authorization(ak, names, signature(sk, sts)))
	return nil
}

// canonicalRequest builds the canonical request from the method, the URL (its decoded
// path and query) and the signed headers (lower-case name → value). It returns the
// signed header list ("a;b;c") too.
func canonicalRequest(method string, u *url.URL, headers map[string]string, payloadHash string) (signedHeaders, canonical string) {
	names := make([]string, 0, len(headers))
	for k := range headers {
		names = append(names, strings.ToLower(k))
	}
	sort.Strings(names)
	lower := make(map[string]string, len(headers))
	for k, v := range headers {
		lower[strings.ToLower(k)] = v
	}
	var hb strings.Builder
	for _, n := range names {
		hb.WriteString(n + ":" + strings.TrimSpace(lower[n]) + "\n")
	}
	signedHeaders = strings.Join(names, ";")
	canonical = strings.Join([]string{
		strings.ToUpper(method),
		CanonicalURI(u.Path),
		CanonicalQuery(u.Query()),
		hb.String(),
		signedHeaders,
		payloadHash,
	}, "\n")
	return signedHeaders, canonical
}

// CanonicalURI escapes each segment of the decoded path (keeping A-Za-z0-9-_.~) and
// makes sure the result ends with "/" (reference pitfall 17).
func CanonicalURI(path string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		segs[i] = escape(s)
	}
	p := strings.Join(segs, "/")
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}

// CanonicalQuery sorts the parameters by key (values too), escapes both, and joins
// "k=v" pairs with "&"; an empty value keeps its "=".
func CanonicalQuery(q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		vs := append([]string(nil), q[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			parts = append(parts, escape(k)+"="+escape(v))
		}
	}
	return strings.Join(parts, "&")
}

// StringToSign is "SDK-HMAC-SHA256\n" + date + "\n" + hex(SHA256(canonical)).
func stringToSign(date, canonical string) string {
	return Algorithm + "\n" + date + "\n" + hexSHA256([]byte(canonical))
}

// signature is hex(HMAC-SHA256(sk, stringToSign)); the raw SK is the key.
func signature(sk, sts string) string {
	m := hmac.New(sha256.New, []byte(sk))
	m.Write([]byte(sts))
	return hex.EncodeToString(m.Sum(nil))
}

func authorization(ak, signedHeaders, sig string) string {
	return Algorithm + " Access=" + ak + ", SignedHeaders=" + signedHeaders + ", Signature=" + sig
}

func hexSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// escape percent-encodes everything outside A-Za-z0-9-_.~ (RFC 3986 unreserved).
func escape(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

// stripDefaultPort drops ":443" from https and ":80" from http hosts.
func stripDefaultPort(host, scheme string) string {
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		return host
	}
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		if strings.Contains(h, ":") {
			return "[" + h + "]"
		}
		return h
	}
	return host
}
