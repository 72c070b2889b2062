// Package geminidb is the GeminiDB (Huawei Cloud GaussDB NoSQL) provider: CA-only. It
// asks ListSslCertDownloadAddresses (GET .../ssl-cert/download-link, reference §6.1)
// where the instance's CA certificate is, downloads that link without any credentials,
// and returns every certificate the file holds (PEM, DER, or a zip holding a
// .crt/.pem/.cer file) as a CA-only bundle.
//
// It speaks HTTP only, through the clients it is given (the API client authenticated by
// package huaweiauth; the download client plain), knows nothing of time, files or
// retries, and honours ctx. Errors say whether a retry can help (Retryable, RetryAfter).
package geminidb

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/dbcert-agent/dbcert-agent/agent/apierr"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/huaweiauth"
	"github.com/dbcert-agent/dbcert-agent/agent/wire"
)

// Call names used in errors.
const (
	CallDownloadLink = "ssl-cert/download-link"
	CallDownload     = "the CA download"
)

// MaxBody bounds every response body read: the API answer and the downloaded file.
const MaxBody = wire.MaxBody

// maxZipEntries bounds how many files of a zip are looked at.
const maxZipEntries = 64

// Options configure a Provider.
type Options struct {
	// ProjectID is the Huawei Cloud project id. Required.
	ProjectID string
	// InstanceID is the GeminiDB instance id. Required.
	InstanceID string
	// Endpoint is the GeminiDB API root; default
	// "https://gaussdb-nosql.<Region>.myhuaweicloud.com". http:// only for loopback.
	Endpoint string
	// Region, e.g. "cn-north-4"; needed when Endpoint is empty.
	Region string
	// HTTPClient sends the API request and must authenticate it (huaweiauth). Required.
	HTTPClient *http.Client
	// DownloadClient fetches the download link. It must add no credentials: the link is
	// pre-signed, and credentials must not leak to the storage host. Default: a plain
	// client with timeouts. It may not be HTTPClient.
	DownloadClient *http.Client
}

// Provider fetches the CA of one GeminiDB instance.
type Provider struct {
	api      *http.Client
	download *http.Client
	url      string // the download-link URL
	target   string // "project/instance", for errors
}

var regionRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// New checks o and returns a Provider. It makes no network calls.
func New(o Options) (*Provider, error) {
	if !validID(o.ProjectID) {
		return nil, fmt.Errorf("geminidb: invalid project_id %q", o.ProjectID)
	}
	if !validID(o.InstanceID) {
		return nil, fmt.Errorf("geminidb: invalid instance_id %q", o.InstanceID)
	}
	if o.HTTPClient == nil {
		return nil, errors.New("geminidb: an authenticated HTTP client is required")
	}
	if o.DownloadClient == o.HTTPClient {
		return nil, errors.New("geminidb: the download client must not be the authenticated API client")
	}
	endpoint := o.Endpoint
	if endpoint == "" {
		if !regionRE.MatchString(o.Region) {
			return nil, fmt.Errorf("geminidb: api_endpoint is not set and region %q is not a region id (e.g. cn-north-4)", o.Region)
		}
		endpoint = "https://gaussdb-nosql." + o.Region + ".myhuaweicloud.com"
	}
	root, err := huaweiauth.CheckEndpoint("api_endpoint", endpoint)
	if err != nil {
		return nil, err
	}
	dl := o.DownloadClient
	if dl == nil {
		dl = defaultDownloadClient()
	}
	return &Provider{
		api:      o.HTTPClient,
		download: dl,
		url: root + "/v3/" + url.PathEscape(o.ProjectID) + "/instances/" + url.PathEscape(o.InstanceID) +
			"/ssl-cert/download-link",
		target: o.ProjectID + "/" + o.InstanceID,
	}, nil
}

func validID(s string) bool {
	return s != "" && len(s) <= 128 && !strings.ContainsAny(s, "/?#%\\ \t\r\n")
}

// defaultDownloadClient is a plain client (no credentials) with timeouts, which follows
// at most 3 redirects and only over https (or to loopback).
func defaultDownloadClient() *http.Client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          4,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   time.Minute,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			return checkLinkURL(req.URL)
		},
	}
}

// certInfo is one entry of the certs list. Both casings of the link are accepted.
type certInfo struct {
	Category      string `json:"category"`
	DownloadLink  string `json:"download_link"`
	DownloadLink2 string `json:"downloadLink"`
}

func (c certInfo) link() string {
	if c.DownloadLink != "" {
		return c.DownloadLink
	}
	return c.DownloadLink2
}

type linkResponse struct {
	Certs []certInfo `json:"certs"`
}

// Fetch returns the instance's CA certificates as a CA-only bundle (key is ignored;
// pass nil). Every certificate is parsed before it returns; validity times are the
// agent's business.
func (p *Provider) Fetch(ctx context.Context, key crypto.Signer) (*bundle.Bundle, error) {
	_ = key // CA-only
	link, err := p.downloadLink(ctx)
	if err != nil {
		return nil, err
	}
	data, err := p.fetchLink(ctx, link)
	if err != nil {
		return nil, err
	}
	cas, err := ParseCAFile(data)
	if err != nil {
		return nil, p.badDownload(err)
	}
	return &bundle.Bundle{CAs: cas}, nil
}

// downloadLink calls ListSslCertDownloadAddresses and picks the link.
func (p *Provider) downloadLink(ctx context.Context) (*url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return nil, fmt.Errorf("geminidb: building the %s request: %w", CallDownloadLink, err)
	}
	req.Header.Set("Accept", "application/json")
	// cloud-apis.md §6.1 lists it, and Huawei's SDK sends it even on a GET without a body.
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", wire.UserAgent())
	resp, err := p.api.Do(req)
	if err != nil {
		return nil, p.netError(ctx, CallDownloadLink, req.URL.Host, err)
	}
	defer resp.Body.Close()
	raw, tooBig, rerr := readCapped(resp.Body)
	if resp.StatusCode/100 != 2 {
		e := huaweiauth.ParseError(resp.StatusCode, resp.Header, raw)
		e.Call, e.Target = CallDownloadLink, p.target
		e.Hint = apiHint(e)
		return nil, e
	}
	if rerr != nil {
		return nil, p.netError(ctx, CallDownloadLink, req.URL.Host, fmt.Errorf("reading the %d response: %w", resp.StatusCode, rerr))
	}
	bad := func(msg, hint string) error {
		e := &huaweiauth.Error{Status: resp.StatusCode, Call: CallDownloadLink, Target: p.target, Message: msg, Hint: hint,
			RequestID: resp.Header.Get("X-Request-Id")}
		e.SetRetryable(false)
		return e
	}
	if tooBig {
		return nil, bad("the response body exceeds the 1 MiB limit", "check api_endpoint")
	}
	var lr linkResponse
	if err := json.Unmarshal(raw, &lr); err != nil {
		return nil, bad("the response is not the expected JSON", "check api_endpoint: it does not look like the GeminiDB API")
	}
	c, err := pickCert(lr.Certs)
	if err != nil {
		return nil, bad(err.Error(), "check that SSL is enabled on the instance (ssl-option)")
	}
	u, err := url.Parse(strings.TrimSpace(c.link()))
	if err == nil {
		err = checkLinkURL(u)
	}
	if err != nil {
		return nil, bad("unusable download_link: "+err.Error(), "")
	}
	return u, nil
}

// pickCert picks the "international" entry (any casing); without one, an entry without
// a category, or the only entry when it is not "national" (SM-series certificates).
func pickCert(certs []certInfo) (certInfo, error) {
	var withLink []certInfo
	for _, c := range certs {
		if strings.TrimSpace(c.link()) != "" {
			withLink = append(withLink, c)
		}
	}
	if len(withLink) == 0 {
		return certInfo{}, errors.New("the response lists no certificate download link")
	}
	for _, c := range withLink {
		if strings.EqualFold(strings.TrimSpace(c.Category), "international") {
			return c, nil
		}
	}
	for _, c := range withLink {
		if strings.TrimSpace(c.Category) == "" {
			return c, nil
		}
	}
	if len(withLink) == 1 && !strings.EqualFold(strings.TrimSpace(withLink[0].Category), "national") {
		return withLink[0], nil
	}
	var cats []string
	for _, c := range withLink {
		cats = append(cats, fmt.Sprintf("%q", c.Category))
	}
	return certInfo{}, fmt.Errorf("no international certificate among the categories offered (%s)", strings.Join(cats, ", "))
}

// checkLinkURL accepts https links, and http links to loopback hosts (emulators).
func checkLinkURL(u *url.URL) error { return wire.CheckURL("download_link", u) }

// fetchLink downloads the link with the plain client: a new request carrying only
// Accept and User-Agent, so no credentials can go with it.
func (p *Provider) fetchLink(ctx context.Context, u *url.URL) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("geminidb: building the download request: %w", err)
	}
	req.Header.Set("Accept", "*/*")
	req.Header.Set("User-Agent", wire.UserAgent())
	resp, err := p.download.Do(req)
	if err != nil {
		return nil, p.netError(ctx, CallDownload, u.Host, err)
	}
	defer resp.Body.Close()
	raw, tooBig, rerr := readCapped(resp.Body)
	if resp.StatusCode/100 != 2 {
		e := huaweiauth.ParseError(resp.StatusCode, resp.Header, raw)
		if e.RequestID == "" {
			e.RequestID = resp.Header.Get("x-obs-request-id")
		}
		e.Call, e.Target = CallDownload+" from "+u.Host, p.target
		e.Hint = downloadHint(e)
		return nil, e
	}
	if rerr != nil {
		return nil, p.netError(ctx, CallDownload, u.Host, fmt.Errorf("reading the %d response: %w", resp.StatusCode, rerr))
	}
	if tooBig {
		return nil, p.badDownload(fmt.Errorf("%w: the file exceeds the 1 MiB limit", bundle.ErrInvalid))
	}
	return raw, nil
}

func (p *Provider) badDownload(err error) error {
	e := &huaweiauth.Error{Status: http.StatusOK, Call: CallDownload, Target: p.target, Message: err.Error(), Err: err,
		Hint: "the download link did not yield a CA certificate; check the instance's SSL setting"}
	e.SetRetryable(false)
	return e
}

func (p *Provider) netError(ctx context.Context, call, host string, err error) error {
	// An error from the authenticating transport with a verdict of its own (IAM refused
	// the password, a secret file is missing) is returned as is: its sentence is the
	// useful one.
	inner := err
	var ue *url.Error
	if errors.As(err, &ue) {
		inner = ue.Err
	}
	if _, judged := inner.(interface{ Retryable() bool }); judged && ctx.Err() == nil {
		return inner
	}
	return huaweiauth.NewNetError(ctx, call, p.target, host, err)
}

func readCapped(r io.Reader) (data []byte, tooBig bool, err error) { return wire.ReadBody(r) }

// apiHint says what to do about a failed ListSslCertDownloadAddresses.
func apiHint(e *huaweiauth.Error) string {
	switch c := e.Status; {
	case e.Code == "APIGW.0101":
		return "the API does not exist at this endpoint; check api_endpoint and region"
	case e.IsAuthError():
		return "the credentials were rejected; check the huaweicloud credentials block (token_file, password or access key) and that the token is scoped to this project"
	case c == http.StatusForbidden && strings.HasPrefix(e.Code, "APIGW."):
		return "grant the IAM user gaussdbfornosql:instance:listSslCertDownloadAddresses in this project"
	case c == http.StatusForbidden:
		return "the instance's state does not allow this now (frozen, being created or changed), or the user lacks permission"
	case c == http.StatusNotFound:
		return "check project_id and instance_id (and that the instance is in this endpoint's region)"
	case c == http.StatusBadRequest:
		return "the API rejected the request; check instance_id"
	case c == http.StatusTooManyRequests:
		return "rate limited (retryable)"
	case c >= 500 || c == http.StatusRequestTimeout:
		return "server error (retryable)"
	}
	return ""
}

func downloadHint(e *huaweiauth.Error) string {
	switch c := e.Status; {
	case c == http.StatusForbidden:
		return "the storage host refused the download link (expired, altered, or the request carried credentials)"
	case c == http.StatusNotFound:
		return "the certificate file behind the download link is gone"
	case c == http.StatusBadRequest:
		return "the storage host rejected the request"
	case apierr.RetryableStatus(c):
		return "storage error (retryable)"
	}
	return ""
}

// ParseCAFile parses a downloaded CA file, sniffing its format: a zip (PK\x03\x04)
// holding .crt/.pem/.cer files (all of them, certificates deduplicated), PEM (every
// CERTIFICATE block; other blocks are ignored), or DER (one or more concatenated
// certificates). Every certificate must parse; at most bundle.MaxCerts. Errors wrap
// bundle.ErrInvalid.
func ParseCAFile(data []byte) ([]*x509.Certificate, error) {
	if bytes.HasPrefix(data, []byte("PK\x03\x04")) {
		return parseZip(data)
	}
	return parseCerts(data, "the downloaded file")
}

func parseCerts(data []byte, what string) ([]*x509.Certificate, error) {
	trimmed := bytes.TrimPrefix(bytes.TrimSpace(data), []byte("\xef\xbb\xbf"))
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%w: %s is empty", bundle.ErrInvalid, what)
	}
	if bytes.Contains(trimmed, []byte("-----BEGIN")) {
		return parsePEM(trimmed, what)
	}
	if trimmed[0] == 0x30 { // DER SEQUENCE
		certs, err := x509.ParseCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("%w: %s looks like DER but does not parse: %v", bundle.ErrInvalid, what, err)
		}
		if len(certs) == 0 || len(certs) > bundle.MaxCerts {
			return nil, fmt.Errorf("%w: %s holds %d DER certificates", bundle.ErrInvalid, what, len(certs))
		}
		return certs, nil
	}
	return nil, fmt.Errorf("%w: %s is neither PEM, DER nor a zip", bundle.ErrInvalid, what)
}

func parsePEM(data []byte, what string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if len(certs) == bundle.MaxCerts {
			return nil, fmt.Errorf("%w: %s holds more than %d certificates", bundle.ErrInvalid, what, bundle.MaxCerts)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: certificate %d does not parse: %v", bundle.ErrInvalid, what, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: %s holds no PEM CERTIFICATE block", bundle.ErrInvalid, what)
	}
	return certs, nil
}

func parseZip(data []byte) ([]*x509.Certificate, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("%w: the downloaded zip does not open: %v", bundle.ErrInvalid, err)
	}
	if len(zr.File) > maxZipEntries {
		return nil, fmt.Errorf("%w: the downloaded zip holds %d files", bundle.ErrInvalid, len(zr.File))
	}
	var (
		certs []*x509.Certificate
		names []string
	)
	for _, f := range zr.File {
		base := path.Base(f.Name)
		if f.FileInfo().IsDir() || strings.HasPrefix(base, ".") || strings.HasPrefix(f.Name, "__MACOSX/") {
			continue
		}
		switch strings.ToLower(path.Ext(base)) {
		case ".crt", ".pem", ".cer":
		default:
			continue
		}
		names = append(names, f.Name)
		b, err := readZipFile(f)
		if err != nil {
			return nil, fmt.Errorf("%w: the downloaded zip: %s: %v", bundle.ErrInvalid, f.Name, err)
		}
		cs, err := parseCerts(b, fmt.Sprintf("%s in the downloaded zip", f.Name))
		if err != nil {
			return nil, err
		}
	next:
		for _, c := range cs {
			for _, have := range certs {
				if have.Equal(c) {
					continue next
				}
			}
			if len(certs) == bundle.MaxCerts {
				return nil, fmt.Errorf("%w: the downloaded zip holds more than %d certificates", bundle.ErrInvalid, bundle.MaxCerts)
			}
			certs = append(certs, c)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: the downloaded zip holds no .crt, .pem or .cer file", bundle.ErrInvalid)
	}
	return certs, nil
}

func readZipFile(f *zip.File) ([]byte, error) {
	if f.UncompressedSize64 > MaxBody {
		return nil, errors.New("larger than 1 MiB")
	}
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, MaxBody+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxBody {
		return nil, errors.New("larger than 1 MiB")
	}
	return b, nil
}
