package emulator

// AlloyDB Admin: clusters.generateClientCertificate (reference §4.1), for v1, v1beta
// and v1alpha.
//
// Every cluster has its own PKI: a root CA, an intermediate CA signed by the root that
// signs the client certificates (so pemCertificateChain is [leaf, intermediate, root],
// leaf first as the reference says), and a separate cluster CA that signs the server
// certificates and is returned as caCert.
//
// Fidelity notes:
//   - Errors are AlloyDB's: code, message, status and details, no legacy errors[] array.
//     Injected faults are written before routing, with the Cloud SQL-style bodies unless
//     Fault.Body is set (AlloyDBErrorBody gives AlloyDB's).
//   - Request field names are checked strictly: only the lowerCamelCase JSON names are
//     accepted and any other name is a 400 ("Unknown name ..."). Google's protojson
//     transcoding also accepts the proto's snake_case names; the emulator is stricter on
//     purpose, so a client that sends `public_key` (Cloud SQL's casing) is caught.
//   - `parent` must be in the body and equal the resource name of the URL (decoded).
//   - A requestId seen before (within 60 minutes by Options.Now) gets the same answer
//     again, whatever the rest of the body says, and issues nothing.
//   - certDuration within 1h..24h sets the lifetime, unless Options.CertLifetime is
//     shorter than 1h (short test certificates), which then wins; a certDuration outside
//     1h..24h is ignored (it is a hint) and CertLifetime applies. A certDuration that is
//     not a Duration string is a 400.
//   - Certificates issued count in both Issued() (every client certificate the emulator
//     issued, Cloud SQL's included) and AlloyDBIssued() (AlloyDB's only).

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// alloyState is the emulator's AlloyDB state (guarded by Emulator.mu).
type alloyState struct {
	clusters map[string]*alloyCluster // key: alloyKey(project, location, cluster)
	issued   int
}

type alloyCluster struct {
	project, location, name string
	root, intermediate      *ca // client chain
	server                  *ca // caCert; signs server certificates
	requests                map[string]*alloyIssue
	instances               map[string]*alloyInstance // alloydb_conninfo.go
}

// alloyIssue is a remembered answer, for requestId deduplication.
type alloyIssue struct {
	at   time.Time
	resp alloyResponse
}

type alloyResponse struct {
	PemCertificateChain []string `json:"pemCertificateChain"`
	CaCert              string   `json:"caCert"`
}

// alloyDedupWindow is how long a requestId is remembered (the API promises ≥ 60 min).
const alloyDedupWindow = time.Hour

// Limits of the certDuration hint.
const (
	alloyMinCertDuration = time.Hour
	alloyMaxCertDuration = 24 * time.Hour
)

func alloyKey(project, location, cluster string) string {
	return "projects/" + project + "/locations/" + location + "/clusters/" + cluster
}

// AddAlloyDBCluster adds (or replaces) an AlloyDB cluster with a fresh root CA,
// intermediate CA and cluster (server) CA.
func (e *Emulator) AddAlloyDBCluster(project, location, cluster string) {
	now := e.now()
	must := func(c *ca, err error) *ca {
		if err != nil {
			panic("emulator: making an AlloyDB CA: " + err.Error()) // only a broken crypto/rand gets here
		}
		return c
	}
	name := project + "/" + location + "/" + cluster
	root := must(newAlloyCA("AlloyDB client root CA "+name, now, nil))
	cl := &alloyCluster{
		project:      project,
		location:     location,
		name:         cluster,
		root:         root,
		intermediate: must(newAlloyCA("AlloyDB client intermediate CA "+name, now, root)),
		server:       must(newAlloyCA("AlloyDB cluster CA "+name, now, nil)),
		requests:     map[string]*alloyIssue{},
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.alloy.clusters == nil {
		e.alloy.clusters = map[string]*alloyCluster{}
	}
	e.alloy.clusters[alloyKey(project, location, cluster)] = cl
}

func (e *Emulator) alloyCluster(project, location, cluster string) *alloyCluster {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.alloy.clusters[alloyKey(project, location, cluster)]
}

// AlloyDBClientRootPEM is the root CA of the cluster's client certificates: the only
// certificate a PostgreSQL server needs in ssl_ca_file to accept a client that sends
// its leaf and the intermediate. nil for an unknown cluster.
func (e *Emulator) AlloyDBClientRootPEM(project, location, cluster string) []byte {
	cl := e.alloyCluster(project, location, cluster)
	if cl == nil {
		return nil
	}
	return certPEM(cl.root.cert)
}

// AlloyDBCAPEM is what generateClientCertificate returns as caCert: the cluster CA
// that signs AlloyDBServerCert. nil for an unknown cluster.
func (e *Emulator) AlloyDBCAPEM(project, location, cluster string) []byte {
	cl := e.alloyCluster(project, location, cluster)
	if cl == nil {
		return nil
	}
	return certPEM(cl.server.cert)
}

// AlloyDBServerCert issues a server certificate for hosts (IP addresses or DNS names),
// signed by the cluster CA (AlloyDBCAPEM), with a fresh ECDSA P-256 key as PKCS#8 PEM —
// for a real PostgreSQL server.
func (e *Emulator) AlloyDBServerCert(project, location, cluster string, hosts []string) (certPEMOut, keyPEM []byte, err error) {
	cl := e.alloyCluster(project, location, cluster)
	if cl == nil {
		return nil, nil, fmt.Errorf("emulator: no AlloyDB cluster %s", alloyKey(project, location, cluster))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	cn := project + ":" + location + ":" + cluster
	cert, err := cl.server.sign(serverCertTemplate(cn, hosts, e.now()), key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("emulator: signing server certificate: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM(cert), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// AlloyDBIssued is the number of AlloyDB client certificates issued so far (answers
// replayed for a repeated requestId do not count). They also count in Issued.
func (e *Emulator) AlloyDBIssued() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.alloy.issued
}

// serveAlloyDB handles AlloyDB Admin API requests; false means "not mine" (the router
// then tries the others and ends with the HTML 404 page). Only
// POST /{v1|v1beta|v1alpha}/projects/{p}/locations/{l}/clusters/{c}:generateClientCertificate
// is AlloyDB's; Cloud SQL's /v1/projects/{p}/instances/... paths never match.
func (e *Emulator) serveAlloyDB(w http.ResponseWriter, r *http.Request) bool {
	if e.serveAlloyConnectionInfo(w, r) {
		return true
	}
	ver, project, location, cluster, ok := parseAlloyPath(r.URL.Path)
	if !ok || r.Method != http.MethodPost {
		return false
	}
	e.generateClientCertificate(w, r, ver, project, location, cluster)
	return true
}

// parseAlloyPath splits a decoded generateClientCertificate path.
func parseAlloyPath(p string) (ver, project, location, cluster string, ok bool) {
	rest, found := strings.CutPrefix(p, "/")
	if !found {
		return "", "", "", "", false
	}
	ver, rest, _ = strings.Cut(rest, "/")
	switch ver {
	case "v1", "v1beta", "v1alpha":
	default:
		return "", "", "", "", false
	}
	seg := strings.Split(rest, "/")
	if len(seg) != 6 || seg[0] != "projects" || seg[2] != "locations" || seg[4] != "clusters" {
		return "", "", "", "", false
	}
	name, verb, _ := strings.Cut(seg[5], ":")
	if verb != "generateClientCertificate" || seg[1] == "" || seg[3] == "" || name == "" {
		return "", "", "", "", false
	}
	return ver, seg[1], seg[3], name, true
}

func alloyMethod(ver, method string) string {
	return "google.cloud.alloydb." + ver + ".AlloyDBAdmin." + method
}

// alloyAuthorize checks the bearer token like authorize, answering in AlloyDB's error
// style. AlloyDB accepts only the cloud-platform scope.
func (e *Emulator) alloyAuthorize(w http.ResponseWriter, r *http.Request, method string) *accessToken {
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if h == "" || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		writeAlloyUnauthenticated(w, false, method)
		return nil
	}
	t := e.lookupToken(tok)
	if t == nil {
		writeAlloyUnauthenticated(w, true, method)
		return nil
	}
	for _, s := range t.scopes {
		if s == ScopeCloudPlatform {
			return t
		}
	}
	writeAlloyScopeInsufficient(w, method)
	return nil
}

type alloyRequest struct {
	Parent              string `json:"parent"`
	RequestID           string `json:"requestId"`
	PublicKey           string `json:"publicKey"`
	PemCSR              string `json:"pemCsr"`
	CertDuration        string `json:"certDuration"`
	UseMetadataExchange bool   `json:"useMetadataExchange"`
}

// knownAlloyField reports whether name is a GenerateClientCertificateRequest JSON name
// in version ver (pemCsr is gone from v1).
func knownAlloyField(ver, name string) bool {
	switch name {
	case "parent", "requestId", "publicKey", "certDuration", "useMetadataExchange":
		return true
	case "pemCsr":
		return ver != "v1"
	}
	return false
}

// parseAlloyRequest decodes the body; a non-empty message is the 400 to send.
func parseAlloyRequest(ver string, body []byte) (*alloyRequest, string) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, "Invalid JSON payload received. " + err.Error()
	}
	for name := range fields {
		if !knownAlloyField(ver, name) {
			return nil, fmt.Sprintf("Invalid JSON payload received. Unknown name %q: Cannot find field.", name)
		}
	}
	var req alloyRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, "Invalid JSON payload received. " + err.Error()
	}
	return &req, ""
}

func (e *Emulator) generateClientCertificate(w http.ResponseWriter, r *http.Request, ver, project, location, cluster string) {
	if e.alloyAuthorize(w, r, alloyMethod(ver, "GenerateClientCertificate")) == nil {
		return
	}
	req, msg := parseAlloyRequest(ver, readBody(r))
	if req == nil {
		writeAlloyInvalid(w, "", msg)
		return
	}
	name := alloyKey(project, location, cluster)
	if req.Parent != name {
		writeAlloyInvalid(w, "parent", fmt.Sprintf("Invalid value for field 'parent': %q does not match the resource name in the URL, %q.", req.Parent, name))
		return
	}
	if req.RequestID != "" && !validRequestID(req.RequestID) {
		writeAlloyInvalid(w, "request_id", fmt.Sprintf("Invalid request_id %q: must be a valid UUID other than the zero UUID.", req.RequestID))
		return
	}
	lifetime, msg := e.alloyLifetime(req.CertDuration)
	if msg != "" {
		writeAlloyInvalid(w, "cert_duration", msg)
		return
	}
	cl := e.alloyCluster(project, location, cluster)
	if cl == nil {
		writeAlloyError(w, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("Resource '%s' was not found", name), resourceInfo(name))
		return
	}
	if prev := e.alloyReplay(cl, req.RequestID); prev != nil {
		writeJSON(w, http.StatusOK, prev)
		return
	}
	pub, field, msg := alloyPublicKey(req)
	if msg != "" {
		writeAlloyInvalid(w, field, msg)
		return
	}
	now := e.now()
	leaf, err := cl.intermediate.sign(alloyClientCertTemplate(now, now.Add(lifetime)), pub)
	if err != nil {
		writeAlloyError(w, http.StatusInternalServerError, "INTERNAL", "Internal error encountered.")
		return
	}
	resp := alloyResponse{
		PemCertificateChain: []string{string(certPEM(leaf)), string(certPEM(cl.intermediate.cert)), string(certPEM(cl.root.cert))},
		CaCert:              string(certPEM(cl.server.cert)),
	}
	writeJSON(w, http.StatusOK, e.alloyRecord(cl, req.RequestID, resp))
}

// alloyLifetime applies the certDuration precedence described at the top of the file.
func (e *Emulator) alloyLifetime(certDuration string) (time.Duration, string) {
	lifetime := e.opts.CertLifetime
	if certDuration == "" {
		return lifetime, ""
	}
	d, ok := parseProtoDuration(certDuration)
	if !ok {
		return 0, "Invalid value at 'cert_duration' (type.googleapis.com/google.protobuf.Duration), " + strconv.Quote(certDuration)
	}
	if d >= alloyMinCertDuration && d <= alloyMaxCertDuration && lifetime >= alloyMinCertDuration {
		lifetime = d
	}
	return lifetime, ""
}

// parseProtoDuration parses the JSON form of google.protobuf.Duration: decimal seconds
// with up to nine fractional digits and the suffix "s" ("3600s", "1.5s", "-2s").
func parseProtoDuration(s string) (time.Duration, bool) {
	num, ok := strings.CutSuffix(s, "s")
	if !ok || num == "" {
		return 0, false
	}
	neg := strings.HasPrefix(num, "-")
	num = strings.TrimPrefix(num, "-")
	whole, frac, _ := strings.Cut(num, ".")
	if whole == "" || len(frac) > 9 || !allDigits(whole) || !allDigits(frac) || len(whole) > 12 {
		return 0, false
	}
	secs, _ := strconv.ParseInt(whole, 10, 64)
	d := time.Duration(secs) * time.Second
	if frac != "" {
		n, _ := strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
		d += time.Duration(n)
	}
	if neg {
		d = -d
	}
	return d, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// validRequestID accepts a UUID in its canonical 8-4-4-4-12 hex form, except the zero UUID.
func validRequestID(s string) bool {
	if len(s) != 36 {
		return false
	}
	zero := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
			if c != '0' {
				zero = false
			}
		default:
			return false
		}
	}
	return !zero
}

// alloyPublicKey returns the key to certify, from publicKey (PKCS#1 or PKIX, under the
// label "RSA PUBLIC KEY" or "PUBLIC KEY": pitfall 4) or else from pemCsr.
func alloyPublicKey(req *alloyRequest) (pub crypto.PublicKey, field, msg string) {
	switch {
	case req.PublicKey != "":
		pub, err := parsePublicKeyPEM(req.PublicKey)
		if err != nil {
			return nil, "public_key", "Invalid public_key: not a valid PEM public key (" + err.Error() + ")."
		}
		return pub, "", ""
	case req.PemCSR != "":
		blk, _ := pem.Decode([]byte(req.PemCSR))
		if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
			return nil, "pem_csr", "Invalid pem_csr: no PEM CERTIFICATE REQUEST block."
		}
		csr, err := x509.ParseCertificateRequest(blk.Bytes)
		if err == nil {
			err = csr.CheckSignature()
		}
		if err != nil {
			return nil, "pem_csr", "Invalid pem_csr: " + err.Error() + "."
		}
		return csr.PublicKey, "", ""
	}
	return nil, "public_key", "Invalid request: public_key is required."
}

// alloyReplay returns the remembered answer for requestID, if any (and forgets
// answers older than the deduplication window).
func (e *Emulator) alloyReplay(cl *alloyCluster, requestID string) *alloyResponse {
	if requestID == "" {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pruneAlloyRequests(cl)
	if prev := cl.requests[requestID]; prev != nil {
		return &prev.resp
	}
	return nil
}

// alloyRecord counts a freshly issued answer and remembers it under requestID. When a
// concurrent request with the same requestID won the race, its answer is returned
// instead and nothing is counted.
func (e *Emulator) alloyRecord(cl *alloyCluster, requestID string, resp alloyResponse) *alloyResponse {
	e.mu.Lock()
	defer e.mu.Unlock()
	if requestID != "" {
		e.pruneAlloyRequests(cl)
		if prev := cl.requests[requestID]; prev != nil {
			return &prev.resp
		}
		cl.requests[requestID] = &alloyIssue{at: e.now(), resp: resp}
	}
	e.alloy.issued++
	e.issued++
	return &resp
}

// pruneAlloyRequests runs with e.mu held.
func (e *Emulator) pruneAlloyRequests(cl *alloyCluster) {
	now := e.now()
	for id, is := range cl.requests {
		if now.Sub(is.at) >= alloyDedupWindow {
			delete(cl.requests, id)
		}
	}
}
