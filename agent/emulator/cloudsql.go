package emulator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CloudSQLInstance describes a fake Cloud SQL instance. Zero values mean the defaults.
type CloudSQLInstance struct {
	// DatabaseVersion; default "POSTGRES_15".
	DatabaseVersion string
	// Region; default "us-central1".
	Region string
	// ServerCAs is how many CA certificates connectSettings' serverCaCert.cert holds
	// (CAS modes return several PEM blocks); default 1. The first signs ServerCert.
	ServerCAs int
	// IPAddresses is connectSettings' ipAddresses; nil means one PRIMARY 127.0.0.1 (so
	// tests connect to loopback). Use an empty non-nil slice for none.
	IPAddresses []IPMapping
	// DNSName is connectSettings' dnsName (e.g. "abcd.x.us-central1.sql.goog."); "" for
	// none. With PSCEnabled it is also the PSC entry of dnsNames.
	DNSName string
	// PSCEnabled is connectSettings' pscEnabled.
	PSCEnabled bool
}

// IPMapping is one entry of connectSettings' ipAddresses: Type is "PRIMARY" (public),
// "PRIVATE", "OUTGOING" or "MIGRATED_1ST_GEN".
type IPMapping struct {
	Type      string `json:"type"`
	IPAddress string `json:"ipAddress"`
}

type sqlInstance struct {
	project, name string
	opts          CloudSQLInstance
	cas           []*ca
}

// OpFailure is the error a failed operation reports (error.errors[0]).
type OpFailure struct {
	Code, Message string
}

type sqlOperation struct {
	name, project, instance, user string
	polls                         int
	insert, start, end            time.Time
	failure                       *OpFailure
}

const timeFormat = "2006-01-02T15:04:05.000Z07:00"

func instanceKey(project, instance string) string { return project + "/" + instance }

// AddCloudSQLInstance adds (or replaces) instance in project, with fresh server CAs.
func (e *Emulator) AddCloudSQLInstance(project, instance string, o CloudSQLInstance) {
	if o.DatabaseVersion == "" {
		o.DatabaseVersion = "POSTGRES_15"
	}
	if o.Region == "" {
		o.Region = "us-central1"
	}
	if o.ServerCAs <= 0 {
		o.ServerCAs = 1
	}
	if o.IPAddresses == nil {
		o.IPAddresses = []IPMapping{{Type: "PRIMARY", IPAddress: "127.0.0.1"}}
	}
	o.IPAddresses = append([]IPMapping{}, o.IPAddresses...)
	inst := &sqlInstance{project: project, name: instance, opts: o}
	for range o.ServerCAs {
		inst.cas = append(inst.cas, e.newServerCA(project, instance))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.instances[instanceKey(project, instance)] = inst
}

func (e *Emulator) newServerCA(project, instance string) *ca {
	c, err := newCA("Google Cloud SQL Server CA "+project+":"+instance, e.now())
	if err != nil {
		panic("emulator: making a server CA: " + err.Error()) // only a broken crypto/rand gets here
	}
	return c
}

// ClientCAPEM is the CA that signs ephemeral client certificates (PostgreSQL's
// ssl_ca_file).
func (e *Emulator) ClientCAPEM() []byte { return certPEM(e.currentClientCA().cert) }

// currentClientCA is the CA that signs client certificates now; a completed
// resetSslConfig replaces it, so certificates issued before no longer verify against
// ClientCAPEM (as Cloud SQL deletes an instance's client certificates on reset).
func (e *Emulator) currentClientCA() *ca {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.clientCA
}

// ServerCAPEM is what connectSettings returns as serverCaCert.cert for the instance
// (every CA block); nil for an unknown instance.
func (e *Emulator) ServerCAPEM(project, instance string) []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	inst := e.instances[instanceKey(project, instance)]
	if inst == nil {
		return nil
	}
	return inst.caPEM()
}

func (i *sqlInstance) caPEM() []byte {
	var out []byte
	for _, c := range i.cas {
		out = append(out, certPEM(c.cert)...)
	}
	return out
}

// ServerCert issues a server certificate for hosts (IP addresses or DNS names, e.g.
// "127.0.0.1", "localhost"), CN "project:instance", signed by the instance's first
// server CA, with a fresh ECDSA P-256 key as PKCS#8 PEM — for a real PostgreSQL server.
// It is CloudSQLServerCert with only Hosts set.
func (e *Emulator) ServerCert(project, instance string, hosts []string) (certPEMOut, keyPEM []byte, err error) {
	return e.CloudSQLServerCert(project, instance, ServerCertOptions{Hosts: hosts})
}

// ServerCertOptions shape a server certificate from CloudSQLServerCert.
type ServerCertOptions struct {
	// Hosts are SANs: IP addresses or DNS names (e.g. "127.0.0.1", "localhost").
	Hosts []string
	// CN is the subject common name; default "PROJECT:INSTANCE", the identity Cloud
	// SQL's legacy server certificates carry. Set another value (e.g. "proj:other") for
	// a certificate whose CN names the wrong instance.
	CN string
	// DNSName adds the instance's connectSettings dnsName (CloudSQLInstance.DNSName,
	// trailing dot removed) as a DNS SAN, the identity of CAS-mode server certificates.
	// An error when the instance has no DNSName.
	DNSName bool
	// Expired makes a certificate that expired an hour ago (for negative tests).
	Expired bool
}

// CloudSQLServerCert issues a server certificate for the instance, signed by its first
// server CA (the first block of ServerCAPEM, so a client that trusts the agent's CA file
// verifies it), with a fresh ECDSA P-256 key as PKCS#8 PEM — for a real PostgreSQL or
// MySQL/MariaDB server. Clients trust ServerCAPEM; the server trusts ClientCAPEM.
func (e *Emulator) CloudSQLServerCert(project, instance string, o ServerCertOptions) (certPEMOut, keyPEM []byte, err error) {
	e.mu.Lock()
	inst := e.instances[instanceKey(project, instance)]
	var (
		signer  *ca
		dnsName string
	)
	if inst != nil {
		signer, dnsName = inst.cas[0], inst.opts.DNSName
	}
	e.mu.Unlock()
	if signer == nil {
		return nil, nil, fmt.Errorf("emulator: no Cloud SQL instance %s/%s", project, instance)
	}
	hosts := append([]string(nil), o.Hosts...)
	if o.DNSName {
		if dnsName == "" {
			return nil, nil, fmt.Errorf("emulator: Cloud SQL instance %s/%s has no DNSName", project, instance)
		}
		hosts = append(hosts, strings.TrimSuffix(dnsName, "."))
	}
	cn := o.CN
	if cn == "" {
		cn = project + ":" + instance
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := serverCertTemplate(cn, hosts, e.now())
	if o.Expired {
		tmpl.NotBefore, tmpl.NotAfter = e.now().Add(-48*time.Hour), e.now().Add(-time.Hour)
	}
	cert, err := signer.sign(tmpl, key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("emulator: signing server certificate: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM(cert), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// FailNextOperation makes the next operation that completes end DONE with this error
// (and without its effect).
func (e *Emulator) FailNextOperation(f OpFailure) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.opFail = &f
}

// serveCloudSQL handles Cloud SQL Admin paths below the version prefix; false means no
// such method (the caller sends the 404 page).
func (e *Emulator) serveCloudSQL(w http.ResponseWriter, r *http.Request, rest string) bool {
	seg := strings.Split(rest, "/")
	if len(seg) < 4 || seg[0] != "projects" || seg[1] == "" {
		return false
	}
	project := seg[1]
	switch {
	case len(seg) == 4 && seg[2] == "instances" && r.Method == http.MethodPost:
		name, verb, ok := strings.Cut(seg[3], ":")
		if !ok || verb != "generateEphemeralCert" || name == "" {
			return false
		}
		e.sqlCall(w, r, "GenerateEphemeralCert", project, name, true, e.generateEphemeralCert)
	case len(seg) == 5 && seg[2] == "instances" && seg[4] == "connectSettings" && r.Method == http.MethodGet:
		e.sqlCall(w, r, "GetConnectSettings", project, seg[3], false, e.connectSettings)
	case len(seg) == 5 && seg[2] == "instances" && seg[4] == "resetSslConfig" && r.Method == http.MethodPost:
		e.sqlCall(w, r, "ResetSslConfig", project, seg[3], false, e.resetSSLConfig)
	case len(seg) == 4 && seg[2] == "operations" && r.Method == http.MethodGet:
		if e.authorize(w, r, sqlMethod("SqlOperationsService", "Get"), ScopeCloudPlatform, ScopeSQLAdmin) != nil {
			e.getOperation(w, r, project, seg[3])
		}
	default:
		return false
	}
	return true
}

func sqlMethod(service, method string) string {
	return "google.cloud.sql.v1beta4." + service + "." + method
}

// sqlCall authorizes, finds the instance and runs h. An unknown project answers 403
// notAuthorized (as for a project the caller cannot see); an unknown instance in a
// known project answers 403 notAuthorized when unknownIs403 (generateEphemeralCert,
// reference §1.7) and 404 notFound otherwise.
func (e *Emulator) sqlCall(w http.ResponseWriter, r *http.Request, method, project, name string, unknownIs403 bool,
	h func(http.ResponseWriter, *http.Request, *sqlInstance, *accessToken)) {
	service := "SqlInstancesService"
	if method != "ResetSslConfig" {
		service = "SqlConnectService"
	}
	tok := e.authorize(w, r, sqlMethod(service, method), ScopeCloudPlatform, ScopeSQLAdmin)
	if tok == nil {
		return
	}
	inst, projectKnown := e.findInstance(project, name)
	switch {
	case inst != nil:
		h(w, r, inst, tok)
	case !projectKnown || unknownIs403:
		writeNotAuthorized(w)
	default:
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "notFound", "The Cloud SQL instance does not exist.")
	}
}

func (e *Emulator) findInstance(project, name string) (inst *sqlInstance, projectKnown bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if inst = e.instances[instanceKey(project, name)]; inst != nil {
		return inst, true
	}
	for _, i := range e.instances {
		if i.project == project {
			return nil, true
		}
	}
	return nil, false
}

// sslCertJSON is the SslCert resource.
type sslCertJSON struct {
	Kind             string `json:"kind"`
	CertSerialNumber string `json:"certSerialNumber"`
	Cert             string `json:"cert"`
	CommonName       string `json:"commonName"`
	SHA1Fingerprint  string `json:"sha1Fingerprint"`
	Instance         string `json:"instance"`
	CreateTime       string `json:"createTime"`
	ExpirationTime   string `json:"expirationTime"`
}

func newSSLCertJSON(inst string, pemData []byte, first *x509.Certificate, created time.Time) sslCertJSON {
	return sslCertJSON{
		Kind:             "sql#sslCert",
		CertSerialNumber: first.SerialNumber.String(),
		Cert:             string(pemData),
		CommonName:       first.Subject.String(),
		SHA1Fingerprint:  sha1Hex(first),
		Instance:         inst,
		CreateTime:       created.UTC().Format(timeFormat),
		ExpirationTime:   first.NotAfter.UTC().Format(timeFormat),
	}
}

// knownEphemeralField reports whether name is a GenerateEphemeralCertRequest JSON name
// (the mixed casing is real: reference §1.3).
func knownEphemeralField(name string) bool {
	switch name {
	case "public_key", "access_token", "readTime", "validDuration":
		return true
	}
	return false
}

type ephemeralRequest struct {
	PublicKey     string `json:"public_key"`
	AccessToken   string `json:"access_token"`
	ValidDuration string `json:"validDuration"`
}

// parseEphemeralRequest rejects unknown field names (a camelCase "publicKey" among
// them) the way Google's JSON transcoding does.
func parseEphemeralRequest(body []byte) (*ephemeralRequest, string) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, "Invalid JSON payload received. " + err.Error()
	}
	for name := range fields {
		if !knownEphemeralField(name) {
			return nil, fmt.Sprintf("Invalid JSON payload received. Unknown name %q: Cannot find field.", name)
		}
	}
	var req ephemeralRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, "Invalid JSON payload received. " + err.Error()
	}
	return &req, ""
}

func (e *Emulator) generateEphemeralCert(w http.ResponseWriter, r *http.Request, inst *sqlInstance, _ *accessToken) {
	body := readBody(r)
	req, msg := parseEphemeralRequest(body)
	if req == nil {
		writeInvalidArgument(w, "invalid", msg)
		return
	}
	if req.PublicKey == "" {
		writeInvalidArgument(w, "invalid", "Invalid request: public_key is required.")
		return
	}
	pub, err := parsePublicKeyPEM(req.PublicKey)
	if err != nil {
		writeInvalidArgument(w, "invalid", "Invalid request: public_key is not a valid PEM public key ("+err.Error()+").")
		return
	}
	now := e.now()
	notAfter, msg := e.ephemeralNotAfter(now, req)
	if msg != "" {
		writeInvalidArgument(w, "invalid", msg)
		return
	}
	tmpl := clientCertTemplate(now, notAfter)
	if id := e.loginIdentity(req); id != "" {
		// IAM database authentication: the certificate carries the IAM identity.
		tmpl.Subject.CommonName = id
	}
	cert, err := e.currentClientCA().sign(tmpl, pub)
	if err != nil {
		writeGoogleError(w, http.StatusInternalServerError, "INTERNAL", "backendError", "Internal error encountered.")
		return
	}
	e.mu.Lock()
	e.issued++
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"ephemeralCert": newSSLCertJSON(inst.name, certPEM(cert), cert, now),
	})
}

// ephemeralNotAfter is now+CertLifetime, shortened by validDuration and, for IAM
// database authentication, by the embedded access_token's expiry.
func (e *Emulator) ephemeralNotAfter(now time.Time, req *ephemeralRequest) (time.Time, string) {
	notAfter := now.Add(e.opts.CertLifetime)
	if req.ValidDuration != "" {
		d, err := time.ParseDuration(req.ValidDuration)
		if err != nil || !strings.HasSuffix(req.ValidDuration, "s") || d <= 0 {
			return time.Time{}, "Invalid value at 'valid_duration' (type.googleapis.com/google.protobuf.Duration), " + strconv.Quote(req.ValidDuration)
		}
		notAfter = minTime(notAfter, now.Add(d))
	}
	if req.AccessToken != "" {
		t := e.lookupToken(req.AccessToken)
		if t == nil {
			return time.Time{}, "Invalid request: access_token is invalid or expired."
		}
		if !slices.Contains(t.scopes, ScopeSQLLogin) {
			return time.Time{}, "Invalid request: access_token must be scoped to " + ScopeSQLLogin + "."
		}
		if !e.opts.NoLoginTokenClamp {
			notAfter = minTime(notAfter, t.expiry)
		}
	}
	return notAfter, ""
}

// loginIdentity is the IAM user a login token in the request names ("" without one).
func (e *Emulator) loginIdentity(req *ephemeralRequest) string {
	if req.AccessToken == "" {
		return ""
	}
	if t := e.lookupToken(req.AccessToken); t != nil {
		return t.subject
	}
	return ""
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// readBody returns the request body (already read and capped by serveHTTP).
func readBody(r *http.Request) []byte {
	b, _ := io.ReadAll(r.Body)
	return b
}

func (e *Emulator) connectSettings(w http.ResponseWriter, _ *http.Request, inst *sqlInstance, _ *accessToken) {
	e.mu.Lock()
	caPEM, first := inst.caPEM(), inst.cas[0].cert
	e.mu.Unlock()
	o := inst.opts
	body := map[string]any{
		"kind":            "sql#connectSettings",
		"serverCaCert":    newSSLCertJSON(inst.name, caPEM, first, first.NotBefore),
		"ipAddresses":     o.IPAddresses,
		"region":          o.Region,
		"databaseVersion": o.DatabaseVersion,
		"backendType":     "SECOND_GEN",
		"pscEnabled":      o.PSCEnabled,
		"serverCaMode":    "GOOGLE_MANAGED_INTERNAL_CA",
		"connectionName":  inst.project + ":" + o.Region + ":" + inst.name,
	}
	if o.DNSName != "" {
		body["dnsName"] = o.DNSName
		if o.PSCEnabled {
			body["dnsNames"] = []map[string]string{{"name": o.DNSName, "connectionType": "PRIVATE_SERVICE_CONNECT",
				"dnsScope": "INSTANCE", "recordManager": "CLOUD_SQL_AUTOMATION"}}
		}
	}
	writeJSON(w, http.StatusOK, body)
}

func (e *Emulator) resetSSLConfig(w http.ResponseWriter, r *http.Request, inst *sqlInstance, tok *accessToken) {
	op := &sqlOperation{
		name:     newOperationID(),
		project:  inst.project,
		instance: inst.name,
		user:     tok.subject,
		insert:   e.now(),
	}
	e.mu.Lock()
	e.ops[instanceKey(op.project, op.name)] = op
	body := e.operationJSON(r, op, "PENDING")
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, body)
}

func newOperationID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// getOperation advances the operation one step per poll: PENDING → RUNNING → DONE. On
// DONE the instance gets a new server CA, unless FailNextOperation armed a failure.
func (e *Emulator) getOperation(w http.ResponseWriter, r *http.Request, project, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	op := e.ops[instanceKey(project, name)]
	if op == nil {
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "notFound", "The Cloud SQL operation does not exist.")
		return
	}
	op.polls++
	status := "PENDING"
	switch {
	case op.polls == 1:
		status = "RUNNING"
		op.start = e.now()
	case op.polls >= 2:
		status = "DONE"
		if op.end.IsZero() {
			e.finishOperation(op)
		}
	}
	writeJSON(w, http.StatusOK, e.operationJSON(r, op, status))
}

// finishOperation runs with e.mu held.
func (e *Emulator) finishOperation(op *sqlOperation) {
	op.end = e.now()
	if e.opFail != nil {
		op.failure, e.opFail = e.opFail, nil
		return
	}
	inst := e.instances[instanceKey(op.project, op.instance)]
	if inst == nil {
		return
	}
	fresh := e.newServerCA(op.project, op.instance)
	inst.cas = append([]*ca{fresh}, inst.cas[:len(inst.cas)-1]...)
	if c, err := newCA("emulator Cloud SQL client CA", e.now()); err == nil {
		e.clientCA = c // earlier client certificates are no longer valid
	}
}

// operationJSON builds a sql#operation; runs with e.mu held.
func (e *Emulator) operationJSON(r *http.Request, op *sqlOperation, status string) map[string]any {
	base := "https://sqladmin.googleapis.com" + versionPrefix(r.URL.Path) + "projects/" + op.project
	m := map[string]any{
		"kind":          "sql#operation",
		"name":          op.name,
		"status":        status,
		"operationType": "UPDATE",
		"user":          op.user,
		"targetId":      op.instance,
		"targetProject": op.project,
		"targetLink":    base + "/instances/" + op.instance,
		"selfLink":      base + "/operations/" + op.name,
		"insertTime":    op.insert.UTC().Format(timeFormat),
	}
	if !op.start.IsZero() {
		m["startTime"] = op.start.UTC().Format(timeFormat)
	}
	if status == "DONE" {
		m["endTime"] = op.end.UTC().Format(timeFormat)
		if f := op.failure; f != nil {
			m["error"] = map[string]any{
				"kind":   "sql#operationErrors",
				"errors": []map[string]string{{"kind": "sql#operationError", "code": f.Code, "message": f.Message}},
			}
		}
	}
	return m
}

func versionPrefix(path string) string {
	if strings.HasPrefix(path, "/v1/") {
		return "/v1/"
	}
	return "/sql/v1beta4/"
}
