package emulator

import (
	"archive/zip"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The "OBS" host: a second loopback listener serving the files GeminiDB's download links
// point at, like Huawei's Object Storage Service serves pre-signed URLs. It is a
// different host:port than the API, takes no X-Auth-Token or signature headers (a
// request carrying any is refused with 400), checks the link's own signature and expiry
// (403), and serves the instance's current CA as PEM, DER or a zip.
//
// Its requests are recorded with the others (Requests(), Path "/nosql-certs/...") and
// faults apply to them ("GET /nosql-certs/...").

const obsPathPrefix = "/nosql-certs/"

// obsAuthHeaders are headers an authenticated API client would send; OBS refuses them.
var obsAuthHeaders = []string{"Authorization", "X-Auth-Token", "X-Sdk-Date", "X-Security-Token", "X-Project-Id"}

// GeminiDBDownloadURL is the root of the OBS host ("http://127.0.0.1:PORT"), starting it
// if needed; "" after CloseHuawei.
func (e *Emulator) GeminiDBDownloadURL() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	u, _ := e.startOBS()
	return u
}

// startOBS starts the OBS listener once; e.mu must be held.
func (e *Emulator) startOBS() (string, error) {
	h := e.hw()
	if h.obsURL != "" {
		return h.obsURL, nil
	}
	if h.obsClosed {
		return "", errors.New("emulator: closed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	h.obs = &http.Server{Handler: http.HandlerFunc(e.serveOBS), ReadHeaderTimeout: 10 * time.Second}
	h.obsURL = "http://" + ln.Addr().String()
	go func(srv *http.Server) { _ = srv.Serve(ln) }(h.obs)
	return h.obsURL, nil
}

// CloseHuawei stops the OBS listener (if it was started), closing open connections.
// Emulator.Close should call it; it is safe to call twice, and no link works afterwards.
func (e *Emulator) CloseHuawei() error {
	e.mu.Lock()
	h := e.hw()
	srv := h.obs
	h.obs, h.obsURL, h.obsClosed = nil, "", true
	e.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Close()
}

// obsFileName is the object name for a format.
func obsFileName(f GeminiDBFormat) string {
	switch f {
	case GeminiDBZip:
		return "Certificate_Download.zip"
	case GeminiDBDER:
		return "ca.cer"
	}
	return "ca.crt"
}

// obsLink makes a pre-signed download link for the instance's CA.
func (e *Emulator) obsLink(projectID, instanceID string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	root, err := e.startOBS()
	if err != nil {
		return "", err
	}
	h := e.hw()
	p := obsPathPrefix + url.PathEscape(projectID) + "/" + url.PathEscape(instanceID) + "/" + obsFileName(h.format)
	expires := strconv.FormatInt(e.now().Add(obsLinkLifetime).Unix(), 10)
	q := url.Values{"AccessKeyId": {"EMUOBSACCESSKEY00000"}, "Expires": {expires}, "Signature": {obsSignature(h.linkKey, p, expires)}}
	return root + p + "?" + q.Encode(), nil
}

func obsSignature(key []byte, path, expires string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("GET\n" + expires + "\n" + path))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func (e *Emulator) serveOBS(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
	if err != nil {
		return
	}
	e.record(r, body)
	if f := e.matchFault(r.Method + " " + r.URL.Path); f != nil && applyHuaweiFault(w, r, f) {
		return
	} else if f != nil && f.Mutate != nil {
		serveMutated(w, r, f, e.serveOBSFile)
		return
	}
	e.serveOBSFile(w, r)
}

// serveOBSFile serves a download link (after faults).
func (e *Emulator) serveOBSFile(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Server", "OBS")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeOBSError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.")
		return
	}
	for _, name := range obsAuthHeaders {
		if r.Header.Get(name) != "" {
			writeOBSError(w, http.StatusBadRequest, "InvalidArgument",
				"Only one auth mechanism allowed: the link is pre-signed, so the request must not carry "+name+".")
			return
		}
	}
	rest, ok := strings.CutPrefix(r.URL.Path, obsPathPrefix)
	seg := strings.Split(rest, "/")
	if !ok || len(seg) != 3 {
		writeOBSError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	q := r.URL.Query()
	expires := q.Get("Expires")
	exp, err := strconv.ParseInt(expires, 10, 64)
	e.mu.Lock()
	h := e.hw()
	wantSig := obsSignature(h.linkKey, r.URL.EscapedPath(), expires)
	inst := h.instances[instanceKey(seg[0], seg[1])]
	format := h.format
	var caCert []byte
	if inst != nil {
		caCert = inst.ca.cert.Raw
	}
	e.mu.Unlock()
	switch {
	case err != nil || !hmac.Equal([]byte(q.Get("Signature")), []byte(wantSig)):
		writeOBSError(w, http.StatusForbidden, "SignatureDoesNotMatch",
			"The request signature we calculated does not match the signature you provided. Check your key and signing method.")
		return
	case !e.now().Before(time.Unix(exp, 0)):
		writeOBSError(w, http.StatusForbidden, "AccessDenied", "Request has expired")
		return
	case caCert == nil:
		writeOBSError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	data, err := obsContent(format, caCert)
	if err != nil {
		writeOBSError(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Header().Set("ETag", fmt.Sprintf("%q", base64.RawStdEncoding.EncodeToString(sha256Sum(data)[:12])))
	w.Header().Set("x-obs-request-id", randomHex(16))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(data)
	}
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// obsContent is the downloaded file for a CA certificate (DER) in the given format.
func obsContent(f GeminiDBFormat, der []byte) ([]byte, error) {
	pemData := pemEncodeCert(der)
	switch f {
	case GeminiDBDER:
		return der, nil
	case GeminiDBZip:
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for _, file := range []struct {
			name string
			data []byte
		}{
			{"ca.pem", pemData},
			{"readme.txt", []byte("Use ca.pem as the CA certificate (e.g. redis-cli --tls --cacert ca.pem).\n")},
		} {
			fw, err := zw.Create(file.name)
			if err != nil {
				return nil, err
			}
			if _, err := fw.Write(file.data); err != nil {
				return nil, err
			}
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	return pemData, nil
}

func pemEncodeCert(der []byte) []byte {
	var b bytes.Buffer
	b.WriteString("-----BEGIN CERTIFICATE-----\n")
	enc := base64.StdEncoding.EncodeToString(der)
	for len(enc) > 64 {
		b.WriteString(enc[:64] + "\n")
		enc = enc[64:]
	}
	b.WriteString(enc + "\n-----END CERTIFICATE-----\n")
	return b.Bytes()
}

// writeOBSError writes OBS's (S3-style) XML error body.
func writeOBSError(w http.ResponseWriter, status int, code, msg string) {
	type obsError struct {
		XMLName   xml.Name `xml:"Error"`
		Code      string   `xml:"Code"`
		Message   string   `xml:"Message"`
		RequestID string   `xml:"RequestId"`
		HostID    string   `xml:"HostId"`
	}
	b, _ := xml.Marshal(obsError{Code: code, Message: msg, RequestID: randomHex(8), HostID: randomHex(24)})
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("Server", "OBS")
	w.WriteHeader(status)
	_, _ = w.Write(append([]byte(xml.Header), b...))
}

func obsCodeFor(status int) string {
	switch status {
	case http.StatusForbidden:
		return "AccessDenied"
	case http.StatusNotFound:
		return "NoSuchKey"
	case http.StatusServiceUnavailable:
		return "ServiceUnavailable"
	case http.StatusBadRequest:
		return "InvalidArgument"
	}
	return "InternalError"
}

// applyHuaweiFault is applyFault with Huawei bodies for a bare status (OBS XML here).
func applyHuaweiFault(w http.ResponseWriter, r *http.Request, f *Fault) bool {
	if f.Status == 0 || f.Body != "" || f.Garbage || f.CloseConn || f.Mutate != nil || f.HugeBody > 0 || f.EmptyBody {
		return applyFault(w, r, f)
	}
	delayOnly := *f
	delayOnly.Status = 0
	if applyFault(w, r, &delayOnly) {
		return true // the client gave up during the delay
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	writeHuaweiDefaultError(w, r, f.Status)
	return true
}
