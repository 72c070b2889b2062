// Package alloydb is the AlloyDB provider: a client certificate chain and the cluster CA
// from clusters.generateClientCertificate, for a key the caller made.
//
// It speaks HTTP+JSON only (through an already authenticated *http.Client), knows
// nothing of files or retry timing, and honours ctx. Errors come from package gapi and
// say whether a retry can help (Retryable, RetryAfter).
package alloydb

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/gapi"
	"github.com/dbcert-agent/dbcert-agent/agent/wire"
)

// DefaultEndpoint is the AlloyDB Admin API root.
const DefaultEndpoint = "https://alloydb.googleapis.com/"

// API versions. generateClientCertificate exists in all three.
const (
	V1Beta  = "v1beta"
	V1      = "v1"
	V1Alpha = "v1alpha"
)

// Call names used in errors.
const (
	CallGenerateClientCertificate = "generateClientCertificate"
	CallConnectionInfo            = "connectionInfo"
)

// Engine is the bundle's Engine for AlloyDB (PostgreSQL-compatible).
const Engine = "POSTGRES"

// PermissionConnectionInfo is the IAM permission instances.connectionInfo needs (part
// of roles/alloydb.client).
const PermissionConnectionInfo = "alloydb.instances.connect"

// Permission is the IAM permission generateClientCertificate needs (part of
// roles/alloydb.client).
const Permission = "alloydb.clusters.generateClientCertificate"

// Limits of Options.CertDuration, the API's accepted range for the certDuration hint.
const (
	MinCertDuration = time.Hour
	MaxCertDuration = 24 * time.Hour
)

// Options configure a Provider.
type Options struct {
	// Project is the project ID, possibly domain-scoped ("example.com:my-proj"). Required.
	Project string
	// Location is the cluster's region, e.g. "us-central1". Required.
	Location string
	// Cluster is the cluster ID (no project, no location). Required.
	Cluster string
	// Endpoint is the API root; default DefaultEndpoint. http:// or https://, with or
	// without a trailing slash, optionally with a path prefix.
	Endpoint string
	// APIVersion is V1Beta (default), V1 or V1Alpha.
	APIVersion string
	// CertDuration, when non-zero, is sent as the certDuration hint ("3600s"); it must be
	// within MinCertDuration..MaxCertDuration. The server may ignore it: the lifetime is
	// whatever the returned leaf says.
	CertDuration time.Duration
	// HTTPClient sends the requests and must add Authorization itself. Required.
	HTTPClient *http.Client
	// Instance, when set, is an instance of the cluster whose instances.connectionInfo is
	// fetched with every certificate (concurrently) for the bundle's Host and DNSName.
	Instance string
	// IPType picks Host from connectionInfo: "public" (default, publicIpAddress),
	// "private" (ipAddress) or "psc" (pscDnsName, trailing dot removed; not in v1).
	IPType string
	// NeedHost makes a missing address of IPType a permanent error that names the
	// ip_type and the addresses the instance has. Requires Instance.
	NeedHost bool
}

// Provider fetches AlloyDB credential material for one cluster. Its methods are safe
// for concurrent use.
type Provider struct {
	client       *http.Client
	target       string // "project/location/cluster", for errors
	url          string // escaped generateClientCertificate URL
	parent       string // "projects/{p}/locations/{l}/clusters/{c}", unescaped, for the body
	certDuration string // "" when not sent
	infoURL      string // connectionInfo URL; "" without Options.Instance
	infoTarget   string
	ipType       string
	needHost     bool

	mu      sync.Mutex
	pending *pendingRequest // the last request whose outcome is unknown, for requestId reuse
}

// pendingRequest is a request that failed in a way a retry can fix (or whose fate is
// unknown): its requestId is sent again when the next Fetch is for the same key.
type pendingRequest struct {
	id  string
	pub crypto.PublicKey
}

// New checks o and returns a Provider. It makes no network calls.
func New(o Options) (*Provider, error) {
	if o.Project == "" || strings.Contains(o.Project, "/") {
		return nil, fmt.Errorf("alloydb: invalid project %q", o.Project)
	}
	if o.Location == "" || strings.ContainsAny(o.Location, "/:") {
		return nil, fmt.Errorf("alloydb: invalid location %q (a region such as us-central1)", o.Location)
	}
	if o.Cluster == "" || strings.ContainsAny(o.Cluster, "/:") {
		return nil, fmt.Errorf("alloydb: invalid cluster %q (the cluster ID only, without project or location)", o.Cluster)
	}
	if o.HTTPClient == nil {
		return nil, errors.New("alloydb: an HTTP client is required")
	}
	if o.CertDuration != 0 && (o.CertDuration < MinCertDuration || o.CertDuration > MaxCertDuration) {
		return nil, fmt.Errorf("alloydb: cert_duration %s is outside the range the API accepts (%s to %s)",
			o.CertDuration, MinCertDuration, MaxCertDuration)
	}
	root, err := apiRoot(o.Endpoint, o.APIVersion)
	if err != nil {
		return nil, err
	}
	p := &Provider{
		client: o.HTTPClient,
		target: o.Project + "/" + o.Location + "/" + o.Cluster,
		parent: "projects/" + o.Project + "/locations/" + o.Location + "/clusters/" + o.Cluster,
		url: root + "projects/" + escapeSegment(o.Project) + "/locations/" + escapeSegment(o.Location) +
			"/clusters/" + escapeSegment(o.Cluster) + ":generateClientCertificate",
	}
	if o.CertDuration != 0 {
		p.certDuration = durationJSON(o.CertDuration)
	}
	if o.Instance != "" {
		if strings.ContainsAny(o.Instance, "/:") {
			return nil, fmt.Errorf("alloydb: invalid instance %q (the instance ID only)", o.Instance)
		}
		p.infoURL = strings.TrimSuffix(p.url, ":generateClientCertificate") + "/instances/" + escapeSegment(o.Instance) + "/connectionInfo"
		p.infoTarget = p.target + "/" + o.Instance
	} else if o.NeedHost {
		return nil, errors.New("alloydb: an address is needed but no instance is set (connection { instance = \"NAME\" })")
	}
	switch o.IPType {
	case "", "public", "private", "psc":
	default:
		return nil, fmt.Errorf("alloydb: unknown ip_type %q (want public, private or psc)", o.IPType)
	}
	p.ipType, p.needHost = cmp.Or(o.IPType, "public"), o.NeedHost
	return p, nil
}

// apiRoot returns the escaped URL prefix for the version, e.g.
// "https://alloydb.googleapis.com/v1beta/".
func apiRoot(endpoint, version string) (string, error) {
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	u, err := wire.CheckEndpoint("alloydb: api_endpoint", endpoint)
	if err != nil {
		return "", err
	}
	switch version {
	case "":
		version = V1Beta
	case V1Beta, V1, V1Alpha:
	default:
		return "", fmt.Errorf("alloydb: unknown api_version %q (want %s, %s or %s)", version, V1Beta, V1, V1Alpha)
	}
	return u.Scheme + "://" + u.Host + strings.TrimSuffix(u.EscapedPath(), "/") + "/" + version + "/", nil
}

// escapeSegment percent-encodes every byte outside [A-Za-z0-9-._~], as Google's URI
// template expansion does ("example.com:p" → "example.com%3Ap", pitfall 3).
func escapeSegment(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}

// durationJSON formats d as a google.protobuf.Duration JSON string ("3600s", "5400.5s").
func durationJSON(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// generateRequest is GenerateClientCertificateRequest in protojson's lowerCamelCase
// (pitfall 1: the opposite of Cloud SQL's public_key). The body repeats the URL's
// parent (pitfall 10).
type generateRequest struct {
	Parent       string `json:"parent"`
	PublicKey    string `json:"publicKey"`
	CertDuration string `json:"certDuration,omitempty"`
	// UseMetadataExchange is always false: psql and other direct clients do not speak
	// the connector's metadata exchange.
	UseMetadataExchange bool   `json:"useMetadataExchange"`
	RequestID           string `json:"requestId"`
}

// generateResponse is GenerateClientCertificateResponse. The API sends camelCase;
// snake_case is accepted too (protojson clients accept both, and some fakes send it).
type generateResponse struct {
	PemCertificateChain      []string `json:"pemCertificateChain"`
	CaCert                   string   `json:"caCert"`
	PemCertificateChainSnake []string `json:"pem_certificate_chain"`
	CaCertSnake              string   `json:"ca_cert"`
}

// Fetch requests a client certificate chain for key's public half, with the cluster CA,
// and returns them as a Bundle (Key = key). It checks that every certificate parses,
// that the leaf was issued for key and that the chain is in leaf-to-root order; it does
// not check validity times — the agent does, with its clock.
//
// Every request carries a requestId (a random UUIDv4) for the server's deduplication.
// It is reused on retries of the same request: when the previous Fetch was for the same
// key and failed with a retryable error or without an answer (a network error, or ctx
// ending while the request was in flight), this Fetch sends that requestId again, so a
// request the server did carry out is answered with the certificate it already issued
// rather than a second one. After a success or a permanent error the next Fetch uses a
// fresh requestId, as does a Fetch for another key.
func (p *Provider) Fetch(ctx context.Context, key crypto.Signer) (*bundle.Bundle, error) {
	if key == nil {
		return nil, errors.New("alloydb: Fetch needs a private key")
	}
	pub, err := publicKeyPEM(key)
	if err != nil {
		return nil, fmt.Errorf("alloydb %s: %w", p.target, err)
	}
	id, repeat, err := p.requestID(key.Public())
	if err != nil {
		return nil, fmt.Errorf("alloydb %s: %w", p.target, err)
	}
	req := gapi.Request{
		Method: http.MethodPost,
		URL:    p.url,
		Body: generateRequest{
			Parent:       p.parent,
			PublicKey:    string(pub),
			CertDuration: p.certDuration,
			RequestID:    id,
		},
		Call:       CallGenerateClientCertificate,
		Target:     p.target,
		Permission: Permission,
	}
	var (
		resp    generateResponse
		info    connectionInfo
		infoErr error
		wg      sync.WaitGroup
	)
	if p.infoURL != "" {
		wg.Go(func() {
			infoErr = gapi.Do(ctx, p.client, gapi.Request{Method: http.MethodGet, URL: p.infoURL, Call: CallConnectionInfo,
				Target: p.infoTarget, Permission: PermissionConnectionInfo}, &info)
		})
	}
	err = gapi.Do(ctx, p.client, req, &resp)
	wg.Wait()
	if err != nil {
		if outcomeUnknown(err) {
			p.mu.Lock()
			p.pending = &pendingRequest{id: id, pub: key.Public()}
			p.mu.Unlock()
		}
		return nil, repeated(explain(err), repeat)
	}
	if infoErr != nil {
		return nil, explainInfo(infoErr)
	}
	b, err := p.assemble(key, resp)
	if err != nil {
		return nil, repeated(err, repeat)
	}
	b.Engine = Engine
	if p.infoURL != "" {
		b.Host, b.DNSName = info.address(p.ipType), info.PSCDNSName
		if p.needHost && b.Host == "" {
			return nil, gapi.NoAddress(CallConnectionInfo, p.infoTarget, p.ipType, info.address)
		}
	}
	return b, nil
}

// connectionInfo is ConnectionInfo (reference §4.3); snake_case is accepted too.
type connectionInfo struct {
	IPAddress            string `json:"ipAddress"`
	PublicIPAddress      string `json:"publicIpAddress"`
	PSCDNSName           string `json:"pscDnsName"`
	IPAddressSnake       string `json:"ip_address"`
	PublicIPAddressSnake string `json:"public_ip_address"`
	PSCDNSNameSnake      string `json:"psc_dns_name"`
}

// address returns the address for ipType ("public", "private", "psc"), or "".
func (c connectionInfo) address(ipType string) string {
	switch ipType {
	case "private":
		return cmp.Or(c.IPAddress, c.IPAddressSnake)
	case "psc":
		return strings.TrimSuffix(cmp.Or(c.PSCDNSName, c.PSCDNSNameSnake), ".")
	}
	return cmp.Or(c.PublicIPAddress, c.PublicIPAddressSnake)
}

// explainInfo puts AlloyDB's words into the hints of a failed connectionInfo.
func explainInfo(err error) error {
	var ge *gapi.Error
	if errors.As(err, &ge) && ge.Code == http.StatusNotFound {
		ge.Hint = "check the connection block's instance (an instance of this cluster)"
	}
	return err
}

// publicKeyPEM encodes the public half of key the way the AlloyDB connector does
// (reference §4.2, pitfall 4): real PKCS#1 DER (x509.MarshalPKCS1PublicKey) under the
// PEM label "RSA PUBLIC KEY" — unlike Cloud SQL's connector, which puts PKIX bytes under
// that label. Keys that PKCS#1 cannot express (non-RSA) are sent as PKIX under the
// honest label "PUBLIC KEY"; the API decides whether it accepts them.
func publicKeyPEM(key crypto.Signer) ([]byte, error) {
	if rk, ok := key.Public().(*rsa.PublicKey); ok {
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(rk)}), nil
	}
	return bundle.PublicKeyPEM(key, "PUBLIC KEY")
}

// requestID returns the pending requestId when it was made for pub (repeat is true),
// else a fresh one. Either way the pending request is taken: only one Fetch retries it.
func (p *Provider) requestID(pub crypto.PublicKey) (id string, repeat bool, err error) {
	p.mu.Lock()
	prev := p.pending
	p.pending = nil
	p.mu.Unlock()
	if prev != nil && bundle.PublicKeysEqual(prev.pub, pub) {
		return prev.id, true, nil
	}
	id, err = newUUID()
	return id, false, err
}

// repeated marks a permanent failure of a request that repeated an earlier requestId
// as retryable: how the API answers a repeat is not documented (reference §4.1 says only
// that it deduplicates), so a refusal (409, say) or an empty answer may be about the
// repeat, not the request. The next Fetch sends a new requestId, so this happens once.
func repeated(err error, repeat bool) error {
	if !repeat || outcomeUnknown(err) {
		return err
	}
	return &RepeatError{Err: err}
}

// RepeatError is a permanent failure of a request that repeated the requestId of an
// earlier one whose outcome was unknown; it is retryable, with a new requestId.
type RepeatError struct{ Err error }

func (e *RepeatError) Error() string {
	return e.Err.Error() + " (the request repeated the requestId of an unanswered one; the next attempt sends a new one)"
}
func (e *RepeatError) Unwrap() error             { return e.Err }
func (e *RepeatError) Retryable() bool           { return true }
func (e *RepeatError) RetryAfter() time.Duration { return 0 }

// newUUID returns a random (version 4, RFC 9562) UUID.
func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("making a request ID: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // variant 10
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// outcomeUnknown reports whether a failed request may be repeated with its requestId:
// a retryable error, or no answer at all (then the server may have carried it out).
func outcomeUnknown(err error) bool {
	var ne *gapi.NetError
	if errors.As(err, &ne) {
		return true
	}
	var r interface{ Retryable() bool }
	return errors.As(err, &r) && r.Retryable()
}

// explain puts AlloyDB's words into the hints of 403 and 404 answers.
func explain(err error) error {
	var ge *gapi.Error
	if !errors.As(err, &ge) {
		return err
	}
	switch ge.Code {
	case http.StatusNotFound:
		if ge.Status == "" && ge.Reason == "" && !json.Valid(bytes.TrimSpace(ge.Body)) {
			// Not an API answer: the front end's HTML page for an unknown URL.
			ge.Hint = "the API has no such method here; check api_endpoint and api_version"
		} else {
			ge.Hint = "check project, location and cluster"
		}
	case http.StatusForbidden:
		// Keep the scope and API-disabled hints; replace the generic permission one.
		if ge.Hint == gapi.DefaultHint(&gapi.Error{Code: http.StatusForbidden}, Permission) {
			ge.Hint = "the credentials lack " + Permission + " (roles/alloydb.client) or the cluster name is wrong"
		}
	}
	return err
}

func (p *Provider) assemble(key crypto.Signer, r generateResponse) (*bundle.Bundle, error) {
	bad := func(err error, hint string) error {
		return gapi.BadResponse(CallGenerateClientCertificate, p.target, err, hint)
	}
	chainPEM, caPEM := r.PemCertificateChain, r.CaCert
	if len(chainPEM) == 0 {
		chainPEM = r.PemCertificateChainSnake
	}
	if caPEM == "" {
		caPEM = r.CaCertSnake
	}
	if len(chainPEM) == 0 {
		return nil, bad(fmt.Errorf("%w: the response has no pemCertificateChain", bundle.ErrInvalid), "")
	}
	chain, err := bundle.ParseCertsPEM([]byte(strings.Join(chainPEM, "\n")), "pemCertificateChain")
	if err != nil {
		return nil, bad(err, "")
	}
	if !bundle.PublicKeysEqual(chain[0].PublicKey, key.Public()) {
		return nil, bad(fmt.Errorf("%w: the leaf certificate (serial %s) was not issued for our key", bundle.ErrInvalid, chain[0].SerialNumber),
			"something between the agent and the API altered the request or the response")
	}
	for i := 0; i+1 < len(chain); i++ {
		child, parent := chain[i], chain[i+1]
		if err := parent.CheckSignature(child.SignatureAlgorithm, child.RawTBSCertificate, child.Signature); err != nil {
			return nil, bad(fmt.Errorf("%w: pemCertificateChain is not in leaf-to-root order: certificate %d (%s) is not signed by certificate %d (%s): %v",
				bundle.ErrInvalid, i+1, child.Subject, i+2, parent.Subject, err), "")
		}
	}
	chain = dropRoot(chain)
	if caPEM == "" {
		return nil, bad(fmt.Errorf("%w: the response has no caCert", bundle.ErrInvalid), "")
	}
	cas, err := bundle.ParseCertsPEM([]byte(caPEM), "caCert")
	if err != nil {
		return nil, bad(err, "")
	}
	return &bundle.Bundle{Key: key, Chain: chain, CAs: cas}, nil
}

// dropRoot removes a trailing self-signed root from a chain of two or more.
//
// The chain goes into the client certificate file, and libpq sends that whole file as
// its TLS certificate chain. A root in it is useless — the server must already trust
// the root (ssl_ca_file), and TLS lets clients leave it out — and it would make the file
// disagree with the spec's "leaf first, then any intermediates". So the file holds the
// leaf and the intermediates, which is what a server that trusts only the root needs.
func dropRoot(chain []*x509.Certificate) []*x509.Certificate {
	n := len(chain)
	if n < 2 {
		return chain
	}
	last := chain[n-1]
	if !bytes.Equal(last.RawSubject, last.RawIssuer) ||
		last.CheckSignature(last.SignatureAlgorithm, last.RawTBSCertificate, last.Signature) != nil {
		return chain
	}
	return chain[:n-1]
}
