// Package huaweiauth authenticates requests to Huawei Cloud APIs, as an
// http.RoundTripper, in one of three ways (reference §6.3, §6.4):
//
//   - a token file: X-Auth-Token read from a file someone else keeps fresh, re-read when
//     the file changes (and once more after a 401);
//   - IAM password authentication: POST {iam}/v3/auth/tokens for a project-scoped token,
//     cached and refreshed well before it expires, and at once after a 401;
//   - AK/SK signing: SDK-HMAC-SHA256 with X-Sdk-Date, host and X-Project-Id signed.
//
// It imports only the standard library and agent/wire. Its errors say whether a retry can help
// (methods Retryable and RetryAfter) and never contain a password, secret key or token.
package huaweiauth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/wire"
)

// Options configure NewTransport. Exactly one authentication method must be set:
// TokenFile; or UserName + PasswordFile + DomainName; or AccessKey + SecretKeyFile.
type Options struct {
	// Region, e.g. "cn-north-4": the default IAM endpoint's region, and the project
	// name a password token is scoped to when ProjectID is empty.
	Region string
	// IAMEndpoint is the IAM root; default "https://iam.<Region>.myhuaweicloud.com".
	// http:// is allowed only for loopback hosts (emulators, tests).
	IAMEndpoint string

	// TokenFile holds an X-Auth-Token kept fresh by someone else.
	TokenFile string

	// UserName, PasswordFile and DomainName (the account name) log in to IAM with a
	// password for a project-scoped token.
	UserName, PasswordFile, DomainName string
	// ProjectID scopes password tokens to this project id (else to the project named
	// Region). With AK/SK it is the X-Project-Id sent and signed when the request does
	// not already carry one; when it is empty too, the project id is taken from the
	// request path (/v3/{project_id}/...) if the path has one.
	ProjectID string

	// AccessKey and SecretKeyFile sign every request (SDK-HMAC-SHA256).
	AccessKey, SecretKeyFile string

	// Password and SecretKey are in-memory alternatives to PasswordFile and
	// SecretKeyFile (the config's env("NAME")). Never logged.
	Password, SecretKey string

	// Base sends the requests (API and IAM); default http.DefaultTransport.
	Base http.RoundTripper
	// Now is the clock for token expiry and X-Sdk-Date; default time.Now.
	Now func() time.Time
}

// Authentication methods, as Method reports them.
const (
	MethodTokenFile = "token_file"
	MethodPassword  = "password"
	MethodAKSK      = "access_key"
)

// Method reports which authentication method o selects, or an error naming what is
// missing or conflicting. It reads no files.
func (o Options) Method() (string, error) {
	var set []string
	if o.TokenFile != "" {
		set = append(set, "token_file")
	}
	if o.UserName != "" || o.PasswordFile != "" || o.Password != "" || o.DomainName != "" {
		set = append(set, "user_name/password_file/domain_name")
	}
	if o.AccessKey != "" || o.SecretKeyFile != "" || o.SecretKey != "" {
		set = append(set, "access_key/secret_key_file")
	}
	switch len(set) {
	case 0:
		return "", errors.New("huaweicloud credentials: set one way to authenticate: token_file, user_name + password_file + domain_name, or access_key + secret_key_file")
	case 1:
	default:
		return "", fmt.Errorf("huaweicloud credentials: set exactly one way to authenticate, not %s", strings.Join(set, " and "))
	}
	switch {
	case o.TokenFile != "":
		return MethodTokenFile, nil
	case o.AccessKey != "" || o.SecretKeyFile != "" || o.SecretKey != "":
		if o.AccessKey == "" || (o.SecretKeyFile == "") == (o.SecretKey == "") {
			return "", errors.New("huaweicloud credentials: AK/SK signing needs both access_key and secret_key_file")
		}
		if !printable(o.AccessKey) {
			return "", errors.New("huaweicloud credentials: access_key holds white space or non-printable characters")
		}
		return MethodAKSK, nil
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"user_name", o.UserName}, {"password_file", o.PasswordFile + o.Password}, {"domain_name", o.DomainName}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("huaweicloud credentials: IAM password authentication also needs %s", strings.Join(missing, " and "))
	}
	if o.ProjectID == "" && o.Region == "" {
		return "", errors.New("huaweicloud credentials: IAM password authentication needs project_id or region (the token is scoped to a project)")
	}
	return MethodPassword, nil
}

var regionRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// ValidRegion reports whether region has the form of a Huawei Cloud region id
// ("cn-north-4"): lower-case letters and digits joined by single dashes. Endpoint host
// names are made from it.
func ValidRegion(region string) bool { return regionRE.MatchString(region) }

// NewTransport returns a RoundTripper that authenticates every request by the method
// o selects. It checks o and reads no files yet; file and IAM errors surface from
// RoundTrip, wrapped by http.Client in a *url.Error, with Retryable and RetryAfter.
func NewTransport(o Options) (http.RoundTripper, error) {
	method, err := o.Method()
	if err != nil {
		return nil, err
	}
	if o.Region != "" && !regionRE.MatchString(o.Region) {
		return nil, fmt.Errorf("huaweicloud credentials: invalid region %q (e.g. cn-north-4)", o.Region)
	}
	if o.Base == nil {
		o.Base = http.DefaultTransport
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	switch method {
	case MethodTokenFile:
		return &tokenFileTransport{base: o.Base, file: &secretFile{path: o.TokenFile, what: "token_file", missingRetryable: true}}, nil
	case MethodAKSK:
		return &akskTransport{
			base: o.Base, ak: o.AccessKey, projectID: o.ProjectID, now: o.Now,
			sk: &secretFile{path: o.SecretKeyFile, fixed: o.SecretKey, what: "secret_key_file"},
		}, nil
	}
	iam := o.IAMEndpoint
	if iam == "" {
		if o.Region == "" {
			return nil, errors.New("huaweicloud credentials: IAM password authentication needs region or iam_endpoint")
		}
		iam = "https://iam." + o.Region + ".myhuaweicloud.com"
	}
	root, err := CheckEndpoint("iam_endpoint", iam)
	if err != nil {
		return nil, err
	}
	src := &passwordSource{
		tokenURL:    root + "/v3/auth/tokens?nocatalog=true",
		user:        o.UserName,
		domain:      o.DomainName,
		projectID:   o.ProjectID,
		projectName: o.Region,
		password:    &secretFile{path: o.PasswordFile, fixed: o.Password, what: "password_file", password: true},
		base:        o.Base,
		now:         o.Now,
	}
	return &passwordTransport{base: o.Base, src: src}, nil
}

// CheckEndpoint checks an API root URL: https://host[:port][/path], or http:// for a
// loopback host only (wire.CheckEndpoint). It returns it without a trailing slash. what
// names the setting in errors ("iam_endpoint", "api_endpoint").
func CheckEndpoint(what, raw string) (string, error) {
	u, err := wire.CheckEndpoint("huaweicloud "+what, raw)
	if err != nil {
		return "", err
	}
	return u.Scheme + "://" + u.Host + strings.TrimSuffix(u.EscapedPath(), "/"), nil
}

// IsLoopbackHost reports whether host (no port) is localhost or a loopback IP.
func IsLoopbackHost(host string) bool { return wire.IsLoopbackHost(host) }

// checkRequest refuses to authenticate a request that would carry credentials in clear
// text over the network (http:// to a host that is not loopback).
func checkRequest(req *http.Request) error {
	if err := wire.CheckURL("huaweicloud API URL", req.URL); err != nil {
		closeBody(req)
		return err
	}
	return nil
}

// replayable reports whether req's body can be sent a second time.
func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// withBody returns a clone of req for one attempt; attempt > 0 takes a fresh body.
func withBody(req *http.Request, attempt int) (*http.Request, error) {
	c := req.Clone(req.Context())
	if attempt > 0 && req.Body != nil && req.Body != http.NoBody {
		b, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		c.Body = b
	}
	return c, nil
}

// drain discards a response we will not return.
func drain(resp *http.Response) { wire.Discard(resp) }

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// tokenFileTransport sends X-Auth-Token from a file.
type tokenFileTransport struct {
	base http.RoundTripper
	file *secretFile
}

func (t *tokenFileTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := checkRequest(req); err != nil {
		return nil, err
	}
	tok, err := t.file.get(false)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	resp, err := t.send(req, tok, 0)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !replayable(req) {
		return resp, err
	}
	// Whoever keeps the file fresh may have written a new token just now.
	fresh, ferr := t.file.get(true)
	if ferr != nil || fresh == tok {
		return resp, nil
	}
	drain(resp)
	return t.send(req, fresh, 1)
}

func (t *tokenFileTransport) send(req *http.Request, tok string, attempt int) (*http.Response, error) {
	c, err := withBody(req, attempt)
	if err != nil {
		return nil, err
	}
	c.Header.Set("X-Auth-Token", tok)
	return t.base.RoundTrip(c)
}

// passwordTransport sends X-Auth-Token from IAM password authentication.
type passwordTransport struct {
	base http.RoundTripper
	src  *passwordSource
}

func (t *passwordTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := checkRequest(req); err != nil {
		return nil, err
	}
	tok, err := t.src.token(req.Context())
	if err != nil {
		closeBody(req)
		return nil, err
	}
	resp, err := t.send(req, tok, 0)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	// The token was rejected (revoked, password changed, expired early): the next
	// request gets a new one; this one is tried once more if its body can be replayed.
	t.src.invalidate(tok)
	if !replayable(req) {
		return resp, nil
	}
	drain(resp)
	fresh, err := t.src.token(req.Context())
	if err != nil {
		return nil, err
	}
	return t.send(req, fresh, 1)
}

func (t *passwordTransport) send(req *http.Request, tok string, attempt int) (*http.Response, error) {
	c, err := withBody(req, attempt)
	if err != nil {
		return nil, err
	}
	c.Header.Set("X-Auth-Token", tok)
	return t.base.RoundTrip(c)
}

// akskTransport signs every request.
type akskTransport struct {
	base      http.RoundTripper
	ak        string
	sk        *secretFile
	projectID string
	now       func() time.Time
}

// maxSignedBody bounds the request bodies the AK/SK transport buffers for hashing.
const maxSignedBody = 8 << 20

var projectPathRE = regexp.MustCompile(`^/v[0-9][0-9.]*/([0-9a-fA-F]{32})(/|$)`)

func (t *akskTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := checkRequest(req); err != nil {
		return nil, err
	}
	sk, err := t.sk.get(false)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	c := req.Clone(req.Context())
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		rc := req.Body
		if req.GetBody != nil {
			if rc, err = req.GetBody(); err != nil {
				closeBody(req)
				return nil, err
			}
			closeBody(req)
		}
		body, err = io.ReadAll(io.LimitReader(rc, maxSignedBody+1))
		_ = rc.Close()
		if err != nil {
			return nil, fmt.Errorf("huaweiauth: reading the request body to sign it: %w", err)
		}
		if len(body) > maxSignedBody {
			return nil, errors.New("huaweiauth: request body too large to sign")
		}
		c.Body = io.NopCloser(bytes.NewReader(body))
		c.ContentLength = int64(len(body))
	}
	if c.Header.Get(headerProjectID) == "" {
		pid := t.projectID
		if pid == "" {
			if m := projectPathRE.FindStringSubmatch(c.URL.Path); m != nil {
				pid = m[1]
			}
		}
		if pid != "" {
			c.Header.Set(headerProjectID, pid)
		}
	}
	if err := Sign(c, body, t.ak, sk, t.now()); err != nil {
		return nil, err
	}
	return t.base.RoundTrip(c)
}
