// Package cloudsql is the Cloud SQL provider: a client certificate from
// connect.generateEphemeralCert and the server CA from connectSettings, for a key the
// caller made; plus instances.resetSslConfig and operations.get for `reset-ssl`.
//
// It speaks HTTP+JSON only (through an already authenticated *http.Client), knows
// nothing of time, files or retries, and honours ctx. Errors come from package gapi and
// say whether a retry can help (Retryable, RetryAfter).
package cloudsql

import (
	"cmp"
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/gapi"
	"github.com/dbcert-agent/dbcert-agent/agent/wire"
	"golang.org/x/oauth2"
)

// DefaultEndpoint is the Cloud SQL Admin API root.
const DefaultEndpoint = "https://sqladmin.googleapis.com/"

// API versions.
const (
	V1Beta4 = "v1beta4"
	V1      = "v1"
)

// Call names used in errors.
const (
	CallGenerateEphemeralCert = "generateEphemeralCert"
	CallConnectSettings       = "connectSettings"
	CallResetSSLConfig        = "resetSslConfig"
	CallOperationsGet         = "operations.get"
)

// permConnect is the IAM permission generateEphemeralCert and connectSettings need.
const permConnect = "cloudsql.instances.connect"

// Options configure a Provider.
type Options struct {
	// Project is the project ID, possibly domain-scoped ("example.com:my-proj"). Required.
	Project string
	// Instance is the instance name (no project, no region). Required.
	Instance string
	// Endpoint is the API root; default DefaultEndpoint. http:// or https://, with or
	// without a trailing slash, optionally with a path prefix.
	Endpoint string
	// APIVersion is V1Beta4 (default) or V1.
	APIVersion string
	// HTTPClient sends the requests and must add Authorization itself. Required.
	HTTPClient *http.Client
	// LoginToken, when set, is the source of IAM database login tokens: before each
	// certificate request a token is taken from it; the bundle carries it (LoginToken,
	// for token files and .pgpass) and its expiry (TokenExpiry, which ends the
	// effective lifetime). It must give sqlservice.login-scoped tokens, never the admin
	// token, and should refresh early enough that no token has only minutes left.
	LoginToken oauth2.TokenSource
	// EmbedLoginToken sends the login token as access_token, so the certificate itself
	// authenticates the IAM user (automatic IAM database authentication, iam_authn).
	EmbedLoginToken bool
	// IPType picks the bundle's Host from connectSettings: "public" (default, the
	// PRIMARY address), "private" (PRIVATE) or "psc" (dnsName, trailing dot removed).
	IPType string
	// NeedHost makes a missing address of IPType a permanent error that names the
	// ip_type and the addresses the instance has (a .pgpass or connection files need
	// it). SQL Server instances are exempt: no connection files are written for them.
	NeedHost bool
	// Connection says the instance has a connection block; with a SQL Server engine the
	// provider then logs, once, that no connection files are written.
	Connection bool
	// Logger receives that warning; default slog.Default(). Give it instance=NAME.
	Logger *slog.Logger
}

// Provider fetches Cloud SQL credential material for one instance.
type Provider struct {
	client *http.Client
	target string // "project/instance", for errors
	root   string // escaped endpoint + version prefix, ending in "/"
	inst   string // escaped "projects/{p}/instances/{i}"
	proj   string // escaped "projects/{p}"
	login  oauth2.TokenSource
	embed  bool
	ipType string
	needIP bool
	conn   bool
	log    *slog.Logger
	warned sync.Once
}

// New checks opts and returns a Provider. It makes no network calls.
func New(opts Options) (*Provider, error) {
	if opts.Project == "" || strings.Contains(opts.Project, "/") {
		return nil, fmt.Errorf("cloudsql: invalid project %q", opts.Project)
	}
	if opts.Instance == "" || strings.ContainsAny(opts.Instance, "/:") {
		return nil, fmt.Errorf("cloudsql: invalid instance name %q (the name only, without project or region)", opts.Instance)
	}
	if opts.HTTPClient == nil {
		return nil, errors.New("cloudsql: an HTTP client is required")
	}
	root, err := apiRoot(opts.Endpoint, opts.APIVersion)
	if err != nil {
		return nil, err
	}
	proj := "projects/" + escapeSegment(opts.Project)
	return &Provider{
		client: opts.HTTPClient,
		target: opts.Project + "/" + opts.Instance,
		root:   root,
		proj:   proj,
		inst:   proj + "/instances/" + escapeSegment(opts.Instance),
		login:  opts.LoginToken,
		embed:  opts.EmbedLoginToken,
		ipType: opts.IPType,
		needIP: opts.NeedHost,
		conn:   opts.Connection,
		log:    cmp.Or(opts.Logger, slog.Default()),
	}, nil
}

// apiRoot returns the escaped URL prefix for the version, e.g.
// "https://sqladmin.googleapis.com/sql/v1beta4/".
func apiRoot(endpoint, version string) (string, error) {
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	u, err := wire.CheckEndpoint("cloudsql: api_endpoint", endpoint)
	if err != nil {
		return "", err
	}
	var prefix string
	switch version {
	case "", V1Beta4:
		prefix = "sql/v1beta4/"
	case V1:
		prefix = "v1/"
	default:
		return "", fmt.Errorf("cloudsql: unknown api_version %q (want %s or %s)", version, V1Beta4, V1)
	}
	return u.Scheme + "://" + u.Host + strings.TrimSuffix(u.EscapedPath(), "/") + "/" + prefix, nil
}

// escapeSegment percent-encodes everything outside [A-Za-z0-9-._~], as Google's URI
// template expansion does ("example.com:p" → "example.com%3Ap").
func escapeSegment(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// url joins the escaped root and an escaped relative path. The result parses back with
// Path decoded and RawPath kept, so the escaping goes on the wire unchanged.
func (p *Provider) url(rel string) string { return p.root + rel }

func (p *Provider) request(method, rel, call string, body any) gapi.Request {
	return gapi.Request{Method: method, URL: p.url(rel), Body: body, Call: call, Target: p.target, Permission: permConnect}
}

// sslCert is the SslCert resource (only the field we use).
type sslCert struct {
	Cert string `json:"cert"`
}

type ephemeralCertRequest struct {
	PublicKey   string `json:"public_key"`             // snake_case: pitfall 1
	AccessToken string `json:"access_token,omitempty"` // login-scoped token, IAM database authentication
}

type ephemeralCertResponse struct {
	EphemeralCert *sslCert `json:"ephemeralCert"`
}

type connectSettings struct {
	ServerCACert    *sslCert `json:"serverCaCert"`
	DatabaseVersion string   `json:"databaseVersion"`
	IPAddresses     []struct {
		IPAddress string `json:"ipAddress"`
		Type      string `json:"type"`
	} `json:"ipAddresses"`
	PSCEnabled bool   `json:"pscEnabled"`
	DNSName    string `json:"dnsName"`
	DNSNames   []struct {
		Name           string `json:"name"`
		ConnectionType string `json:"connectionType"`
		DNSScope       string `json:"dnsScope"`
	} `json:"dnsNames"`
}

// Fetch requests a client certificate for key's public half and the instance's server
// CA, concurrently, and returns them as a Bundle (Key = key). It checks that the
// certificate parses (exactly one) and was issued for key, and that every CA block
// parses; it does not check validity times — the agent does, with its clock.
//
// Both calls always finish (or ctx ends) before Fetch returns. When both fail, a
// permanent error wins over a retryable one, and generateEphemeralCert's over
// connectSettings', so the reported error is deterministic.
func (p *Provider) Fetch(ctx context.Context, key crypto.Signer) (*bundle.Bundle, error) {
	if key == nil {
		return nil, errors.New("cloudsql: Fetch needs a private key")
	}
	pub, err := bundle.PublicKeyPEM(key, "RSA PUBLIC KEY") // PKIX bytes under this label, like the connector
	if err != nil {
		return nil, fmt.Errorf("cloudsql %s: %w", p.target, err)
	}
	var login *oauth2.Token
	if p.login != nil {
		// Asked before the certificate, so the certificate gets a fresh token's life.
		if login, err = p.login.Token(); err != nil {
			return nil, &LoginTokenError{Target: p.target, Err: err}
		}
	}
	var (
		wg       sync.WaitGroup
		certResp ephemeralCertResponse
		settings connectSettings
		certErr  error
		caErr    error
	)
	wg.Go(func() {
		body := ephemeralCertRequest{PublicKey: string(pub)}
		if login != nil && p.embed {
			body.AccessToken = login.AccessToken
		}
		req := p.request(http.MethodPost, p.inst+":generateEphemeralCert", CallGenerateEphemeralCert, body)
		certErr = gapi.Do(ctx, p.client, req, &certResp)
	})
	wg.Go(func() {
		req := p.request(http.MethodGet, p.inst+"/connectSettings", CallConnectSettings, nil)
		caErr = gapi.Do(ctx, p.client, req, &settings)
	})
	wg.Wait()
	if err := pickError(certErr, caErr); err != nil {
		return nil, err
	}
	if login != nil && p.embed && strings.HasPrefix(settings.DatabaseVersion, "SQLSERVER") {
		return nil, gapi.BadResponse(CallConnectSettings, p.target,
			fmt.Errorf("IAM database authentication is not supported for SQL Server instances (databaseVersion %s)", settings.DatabaseVersion),
			"set iam_authn = false for this instance")
	}
	b, err := p.assemble(key, certResp, settings)
	if err != nil {
		return nil, err
	}
	if login != nil {
		// The files are only as good as the token in (or beside) the certificate.
		b.TokenExpiry = login.Expiry
		b.LoginToken = bundle.Secret(login.AccessToken)
	}
	b.Engine, b.DNSName = settings.DatabaseVersion, settings.DNSName
	b.Host = settings.address(p.ipType)
	sqlServer := strings.HasPrefix(settings.DatabaseVersion, "SQLSERVER")
	if sqlServer && p.conn {
		p.warned.Do(func() {
			p.log.Warn("SQL Server instance: no connection files are written (they exist for PostgreSQL and MySQL only)",
				"database_version", settings.DatabaseVersion)
		})
	}
	if p.needIP && b.Host == "" && !sqlServer {
		return nil, gapi.NoAddress(CallConnectSettings, p.target, cmp.Or(p.ipType, "public"), settings.address)
	}
	return b, nil
}

// address returns the instance's address for ipType: "public" (default) the PRIMARY IP,
// "private" the PRIVATE IP, "psc" the PSC DNS name (the PRIVATE_SERVICE_CONNECT
// instance entry of dnsNames, else dnsName; only when pscEnabled), without its trailing
// dot. "" when the instance has none.
func (cs connectSettings) address(ipType string) string {
	if ipType == "psc" {
		if !cs.PSCEnabled {
			return ""
		}
		for _, d := range cs.DNSNames {
			if d.ConnectionType == "PRIVATE_SERVICE_CONNECT" && d.DNSScope == "INSTANCE" && d.Name != "" {
				return strings.TrimSuffix(d.Name, ".")
			}
		}
		return strings.TrimSuffix(cs.DNSName, ".")
	}
	want := "PRIMARY"
	if ipType == "private" {
		want = "PRIVATE"
	}
	for _, a := range cs.IPAddresses {
		if a.Type == want && a.IPAddress != "" {
			return a.IPAddress
		}
	}
	return ""
}

// LoginTokenError says the IAM login token for a certificate could not be obtained.
type LoginTokenError struct {
	Target string
	Err    error
}

func (e *LoginTokenError) Error() string {
	return fmt.Sprintf("getting the sqlservice.login token for %s (iam_authn): %v", e.Target, e.Err)
}
func (e *LoginTokenError) Unwrap() error { return e.Err }

// Retryable: token endpoint trouble is retried unless the cause says otherwise.
func (e *LoginTokenError) Retryable() bool {
	var r interface{ Retryable() bool }
	if errors.As(e.Err, &r) {
		return r.Retryable()
	}
	var re *oauth2.RetrieveError
	if errors.As(e.Err, &re) && re.Response != nil {
		return re.Response.StatusCode >= 500 || re.Response.StatusCode == http.StatusTooManyRequests
	}
	return true
}

// pickError returns nil when both are nil; else prefers a permanent error, then a.
func pickError(a, b error) error {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	if isRetryable(a) && !isRetryable(b) {
		return b
	}
	return a
}

func isRetryable(err error) bool {
	var r interface{ Retryable() bool }
	return errors.As(err, &r) && r.Retryable()
}

func (p *Provider) assemble(key crypto.Signer, cr ephemeralCertResponse, cs connectSettings) (*bundle.Bundle, error) {
	bad := func(call string, err error, hint string) error {
		return gapi.BadResponse(call, p.target, err, hint)
	}
	if cr.EphemeralCert == nil || cr.EphemeralCert.Cert == "" {
		return nil, bad(CallGenerateEphemeralCert, fmt.Errorf("%w: the response has no ephemeralCert.cert", bundle.ErrInvalid), "")
	}
	chain, err := bundle.ParseCertsPEM([]byte(cr.EphemeralCert.Cert), "ephemeralCert.cert")
	if err != nil {
		return nil, bad(CallGenerateEphemeralCert, err, "")
	}
	if len(chain) != 1 {
		return nil, bad(CallGenerateEphemeralCert,
			fmt.Errorf("%w: ephemeralCert.cert holds %d certificates, want exactly one", bundle.ErrInvalid, len(chain)), "")
	}
	if !bundle.PublicKeysEqual(chain[0].PublicKey, key.Public()) {
		return nil, bad(CallGenerateEphemeralCert,
			fmt.Errorf("%w: the certificate (serial %s) was not issued for our key", bundle.ErrInvalid, chain[0].SerialNumber),
			"something between the agent and the API altered the request or the response")
	}
	if cs.ServerCACert == nil || cs.ServerCACert.Cert == "" {
		return nil, bad(CallConnectSettings, fmt.Errorf("%w: the response has no serverCaCert", bundle.ErrInvalid),
			"the instance may not be a second-generation instance with SSL")
	}
	cas, err := bundle.ParseCertsPEM([]byte(cs.ServerCACert.Cert), "serverCaCert.cert")
	if err != nil {
		return nil, bad(CallConnectSettings, err, "")
	}
	return &bundle.Bundle{Key: key, Chain: chain, CAs: cas}, nil
}
