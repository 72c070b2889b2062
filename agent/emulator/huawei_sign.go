package emulator

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Server-side check of SDK-HMAC-SHA256 signatures (reference §6.4), written apart from
// the agent's signer (package huaweiauth) so that one cannot hide the other's mistakes:
// it rebuilds the canonical request from what arrived, for the headers the client says
// it signed.

const (
	huaweiSignAlgorithm  = "SDK-HMAC-SHA256"
	huaweiSignDateLayout = "20060102T150405Z"
)

// verifyHuaweiSignature returns "" when r carries a valid signature by ak/sk made
// within huaweiMaxSkew of now, else what is wrong (for the APIG error message).
func verifyHuaweiSignature(r *http.Request, body []byte, ak, sk string, now time.Time) string {
	access, signed, sig, ok := parseHuaweiAuthorization(r.Header.Get("Authorization"))
	if !ok {
		return "the Authorization header is malformed"
	}
	if ak == "" || access != ak {
		return "the access key does not exist"
	}
	if !slices.Contains(signed, "host") || !slices.Contains(signed, "x-sdk-date") {
		return "host and x-sdk-date must be signed"
	}
	date := r.Header.Get("X-Sdk-Date")
	t, err := time.Parse(huaweiSignDateLayout, date)
	if err != nil {
		return "x-sdk-date is missing or not in the format YYYYMMDDTHHMMSSZ"
	}
	if d := now.Sub(t); d > huaweiMaxSkew || d < -huaweiMaxSkew {
		return "the x-sdk-date is more than 15 minutes away from the server time"
	}
	want := huaweiSignature(sk, huaweiStringToSign(date, huaweiCanonicalRequest(r, signed, body)))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return "verify aksk signature fail"
	}
	return ""
}

// parseHuaweiAuthorization splits
// "SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=hex".
func parseHuaweiAuthorization(h string) (access string, signed []string, sig string, ok bool) {
	rest, found := strings.CutPrefix(h, huaweiSignAlgorithm+" ")
	if !found {
		return "", nil, "", false
	}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Access":
			access = v
		case "SignedHeaders":
			signed = strings.Split(v, ";")
		case "Signature":
			sig = v
		}
	}
	return access, signed, sig, access != "" && len(signed) > 0 && sig != ""
}

// huaweiCanonicalRequest builds the canonical request from the received request.
func huaweiCanonicalRequest(r *http.Request, signed []string, body []byte) string {
	var b strings.Builder
	b.WriteString(r.Method + "\n")
	b.WriteString(huaweiCanonicalURI(r.URL.Path) + "\n")
	b.WriteString(huaweiCanonicalQuery(r.URL.Query()) + "\n")
	names := slices.Clone(signed)
	slices.Sort(names)
	for _, n := range names {
		v := strings.Join(r.Header.Values(n), ",")
		if n == "host" {
			v = r.Host
		}
		b.WriteString(n + ":" + strings.TrimSpace(v) + "\n")
	}
	b.WriteString("\n" + strings.Join(names, ";") + "\n")
	if h := r.Header.Get("X-Sdk-Content-Sha256"); h != "" {
		b.WriteString(h)
	} else {
		sum := sha256.Sum256(body)
		b.WriteString(hex.EncodeToString(sum[:]))
	}
	return b.String()
}

func huaweiCanonicalURI(p string) string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		out = append(out, huaweiEscape(s))
	}
	u := strings.Join(out, "/")
	if !strings.HasSuffix(u, "/") {
		u += "/"
	}
	return u
}

func huaweiCanonicalQuery(q url.Values) string {
	var pairs []string
	for _, k := range slices.Sorted(maps.Keys(q)) {
		for _, v := range slices.Sorted(slices.Values(q[k])) {
			pairs = append(pairs, huaweiEscape(k)+"="+huaweiEscape(v))
		}
	}
	return strings.Join(pairs, "&")
}

// huaweiEscape keeps RFC 3986 unreserved characters and percent-encodes the rest.
func huaweiEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

func huaweiStringToSign(date, canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	return huaweiSignAlgorithm + "\n" + date + "\n" + hex.EncodeToString(sum[:])
}

func huaweiSignature(sk, sts string) string {
	m := hmac.New(sha256.New, []byte(sk))
	m.Write([]byte(sts))
	return hex.EncodeToString(m.Sum(nil))
}
