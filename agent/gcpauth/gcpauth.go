// Package gcpauth turns the agent's `credentials "google"` settings into an
// oauth2.TokenSource and an authenticating *http.Client for Google APIs.
//
// Supported sources, in order of precedence:
//
//   - TokenFile: a bearer token written by someone else, re-read when the file
//     changes;
//   - CredentialsFile: a service-account key, an authorized_user (gcloud ADC)
//     file, or another Google credentials JSON file;
//   - otherwise Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS,
//     the gcloud well-known file under $HOME, the GCE metadata server).
//
// Any of them can be wrapped with service-account impersonation through the
// IAM Credentials API (ImpersonateServiceAccount).
//
// Token values never appear in errors or logs produced by this package.
package gcpauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"cloud.google.com/go/compute/metadata"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/dbcert-agent/dbcert-agent/agent/wire"
)

const (
	// CloudPlatformScope is the default OAuth scope. It covers Cloud SQL Admin,
	// AlloyDB and IAM Credentials.
	CloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform"

	// DefaultIAMCredentialsEndpoint is the IAM Credentials API base URL used
	// for impersonation unless Options.IAMCredentialsEndpoint is set.
	DefaultIAMCredentialsEndpoint = "https://iamcredentials.googleapis.com/"

	// ClientTimeout is the http.Client.Timeout of clients made by NewClient.
	ClientTimeout = 60 * time.Second

	// tokenFetchTimeout bounds every request made to obtain a token (token
	// endpoint, IAM Credentials).
	tokenFetchTimeout = 30 * time.Second

	quotaProjectHeader = "X-Goog-User-Project"
)

// ErrNoCredentials is returned (wrapped) when Application Default Credentials
// were requested but none could be found.
var ErrNoCredentials = errors.New("no Application Default Credentials found: set credentials_file, token_file, or GOOGLE_APPLICATION_CREDENTIALS (or run `gcloud auth application-default login`)")

// Options selects how to authenticate; the zero value means Application
// Default Credentials with the cloud-platform scope.
type Options struct {
	// CredentialsFile is a Google credentials JSON file: a service-account key
	// ("service_account"), a gcloud user file ("authorized_user"), or
	// "impersonated_service_account", "external_account",
	// "external_account_authorized_user". Tokens are obtained from the
	// token_uri in the file. The file is read once, by TokenSource.
	// Mutually exclusive with TokenFile.
	CredentialsFile string

	// ImpersonateServiceAccount, when set, is the e-mail (or unique ID) of a
	// service account to mint tokens for through IAM Credentials
	// generateAccessToken. The underlying credentials then use the
	// cloud-platform scope and need roles/iam.serviceAccountTokenCreator on
	// that account. Tokens live one hour and are reused until 5 minutes
	// before they expire.
	ImpersonateServiceAccount string

	// TokenFile is a file holding a bearer token kept fresh by someone else.
	// It is not read by TokenSource; each Token call stats it and re-reads
	// it when its identity, size or mtime changed. Surrounding white space is
	// trimmed; an empty or missing file is an error at Token time. The token
	// carries a 1-minute expiry because its real one is unknown.
	// Mutually exclusive with CredentialsFile.
	TokenFile string

	// QuotaProject is sent as X-Goog-User-Project by clients from NewClient.
	// When empty, the quota_project_id of the credentials JSON (explicit or
	// ADC) is used, unless impersonating.
	QuotaProject string

	// Scopes of the tokens; default [CloudPlatformScope]. Ignored for
	// TokenFile without impersonation (the token is what it is).
	Scopes []string

	// IAMCredentialsEndpoint is the IAM Credentials base URL; default
	// DefaultIAMCredentialsEndpoint. It must be https://, or http:// to a
	// loopback address (emulators, tests).
	IAMCredentialsEndpoint string

	// Base is the transport for API calls made through NewClient and for
	// token requests (token_uri, IAM Credentials). Default: a clone of
	// http.DefaultTransport with dial, TLS handshake and response header
	// timeouts. The GCE metadata server is always reached with the metadata
	// library's own client.
	Base http.RoundTripper

	// EarlyRefresh replaces a cached token when less than this is left of it (default:
	// the oauth2 library's 10 s). IAM database authentication uses 5 minutes, so a
	// certificate never embeds a token about to expire. Token files are not affected.
	EarlyRefresh time.Duration
}

// TokenSource returns a token source for o. Tokens are cached and refreshed
// before they expire (token files excepted, see Options.TokenFile); the
// source is safe for concurrent use.
//
// ctx supplies values only (for example an oauth2.HTTPClient, which then
// replaces Base for token requests); its cancellation is not retained, since
// the source outlives the call. Token requests are bounded by a 30 s timeout.
func TokenSource(ctx context.Context, o Options) (oauth2.TokenSource, error) {
	ts, _, err := build(ctx, o)
	return ts, err
}

// NewClient returns an *http.Client whose transport adds
// "Authorization: Bearer <token>" and, when a quota project is known,
// X-Goog-User-Project to every request, over Options.Base. Client.Timeout is
// ClientTimeout (60 s). Token errors are returned from the request, wrapped.
func NewClient(ctx context.Context, o Options) (*http.Client, error) {
	ts, quota, err := build(ctx, o)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Transport: &authTransport{src: ts, quota: quota, base: baseTransport(o)},
		Timeout:   ClientTimeout,
	}, nil
}

// build returns the token source and the quota project to send.
func build(ctx context.Context, o Options) (oauth2.TokenSource, string, error) {
	if o.CredentialsFile != "" && o.TokenFile != "" {
		return nil, "", errors.New("google credentials: credentials_file and token_file are mutually exclusive; set only one")
	}
	scopes := o.Scopes
	if len(scopes) == 0 {
		scopes = []string{CloudPlatformScope}
	}
	baseScopes := scopes
	if o.ImpersonateServiceAccount != "" {
		baseScopes = []string{CloudPlatformScope}
	}

	// Token requests use Base (or the caller's oauth2.HTTPClient) with a
	// timeout, and must not die with the caller's context.
	tctx := context.WithoutCancel(ctx)
	if _, ok := ctx.Value(oauth2.HTTPClient).(*http.Client); !ok {
		tctx = context.WithValue(tctx, oauth2.HTTPClient, &http.Client{
			Transport: baseTransport(o),
			Timeout:   tokenFetchTimeout,
		})
	}

	var (
		ts    oauth2.TokenSource
		quota string
		err   error
	)
	switch {
	case o.TokenFile != "":
		ts = newFileTokenSource(o.TokenFile)
	case o.CredentialsFile != "":
		ts, quota, err = fromCredentialsFile(tctx, o.CredentialsFile, baseScopes, o.EarlyRefresh)
	default:
		ts, quota, err = fromADC(tctx, baseScopes, o.EarlyRefresh)
	}
	if err != nil {
		return nil, "", err
	}

	if o.ImpersonateServiceAccount != "" {
		quota = ""
		ts, err = newImpersonatingSource(tctx, ts, o.ImpersonateServiceAccount, o.IAMCredentialsEndpoint, scopes)
		if err != nil {
			return nil, "", err
		}
	}
	if o.QuotaProject != "" {
		quota = o.QuotaProject
	}
	return ts, quota, nil
}

// baseTransport returns o.Base or a default transport with sane timeouts.
func baseTransport(o Options) http.RoundTripper {
	if o.Base != nil {
		return o.Base
	}
	return DefaultTransport()
}

// DefaultTransport is the transport used when Options.Base is nil: http.DefaultTransport
// with dial, TLS handshake and response header timeouts, and up to 32 idle connections
// per host (http.DefaultTransport keeps 2): a daemon runs up to 16 refreshes at once,
// each of one or two calls to the same API host, and a burst of them (a start with many
// instances) then reuses connections instead of dialing and closing one per call.
// Callers that wrap a transport (for metrics) should wrap this one.
func DefaultTransport() http.RoundTripper {
	t, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return http.DefaultTransport
	}
	t = t.Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = 30 * time.Second
	t.ExpectContinueTimeout = time.Second
	t.IdleConnTimeout = 90 * time.Second
	t.MaxIdleConnsPerHost = 32
	return t
}

// Credential types accepted in a credentials JSON file. OAuth client secret
// files ("installed"/"web") need an interactive flow and are refused.
var allowedTypes = map[string]google.CredentialsType{
	string(google.ServiceAccount):                google.ServiceAccount,
	string(google.AuthorizedUser):                google.AuthorizedUser,
	string(google.ImpersonatedServiceAccount):    google.ImpersonatedServiceAccount,
	string(google.ExternalAccount):               google.ExternalAccount,
	string(google.ExternalAccountAuthorizedUser): google.ExternalAccountAuthorizedUser,
}

// jsonHeader holds the fields of a credentials file this package looks at.
type jsonHeader struct {
	Type           string `json:"type"`
	QuotaProjectID string `json:"quota_project_id"`
}

func fromCredentialsFile(ctx context.Context, path string, scopes []string, early time.Duration) (oauth2.TokenSource, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("google credentials_file: %w", err)
	}
	ts, quota, err := fromJSON(ctx, b, scopes, early)
	if err != nil {
		return nil, "", fmt.Errorf("google credentials_file %s: %w", path, err)
	}
	return &annotatedSource{src: ts, prefix: "getting a token with credentials_file " + path}, quota, nil
}

func fromJSON(ctx context.Context, b []byte, scopes []string, early time.Duration) (oauth2.TokenSource, string, error) {
	var h jsonHeader
	if err := json.Unmarshal(b, &h); err != nil {
		// json errors quote at most a character, never the file's content.
		return nil, "", fmt.Errorf("not a Google credentials JSON file: %w", err)
	}
	typ, ok := allowedTypes[h.Type]
	if !ok {
		if h.Type == "" {
			return nil, "", errors.New(`missing "type" field; expected a service-account key or an authorized_user file`)
		}
		return nil, "", fmt.Errorf("unsupported credentials type %q; expected service_account, authorized_user, impersonated_service_account, external_account or external_account_authorized_user", h.Type)
	}
	ts, err := newResettable(func() (oauth2.TokenSource, error) {
		creds, err := google.CredentialsFromJSONWithTypeAndParams(ctx, b, typ, google.CredentialsParams{Scopes: scopes})
		if err != nil {
			return nil, err
		}
		return withEarlyRefresh(creds.TokenSource, early), nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("loading %s credentials: %w", h.Type, err)
	}
	return ts, h.QuotaProjectID, nil
}

// findDefaultCredentials is replaced in tests.
var findDefaultCredentials = google.FindDefaultCredentialsWithParams

func fromADC(ctx context.Context, scopes []string, early time.Duration) (oauth2.TokenSource, string, error) {
	creds, err := findDefaultCredentials(ctx, google.CredentialsParams{Scopes: scopes, EarlyTokenRefresh: early})
	if err != nil {
		if strings.Contains(err.Error(), "could not find default credentials") {
			return nil, "", ErrNoCredentials
		}
		if v := os.Getenv("GOOGLE_APPLICATION_CREDENTIALS"); v != "" {
			return nil, "", fmt.Errorf("GOOGLE_APPLICATION_CREDENTIALS=%s is set but unusable (fix or unset it): %w", v, err)
		}
		return nil, "", fmt.Errorf("application default credentials: %w", err)
	}
	// Say where the token was supposed to come from when it fails.
	if creds.JSON == nil {
		host := os.Getenv("GCE_METADATA_HOST")
		if host == "" {
			host = "169.254.169.254"
		}
		prefix := "getting a token from the GCE metadata server at " + host + " (not on Google Cloud? set credentials_file or token_file)"
		return &annotatedSource{src: adcResettable(ctx, creds, scopes, early), prefix: prefix}, "", nil
	}
	where := "the gcloud application default credentials file"
	if v := os.Getenv("GOOGLE_APPLICATION_CREDENTIALS"); v != "" {
		where = "GOOGLE_APPLICATION_CREDENTIALS=" + v
	}
	var h jsonHeader
	_ = json.Unmarshal(creds.JSON, &h)
	return &annotatedSource{src: adcResettable(ctx, creds, scopes, early), prefix: "getting a token with " + where}, h.QuotaProjectID, nil
}

// adcResettable wraps the ADC source so that reset looks the credentials up again.
func adcResettable(ctx context.Context, first *google.Credentials, scopes []string, early time.Duration) *resettableSource {
	used := false
	ts, _ := newResettable(func() (oauth2.TokenSource, error) {
		creds := first
		if used {
			var err error
			if creds, err = findDefaultCredentials(ctx, google.CredentialsParams{Scopes: scopes, EarlyTokenRefresh: early}); err != nil {
				return nil, err
			}
		}
		used = true
		return withEarlyRefresh(creds.TokenSource, early), nil
	})
	return ts
}

// annotatedSource prefixes token errors with where the token came from.
type annotatedSource struct {
	src    oauth2.TokenSource
	prefix string
}

func (s *annotatedSource) Token() (*oauth2.Token, error) {
	t, err := s.src.Token()
	var nd metadata.NotDefinedError
	switch {
	case errors.As(err, &nd):
		// 404 from the metadata server: the VM has no service account attached.
		return nil, &permanentError{fmt.Errorf("%s: %w (the VM has no service account attached, or on GKE the pod's Kubernetes service account is not bound to one with Workload Identity: attach or bind one, or set credentials_file or token_file)", s.prefix, err)}
	case err != nil:
		return nil, fmt.Errorf("%s: %w", s.prefix, err)
	}
	return t, nil
}

// permanentError is a credentials failure that no retry can help until the
// configuration (of the agent or of the VM) changes.
type permanentError struct{ err error }

func (e *permanentError) Error() string             { return e.err.Error() }
func (e *permanentError) Unwrap() error             { return e.err }
func (e *permanentError) Retryable() bool           { return false }
func (e *permanentError) RetryAfter() time.Duration { return 0 }

// authTransport adds the Authorization and quota project headers.
type authTransport struct {
	src   oauth2.TokenSource
	quota string
	base  http.RoundTripper
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := wire.CheckURL("Google API URL", req.URL); err != nil {
		// A bearer token never goes in clear text over the network, whatever the caller.
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	tok, err := t.src.Token()
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("getting Google access token: %w", err)
	}
	r2 := req.Clone(req.Context())
	wire.SetUserAgent(r2)
	tok.SetAuthHeader(r2)
	if t.quota != "" {
		r2.Header.Set(quotaProjectHeader, t.quota)
	}
	resp, err := t.base.RoundTrip(r2)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	return t.retryUnauthorized(req, resp, tok)
}

// checkEndpoint requires https, or http to a loopback host, so a bearer token
// is never sent in clear text over the network (wire.CheckEndpoint).
func checkEndpoint(raw string) (*url.URL, error) {
	return wire.CheckEndpoint("endpoint", raw)
}

// withEarlyRefresh makes ts replace its cached token when less than early is left.
// The credentials' sources are oauth2 reuse sources, whose margin this sets in place
// (so no second cache hands out the same short-lived token); 0 keeps the default.
func withEarlyRefresh(ts oauth2.TokenSource, early time.Duration) oauth2.TokenSource {
	if early <= 0 {
		return ts
	}
	return oauth2.ReuseTokenSourceWithExpiry(nil, ts, early)
}
