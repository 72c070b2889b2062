package emulator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Huawei Cloud in the emulator (reference §6): the IAM token endpoint
// (POST /v3/auth/tokens) and GeminiDB's ListSslCertDownloadAddresses
// (GET /v3/{project_id}/instances/{instance_id}/ssl-cert/download-link), both under the
// emulator's root URL, which thus doubles as the IAM and the GeminiDB endpoint. The
// download link points at a separate loopback listener, the "OBS" host (huawei_obs.go),
// started on first use and stopped by CloseHuawei.

// GeminiDBFormat is what the OBS download link serves.
type GeminiDBFormat int

// Download formats.
const (
	// GeminiDBPEM serves the CA as a PEM file ("ca.crt"); the default.
	GeminiDBPEM GeminiDBFormat = iota
	// GeminiDBZip serves a zip holding "ca.pem" and a readme ("Certificate_Download.zip").
	GeminiDBZip
	// GeminiDBDER serves the CA as DER ("ca.cer").
	GeminiDBDER
)

const (
	// defaultHuaweiTokenLifetime is the IAM token lifetime (reference §6.3).
	defaultHuaweiTokenLifetime = 24 * time.Hour
	// huaweiMaxSkew is how far X-Sdk-Date may be from the emulator's clock.
	huaweiMaxSkew = 15 * time.Minute
	// huaweiTimeFormat is IAM's expires_at/issued_at format (microseconds).
	huaweiTimeFormat = "2006-01-02T15:04:05.000000Z"
	// obsLinkLifetime is how long a download link stays valid.
	obsLinkLifetime = 10 * time.Minute
)

// huaweiState is the emulator's Huawei Cloud state: IAM users and tokens, the AK/SK pair,
// GeminiDB instances and the OBS listener (guarded by Emulator.mu).
type huaweiState struct {
	users         map[string]*hwUser  // key: domain + "/" + user name
	domains       map[string]string   // domain name → domain id
	tokens        map[string]*hwToken // key: token value
	tokenLifetime time.Duration
	ak, sk        string
	instances     map[string]*gdbInstance // key: project + "/" + instance
	format        GeminiDBFormat
	linkKey       []byte
	obs           *http.Server
	obsURL        string // "http://127.0.0.1:PORT", no trailing slash
	obsClosed     bool
}

type hwUser struct {
	id, name, password, domain string
}

type hwToken struct {
	user                   *hwUser
	projectID, projectName string
	issued, expiry         time.Time
}

type gdbInstance struct {
	project, id string
	ca          *ca
}

// hw returns the Huawei state with its maps made; e.mu must be held.
func (e *Emulator) hw() *huaweiState {
	h := &e.huawei
	if h.users == nil {
		h.users = map[string]*hwUser{}
		h.domains = map[string]string{}
		h.tokens = map[string]*hwToken{}
		h.instances = map[string]*gdbInstance{}
		h.linkKey = []byte(randomHex(32))
	}
	return h
}

// AddGeminiDBInstance adds (or replaces) a GeminiDB instance with a fresh CA.
func (e *Emulator) AddGeminiDBInstance(projectID, instanceID string) {
	c := e.newGeminiDBCA(projectID, instanceID)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hw().instances[instanceKey(projectID, instanceID)] = &gdbInstance{project: projectID, id: instanceID, ca: c}
}

func (e *Emulator) newGeminiDBCA(projectID, instanceID string) *ca {
	c, err := newCA("GeminiDB CA "+projectID+"/"+instanceID, e.now())
	if err != nil {
		panic("emulator: making a GeminiDB CA: " + err.Error()) // only a broken crypto/rand gets here
	}
	return c
}

// RotateGeminiDBCA gives the instance a new CA (new key, new certificate); the next
// download serves it. Unknown instances are ignored.
func (e *Emulator) RotateGeminiDBCA(projectID, instanceID string) {
	c := e.newGeminiDBCA(projectID, instanceID)
	e.mu.Lock()
	defer e.mu.Unlock()
	if inst := e.hw().instances[instanceKey(projectID, instanceID)]; inst != nil {
		inst.ca = c
	}
}

// GeminiDBCAPEM is the instance's current CA certificate as PEM; nil when unknown.
func (e *Emulator) GeminiDBCAPEM(projectID, instanceID string) []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	inst := e.hw().instances[instanceKey(projectID, instanceID)]
	if inst == nil {
		return nil
	}
	return certPEM(inst.ca.cert)
}

// GeminiDBServerCert issues a server certificate for hosts (IP addresses or DNS names),
// CN instanceID, signed by the instance's current CA, with a fresh ECDSA P-256 key as
// PKCS#8 PEM — for a real server (redis-server --tls-port) that clients verify with the
// CA the agent downloads.
func (e *Emulator) GeminiDBServerCert(projectID, instanceID string, hosts []string) (certPEMOut, keyPEM []byte, err error) {
	e.mu.Lock()
	var signer *ca
	if inst := e.hw().instances[instanceKey(projectID, instanceID)]; inst != nil {
		signer = inst.ca
	}
	e.mu.Unlock()
	if signer == nil {
		return nil, nil, fmt.Errorf("emulator: no GeminiDB instance %s/%s", projectID, instanceID)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	cert, err := signer.sign(serverCertTemplate(instanceID, hosts, e.now()), key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("emulator: signing GeminiDB server certificate: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM(cert), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// SetGeminiDBDownloadFormat chooses what download links serve (default GeminiDBPEM).
func (e *Emulator) SetGeminiDBDownloadFormat(f GeminiDBFormat) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hw().format = f
}

// AddHuaweiUser adds (or updates) an IAM user of account (domain) domain with password.
func (e *Emulator) AddHuaweiUser(domain, user, password string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	h := e.hw()
	if _, ok := h.domains[domain]; !ok {
		h.domains[domain] = randomHex(16)
	}
	key := domain + "/" + user
	if u := h.users[key]; u != nil {
		u.password = password
		return
	}
	h.users[key] = &hwUser{id: randomHex(16), name: user, password: password, domain: domain}
}

// HuaweiAKSK returns the access key / secret key pair the emulator accepts for
// SDK-HMAC-SHA256 signatures (made on first call, then always the same).
func (e *Emulator) HuaweiAKSK() (ak, sk string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	h := e.hw()
	if h.ak == "" {
		h.ak = "EMU" + strings.ToUpper(randomHex(9))[:17]
		h.sk = base64.RawURLEncoding.EncodeToString([]byte(randomHex(15)))[:40]
	}
	return h.ak, h.sk
}

// SetHuaweiTokenLifetime sets the lifetime of IAM tokens issued from now on (default
// 24h, as in Huawei Cloud). Expiry is judged by Options.Now.
func (e *Emulator) SetHuaweiTokenLifetime(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hw().tokenLifetime = d
}

// RevokeHuaweiTokens invalidates every IAM token issued so far, as a password change
// does; API calls with them get 401 APIGW.0301.
func (e *Emulator) RevokeHuaweiTokens() {
	e.mu.Lock()
	defer e.mu.Unlock()
	clear(e.hw().tokens)
}

// isHuaweiPath reports whether a decoded path belongs to the Huawei APIs (for fault
// bodies: see writeHuaweiDefaultError).
func isHuaweiPath(p string) bool {
	return p == "/v3/auth/tokens" || strings.HasSuffix(p, "/ssl-cert/download-link") || strings.HasPrefix(p, obsPathPrefix)
}

// serveHuawei handles Huawei IAM and GeminiDB requests; false means "not mine".
func (e *Emulator) serveHuawei(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.Path
	if p == "/v3/auth/tokens" {
		if r.Method != http.MethodPost {
			writeAPIGError(w, http.StatusNotFound, "APIGW.0101", "The API does not exist or has not been published in the environment")
			return true
		}
		e.serveIAMToken(w, r)
		return true
	}
	seg := strings.Split(strings.TrimPrefix(p, "/"), "/")
	if len(seg) == 6 && seg[0] == "v3" && seg[1] != "" && seg[2] == "instances" && seg[3] != "" &&
		seg[4] == "ssl-cert" && seg[5] == "download-link" {
		if r.Method != http.MethodGet {
			writeAPIGError(w, http.StatusNotFound, "APIGW.0101", "The API does not exist or has not been published in the environment")
			return true
		}
		e.serveDownloadLink(w, r, seg[1], seg[3])
		return true
	}
	return false
}

// iamTokenRequest is KeystoneCreateUserTokenByPassword's body (reference §6.3).
type iamTokenRequest struct {
	Auth *struct {
		Identity struct {
			Methods  []string `json:"methods"`
			Password *struct {
				User struct {
					Name     string `json:"name"`
					Password string `json:"password"`
					Domain   struct {
						Name string `json:"name"`
						ID   string `json:"id"`
					} `json:"domain"`
				} `json:"user"`
			} `json:"password"`
		} `json:"identity"`
		Scope *struct {
			Project *struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"project"`
		} `json:"scope"`
	} `json:"auth"`
}

func (e *Emulator) serveIAMToken(w http.ResponseWriter, r *http.Request) {
	var req iamTokenRequest
	if err := json.Unmarshal(readBody(r), &req); err != nil || req.Auth == nil {
		writeKeystoneError(w, http.StatusBadRequest, "The request body is invalid.")
		return
	}
	id := req.Auth.Identity
	if !contains(id.Methods, "password") || id.Password == nil || id.Password.User.Name == "" {
		writeKeystoneError(w, http.StatusBadRequest, "The request body is invalid: identity.methods must be [\"password\"] with identity.password.user.")
		return
	}
	if req.Auth.Scope == nil || req.Auth.Scope.Project == nil || (req.Auth.Scope.Project.ID == "" && req.Auth.Scope.Project.Name == "") {
		writeKeystoneError(w, http.StatusBadRequest, "The request body is invalid: this emulator issues project-scoped tokens only (scope.project.id or scope.project.name).")
		return
	}
	u := id.Password.User
	now := e.now()
	e.mu.Lock()
	h := e.hw()
	domain := u.Domain.Name
	if domain == "" { // by id
		for name, did := range h.domains {
			if did == u.Domain.ID {
				domain = name
			}
		}
	}
	user := h.users[domain+"/"+u.Name]
	if user == nil || u.Password != user.password || domain == "" {
		e.mu.Unlock()
		writeKeystoneError(w, http.StatusUnauthorized, "The username or password is wrong.")
		return
	}
	lifetime := h.tokenLifetime
	if lifetime <= 0 {
		lifetime = defaultHuaweiTokenLifetime
	}
	value := "MIIemu" + base64.RawURLEncoding.EncodeToString([]byte(randomHex(96)))
	tok := &hwToken{user: user, projectID: req.Auth.Scope.Project.ID, projectName: req.Auth.Scope.Project.Name,
		issued: now, expiry: now.Add(lifetime)}
	h.tokens[value] = tok
	domainID := h.domains[domain]
	e.mu.Unlock()

	projectID, projectName := tok.projectID, tok.projectName
	if projectID == "" {
		projectID = randomHex(16)
	}
	if projectName == "" {
		projectName = "cn-north-4"
	}
	dom := map[string]string{"id": domainID, "name": domain}
	body := map[string]any{"token": map[string]any{
		"expires_at": tok.expiry.UTC().Format(huaweiTimeFormat),
		"issued_at":  tok.issued.UTC().Format(huaweiTimeFormat),
		"methods":    []string{"password"},
		"project":    map[string]any{"id": projectID, "name": projectName, "domain": dom},
		"roles":      []map[string]string{{"id": "0", "name": "op_service"}},
		"user": map[string]any{"id": user.id, "name": user.name, "domain": dom,
			"password_expires_at": ""},
	}}
	if r.URL.Query().Get("nocatalog") == "" {
		body["token"].(map[string]any)["catalog"] = []any{}
	}
	w.Header().Set("X-Subject-Token", value)
	w.Header().Set("X-Request-Id", randomHex(16))
	writeJSON(w, http.StatusCreated, body)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// huaweiAuth checks the X-Auth-Token or the AK/SK signature of a project-level API
// request for projectID; on failure it writes the APIG 401 and returns false.
func (e *Emulator) huaweiAuth(w http.ResponseWriter, r *http.Request, projectID string) bool {
	now := e.now()
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		e.mu.Lock()
		t := e.hw().tokens[tok]
		e.mu.Unlock()
		switch {
		case t == nil || !now.Before(t.expiry):
			writeAPIGError(w, http.StatusUnauthorized, "APIGW.0301", "Incorrect IAM authentication information: The token must be updated.")
			return false
		case t.projectID != "" && t.projectID != projectID:
			writeAPIGError(w, http.StatusUnauthorized, "APIGW.0301",
				"Incorrect IAM authentication information: the token's project does not match the project in the URL.")
			return false
		}
		return true
	}
	if strings.HasPrefix(r.Header.Get("Authorization"), huaweiSignAlgorithm+" ") {
		e.mu.Lock()
		ak, sk := e.hw().ak, e.hw().sk
		e.mu.Unlock()
		if msg := verifyHuaweiSignature(r, readBody(r), ak, sk, now); msg != "" {
			writeAPIGError(w, http.StatusUnauthorized, "APIGW.0301", "Incorrect IAM authentication information: "+msg)
			return false
		}
		if pid := r.Header.Get("X-Project-Id"); pid != projectID {
			writeAPIGError(w, http.StatusUnauthorized, "APIGW.0301",
				"Incorrect IAM authentication information: X-Project-Id is missing or does not match the project in the URL.")
			return false
		}
		return true
	}
	writeAPIGError(w, http.StatusUnauthorized, "APIGW.0301", "Incorrect IAM authentication information: x-auth-token not found")
	return false
}

func (e *Emulator) serveDownloadLink(w http.ResponseWriter, r *http.Request, projectID, instanceID string) {
	if !e.huaweiAuth(w, r, projectID) {
		return
	}
	e.mu.Lock()
	inst := e.hw().instances[instanceKey(projectID, instanceID)]
	e.mu.Unlock()
	if inst == nil {
		writeHuaweiError(w, http.StatusNotFound, "DBS.200002", "The DB instance does not exist.")
		return
	}
	link, err := e.obsLink(projectID, instanceID)
	if err != nil {
		writeHuaweiError(w, http.StatusInternalServerError, "DBS.200500", "Internal server error.")
		return
	}
	w.Header().Set("X-Request-Id", randomHex(16))
	writeJSON(w, http.StatusOK, map[string]any{
		"certs": []map[string]string{{"category": "international", "download_link": link}},
	})
}

// writeHuaweiError writes a service error body {"error_code","error_msg"} (§6.2).
func writeHuaweiError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Request-Id", randomHex(16))
	writeJSON(w, status, map[string]string{"error_code": code, "error_msg": msg})
}

// writeAPIGError writes an API gateway error body, with request_id (§6.2).
func writeAPIGError(w http.ResponseWriter, status int, code, msg string) {
	id := randomHex(16)
	w.Header().Set("X-Request-Id", id)
	writeJSON(w, status, map[string]string{"error_code": code, "error_msg": msg, "request_id": id})
}

// writeKeystoneError writes IAM's Keystone-style body {"error":{code,message,title}}.
func writeKeystoneError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("X-Request-Id", randomHex(16))
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": status, "message": msg, "title": http.StatusText(status)}})
}

// writeHuaweiDefaultError writes the Huawei body for a bare status on a Huawei path (for
// faults): APIG codes for 401/403/404/429, DBS codes otherwise, OBS XML on the OBS host.
func writeHuaweiDefaultError(w http.ResponseWriter, r *http.Request, status int) {
	if strings.HasPrefix(r.URL.Path, obsPathPrefix) {
		writeOBSError(w, status, obsCodeFor(status), http.StatusText(status))
		return
	}
	if r.URL.Path == "/v3/auth/tokens" {
		writeKeystoneError(w, status, http.StatusText(status))
		return
	}
	switch status {
	case http.StatusUnauthorized:
		writeAPIGError(w, status, "APIGW.0301", "Incorrect IAM authentication information: The token must be updated.")
	case http.StatusForbidden:
		writeAPIGError(w, status, "APIGW.0302", "The IAM user is not authorized to access the API.")
	case http.StatusNotFound:
		writeHuaweiError(w, status, "DBS.200002", "The DB instance does not exist.")
	case http.StatusTooManyRequests:
		writeAPIGError(w, status, "APIGW.0308", "The throttling threshold has been reached: policy user over ratelimit,limit:20,time:1 minute")
	case http.StatusBadRequest:
		writeHuaweiError(w, status, "DBS.200001", "Parameter error.")
	default:
		writeHuaweiError(w, status, "DBS.200500", http.StatusText(status)+".")
	}
}
